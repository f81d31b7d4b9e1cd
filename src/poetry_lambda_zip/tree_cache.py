"""Installed dependency trees kept between builds, so a change to the project's own code does
not reinstall its dependencies.

An entry is the finished dependencies' tree itself, a directory ``KEY/`` (handed to the build
as it is: nothing is copied or unpacked on reuse), plus ``KEY.json``: what the builder reported
about it, its size, and the sha256 of its files (names, executable bits and contents). The key
covers everything that decides those files: the selected locked artifacts, path-dependency
contents, target, builder and image identity, slim and compile settings, and this plugin's
version (``fingerprint.tree_key``). Entries are written to a partial directory and renamed into
place, and are never modified, so concurrent builds can share them; an entry whose files no
longer have the recorded sha256 (a disk error, a full disk, an edit) is discarded with a
warning, never shipped. The most recently used entry is never pruned, and a reused entry
becomes the most recently used: a concurrent build would have to keep ``KEEP`` newer trees
while this one packages to prune it from under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.archive import file_sha256
from poetry_lambda_zip.builders import Finished
from poetry_lambda_zip.builders import TreeReport
from poetry_lambda_zip.stale import partial_name
from poetry_lambda_zip.stale import remove_stale

if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["TreeCache", "tree_sha256"]

#: How many trees to keep: a few projects and branches' worth, each a few MB to a few 100 MB.
KEEP = 8
#: And how many bytes at most (the most recently used tree is always kept).
KEEP_BYTES = 1 << 30


class TreeCache:
    """A directory of ``KEY/`` + ``KEY.json`` (the tree's sha256, size and report)."""

    def __init__(
        self,
        directory: Path,
        keep: int = KEEP,
        keep_bytes: int = KEEP_BYTES,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """``warn`` is told about damaged entries and a cache that cannot be written."""
        self.directory = directory
        self._keep = keep
        self._keep_bytes = keep_bytes
        self._warn = warn or (lambda message: None)

    def reporting_to(self, warn: Callable[[str], None]) -> TreeCache:
        """The same cache, telling ``warn`` (``progress.warning``) what it discards or cannot
        keep."""
        return TreeCache(self.directory, self._keep, self._keep_bytes, warn)

    def get(self, key: str) -> Finished | None:
        """The tree kept under ``key``, its files checked against the recorded sha256."""
        tree, record = self._paths(key)
        try:
            text = record.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, dict) and "sha256" not in found:
            return None  # written by an earlier version, which recorded no sha256
        report, digest = _parsed(found)
        if not tree.is_dir():
            return None  # pruned by a concurrent build
        try:
            actual = tree_sha256(tree) if digest is not None else None
        except OSError as e:
            actual = f"unreadable ({e.strerror or e})"
        if report is None or actual != digest:
            self._warn(
                f"The kept dependency tree {tree} is damaged (it no longer matches the sha256"
                " recorded with it): discarded, the dependencies are installed again."
            )
            self._discard(key)
            return None
        with contextlib.suppress(OSError):  # a read-only cache is still a cache
            os.utime(record)  # most recently used: kept longest
        return Finished(tree, report, f"reused from {self.directory}", kept=True)

    def put(self, key: str, finished: Finished, *, move: bool = False) -> None:
        """Keep a finished tree (with ``move``, the tree itself where it can be renamed into
        the cache, else a copy). Best effort: a cache that cannot be written (read-only,
        full) only costs the next build time."""
        tree, record = self._paths(key)
        partial = tree.with_name(partial_name(tree.name))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale(self.directory, ".", ".part")  # what a killed build left
            # No record while the tree is replaced: a reader finds nothing, not a mismatch.
            record.unlink(missing_ok=True)
            if not (move and _renamed(finished.directory, partial)):
                shutil.copytree(finished.directory, partial, symlinks=True)
            document = {
                "sha256": tree_sha256(partial),
                "bytes": sum(p.stat().st_size for p in partial.rglob("*") if p.is_file()),
                "report": finished.report.to_json(),
            }
            if tree.exists():
                shutil.rmtree(tree)
            os.replace(partial, tree)
            _write_atomically(record, lambda path: _write_json(path, document))
            self._prune()
        except OSError as e:
            self._discard(key)
            self._warn(
                f"Cannot keep the installed dependencies in {self.directory}"
                f" ({e.strerror or e}): the next build installs them again."
            )
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / key, self.directory / f"{key}.json"

    def _discard(self, key: str) -> None:
        tree, record = self._paths(key)
        with contextlib.suppress(OSError):  # the record first: no reader trusts the tree
            record.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)

    def _prune(self) -> None:
        """Drop the least recently used trees beyond ``keep`` entries or ``keep_bytes``."""
        trees = sorted(
            ((path.stat().st_mtime, path) for path in self.directory.glob("*.json")),
            reverse=True,
        )
        total = 0
        for number, (_, record) in enumerate(trees):
            total += _recorded_bytes(record)
            if number >= self._keep or (number > 0 and total > self._keep_bytes):
                self._discard(record.stem)


def tree_sha256(tree: Path) -> str:
    """A sha256 over a tree's files: each one's path, executable bit and contents, in order.
    Anything but a regular file or a directory (a link) makes it unreadable."""
    digest = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        mode = path.lstat().st_mode  # one call: a link is not followed, nor looked at twice
        if stat.S_ISREG(mode):
            executable = bool(mode & stat.S_IXUSR)
            digest.update(f"{path.relative_to(tree).as_posix()}\0{int(executable)}\0".encode())
            digest.update(file_sha256(path).encode())
        elif not stat.S_ISDIR(mode):
            raise OSError(f"{path} is not a regular file")
    return digest.hexdigest()


def _recorded_bytes(record: Path) -> int:
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
        return int(found["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _parsed(found: Any) -> tuple[TreeReport | None, str | None]:
    """The report and the sha256 of a record, or (None, None) for one that is not ours."""
    if not isinstance(found, dict) or not isinstance(found.get("sha256"), str):
        return None, None
    try:
        return TreeReport.from_json(found.get("report")), found["sha256"]
    except ValueError:
        return None, None


def _write_atomically(destination: Path, write: Callable[[Path], None]) -> None:
    """Write through ``.OWNER.NAME.part`` next to ``destination``, then rename it into place;
    the partial file is removed whatever happens (an interrupted build leaves none, a killed
    one's is removed by the next ``put``)."""
    temporary = destination.with_name(partial_name(destination.name))
    try:
        write(temporary)
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")


def _renamed(source: Path, destination: Path) -> bool:
    """Whether ``source`` could be renamed to ``destination`` (not across file systems)."""
    try:
        os.rename(source, destination)
    except OSError:
        return False
    return True
