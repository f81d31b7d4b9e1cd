"""No-op rebuilds are free: the outputs carry a content fingerprint of their inputs."""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING

import pytest
from poetry.factory import Factory

from poetry_lambda_zip.builders.local import LocalBuilder
from poetry_lambda_zip.fingerprint import COMMENT_PREFIX
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ARGS = "--runtime python3.11 --builder local"


def test_unchanged_inputs_are_up_to_date_and_a_changed_byte_rebuilds(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    first = Build(path, ARGS)
    assert first.status == 0, first.error
    zip_path = first.zip_path
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.comment.decode().startswith(COMMENT_PREFIX)
    os.utime(zip_path, (1_000_000_000, 1_000_000_000))

    again = Build(path, ARGS)
    assert again.status == 0, again.error
    assert "Up to date" in again.output
    assert "fetch" not in again.output
    assert zip_path.stat().st_mtime == 1_000_000_000  # not rewritten
    assert again.sha256 == first.sha256

    source = path / "src" / "hello_pure" / "handler.py"
    os.utime(source, (2_000_000_000, 2_000_000_000))  # touched, same content
    assert "Up to date" in Build(path, ARGS).output

    source.write_text(source.read_text() + "\n# one more line\n")
    changed = Build(path, ARGS)
    assert changed.status == 0, changed.error
    assert "Up to date" not in changed.output
    assert changed.sha256 != first.sha256
    # Only the project's code changed: the dependencies are not fetched or unpacked again,
    # and the result is what a full rebuild writes.
    assert "dependencies unchanged: reused from an earlier build" in changed.output
    assert "fetch" not in changed.output
    full = Build(path, f"{ARGS} --force")
    assert full.status == 0, full.error
    assert "fetch" in full.output
    assert full.sha256 == changed.sha256


@pytest.mark.parametrize(
    "change",
    ["--force", "--no-compile", "--exclude six.py", "--layout split", "--exclude-package six"],
)
def test_options_that_change_the_output_rebuild(
    project: Callable[[str], Path], change: str
) -> None:
    path = project("pure-python")
    assert Build(path, ARGS).status == 0
    result = Build(path, f"{ARGS} {change}")
    assert result.status == 0, result.error
    assert "Up to date" not in result.output


def test_source_date_epoch_is_an_input(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project("pure-python")
    assert Build(path, ARGS).status == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert "Up to date" not in Build(path, ARGS).output


def test_without_dependencies_the_python_that_compiled_the_project_is_an_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project with no dependencies still ships bytecode: the interpreter (or image) that
    compiled it decides its bytes, as it does for a dependencies' tree."""
    path = tmp_path / "solo"
    (path / "solo").mkdir(parents=True)
    (path / "solo" / "__init__.py").write_text("def handler(event, context):\n    return 1\n")
    (path / "pyproject.toml").write_text(
        '[project]\nname = "solo"\nversion = "1.0"\nrequires-python = ">=3.11,<3.12"\n'
        'dependencies = []\n\n[tool.poetry]\npackages = [{include = "solo"}]\n'
    )
    poetry = Factory().create_poetry(path)
    poetry.locker.set_lock_data(poetry.package, {})
    first = Build(path, ARGS)
    assert first.status == 0, first.error
    with zipfile.ZipFile(first.zip_path) as archive:
        assert b" by local zip sha256:" in archive.comment  # its builder decided the bytes
        assert "solo/__pycache__/__init__.cpython-311.pyc" in archive.namelist()
    assert "Up to date" in Build(path, ARGS).output
    monkeypatch.setattr(LocalBuilder, "identity", lambda self, steps, progress: "local 3.11.99")
    again = Build(path, ARGS)
    assert again.status == 0, again.error
    assert "Up to date" not in again.output
