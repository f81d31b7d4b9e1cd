"""The steps every tree goes through, here and in the image (``tree_steps``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poetry_lambda_zip.contents import bytecode_source
from poetry_lambda_zip.tree_steps import compile_tree

if TYPE_CHECKING:
    from pathlib import Path


def test_modules_in_test_directories_inside_packages_stay_source(tmp_path: Path) -> None:
    """Test directories inside a package (what --slim removes) are never imported by a
    handler: their modules get no bytecode. A top-level tests package, a ``testing`` module
    and everything else do."""
    compiled = {"pkg/__init__.py", "pkg/core.py", "pkg/testing.py", "tests/test_top.py"}
    left = {"pkg/tests/__init__.py", "pkg/tests/test_core.py", "pkg/sub/test/helpers.py"}
    for name in compiled | left:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("VALUE = 1\n")
    assert compile_tree(str(tmp_path), "/var/task") == {"compiled": 4, "failed": 0, "tests": 3}
    sources = {
        bytecode_source(path.relative_to(tmp_path).as_posix()) for path in tmp_path.rglob("*.pyc")
    }
    assert sources == compiled
