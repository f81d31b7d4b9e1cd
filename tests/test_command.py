"""The command in-process: options and errors as the user sees them, without a Docker engine."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cleo.io.buffered_io import BufferedIO
from cleo.io.outputs.output import Verbosity
from cleo.testers.application_tester import ApplicationTester
from cleo.testers.command_tester import CommandTester
from poetry.console.application import Application
from poetry.factory import Factory

from poetry_lambda_zip import command as command_module
from poetry_lambda_zip.command import ConsoleProgress
from poetry_lambda_zip.command import LambdaZipCommand
from tests.docker_helpers import Build
from tests.docker_helpers import sealed_again

Run = Callable[[Path, str], CommandTester]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the docker SDK at a port where nothing listens."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")


def test_missing_lock_exits_3_and_says_run_poetry_lock(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    (path / "poetry.lock").unlink()
    tester = run_command(path, "--runtime python3.12")
    assert tester.status_code == 3
    error = tester.io.fetch_error()
    assert "No lock file" in error
    assert "Run `poetry lock`" in error
    assert "Traceback" not in error
    assert not (path / "dist").exists()


def test_the_command_has_the_interpreters_last_collections_skip_what_it_holds(
    project: Callable[[str], Path], run_command: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poetry's last garbage collections at exit walk every object it and this command hold
    (0.3 s after the zip is written); the command freezes them at exit, once per process."""
    registered: list[object] = []
    monkeypatch.setattr("poetry_lambda_zip.command.atexit.register", registered.append)
    command_module._skip_final_collections.cache_clear()
    path = project("pure-python")
    for _ in range(2):
        tester = run_command(path, "--runtime python3.12 --dry-run")
        assert tester.status_code == 0, tester.io.fetch_error()
    assert registered == [gc.freeze]


def test_stale_lock_exits_3_and_names_the_problem(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    pyproject = path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(">=2.9,<3", ">=2.8,<3"))
    tester = run_command(path, "--runtime python3.12")
    assert tester.status_code == 3
    assert "out of date" in tester.io.fetch_error()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("--runtime python3.8", "Unknown runtime 'python3.8'"),
        ("--arch armv7l", "Unknown architecture 'armv7l'"),
        ("--only main --with dev", "--only cannot be combined"),
        ("--with docs", "Group 'docs' (from --with) is not defined"),
        ("-E nope", "Extra(s) not defined by the project: nope"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    project: Callable[[str], Path], run_command: Run, arguments: str, message: str
) -> None:
    tester = run_command(project("markers"), arguments)
    assert tester.status_code == 2
    assert message in tester.io.fetch_error()


@pytest.mark.usefixtures("no_engine")
def test_without_runtime_the_newest_allowed_one_is_chosen_and_said(
    project: Callable[[str], Path], run_command: Run
) -> None:
    tester = run_command(project("markers"), "--dry-run")
    output = tester.io.fetch_output()
    assert "Runtime python3.14: the newest Lambda runtime allowed" in output
    assert "for python3.14 on x86_64" in output


