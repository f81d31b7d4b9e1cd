"""The edit shortcut: an edit of the project's own files alone is patched into the zip without
loading the project, and the zip is the one a full build (--force) writes, byte for byte;
anything else takes the full path."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip.command import LambdaZipCommand
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ARGS = "--runtime python3.11 --builder local"
#: The shortcut's phase line when it patches.
PATCHED = "only the project's own files changed since the last build"
FULL = "resolve "


def patched(build: Build) -> bool:
    assert build.status == 0, build.error
    taken = PATCHED in build.output
    assert taken != (FULL in build.output)  # one way or the other, never both
    return taken


def edit(path: Path, text: str = "\n\ndef added():\n    return 'edited'\n") -> None:
    path.write_text(path.read_text() + text)


def force_sha256(path: Path, arguments: str = ARGS) -> str:
    """What a full build from scratch writes (the sha256 of its first zip)."""
    return Build(path, f"{arguments} --force").sha256


def zip_bytes(output: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(output) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def first_build(path: Path, arguments: str = ARGS) -> Build:
    build = Build(path, arguments)
    assert build.status == 0, build.error
    assert not patched(build)
    return build


@pytest.mark.parametrize(
    "case",
    [
        ("pure-python", "src/hello_pure/handler.py", "hello_pure/handler.py"),
        ("handler-next-to-pyproject", "src/greeter/core.py", "greeter/core.py"),
        ("handler-next-to-pyproject", "lambda_function.py", "lambda_function.py"),  # include
        ("non-package", "index.py", "index.py"),  # no wheel, include files alone
    ],
)
def test_an_edit_is_patched_as_a_full_build_would_write_it(
    project: Callable[[str], Path],
    stamps_here: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, str, str],
) -> None:
    """``case``: the fixture, the file edited, its name in the zip."""
    fixture, edited, in_zip = case
    path = project(fixture)
    built = first_build(path)
    before = zip_bytes(built.zip_path)
    for number in range(2):  # the second edit patches what the first one patched
        edit(path / edited, f"\n\ndef added_{number}():\n    return {number}\n")
        with monkeypatch.context() as patch:
            patch.setattr(LambdaZipCommand, "_project_poetry", _raise)
            again = Build(path, ARGS)
        assert patched(again)
        assert "Built" in again.output
    after = zip_bytes(again.zip_path)
    assert after[in_zip] == (path / edited).read_bytes()
    changed = {name for name in after if after[name] != before.get(name)}
    pyc = next(name for name in after if name.startswith(_pyc_prefix(in_zip)))
    assert in_zip in changed
    assert pyc in changed
    assert again.sha256 == force_sha256(path)


def _raise(self: LambdaZipCommand) -> None:
    raise AssertionError("the project was loaded")


def _pyc_prefix(name: str) -> str:
    """How the name of a module's bytecode in the zip begins."""
    directory, _, file = name.rpartition("/")
    cache = f"{directory}/__pycache__" if directory else "__pycache__"
    return f"{cache}/{file.removesuffix('.py')}."


