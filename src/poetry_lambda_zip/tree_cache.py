"""Installed dependency trees kept between builds, so a change to the project's own code does
not reinstall its dependencies.

An entry is the finished dependencies' tree itself, a directory ``KEY/`` (handed to the build as
it is: nothing is copied or unpacked on reuse), the wheels it was unpacked from in
``KEY.wheels/`` (linked, not copied, where the file system allows: the zip copies their deflated
bytes, ``archive.Shipped``), plus ``KEY.json``: what the builder reported about the tree, its
size, the sha256 of its files (names, executable bits and contents) and of the wheels, and where
each file is in them. The key covers everything that decides those files: the selected locked
artifacts, path-dependency contents, target, builder and image identity, slim and compile
settings, and this plugin's version (``fingerprint.tree_key``). Entries are written to a partial
directory and renamed into place, and are never modified, so concurrent builds can share them;
an entry whose files no longer have the recorded sha256 (a disk error, a full disk, an edit) is
discarded with a warning, never shipped. The most recently used entry is never pruned, and a
reused entry becomes the most recently used: a concurrent build would have to keep ``KEEP``
newer trees while this one packages to prune it from under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.entries import Known
from poetry_lambda_zip.entries import Shipped
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.entries import files_below
from poetry_lambda_zip.entries import files_sha256
from poetry_lambda_zip.stale import partial_name
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.stale import write_atomically

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Mapping


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
        """The tree kept under ``key``, its files and wheels checked against the recorded
        sha256."""
        tree, record, wheels = self._paths(key)
        try:
            text = record.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, dict) and not {"sha256", "wheels"} <= found.keys():
            return None  # written by an earlier version, which recorded no sha256 or wheels
        report, digest, shipped = _parsed(found, wheels)
        if not tree.is_dir():
            return None  # pruned by a concurrent build
        known: dict[str, Known] = {}
        try:
            actual = _tree_digest(tree, known)[0] if digest is not None else None
            intact = shipped is not None and _wheels_intact(found["wheels"], wheels)
        except OSError as e:
            actual, intact = f"unreadable ({e.strerror or e})", False
        if report is None or actual != digest or not intact:
            self._warn(
                f"The kept dependency tree {tree} is damaged (it no longer matches the sha256"
                " recorded with it): discarded, the dependencies are installed again."
            )
            self._discard(key)
            return None
        with contextlib.suppress(OSError):  # a read-only cache is still a cache
            os.utime(record)  # most recently used: kept longest
        return Finished(
            tree, report, f"reused from {self.directory}", kept=True, shipped=shipped, known=known
        )

    def put(self, key: str, finished: Finished, *, move: bool = False) -> None:
        """Keep a finished tree (with ``move``, the tree itself where it can be renamed into
        the cache, else a copy) and the wheels it was unpacked from. Best effort: a cache that
        cannot be written (read-only, full) only costs the next build time."""
        tree, record, wheels = self._paths(key)
        partial = tree.with_name(partial_name(tree.name))
        partial_wheels = wheels.with_name(partial_name(wheels.name))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale(self.directory, ".", ".part")  # what a killed build left
            # No record while the tree is replaced: a reader finds nothing, not a mismatch.
            record.unlink(missing_ok=True)
            if not (move and _renamed(finished.directory, partial)):
                shutil.copytree(finished.directory, partial, symlinks=True)
            kept_wheels, shipped = _keep_wheels(finished.shipped or {}, partial_wheels)
            digest, size = _tree_digest(partial, dict(finished.known or {}))
            document = {
                "sha256": digest,
                "bytes": size,
                "report": finished.report.to_json(),
                "wheels": kept_wheels,
                "shipped": shipped,
            }
            for done, place in ((partial, tree), (partial_wheels, wheels)):
                if place.exists():
                    shutil.rmtree(place)
                os.replace(done, place)
            write_atomically(record, lambda path: _write_json(path, document))
            self._prune()
        except OSError as e:
            self._discard(key)
            self._warn(
                f"Cannot keep the installed dependencies in {self.directory}"
                f" ({_reason(e)}): the next build installs them again."
            )
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(partial_wheels, ignore_errors=True)

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        """The tree, its record and its wheels' directory."""
        return (
            self.directory / key,
            self.directory / f"{key}.json",
            self.directory / f"{key}.wheels",
        )

    def _discard(self, key: str) -> None:
        tree, record, wheels = self._paths(key)
        with contextlib.suppress(OSError):  # the record first: no reader trusts the tree
            record.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)

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
    return _tree_digest(tree, {})[0]


