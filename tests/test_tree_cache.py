"""The cache of installed dependency trees: atomic entries, reports kept, oldest pruned, each
checked before it is reused, and a cache that cannot be written costs only time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
import zipfile
from typing import TYPE_CHECKING
from typing import Any

import pytest

from poetry_lambda_zip import tree_cache as tree_cache_module
from poetry_lambda_zip.builders.contract import CompileReport
from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.entries import Known
from poetry_lambda_zip.entries import Shipped
from poetry_lambda_zip.entries import files_sha256
from poetry_lambda_zip.tree_cache import TreeCache
from tests.conftest import mount_tmpfs
from tests.docker_helpers import Build
from tests.test_inside import files

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator
    from pathlib import Path


def finished(
    directory: Path, files: dict[str, bytes], report: TreeReport | None = None
) -> Finished:
    """A builder's result: ``files`` in ``directory``."""
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return Finished(directory, report or TreeReport(), "here")


def get(cache: TreeCache, key: str) -> Finished | None:
    return cache.get(key)


def test_a_builders_tree_and_report_come_back(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache")
    assert get(cache, "k") is None
    report = TreeReport(compile=CompileReport(compiled=2, failed=0))
    tree = finished(tmp_path / "tree", {"six.py": b"six", "a/b.py": b"b"}, report)
    (tree.directory / "six.py").chmod(0o755)
    cache.put("k", tree)
    shutil.rmtree(tree.directory)  # the builder's workdir goes away; the entry does not need it

    found = get(cache, "k")
    assert found is not None
    assert found.report == report
    assert files(found.directory) == {"six.py": "six", "a/b.py": "b"}
    assert os.stat(found.directory / "six.py").st_mode & 0o777 == 0o755
    assert os.stat(found.directory / "a" / "b.py").st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["k", "k.json", "k.wheels"]


@pytest.mark.parametrize("same_file_system", [True, False])
def test_a_tree_the_build_is_done_with_is_moved_in_or_copied_across_file_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_file_system: bool
) -> None:
    """A finished tree is moved into the cache (no second copy of a 100 MB tree on the way to
    the zip); where it cannot be renamed (another file system), it is copied."""
    if not same_file_system:

        def across(source: object, destination: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "rename", across)
    cache = TreeCache(tmp_path / "cache")
    tree = finished(tmp_path / "tree", {"six.py": b"six", "a/b.py": b"b"})
    cache.put("k", tree, move=True)
    assert tree.directory.exists() is not same_file_system
    found = get(cache, "k")
    assert found is not None
    assert found.kept
    assert files(found.directory) == {"six.py": "six", "a/b.py": "b"}


def with_wheel(tree: Finished, wheel: Path) -> Finished:
    """``tree`` as unpacked from a wheel holding its files, deflated."""
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in tree.directory.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(tree.directory).as_posix())
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            info.filename: Shipped(wheel, info.header_offset, info.compress_size, info.file_size)
            for info in archive.infolist()
        }
    return dataclasses.replace(tree, shipped=shipped)


def test_the_wheels_a_tree_was_unpacked_from_are_kept_with_it(tmp_path: Path) -> None:
    """The zip copies the wheels' deflated bytes: a kept tree keeps its wheels (linked where
    they can be), and says where its files are in them, as a fresh unpack would."""
    cache = TreeCache(tmp_path / "cache")
    wheel = tmp_path / "downloads" / "six-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    tree = with_wheel(finished(tmp_path / "tree", {"six.py": b"six" * 100, "a/b.py": b"b"}), wheel)
    cache.put("k", tree, move=True)
    kept_wheel = tmp_path / "cache" / "k.wheels" / "0.whl"
    assert kept_wheel.stat().st_ino == wheel.stat().st_ino  # a link, not a copy
    wheel.unlink()  # e.g. `poetry cache clear`: the kept tree does not need Poetry's copy
    found = get(cache, "k")
    assert found is not None
    assert found.shipped == {
        name: dataclasses.replace(member, wheel=kept_wheel)
        for name, member in (tree.shipped or {}).items()
    }


