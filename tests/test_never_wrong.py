"""Never a wrong zip with exit 0: outputs of one run that are one file, function names that
leave dist/, zips changed after they were written, what a build never reads, two builds at
once (local builder; the differential test tries the same at random, tests/test_differential.py).
"""

from __future__ import annotations

import os
import threading
import time
import zipfile
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

import pytest

from poetry_lambda_zip import archive as archive_module
from poetry_lambda_zip import pipeline
from poetry_lambda_zip.fingerprint import read_recorded
from poetry_lambda_zip.one_at_a_time import one_build_at_a_time
from poetry_lambda_zip.shortcut.stamps import outputs_now
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable

LOCAL = "--runtime python3.11 --builder local"


def functions_project(path: Path, functions: str, top: str = "") -> Path:
    """fixtures/functions-package with another [tool.poetry-lambda-zip] table."""
    pyproject = path / "pyproject.toml"
    text = pyproject.read_text()
    text = text[: text.index("[tool.poetry-lambda-zip]")]
    pyproject.write_text(f"{text}[tool.poetry-lambda-zip]\n{top}\n{functions}")
    return path


@pytest.fixture
def nothing_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a wheel was about to be fetched")

    monkeypatch.setattr(pipeline, "WheelFetcher", refuse)


# ---- outputs of one run that are one file ----------------------------------------------------


@pytest.mark.usefixtures("nothing_fetched")
@pytest.mark.parametrize(
    ("functions", "top", "path", "clash"),
    [
        (
            '[tool.poetry-lambda-zip.functions.orders]\nhandler = "app.orders_lambda.handler"\n'
            'output = "dist/same.zip"\n[tool.poetry-lambda-zip.functions.s3_event]\n'
            'handler = "app.s3_event_lambda.handler"\noutput = "dist/same.zip"\n',
            "",
            "dist/same.zip",
            "function orders's zip and function s3_event's zip both write",
        ),
        (
            '[tool.poetry-lambda-zip.functions.one]\nhandler = "app.orders_lambda.handler"\n'
            '[tool.poetry-lambda-zip.functions.two]\nhandler = "app.s3_event_lambda.handler"\n'
            'output = "dist/one-layer.zip"\n',
            'layout = "split"',
            "dist/one-layer.zip",
            "function one's layer and function two's zip both write",
        ),
        (
            '[tool.poetry-lambda-zip.functions.orders]\nhandler = "app.orders_lambda.handler"\n'
            'output = "dist/Orders.zip"\n[tool.poetry-lambda-zip.functions.s3_event]\n'
            'handler = "app.s3_event_lambda.handler"\noutput = "dist/orders.zip"\n',
            "",
            "dist/Orders.zip",
            "one file where the file system ignores case",
        ),
    ],
    ids=["same output", "a layer's path", "case"],
)
def test_two_outputs_that_are_one_file_stop_the_run_before_anything(
    project: Callable[[str], Path], functions: str, top: str, path: str, clash: str
) -> None:
    root = functions_project(project("functions-package"), functions, top)
    for arguments in (LOCAL, f"{LOCAL} --dry-run"):
        result = Build(root, arguments)
        assert result.status == 2, result.output
        assert "Two outputs of this run are one file" in result.error
        assert clash in result.error
        assert str(root / path) in result.error
        assert not (root / "dist").exists()


@pytest.mark.parametrize(
    ("name", "nearest"),
    [("../../escape", "'escape'"), ("", None), ("orders.v2", "'orders-v2'"), ("x" * 65, "'xxx")],
)
def test_a_function_name_lambda_would_refuse_stops_the_run(
    project: Callable[[str], Path], name: str, nearest: str | None
) -> None:
    functions = (
        f'[tool.poetry-lambda-zip.functions."{name}"]\nhandler = "app.orders_lambda.handler"\n'
    )
    root = functions_project(project("functions-package"), functions)
    result = Build(root, LOCAL)
    assert result.status == 2, result.output
    assert f'[tool.poetry-lambda-zip.functions."{name}"] is not a Lambda function name' in (
        result.error
    )
    assert "1 to 64 letters, digits, - and _" in result.error
    if nearest is not None:
        assert f"Did you mean {nearest}" in result.error
    else:
        assert "Did you mean" not in result.error
    assert not (root / "dist").exists()
    assert not list(root.parent.parent.glob("*.zip"))


# ---- a zip changed after it was written ------------------------------------------------------


