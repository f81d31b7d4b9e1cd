"""The cache of installed dependency trees: atomic entries, reports kept, oldest pruned."""

from __future__ import annotations

import os
import tarfile
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders import TREE_PREFIX
from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.tree_cache import TreeCache

if TYPE_CHECKING:
    from pathlib import Path


def tar_tree(path: Path, files: dict[str, bytes]) -> Path:
    directory = path.parent / f"{path.stem}-files" / TREE_PREFIX
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    with tarfile.open(path, "w") as archive:
        archive.add(directory, TREE_PREFIX)
    return path


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def test_a_builders_tar_and_report_come_back(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache")
    assert cache.get("k") is None
    tree = tar_tree(tmp_path / "tree.tar", {"six.py": b"six", "a/b.py": b"b"})
    cache.put("k", InstallResult(tree, {"compile": {"compiled": 2, "failed": 0}}))
    tree.unlink()  # the builder's workdir goes away; the entry does not depend on it

    found = cache.get("k")
    assert found is not None
    assert found.report == {"compile": {"compiled": 2, "failed": 0}}
    assert members(found.tree) == {f"{TREE_PREFIX}/six.py": b"six", f"{TREE_PREFIX}/a/b.py": b"b"}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["k.json", "k.tar"]


def test_the_local_builders_directory_is_stored_as_a_tar(tmp_path: Path) -> None:
    directory = tmp_path / "target"
    (directory / "pkg").mkdir(parents=True)
    (directory / "pkg" / "__init__.py").write_bytes(b"init")
    cache = TreeCache(tmp_path / "cache")
    cache.put("k", InstallResult(directory))
    found = cache.get("k")
    assert found is not None
    assert members(found.tree) == {f"{TREE_PREFIX}/pkg/__init__.py": b"init"}


def test_the_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache", keep=2)
    tree = tar_tree(tmp_path / "tree.tar", {"x.py": b""})
    cache.put("a", InstallResult(tree))
    cache.put("b", InstallResult(tree))
    os.utime(tmp_path / "cache" / "a.tar", (1, 1))
    os.utime(tmp_path / "cache" / "b.tar", (2, 2))
    assert cache.get("a") is not None  # used now: the newest
    cache.put("c", InstallResult(tree))
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "a.json",
        "a.tar",
        "c.json",
        "c.tar",
    ]


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cache = TreeCache(blocker / "cache")
    cache.put("k", InstallResult(tar_tree(tmp_path / "tree.tar", {"x.py": b""})))
    assert cache.get("k") is None


def test_the_newest_tree_is_kept_even_over_the_byte_limit(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache", keep_bytes=1)
    small = tar_tree(tmp_path / "small.tar", {"x.py": b""})
    cache.put("old", InstallResult(small))
    os.utime(tmp_path / "cache" / "old.tar", (1, 1))
    cache.put("new", InstallResult(small))
    assert cache.get("old") is None
    assert cache.get("new") is not None