def test_a_kept_wheel_that_changed_discards_its_tree(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = TreeCache(tmp_path / "cache").reporting_to(warnings.append)
    wheel = tmp_path / "six-1.0-py3-none-any.whl"
    cache.put("k", with_wheel(finished(tmp_path / "tree", {"six.py": b"six" * 100}), wheel))
    kept_wheel = tmp_path / "cache" / "k.wheels" / "0.whl"
    kept_wheel.unlink()  # the link, not Poetry's copy, is replaced
    kept_wheel.write_bytes(b"not that wheel")
    assert get(cache, "k") is None
    (warning,) = warnings
    assert "is damaged (it no longer matches the sha256 recorded with it)" in warning
    assert list((tmp_path / "cache").iterdir()) == []
    assert wheel.exists()


@pytest.mark.parametrize(
    "edit",
    [
        lambda record: record.pop("wheels"),  # an earlier version's: not used, not damaged
        lambda record: record["shipped"].update({"six.py": [5, 0, 1, 1]}),  # no 5th wheel
        lambda record: record["shipped"].update({"six.py": [0, -1, 1, 1]}),
        lambda record: record["wheels"][0].__setitem__(0, "../../elsewhere.whl"),
    ],
)
def test_a_record_that_does_not_say_where_its_files_are_is_not_used(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object]
) -> None:
    cache = TreeCache(tmp_path / "cache")
    wheel = tmp_path / "six-1.0-py3-none-any.whl"
    cache.put("k", with_wheel(finished(tmp_path / "tree", {"six.py": b"six" * 100}), wheel))
    record = tmp_path / "cache" / "k.json"
    document = json.loads(record.read_text())
    edit(document)
    record.write_text(json.dumps(document))
    assert get(cache, "k") is None


def test_a_file_hashed_while_unpacked_is_not_read_again_unless_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = finished(tmp_path / "tree", {"six.py": b"six" * 100, "a/b.py": b"b"})
    hashed: list[str] = []
    real = files_sha256

    def counting(paths: list[Path]) -> list[str]:
        hashed.extend(path.name for path in paths)
        return real(paths)

    monkeypatch.setattr(tree_cache_module, "files_sha256", counting)
    six = tree.directory / "six.py"
    known = {"six.py": Known.of(hashlib.sha256(six.read_bytes()).hexdigest(), six.stat())}
    TreeCache(tmp_path / "cache").put("k", dataclasses.replace(tree, known=known), move=True)
    assert hashed == ["b.py"]
    hashed.clear()
    found = get(TreeCache(tmp_path / "cache"), "k")  # a reuse checks every file
    assert found is not None
    assert sorted(hashed) == ["b.py", "six.py"]
    assert found.known is not None
    assert found.known["six.py"] == known["six.py"]  # moved, not changed
    # Changed since it was hashed (same size): read again, and the record says so.
    cache = TreeCache(tmp_path / "other")
    tree = finished(tmp_path / "tree2", {"six.py": b"six" * 100})
    six = tree.directory / "six.py"
    known = {"six.py": Known.of(hashlib.sha256(six.read_bytes()).hexdigest(), six.stat())}
    time.sleep(0.01)  # past the file system's clock tick
    six.write_bytes(b"SIX" * 100)
    hashed.clear()
    cache.put("k", dataclasses.replace(tree, known=known))
    assert hashed == ["six.py"]
    assert get(cache, "k") is not None


def test_the_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache", keep=2)
    tree = finished(tmp_path / "tree", {"x.py": b""})
    cache.put("a", tree)
    cache.put("b", tree)
    os.utime(tmp_path / "cache" / "a.json", (1, 1))
    os.utime(tmp_path / "cache" / "b.json", (2, 2))
    assert get(cache, "a") is not None  # used now: the newest
    cache.put("c", tree)
    assert get(cache, "b") is None
    assert get(cache, "a") is not None
    assert get(cache, "c") is not None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "a", "a.json", "a.wheels", "c", "c.json", "c.wheels"
    ]  # fmt: skip


def test_a_cache_that_cannot_be_written_costs_only_time_and_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    warnings: list[str] = []
    cache = TreeCache(blocker / "cache").reporting_to(warnings.append)
    cache.put("k", finished(tmp_path / "tree", {"x.py": b""}))
    assert get(cache, "k") is None
    assert warnings == [
        f"Cannot keep the installed dependencies in {blocker / 'cache'} (Not a directory):"
        " the next build installs them again."
    ]