def test_the_project_record_lists_the_edited_file_as_it_is_now(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    first_build(path)
    handler = path / "src" / "hello_pure" / "handler.py"
    edit(handler)
    again = Build(path, ARGS)
    assert patched(again)
    record = zip_bytes(again.zip_path)["hello_pure-0.1.0.dist-info/RECORD"].decode()
    row = next(line for line in record.splitlines() if line.startswith("hello_pure/handler.py,"))
    assert row.endswith(f",{handler.stat().st_size}")


def test_touched_with_the_same_bytes_writes_nothing(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    built = first_build(path)
    state = built.zip_path.stat()
    handler = path / "src" / "hello_pure" / "handler.py"
    handler.write_bytes(handler.read_bytes())
    again = Build(path, ARGS)
    assert patched(again)
    assert "Up to date" in again.output
    assert built.zip_path.stat().st_mtime_ns == state.st_mtime_ns
    assert "nothing read by the last build changed" in Build(path, ARGS).output


def test_an_edit_that_does_not_compile_drops_its_bytecode_as_a_full_build_does(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    first_build(path)
    edit(path / "src" / "hello_pure" / "handler.py", "\ndef broken(:\n")
    again = Build(path, ARGS)
    assert patched(again)
    names = set(zip_bytes(again.zip_path))
    assert "hello_pure/handler.py" in names
    assert not any(name.startswith("hello_pure/__pycache__/handler.") for name in names)
    assert any(name.startswith("hello_pure/__pycache__/__init__.") for name in names)
    assert again.sha256 == force_sha256(path)


@pytest.mark.parametrize(
    "change",
    [
        "a new module",
        "pyproject.toml edited",
        "the module made executable",
        "the zip touched",
        "a module removed",
    ],
)
def test_anything_but_an_edit_of_the_project_files_takes_the_full_path(
    project: Callable[[str], Path], stamps_here: Path, change: str
) -> None:
    path = project("pure-python")
    built = first_build(path)
    package = path / "src" / "hello_pure"
    edit(package / "handler.py")
    if change == "a new module":
        (package / "extra.py").write_text("VALUE = 1\n")
    elif change == "pyproject.toml edited":
        pyproject = path / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace("pure-Python", "pure Python"))
    elif change == "the module made executable":
        (package / "handler.py").chmod(0o755)
    elif change == "the zip touched":
        os.utime(built.zip_path, (2_000_000_000, 2_000_000_000))
    else:
        (package / "__init__.py").unlink()
    full = Build(path, ARGS)
    assert not patched(full)
    assert full.sha256 == force_sha256(path)


def test_excludes_are_never_patched(project: Callable[[str], Path], stamps_here: Path) -> None:
    """RECORD lists the excluded files too: the zip alone cannot tell their rows."""
    path = project("pure-python")
    arguments = f"{ARGS} --exclude 'dateutil/zoneinfo/*'"
    first_build(path, arguments)
    edit(path / "src" / "hello_pure" / "handler.py")
    assert not patched(Build(path, arguments))


def test_a_file_the_zip_may_come_from_twice_is_never_patched(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    """A copy of a module elsewhere in the project (same path ending, same bytes): which one
    the wheel took cannot be told from the listing, so an edit of either is built in full."""
    path = project("pure-python")
    copy = path / "build" / "lib" / "hello_pure" / "handler.py"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(path / "src" / "hello_pure" / "handler.py", copy)
    first_build(path)
    (stamp,) = stamps_here.glob("*.json")
    assert json.loads(stamp.read_text())["edit"] is None
    edit(copy)
    assert not patched(Build(path, ARGS))


def test_a_damaged_or_hostile_edit_record_is_ignored(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    first_build(path)
    (stamp,) = stamps_here.glob("*.json")
    document = json.loads(stamp.read_text())
    document["edit"]["sources"][0][2] = "../../outside.py"  # a name that leaves the zip's root
    stamp.write_text(json.dumps(document))
    edit(path / "src" / "hello_pure" / "handler.py")
    assert not patched(Build(path, ARGS))


def test_a_stamp_naming_another_zip_never_gets_it_written(
    project: Callable[[str], Path], stamps_here: Path, tmp_path: Path
) -> None:
    """A stamp is read, not trusted: a zip it names that the command would not write (moved
    elsewhere, its new state recorded; every other input reads as before) is not patched."""
    path = project("pure-python")
    built = first_build(path)
    elsewhere = tmp_path / "elsewhere.zip"
    shutil.move(built.zip_path, elsewhere)
    before = elsewhere.read_bytes()
    info = elsewhere.stat()
    (stamp,) = stamps_here.glob("*.json")
    document = json.loads(stamp.read_text())
    state = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode, info.st_ino]
    document["outputs"][0] = [str(elsewhere), document["outputs"][0][1], state]
    stamp.write_text(json.dumps(document))
    edit(path / "src" / "hello_pure" / "handler.py")
    assert not patched(Build(path, ARGS))
    assert elsewhere.read_bytes() == before


def test_the_split_layout_patches_the_function_zip_and_leaves_the_layer(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    arguments = f"{ARGS} --layout split"
    first_build(path, arguments)
    (layer,) = (path / "dist").glob("*-layer.zip")
    state, layer_bytes = layer.stat(), layer.read_bytes()
    edit(path / "src" / "hello_pure" / "handler.py")
    again = Build(path, arguments)
    assert patched(again)
    assert layer.stat().st_mtime_ns == state.st_mtime_ns
    patched_bytes = again.zip_path.read_bytes()
    forced = Build(path, f"{arguments} --force")
    assert forced.status == 0, forced.error
    assert again.zip_path.read_bytes() == patched_bytes
    assert layer.read_bytes() == layer_bytes


@pytest.mark.docker
def test_the_docker_builder_patches_where_its_bytecode_is_compiled_here(
    project: Callable[[str], Path],
    stamps_here: Path,
    verdicts_here: Path,
    stand_in_image: str,
) -> None:
    """The project's bytecode compiles here once the image was seen to compile as this Python
    does (its verdict): from then on an edit is patched, as the full path would build it."""
    path = project("pure-python")
    arguments = f"--runtime python3.11 --builder docker --image {stand_in_image}"
    first_build(path, arguments)  # the image compiles; the verdict is reached
    assert json.loads(verdicts_here.read_text()) != {}
    handler = path / "src" / "hello_pure" / "handler.py"
    edit(handler)
    full = Build(path, arguments)  # compiled here now, so the next edit can be patched
    assert not patched(full)
    edit(handler, "\n# and again\n")
    again = Build(path, arguments)
    assert patched(again)
    assert again.sha256 == force_sha256(path, arguments)