@pytest.mark.usefixtures("no_engine")
def test_unreachable_engine_exits_4_and_says_where_it_looked(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    tester = run_command(path, "--runtime python3.11 --builder docker")
    assert tester.status_code == 4
    error = tester.io.fetch_error()
    assert "No Docker engine answers at DOCKER_HOST=tcp://127.0.0.1:9" in error
    assert "Traceback" not in error
    assert not (path / "dist").exists()


@pytest.mark.usefixtures("no_engine")
def test_unknown_config_key_warns_with_the_nearest_valid_key(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    with (path / "pyproject.toml").open("a") as handle:
        handle.write('\n[tool.poetry-lambda-zip]\narchitecture = "arm64"\n')
    error = run_command(path, "--runtime python3.11 --dry-run").io.fetch_error()
    assert "Unknown key 'architecture' in [tool.poetry-lambda-zip] is ignored." in error
    assert "Did you mean 'arch'?" in error


@pytest.mark.usefixtures("no_engine")
def test_traceback_only_with_debug_verbosity(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    for verbosity, shown in ((Verbosity.VERY_VERBOSE, False), (Verbosity.DEBUG, True)):
        command = LambdaZipCommand()
        command.set_poetry(Factory().create_poetry(path))
        tester = CommandTester(command)
        tester.execute("--runtime python3.11 --builder docker", verbosity=verbosity)
        assert ("Traceback" in tester.io.fetch_error()) is shown


def test_include_pattern_leaving_the_project_is_refused(
    project: Callable[[str], Path], run_command: Run
) -> None:
    tester = run_command(project("non-package"), "--runtime python3.11 --include ../secrets.txt")
    assert tester.status_code == 2
    assert "points outside the project" in tester.io.fetch_error()


def test_plugin_registers_the_command_with_poetry() -> None:
    from cleo.testers.application_tester import ApplicationTester
    from poetry.console.application import Application

    tester = ApplicationTester(Application())
    assert tester.execute("lambda-zip --help") == 0
    help_text = tester.io.fetch_output()
    for option in ("--runtime", "--arch", "--image", "--output", "--with", "--extras"):
        assert option in help_text
    assert "[tool.poetry-lambda-zip]" in help_text


@pytest.mark.usefixtures("no_engine")
def test_relative_directory_option_builds_the_project_wheel(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cleo.testers.application_tester import ApplicationTester
    from poetry.console.application import Application

    path = project("binary-wheel")
    monkeypatch.chdir(path.parent)
    tester = ApplicationTester(Application())
    status = tester.execute(f"lambda-zip -C {path.name} --runtime python3.11 --builder docker")
    # The wheel is built before the engine is asked for: exit 4 means it was built.
    assert status == 4, tester.io.fetch_error()
    assert "No Docker engine answers" in tester.io.fetch_error()


def test_dry_run_for_arm64_names_aarch64_wheels_and_builds_nothing(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("binary-wheel")
    tester = run_command(path, "--dry-run --arch arm64 --runtime python3.12")
    assert tester.status_code == 0
    output = tester.io.fetch_output()
    assert "Target   python3.12 on arm64 (CPython 3.12, glibc 2.34)" in output
    assert "Image    public.ecr.aws/sam/build-python3.12:latest-arm64" in output
    pydantic_core = next(line for line in output.splitlines() if "pydantic-core" in line)
    assert "cp312-cp312-manylinux" in pydantic_core
    assert pydantic_core.rstrip().endswith("aarch64.whl (PyPI; sha256 checked)")
    assert "pytest" in output.split("Left out")[1]
    assert not (path / "dist").exists()


def test_dry_run_json_is_the_plan_as_data(project: Callable[[str], Path], run_command: Run) -> None:
    tester = run_command(project("markers"), "--dry-run --json --runtime python3.10 -E yaml")
    assert tester.status_code == 0
    plan = json.loads(tester.io.fetch_output())
    assert plan["schema"] == 1
    assert plan["target"]["runtime"] == "python3.10"
    assert plan["target"]["platform_tags"][0] == "manylinux_2_26_x86_64"
    assert {d["name"] for d in plan["distributions"]} == {"pyyaml", "six", "tomli"}
    six = next(d for d in plan["distributions"] if d["name"] == "six")
    assert six["artifact"]["kind"] == "wheel"
    assert six["hash_checked"] is True
    assert six["source"] == {
        "type": "index", "url": None, "name": None, "reference": None, "subdirectory": None
    }  # fmt: skip
    reasons = {e["name"]: e["reason"] for e in plan["excluded"]}
    assert reasons["iniconfig"] == "only in group(s) dev"
    assert "win32" in reasons["pywin32"]
    # Human lines went to stderr, so stdout stays one JSON document.
    assert "resolve" in tester.io.fetch_error()


def test_an_unknown_option_exits_2_and_names_the_nearest(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    result = Build(path, "--imagee x")
    assert result.status == 2
    assert 'The option "--imagee" does not exist' in result.error
    assert "Did you mean --image?" in result.error
    runtime = Build(path, "--runtime 3.11 --builder local")
    assert runtime.status == 2
    assert "Unknown runtime '3.11'" in runtime.error
    assert "Did you mean python3.11?" in runtime.error


def test_help_names_the_defaults() -> None:
    tester = ApplicationTester(Application())
    assert tester.execute("lambda-zip --help", decorated=False) == 0
    shown = " ".join(tester.io.fetch_output().split())
    assert "(default: the newest your requires-python allows)" in shown
    assert "(default: x86_64)" in shown
    assert "--no-root" in shown


def test_the_result_names_sizes_in_units_that_fit_and_lambdas_code_sha256(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    result = Build(path, "--runtime python3.11 --builder local --layout split --json")
    assert result.status == 0, result.error
    outputs = json.loads(result.output)["outputs"]
    for output in outputs:
        digest = hashlib.sha256(Path(output["path"]).read_bytes()).digest()
        assert output["code_sha256"] == base64.b64encode(digest).decode()
    shown = Build(path, "--runtime python3.11 --builder local --layout split --force")
    function_zip = next(line for line in shown.output.splitlines() if " zipped, " in line)
    assert re.match(r"  \d+\.\d kB zipped, \d+\.\d kB unzipped, ", function_zip), function_zip
    assert f"code_sha256 {outputs[0]['code_sha256']} (Lambda's CodeSha256)" in shown.output


def test_a_poetry_that_keeps_the_project_directory_private_builds(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poetry 2.0 has no public ``Application.project_directory`` (2.1 added it): the project
    is then found as Poetry loads it, -C or not."""
    from poetry.console.application import Application

    monkeypatch.setattr(Application, "project_directory", property(lambda self: None))
    path = project("pure-python")
    built = Build(path, "--runtime python3.11 --builder local")
    assert built.status == 0, built.error
    assert built.zip_path.parent == path / "dist"


def test_replacing_another_builders_zip_is_said(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project("pure-python")
    assert Build(path, "--runtime python3.11 --builder local").status == 0
    output = next((path / "dist").glob("*.zip"))
    with zipfile.ZipFile(output, "a") as archive:  # as if the docker builder had written it
        archive.comment = archive.comment.replace(b" by local", b" by docker")
    sealed_again(output)
    again = Build(path, "--runtime python3.11 --builder local --force")
    assert again.status == 0, again.error
    assert "(replaced the zip the docker builder had written there)" in again.output
    # A rebuild over its own builder's zip (an edit, --force) is not worth a line.
    forced = Build(path, "--runtime python3.11 --builder local --force")
    assert "replaced the zip" not in forced.output


@pytest.mark.parametrize(
    ("interactive", "ci", "as_json", "drawn"),
    [(True, None, False, True), (False, None, False, False), (True, "true", False, False),
     (True, None, True, False)],
)  # fmt: skip
def test_progress_bars_only_for_a_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, interactive: bool, ci: str | None, as_json: bool, drawn: bool
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    io = BufferedIO(decorated=True)
    io.interactive(interactive)
    progress = ConsoleProgress(io, stdout_is_data=as_json)
    for done in range(1, 5):
        progress.count("fetch", done, 4)
    progress.phase("fetch", 0.5, "4 wheels")
    bar = "[" + "=" * 28 + "] 100%"
    error, output = io.fetch_error(), io.fetch_output()
    assert (bar in error) == drawn
    assert "4 wheels" in (error if as_json else output)


def test_a_reader_that_stops_early_does_not_stop_the_build(
    project: Callable[[str], Path], tmp_path: Path
) -> None:
    """`poetry lambda-zip | head -1`: the lines after the first find the pipe closed; the build
    goes on, writes its zip and exits 0 without an error about the pipe."""
    path = project("pure-python")
    command = [sys.executable, "-m", "poetry", "lambda-zip", "-C", str(path), "--runtime",
               "python3.11", "--builder", "local"]  # fmt: skip
    environment = {**os.environ, "POETRY_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does after its line
    _, error = process.communicate(timeout=600)
    assert process.returncode == 0, error.decode()
    assert first.startswith(b"resolve")
    assert len(list((path / "dist").glob("*.zip"))) == 1
    assert b"pipe" not in error.lower()
    assert b"Traceback" not in error