def test_the_newest_tree_is_kept_even_over_the_byte_limit(tmp_path: Path) -> None:
    cache = TreeCache(tmp_path / "cache", keep_bytes=1)
    small = finished(tmp_path / "small", {"x.py": b"x = 1\n"})
    cache.put("old", small)
    os.utime(tmp_path / "cache" / "old.json", (1, 1))
    cache.put("new", small)
    assert get(cache, "old") is None
    assert get(cache, "new") is not None


def a_file(tree: Path) -> Path:
    return max((p for p in tree.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(tree: Path) -> None:
    target = a_file(tree)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def edit_a_byte_inside_a_file(tree: Path) -> None:
    target = a_file(tree)
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))


def replace_with_garbage(tree: Path) -> None:
    shutil.rmtree(tree)
    tree.mkdir()
    (tree / "garbage").write_bytes(b"not the tree at all " * 64)


DAMAGE = [truncate, edit_a_byte_inside_a_file, replace_with_garbage]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_discarded_with_a_warning(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    warnings: list[str] = []
    cache = TreeCache(tmp_path / "cache").reporting_to(warnings.append)
    cache.put("k", finished(tmp_path / "tree", {"six.py": b"six" * 100}))
    damage(tmp_path / "cache" / "k")
    assert get(cache, "k") is None
    assert warnings == [
        f"The kept dependency tree {tmp_path / 'cache' / 'k'} is damaged (it no longer"
        " matches the sha256 recorded with it): discarded, the dependencies are installed"
        " again."
    ]
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_unreadable_record_is_a_damaged_entry(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = TreeCache(tmp_path / "cache").reporting_to(warnings.append)
    cache.put("k", finished(tmp_path / "tree", {"six.py": b"six"}))
    (tmp_path / "cache" / "k.json").write_text("{not json")
    assert get(cache, "k") is None
    assert len(warnings) == 1
    assert list((tmp_path / "cache").iterdir()) == []


# ---- through the command: the zip never carries a damaged tree ------------------------------


def local_build(path: Path, output: str) -> Build:
    return Build(path, f"--runtime python3.11 --builder local --no-compile -o {output}")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_kept_tree_is_rebuilt_and_the_zip_is_the_same(
    project: Callable[[str], Path], tree_cache: Path, damage: Callable[[Path], None]
) -> None:
    path = project("pure-python")
    first = local_build(path, "first.zip")
    assert first.status == 0, first.error
    (kept,) = (p for p in tree_cache.iterdir() if p.is_dir() and p.suffix != ".wheels")
    damage(kept)

    second = local_build(path, "second.zip")
    assert second.status == 0, second.error
    (warning,) = second.warnings
    assert f"The kept dependency tree {kept} is damaged" in warning
    assert "reused from an earlier build" not in second.output
    assert (path / "second.zip").read_bytes() == (path / "first.zip").read_bytes()
    third = local_build(path, "third.zip")  # the rebuilt tree was kept again, and is sound
    assert third.status == 0, third.error
    assert third.warnings == []
    assert "reused from an earlier build" in third.output
    assert (path / "third.zip").read_bytes() == (path / "first.zip").read_bytes()


@pytest.fixture
def unmount(tree_cache: Path) -> Iterator[None]:
    yield
    if os.path.ismount(tree_cache):
        subprocess.run(["umount", str(tree_cache)], check=True)


@pytest.mark.usefixtures("unmount")
def test_a_read_only_tree_cache_still_serves_what_it_kept(
    project: Callable[[str], Path], tree_cache: Path
) -> None:
    mount_tmpfs(tree_cache, "size=64m")
    path = project("pure-python")
    first = local_build(path, "first.zip")
    assert first.status == 0, first.error
    subprocess.run(["mount", "-o", "remount,ro", str(tree_cache)], check=True)

    warm = local_build(path, "warm.zip")
    assert warm.status == 0, warm.error
    assert warm.warnings == []
    assert "reused from an earlier build" in warm.output
    assert (path / "warm.zip").read_bytes() == (path / "first.zip").read_bytes()


@pytest.mark.usefixtures("unmount")
def test_a_read_only_tree_cache_costs_one_warning_not_the_build(
    project: Callable[[str], Path], tree_cache: Path
) -> None:
    mount_tmpfs(tree_cache, "ro")
    path = project("pure-python")
    result = local_build(path, "out.zip")
    assert result.status == 0, result.error
    assert result.warnings == [
        f"Warning: Cannot keep the installed dependencies in {tree_cache} (Read-only file"
        " system): the next build installs them again."
    ]
    assert list(tree_cache.iterdir()) == []
