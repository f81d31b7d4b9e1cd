"""Installed dependency trees kept between builds, so a change to the project's own code does
not reinstall its dependencies.

An entry is a tar of the finished dependencies' tree alone (below ``tree/``) plus a record of
what the builder reported about it and the tar's sha256, stored under a key
that covers everything that decides those files: the selected locked artifacts, path-dependency
contents, target, builder and image identity, slim and compile settings, and this plugin's
version (``fingerprint.tree_key``). Entries are written atomically and are never modified, so
concurrent builds can share them; an entry whose tar no longer has the recorded sha256 (a disk
error, a full disk, an edit) is discarded with a warning, never shipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.archive import entries_from_tar
from poetry_lambda_zip.archive import file_sha256
from poetry_lambda_zip.archive import write_tree
from poetry_lambda_zip.builders import Finished
from poetry_lambda_zip.builders import TreeReport
from poetry_lambda_zip.stale import partial_name
from poetry_lambda_zip.stale import remove_stale

if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["TreeCache"]

#: The top directory of a kept tar; the tree's files are below it.
_PREFIX = "tree"
#: How many trees to keep: a few projects and branches' worth, each a few MB to a few 100 MB.
KEEP = 8
#: And how many bytes at most (the most recently used tree is always kept).
KEEP_BYTES = 1 << 30


class TreeCache:
    """A directory of ``KEY.tar`` + ``KEY.json`` (the tar's sha256 and the builder's report)."""

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

    def get(self, key: str, into: Path) -> Finished | None:
        """The tree kept under ``key``, its tar checked against the recorded sha256, written
        into the directory ``into`` (which must not exist)."""
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
        try:
            actual = file_sha256(tree) if digest is not None else None
        except FileNotFoundError:
            return None  # pruned by a concurrent build
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
            os.utime(tree)  # most recently used: kept longest
        with tarfile.open(tree) as archive:
            write_tree(entries_from_tar(archive, _PREFIX), into)
        return Finished(into, report, f"reused from {self.directory}")

    def put(self, key: str, finished: Finished) -> None:
        """Keep a finished tree. Best effort: a cache that cannot be written (read-only,
        full) only costs the next build time."""
        tree, record = self._paths(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale(self.directory, ".", ".part")  # what a killed build left
            # No record while the tar is replaced: a reader finds nothing rather than a mismatch.
            record.unlink(missing_ok=True)
            _write_atomically(tree, lambda path: _tar(finished.directory, path))
            document = {"sha256": file_sha256(tree), "report": finished.report.to_json()}
            _write_atomically(record, lambda path: _write_json(path, document))
            self._prune()
        except OSError as e:
            self._discard(key)
            self._warn(
                f"Cannot keep the installed dependencies in {self.directory}"
                f" ({e.strerror or e}): the next build installs them again."
            )

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.tar", self.directory / f"{key}.json"

    def _discard(self, key: str) -> None:
        for path in reversed(self._paths(key)):  # the record first: no reader trusts the tar
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Drop the least recently used trees beyond ``keep`` entries or ``keep_bytes``."""
        trees = sorted(
            ((path.stat(), path) for path in self.directory.glob("*.tar")),
            key=lambda found: found[0].st_mtime,
            reverse=True,
        )
        total = 0
        for number, (status, path) in enumerate(trees):
            total += status.st_size
            if number >= self._keep or (number > 0 and total > self._keep_bytes):
                path.with_suffix(".json").unlink(missing_ok=True)
                path.unlink(missing_ok=True)


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


def _tar(tree: Path, destination: Path) -> None:
    with tarfile.open(destination, "w") as archive:
        archive.add(tree, _PREFIX)
