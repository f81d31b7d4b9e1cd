"""One build of a project at a time: a second ``poetry lambda-zip`` on the same project waits
for the first (an advisory lock, released by the system when a process ends, killed too), then
finds its outputs up to date or builds them itself; two never write the same zips at once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from typing import TYPE_CHECKING

from poetry_lambda_zip import locations

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from poetry_lambda_zip.builders.contract import Progress

__all__ = ["one_build_at_a_time"]


@contextlib.contextmanager
def one_build_at_a_time(project_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold the project's lock (a file in Poetry's cache directory, ``locations.locks``) while
    the block runs; wait for it, saying so, while another process holds it. Where no lock can
    be taken (no cache directory, a read-only one, a system without ``flock``), the build runs
    unlocked."""
    directory = locations.locks(project_dir)
    if directory is None or sys.platform == "win32":
        yield
        return
    import fcntl

    key = hashlib.sha256(os.fsencode(project_dir.resolve())).hexdigest()[:32]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            started = time.monotonic()
            progress.info(
                f"Waiting for another poetry lambda-zip building {project_dir} to finish ..."
            )
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            progress.phase("wait", time.monotonic() - started, "the other build finished")
        except OSError:
            pass  # a file system without locks: unlocked
        yield
    finally:
        os.close(descriptor)  # releases the lock
