"""A third pass of bad input (local builder): what once gave an empty zip with exit 0, a crash
that stopped every function, or a message that named neither the file nor the fix."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unicodedata
import zipfile
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.handler import check_handler
from poetry_lambda_zip.tree_cache import _reason
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

LOCAL = "--runtime python3.11 --builder local"


def test_an_include_that_matches_nothing_is_no_empty_zip(project: Callable[[str], Path]) -> None:
    path = project("functions-dirs")
    pyproject = path / "pyproject.toml"
    text = pyproject.read_text().replace('include = ["updater/**/*.py"]', 'include = ["nope/*.py"]')
    text = text.replace('handler = "updater.lambda_func.handler"\n', "")  # none to check
    pyproject.write_text(text.replace("root = false", 'root = false\nlayout = "split"'))
    result = Build(path, f"{LOCAL} updater")
    assert result.status == 2, result.output
    assert "updater.zip would hold no file: include ('nope/*.py') matches no file" in result.error
    assert "Lambda refuses an empty package" in result.error
    assert not (path / "dist").exists()


def test_a_file_name_that_is_not_utf8_fails_its_function_alone(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    bad = os.fsencode(path / "updater") + b"/caf\xe9.py"
    with open(bad, "w") as handle:
        handle.write("X = 1\n")
    result = Build(path, f"{LOCAL} --json")
    assert result.status == 2, result.error
    assert "caf\\xe9.py" in result.error  # the file, named
    assert "not UTF-8" in result.error
    document = json.loads(result.output)
    by_name = {f["function"]: f for f in document["functions"]}
    assert not by_name["updater"]["ok"]
    assert by_name["updater"]["error"]["exit_code"] == 2
    assert by_name["daily_job"]["ok"]
    assert by_name["db_tasks"]["ok"]
    assert (path / "dist" / "daily_job.zip").is_file()


def test_source_date_epoch_after_2107_names_the_variable(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "4354819200")
    result = Build(project("pure-python"), LOCAL)
    assert result.status == 2
    assert "SOURCE_DATE_EPOCH=4354819200 is after 2107-12-31 23:59:58 UTC" in result.error
    assert "Traceback" not in result.error


def test_an_include_path_too_long_for_the_scratch_directory_names_the_file(
    project: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path the project holds that is too long below the build's (longer) scratch
    directory: the include file and the way out are named."""
    scratch = tmp_path / ("t" * 200)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = project("non-package")
    deep = path
    while len(os.fsencode(deep)) < 3800:
        deep = deep / ("d" * 200)
    os.makedirs(deep)
    (deep / "settings.json").write_text("{}\n")
    relative = deep.relative_to(path).as_posix()
    result = Build(path, f"{LOCAL} --include 'index.py' --include '{relative}/*.json'")
    assert result.status == 2, result.output
    assert "settings.json is at" in result.error
    assert "longer than this system allows" in result.error
    assert "point TMPDIR at a shorter directory" in result.error


def test_an_include_over_lambdas_limit_is_refused_from_its_size(
    project: Callable[[str], Path],
) -> None:
    path = project("non-package")
    big = path / "data" / "huge.bin"
    big.parent.mkdir()
    with big.open("wb") as handle:  # sparse: 300 MB that take no disk
        handle.truncate(300_000_000)
    result = Build(path, f"{LOCAL} --include index.py --include 'data/*'")
    assert result.status == 6, result.output
    total = 300_000_000 + (path / "index.py").stat().st_size
    assert f"The include files alone come to {total:,} bytes" in result.error
    assert "300.0 MB  data/huge.bin" in result.error
    assert not (path / "dist").exists()


def test_json_of_a_failed_single_build_is_on_stdout(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    result = Build(path, f"{LOCAL} --json --handler hello_pure.nothere.handler")
    assert result.status == 2
    document = json.loads(result.output)
    assert document["ok"] is False
    assert document["error"]["exit_code"] == 2
    assert "hello_pure.nothere" in document["error"]["message"]


def test_a_copy_failing_for_many_files_is_one_line() -> None:
    failures = [
        (f"/src/{n}", f"/dst/{n}", "[Errno 28] No space left on device") for n in range(5000)
    ]
    reason = _reason(shutil.Error(failures))
    assert reason == "[Errno 28] No space left on device; 4999 files more"


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        ("--include ''", "The include pattern is empty: it names no file."),
        ("--include 'src:hello_pure/*.py:a/../lib'", None),
    ],
)
def test_include_paths_are_judged_as_written_out(
    project: Callable[[str], Path], option: str, shown: str | None
) -> None:
    path = project("pure-python")
    result = Build(path, f"{LOCAL} {option}")
    if shown is None:
        assert result.status == 0, result.error
        with zipfile.ZipFile(result.zip_path) as archive:
            assert "lib/hello_pure/handler.py" in archive.namelist()
    else:
        assert result.status == 2
        assert shown in result.error


def test_a_dry_run_of_the_local_builder_names_no_image(project: Callable[[str], Path]) -> None:
    result = Build(project("pure-python"), f"{LOCAL} --dry-run")
    assert result.status == 0, result.error
    assert "Image    none (--builder local: no container)" in result.output


def test_names_one_on_macos_or_windows_are_said(project: Callable[[str], Path]) -> None:
    path = project("non-package")
    (path / "config" / "Settings.json").write_text("{}\n")
    result = Build(path, f"{LOCAL} --include index.py --include 'config/*.json'")
    assert result.status == 0, result.error
    assert any(
        "config/Settings.json and config/settings.json differ only in case" in warning
        for warning in result.warnings
    ), result.warnings


def test_a_handler_typed_composed_for_a_decomposed_file_says_so() -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    with pytest.raises(ConfigError, match="another Unicode normalisation"):
        check_handler("café.handler", [f"{decomposed}.py"])


@pytest.mark.parametrize("pattern", ["pkg/*", "pkg", "pkg/**/*.py"])
def test_a_link_to_a_directory_is_never_followed_and_always_named(
    project: Callable[[str], Path], pattern: str
) -> None:
    path = project("non-package")
    (path / "real").mkdir()
    (path / "real" / "a.py").write_text("A = 1\n")
    (path / "pkg").mkdir()
    (path / "pkg" / "b.py").write_text("B = 1\n")
    (path / "pkg" / "link").symlink_to("../real")
    result = Build(path, f"{LOCAL} --include index.py --include '{pattern}'")
    assert result.status == 0, result.error
    with zipfile.ZipFile(result.zip_path) as archive:
        names = set(archive.namelist())
    assert "pkg/b.py" in names
    assert not [name for name in names if name.startswith("pkg/link")]
    assert any("Left pkg/link out of include: it is a link to a directory" in w
               for w in result.warnings), result.warnings  # fmt: skip
