"""What a killed run left behind, recognised by name and a dead owner, removed by the next run.

Temporary files and directories are named ``PREFIX + owner_tag() + ["." + anything] + SUFFIX``:
the owner is this process's pid and a tag of this host's name, so that a run never takes a live
run's file for a stale one, here or on another machine sharing the directory (a CI cache).
Partial files in caches are ``.OWNER.TOKEN.NAME.part``: ``remove_stale(directory, ".", ".part")``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["is_temporary", "owner_tag", "partial_name", "remove_stale", "write_atomically"]

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owner_tag() -> str:
    """The owner part of this process's temporary names: ``PID-HOSTTAG``."""
    return f"{os.getpid()}-{_HOST}"


def partial_name(name: str) -> str:
    """The name a file being written takes until it is complete: ``.OWNER.TOKEN.NAME.part``,
    a new token each time: two threads of one run writing one file (two requirement sets
    downloading the same wheel) never write into each other's partial file."""
    return f".{owner_tag()}.{secrets.token_hex(4)}.{name}.part"


#: The name of any temporary file written this way, on any host: ``.NAME.OWNER.….tmp`` (a zip
#: being written) or ``.OWNER.TOKEN.NAME.part`` (a download, a cache entry).
_TEMPORARY = re.compile(
    r"\..*\.[0-9]+-[0-9a-f]{8}\..*\.tmp|\.[0-9]+-[0-9a-f]{8}\..*\.part", flags=re.DOTALL
)


def is_temporary(name: str) -> bool:
    """Whether a file of this name is one a run of this plugin writes before renaming it into
    place (or a killed run left): never a project's file to ship."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_stale(directory: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the entries of ``directory`` named ``PREFIX<pid>-<this host's tag>[.…]SUFFIX`` whose
    process is gone; return them. Anything else, and anything that cannot be removed, is left
    alone: this is cleanup, never a reason to fail."""
    pattern = re.compile(
        rf"{re.escape(prefix)}(\d+)-{_HOST}(?:\..*)?{re.escape(suffix)}", flags=re.DOTALL
    )
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _alive(int(match.group(1))):
            continue
        path = directory / name
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a number no process has): not ours to judge
    return True


def write_atomically(destination: Path, write: Callable[[Path], object]) -> None:
    """Write through ``.OWNER.TOKEN.NAME.part`` next to ``destination``, then rename it into
    place: a reader finds the old file or the new one, never half of one. The partial file is
    removed whatever happens; a killed run's is removed by the next run that writes there. The
    one way small files (records, stamps, verdicts) are written; raises OSError."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination.parent, ".", ".part")
    temporary = destination.with_name(partial_name(destination.name))
    try:
        write(temporary)
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
