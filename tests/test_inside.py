"""The tree steps the container script and the local builder share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poetry_lambda_zip.tree_steps import merge_trees

if TYPE_CHECKING:
    from pathlib import Path


def tree(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


def files(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in root.rglob("*")
        if path.is_file()
    }


def test_trees_merge_and_identical_files_are_one(tmp_path: Path) -> None:
    unpacked = tree(tmp_path / "unpacked", {"ns/a.py": "a", "ns/__init__.py": ""})
    built = tree(tmp_path / "built", {"ns/b.py": "b", "ns/__init__.py": ""})
    target = tmp_path / "target"
    assert merge_trees([unpacked, built], str(target)) is None
    assert files(target) == {"ns/a.py": "a", "ns/b.py": "b", "ns/__init__.py": ""}
    assert not (tmp_path / "unpacked").exists()  # the first tree was moved into place


def test_a_file_two_trees_hold_differently_is_named(tmp_path: Path) -> None:
    first = tree(tmp_path / "first", {"pkg/data.txt": "one"})
    second = tree(tmp_path / "second", {"pkg/data.txt": "two"})
    assert merge_trees([first, second], str(tmp_path / "target")) == "pkg/data.txt"
