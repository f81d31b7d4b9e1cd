"""Installed dependency trees kept between builds, so a change to the project's own code does
not reinstall its dependencies.

An entry is the tar a builder handed back for the dependencies alone (below ``TREE_PREFIX/``)
plus what the builder reported about it, stored under a key that covers everything that decides
those files: the selected locked artifacts, path-dependency contents, target, builder and image
identity, slim and compile settings, and this plugin's version (``fingerprint.tree_key``).
Entries are written atomically and are never modified, so concurrent builds can share them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders import TREE_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from poetry_lambda_zip.builders import InstallResult

__all__ = ["CachedTree", "TreeCache"]

#: How many trees to keep: a few projects and branches' worth, each a few MB to a few 100 MB.
KEEP = 8
#: And how many bytes at most (the most recently used tree is always kept).
KEEP_BYTES = 1 << 30


@dataclass(frozen=True)
class CachedTree:
    tree: Path
    report: dict[str, dict[str, int]]


class TreeCache:
    """A directory of ``KEY.tar`` (+ ``KEY.json``, the builder's report) files."""

    def __init__(self, directory: Path, keep: int = KEEP, keep_bytes: int = KEEP_BYTES) -> None:
        self.directory = directory
        self._keep = keep
        self._keep_bytes = keep_bytes

    def get(self, key: str) -> CachedTree | None:
        tree, report = self._paths(key)
        try:
            found = json.loads(report.read_text(encoding="utf-8"))
            os.utime(tree)  # most recently used: kept longest
        except (OSError, ValueError):
            return None
        return CachedTree(tree, found)

    def put(self, key: str, installed: InstallResult) -> None:
        """Store a builder's result (a tar, or the local builder's directory). Best effort: a
        cache that cannot be written only costs the next build time."""
        tree, report = self._paths(key)
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(report, lambda path: _write_json(path, installed.report))
            _write_atomically(tree, lambda path: _copy_tree(installed.tree, path))
            self._prune()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.tar", self.directory / f"{key}.json"

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
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)


def _write_atomically(destination: Path, write: Callable[[Path], None]) -> None:
    descriptor, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _write_json(path: Path, report: dict[str, dict[str, int]]) -> None:
    path.write_text(json.dumps(report, sort_keys=True), encoding="utf-8")


def _copy_tree(tree: Path, destination: Path) -> None:
    if not tree.is_dir():
        shutil.copyfile(tree, destination)
        return
    with tarfile.open(destination, "w") as archive:
        archive.add(tree, TREE_PREFIX)