def _tree_digest(tree: Path, known: dict[str, Known]) -> tuple[str, int]:
    """``tree_sha256`` and the bytes of the tree's files. A file whose sha256 ``known`` holds
    (and that is still the file hashed then) is not read again; every file's is added to it."""
    files = [
        (path.relative_to(tree).as_posix(), path, info)
        for path, info in files_below(tree, links=False)
    ]
    found = {
        name: same
        for name, _, info in files
        if name in known and (same := known[name].sha256_if_same(info)) is not None
    }
    unknown = [(name, path) for name, path, _ in files if name not in found]
    found.update(zip((name for name, _ in unknown), files_sha256([path for _, path in unknown])))
    digest = hashlib.sha256()
    size = 0
    known.clear()
    for name, _, info in files:
        executable = bool(info.st_mode & stat.S_IXUSR)
        digest.update(f"{name}\0{int(executable)}\0".encode())
        digest.update(found[name].encode())
        size += info.st_size
        known[name] = Known.of(found[name], info)
    return digest.hexdigest(), size


def _recorded_bytes(record: Path) -> int:
    try:
        found = json.loads(record.read_text(encoding="utf-8"))
        return int(found["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _parsed(
    found: Any, wheels: Path
) -> tuple[TreeReport | None, str | None, dict[str, Shipped] | None]:
    """The report, the sha256 and where the kept wheels hold the tree's files, of a record;
    (None, None, None) for one that is not ours."""
    if not isinstance(found, dict) or not isinstance(found.get("sha256"), str):
        return None, None, None
    try:
        report = TreeReport.from_json(found.get("report"))
        names = [_wheel_name(name) for name, _ in found["wheels"]]
        shipped = {}
        for path, where in found["shipped"].items():
            if len(where) != 4 or not all(type(value) is int and value >= 0 for value in where):
                raise ValueError(f"not where a wheel holds {path!r}: {where!r}")
            number, offset, compressed, size = where
            shipped[path] = Shipped(wheels / names[number], offset, compressed, size)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None, None, None
    return report, found["sha256"], shipped


def _keep_wheels(
    shipped: Mapping[str, Shipped], directory: Path
) -> tuple[list[list[str]], dict[str, list[int]]]:
    """Link (else copy) the wheels ``shipped`` names into ``directory``. Returns each one's
    name and sha256, and where each file is in them (by the wheel's number)."""
    directory.mkdir()
    numbers: dict[Path, int] = {}
    kept: list[list[str]] = []
    for wheel in sorted({member.wheel for member in shipped.values()}):
        name = f"{len(kept)}.whl"  # two wheels of one name may come from two places
        try:
            os.link(wheel, directory / name)
        except OSError:
            shutil.copyfile(wheel, directory / name)
        numbers[wheel] = len(kept)
        kept.append([name, file_sha256(directory / name)])
    where = {
        path: [numbers[member.wheel], member.header_offset, member.compressed, member.size]
        for path, member in shipped.items()
    }
    return kept, where


def _wheels_intact(recorded: Any, directory: Path) -> bool:
    """Whether every kept wheel still has the sha256 recorded with it."""
    return all(file_sha256(directory / _wheel_name(name)) == digest for name, digest in recorded)


def _wheel_name(name: Any) -> str:
    """A kept wheel's file name, ``NUMBER.whl`` (a record is not trusted to name others)."""
    if not (isinstance(name, str) and re.fullmatch(r"[0-9]{1,6}\.whl", name)):
        raise ValueError(f"not a kept wheel's file name: {name!r}")
    return name


def _reason(error: OSError) -> str:
    """Why ``error`` happened, in one line: a copy of a tree that failed for many files
    (``shutil.Error``, a list of them) says the first reason and how many more."""
    failures = error.args[0] if isinstance(error, shutil.Error) and error.args else None
    if isinstance(failures, list) and failures:
        first = failures[0]
        reason = str(first[2] if isinstance(first, tuple) and len(first) == 3 else first)
        return reason if len(failures) == 1 else f"{reason}; {len(failures) - 1} files more"
    return str(error.strerror or error)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")


def _renamed(source: Path, destination: Path) -> bool:
    """Whether ``source`` could be renamed to ``destination`` (not across file systems)."""
    try:
        os.rename(source, destination)
    except OSError:
        return False
    return True