def added_entry(path: Path) -> None:
    """What ``zip -g dist/fn.zip extra.py`` does: an entry added, the comment kept."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("extra.py", "ADDED = True\n")


@pytest.mark.parametrize("stamps", [False, True], ids=["full path", "stamps"])
def test_a_zip_changed_after_it_was_written_is_rebuilt_and_said_so(
    project: Callable[[str], Path], request: pytest.FixtureRequest, stamps: bool
) -> None:
    if stamps:
        request.getfixturevalue("stamps_here")
    path = project("pure-python")
    first = Build(path, LOCAL)
    assert first.status == 0, first.error
    written = first.zip_path.read_bytes()
    added_entry(first.zip_path)
    again = Build(path, LOCAL)
    assert again.status == 0, again.error
    assert "Up to date" not in again.output
    assert "(replaced a zip that was changed after it was written)" in again.output
    assert first.zip_path.read_bytes() == written
    assert "Up to date" in Build(path, LOCAL).output


def test_the_stamps_trust_no_output_that_is_not_as_written(
    project: Callable[[str], Path],
) -> None:
    """The shortcut checks each output's seal too, whatever its file's state says."""
    path = project("pure-python")
    output = Build(path, LOCAL).zip_path
    recorded = read_recorded(output)
    assert recorded is not None
    assert recorded.intact
    assert outputs_now([output]) is not None
    info = output.stat()
    data = bytearray(output.read_bytes())
    data[100] ^= 1  # the same size; the mtime put back below
    output.write_bytes(bytes(data))
    os.utime(output, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert read_recorded(output) is not None  # still our comment ...
    assert outputs_now([output]) is None  # ... but not as written: no shortcut


def test_a_shared_layer_is_checked_once_a_run(
    project: Callable[[str], Path], stamps_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two functions' stamps name their one layer: a no-op reads it once, not once for each
    function (nor again for the patch's check)."""
    path = project("functions-package")
    assert Build(path, LOCAL).status == 0
    hashed: list[str] = []
    original = archive_module._sha256_of

    def counting(handle: IO[bytes], size: int) -> Any:
        hashed.append(Path(str(getattr(handle, "name", ""))).name)
        return original(handle, size)

    monkeypatch.setattr(archive_module, "_sha256_of", counting)
    again = Build(path, LOCAL)
    assert "nothing read by the last build changed" in again.output
    assert sorted(hashed) == ["orders-layer.zip", "orders.zip", "s3_event.zip"]


# ---- what a build never reads, and what it reads all the same --------------------------------


def test_an_include_that_names_a_never_read_directory_is_read_every_time(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    path = project("pure-python")
    settings = path / "node_modules" / "cfg" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"retries": 3}\n')
    (path / "pyproject.toml").write_text(
        (path / "pyproject.toml").read_text()
        + '\n[tool.poetry-lambda-zip]\ninclude = ["node_modules/cfg/*.json"]\n'
    )
    first = Build(path, LOCAL)
    assert first.status == 0, first.error
    settings.write_text('{"retries": 5}\n')
    again = Build(path, LOCAL)
    assert again.status == 0, again.error
    assert "Up to date" not in again.output
    with zipfile.ZipFile(again.zip_path) as archive:
        assert archive.read("node_modules/cfg/settings.json") == b'{"retries": 5}\n'


def test_a_wildcard_does_not_reach_into_a_never_read_directory(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    for name in ("conf/app.json", "node_modules/x/package.json", ".aws-sam/build/app.json"):
        (path / name).parent.mkdir(parents=True)
        (path / name).write_text("{}\n")
    (path / "pyproject.toml").write_text(
        (path / "pyproject.toml").read_text()
        + '\n[tool.poetry-lambda-zip]\ninclude = ["**/*.json"]\n'
    )
    built = Build(path, LOCAL)
    assert built.status == 0, built.error
    with zipfile.ZipFile(built.zip_path) as archive:
        names = {name for name in archive.namelist() if name.endswith(".json")}
    assert names == {"conf/app.json"}


def test_a_never_read_directory_inside_the_package_ships_and_is_watched(
    project: Callable[[str], Path], stamps_here: Path
) -> None:
    """poetry-core ships a package's directories whole (but __pycache__): the stamps cannot
    vouch for a package holding one no listing reads, so every build is the full one."""
    path = project("pure-python")
    assert Build(path, LOCAL).status == 0
    assert "nothing read by the last build changed" in Build(path, LOCAL).output
    asset = path / "src" / "hello_pure" / "node_modules" / "asset.txt"
    asset.parent.mkdir()
    asset.write_text("one\n")
    built = Build(path, LOCAL)
    assert built.status == 0, built.error
    with zipfile.ZipFile(built.zip_path) as archive:
        assert archive.read("hello_pure/node_modules/asset.txt") == b"one\n"
    asset.write_text("two\n")
    again = Build(path, LOCAL)
    assert "nothing read by the last build changed" not in again.output
    with zipfile.ZipFile(again.zip_path) as archive:
        assert archive.read("hello_pure/node_modules/asset.txt") == b"two\n"


# ---- two builds at once ----------------------------------------------------------------------


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self.lines.append(f"{name} {detail}")


def test_a_second_build_of_a_project_waits_for_the_first(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with one_build_at_a_time(tmp_path, Lines()):  # type: ignore[arg-type]
            held.set()
            release.wait(10)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(10)
    shown = Lines()
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with one_build_at_a_time(tmp_path, shown):  # type: ignore[arg-type]
        order.append("second runs")
    thread.join()
    assert order == ["first done", "second runs"]
    assert time.monotonic() - started >= 0.25
    assert shown.lines[0].startswith("Waiting for another poetry lambda-zip building")
