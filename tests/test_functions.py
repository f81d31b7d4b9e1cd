"""Real projects as they are: several functions from one lock, projects without a package,
re-rooted includes, handlers checked before anything is written, old locks and runtimes."""

from __future__ import annotations

import json
import zipfile
from typing import TYPE_CHECKING

import pytest
from cleo.io.outputs.output import Verbosity

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.project import collect_includes
from poetry_lambda_zip.request import Include
from tests.conftest import FIXTURES
from tests.docker_helpers import RUNNER
from tests.docker_helpers import Build
from tests.docker_helpers import distributions
from tests.docker_helpers import run_in_task
from tests.docker_helpers import unpack

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import docker
    from cleo.testers.command_tester import CommandTester

    Run = Callable[[Path, str], CommandTester]
    Invoke = Callable[[Path, str, dict[str, object]], object]

LOCAL = "--runtime python3.11 --builder local"
DEPENDENCIES = {"certifi", "charset-normalizer", "idna", "python-dateutil", "requests", "six",
                "urllib3"}  # fmt: skip


def own_files(zip_path: Path, top: str) -> set[str]:
    """The zip's files below the directory ``top``."""
    with zipfile.ZipFile(zip_path) as archive:
        return {name for name in archive.namelist() if name.startswith(f"{top}/")}


def tops(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return {name.split("/")[0] for name in archive.namelist()}


def lines(result: Build, phase: str) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith(f"{phase} ")]


def table(result: Build) -> dict[str, tuple[str, str]]:
    """The final table's rows of functions: (output, state) by function."""
    found = False
    rows: dict[str, tuple[str, str]] = {}
    for line in result.output.splitlines():
        if line.split() == ["function", "output", "zipped", "unzipped", "state"]:
            found = True
        elif found and line and not line.startswith(" "):
            words = line.split()
            if words[1:2] == ["-"] or (len(words) > 1 and words[1].endswith(".zip")):
                state = "up to date" if line.endswith("up to date") else words[-1]
                rows[words[0]] = (words[1], state)
            else:
                break
    assert found, result.output
    return rows


# ---- no Docker -------------------------------------------------------------------------------


def test_several_functions_share_one_tree_and_an_edit_rebuilds_only_its_zip(
    project: Callable[[str], Path], tree_cache: Path
) -> None:
    path = project("functions-dirs")
    first = Build(path, LOCAL)
    assert first.status == 0, first.error
    # One requirement set: fetched and unpacked once, for all three.
    assert len(lines(first, "fetch")) == 1
    assert len(lines(first, "unpack")) == 1
    zips = {name: path / "dist" / f"{name}.zip" for name in ("daily_job", "updater", "db_tasks")}
    for name, zip_path in zips.items():
        assert distributions(zip_path) == DEPENDENCIES
        own = own_files(zip_path, name)
        assert own == {f"{name}/lambda_func.py", f"{name}/__pycache__/lambda_func.cpython-311.pyc"}
        assert not tops(zip_path) & (set(zips) - {name})
    before = {name: zip_path.read_bytes() for name, zip_path in zips.items()}

    handler = path / "updater" / "lambda_func.py"
    handler.write_text(handler.read_text() + "\nVERSION = 2\n")
    second = Build(path, LOCAL)
    assert second.status == 0, second.error
    assert table(second) == {
        "daily_job": ("dist/daily_job.zip", "up to date"),
        "updater": ("dist/updater.zip", "built"),
        "db_tasks": ("dist/db_tasks.zip", "up to date"),
    }
    assert zips["updater"].read_bytes() != before["updater"]
    for name in ("daily_job", "db_tasks"):
        assert zips[name].read_bytes() == before[name]
    assert lines(second, "fetch") == []


def test_named_functions_only_and_a_dry_run_shows_each_plan(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    dry = Build(path, f"{LOCAL} --dry-run updater db_tasks")
    assert dry.status == 0, dry.error
    assert [line for line in dry.output.splitlines() if line.startswith("Function ")] == [
        "Function updater",
        "Function db_tasks",
    ]
    assert "Handler  updater.lambda_func.handler" in dry.output
    assert not (path / "dist").exists()
    one = Build(path, f"{LOCAL} daily_job")
    assert one.status == 0, one.error
    assert sorted(p.name for p in (path / "dist").iterdir()) == ["daily_job.zip"]
    unknown = Build(path, f"{LOCAL} daily_jobs")
    assert unknown.status == 2
    assert "No function is named 'daily_jobs'. Did you mean 'daily_job'?" in unknown.error


def test_one_failing_function_fails_alone_and_the_exit_code_is_the_worst(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    pyproject = path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"db_tasks.lambda_func.handler"', '"db_task.lambda_func.x"')
    )
    result = Build(path, f"{LOCAL} --json")
    assert result.status == 2, result.error
    report = json.loads(result.output)
    by_name = {entry["function"]: entry for entry in report["functions"]}
    assert [by_name[name]["ok"] for name in ("daily_job", "updater", "db_tasks")] == [
        True,
        True,
        False,
    ]
    error = by_name["db_tasks"]["error"]
    assert error["exit_code"] == 2
    assert "The closest module there is db_tasks.lambda_func." in error["message"]
    assert by_name["updater"]["result"]["outputs"][0]["path"] == str(path / "dist" / "updater.zip")
    assert sorted(p.name for p in (path / "dist").iterdir()) == ["daily_job.zip", "updater.zip"]
    assert "db_tasks: failed" in result.error


def test_a_fleet_says_shared_steps_once_and_ends_with_one_table_failures_last(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    pyproject = path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            '"daily_job/lambda_func.handler"', '"daily_jobs.lambda_func.x"'
        )
    )
    result = Build(path, LOCAL)
    assert result.status == 2, result.error
    output = result.output.splitlines()
    # Shared steps once, with the number of functions; no function's own steps.
    (resolved,) = lines(result, "resolve")
    assert "s  3 functions, 1 requirement set: 7 distributions for python3.11 on" in resolved
    assert len(lines(result, "unpack")) == 1
    assert "3 functions: 7 wheels for python3.11" in lines(result, "unpack")[0]
    assert "modules for python3.11" not in result.output  # each function's "compiled N"
    assert not [line for line in output if "updater" in line and "dist/" not in line]
    # One table: each function's output and state, the failed one last.
    assert table(result) == {
        "updater": ("dist/updater.zip", "built"),
        "db_tasks": ("dist/db_tasks.zip", "built"),
        "daily_job": ("-", "failed"),
    }
    assert list(table(result)) == ["updater", "db_tasks", "daily_job"]
    assert output[-1] == "3 functions: 2 built, 1 failed"
    # Its error after the table, on stderr.
    error = result.error.splitlines()
    assert error[0] == "daily_job: failed"
    assert "daily_jobs.lambda_func" in error[1]

    verbose = Build(path, f"{LOCAL} --force", Verbosity.VERBOSE)
    assert verbose.status == 2, verbose.error
    # With -v: each function's own steps, named, besides the shared ones.
    for name in ("updater", "db_tasks"):
        assert [line for line in verbose.output.splitlines() if f"{name}: compiled" in line]
        assert [line for line in lines(verbose, "resolve") if f"  {name}: 7 distributions" in line]
    assert [line for line in lines(verbose, "resolve") if "3 functions, 1 requirement set" in line]
    assert table(verbose)["daily_job"] == ("-", "failed")
    sums = [line for line in verbose.output.splitlines() if " sha256 " in line]
    assert [line.split()[:2] for line in sums] == [
        ["updater:", "dist/updater.zip"],
        ["db_tasks:", "dist/db_tasks.zip"],
    ]


def test_functions_of_two_requirement_sets_are_resolved_in_one_line(
    project: Callable[[str], Path],
) -> None:
    result = Build(project("functions-groups"), LOCAL)
    assert result.status == 0, result.error
    (resolved,) = lines(result, "resolve")
    assert "s  2 functions, 2 requirement sets: 7 distributions in all (2, 5) for" in resolved
    assert table(result) == {
        "orders": ("dist/orders.zip", "built"),
        "report": ("dist/report.zip", "built"),
    }


def test_a_single_function_of_a_table_shows_its_steps_and_the_json_keeps_its_fields(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    one = Build(path, f"{LOCAL} updater")
    assert one.status == 0, one.error
    assert "updater: compiled" in one.output  # one function: its steps are the build's
    assert table(one) == {"updater": ("dist/updater.zip", "built")}
    document = json.loads(Build(path, f"{LOCAL} --json").output)
    assert document["left_over"] == []
    entry = document["functions"][0]
    assert set(entry) == {"function", "ok", "result"}
    assert {"outputs", "written", "up_to_date", "distributions", "builder"} <= set(entry["result"])


def test_a_zip_written_for_a_function_no_longer_in_the_table_is_named_never_deleted(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-dirs")
    pyproject = path / "pyproject.toml"
    assert Build(path, f"{LOCAL} --layout split").status == 0
    dist = path / "dist"
    assert (dist / "daily_job-layer.zip").is_file()  # the layer all three share
    # daily_job renamed to nightly_job in the table; a zip of someone else's lies there too,
    # and one of ours under another extension.
    pyproject.write_text(
        pyproject.read_text().replace("functions.daily_job]", "functions.nightly_job]")
    )
    (dist / "theirs.zip").write_bytes((dist / "updater.zip").read_bytes()[:-200])
    (dist / "notes.txt").write_bytes((dist / "updater.zip").read_bytes())
    before = {p.name: p.read_bytes() for p in dist.iterdir()}
    again = Build(path, f"{LOCAL} --layout split")
    assert again.status == 0, again.error
    named = [line for line in again.warnings if "for no function of" in line]
    assert [line.split()[1] for line in named] == ["dist/daily_job-layer.zip", "dist/daily_job.zip"]
    assert "(one removed or renamed?)" in named[0]
    assert "whatever deploys dist/*.zip deploys it" in named[0]
    for name, data in before.items():
        assert (dist / name).read_bytes() == data  # never deleted, never changed
    assert table(again)["nightly_job"] == ("dist/nightly_job.zip", "built")
    # Building one function of the table: the others' zips are no strangers.
    one = Build(path, f"{LOCAL} --layout split updater --json")
    assert one.status == 0, one.error
    left = json.loads(one.output)["left_over"]
    assert left == [str(dist / "daily_job-layer.zip"), str(dist / "daily_job.zip")]
    assert len([line for line in one.warnings if "for no function of" in line]) == 2
    # One function's zip elsewhere (-o): the table's own zips in dist/ are still its own.
    elsewhere = Build(path, f"{LOCAL} --layout split updater -o {path / 'out' / 'u.zip'}")
    assert elsewhere.status == 0, elsewhere.error
    named = [line.split()[1] for line in elsewhere.warnings if "for no function of" in line]
    assert named == ["dist/daily_job-layer.zip", "dist/daily_job.zip"]


def test_split_functions_with_one_requirement_set_share_one_layer(
    project: Callable[[str], Path],
) -> None:
    path = project("functions-package")
    result = Build(path, LOCAL)
    assert result.status == 0, result.error
    dist = path / "dist"
    assert sorted(p.name for p in dist.iterdir()) == [
        "orders-layer.zip",
        "orders.zip",
        "s3_event.zip",
    ]
    rows = [(row.split()[0], row.split()[-1]) for row in result.output.splitlines()[-6:]]
    # One table; the layer the first function wrote, named as shared under the second.
    assert rows == [
        ("function", "state"),
        ("orders", "built"),
        ("dist/orders-layer.zip", "built"),
        ("s3_event", "built"),
        ("dist/orders-layer.zip", "orders"),
        ("2", "built"),
    ]
    assert result.output.splitlines()[-2].endswith("  shared with orders")
    with zipfile.ZipFile(dist / "orders-layer.zip") as layer:
        assert all(name.startswith("python/") for name in layer.namelist())
    for code in ("orders.zip", "s3_event.zip"):
        with zipfile.ZipFile(dist / code) as archive:
            assert {n.split("/")[0] for n in archive.namelist()} == {
                "app",
                "order_events-0.3.0.dist-info",
            }


def test_a_project_without_a_package_names_both_ways_out(
    project: Callable[[str], Path],
) -> None:
    path = project("no-root")
    result = Build(path, LOCAL)
    assert result.status == 2
    assert "has no package of its own to build" in result.error
    assert "--no-root" in result.error
    assert "package-mode = false" in result.error
    assert "No file/folder found" not in result.error
    assert not (path / "dist").exists()
    built = Build(path, f"{LOCAL} --no-root")
    assert built.status == 0, built.error
    compiled = {f"cookbook/__pycache__/{m}.cpython-311.pyc" for m in ("__init__", "hello")}
    assert own_files(built.zip_path, "cookbook") == {
        "cookbook/__init__.py",
        "cookbook/hello.py",
        *compiled,
    }


def test_a_handler_that_is_not_in_the_zip_stops_before_anything_is_written(
    project: Callable[[str], Path],
) -> None:
    path = project("cdk-root")
    result = Build(path, f"{LOCAL} --handler pkg.fn.handler.lambda_handler")
    assert result.status == 2
    assert (
        "The handler pkg.fn.handler.lambda_handler names the module pkg.fn.handler" in result.error
    )
    assert "The closest module there is src.pkg.fn.handler." in result.error
    assert not (path / "dist").exists()
    # The namespace package src (no __init__.py) is found, as Python's import finds it.
    assert Build(path, LOCAL).status == 0


def test_an_include_can_be_re_rooted_like_sams_code_uri(tmp_path: Path) -> None:
    (tmp_path / "hello_world" / "sub").mkdir(parents=True)
    for name in ("hello_world/app.py", "hello_world/sub/x.py", "lib.py"):
        (tmp_path / name).write_text("x = 1\n")
    found, warnings = collect_includes(
        tmp_path,
        [Include("**/*.py", "hello_world"), Include("lib.py", "", "vendor"), Include("no*", "")],
    )
    assert [name for name, _ in found] == ["app.py", "sub/x.py", "vendor/lib.py"]
    assert warnings == ["The include pattern 'no*' matches no file."]
    for include in (Include("*.py", "../x"), Include("*.py", "hello_world", "../up")):
        with pytest.raises(ConfigError, match="points outside the project"):
            collect_includes(tmp_path, [include])
    with pytest.raises(ConfigError, match="is not a directory of the project"):
        collect_includes(tmp_path, [Include("*.py", "lib.py")])
    (tmp_path / "hello_world" / "sub" / "app.py").write_text("y = 2\n")
    clash = [Include("app.py", "hello_world"), Include("app.py", "hello_world/sub")]
    with pytest.raises(ConfigError, match=r"Two include entries put different files at app\.py"):
        collect_includes(tmp_path, clash)


def test_a_project_allowing_only_runtimes_lambda_no_longer_offers(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "old"\nversion = "1.0"\nrequires-python = ">=3.6,<3.9"\n'
        "\n[tool.poetry]\npackage-mode = false\n"
    )
    result = Build(tmp_path, "--builder local")
    assert result.status == 2
    assert "it would need python3.8; the oldest Python runtime Lambda offers is python3.9" in (
        result.error
    )


# ---- Docker: each function's handler runs from its own zip, from a read-only /var/task ------


def invoke_with_layer(
    client: docker.DockerClient, image: str, code: Path, *, layer: Path, handler: str, tmp: Path
) -> object:
    task, opt = unpack(code, tmp / f"task-{code.stem}"), unpack(layer, tmp / f"opt-{code.stem}")
    command = ["python3", "-c", RUNNER, handler, "{}"]
    status, output = run_in_task(client, image, task, command, opt, stderr=False)
    assert status == 0, output
    return json.loads(output)


@pytest.mark.docker
def test_every_function_of_each_shape_runs_from_its_own_zip(
    project: Callable[[str], Path],
    *,
    build: Callable[..., Build],
    invoke: Invoke,
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path: Path,
) -> None:
    dirs = project("functions-dirs")
    result = build(dirs, "--verify")
    assert result.status == 0, result.error
    for name in ("daily_job", "updater", "db_tasks"):
        handler = f"{name}.lambda_func.handler"
        answer = invoke(dirs / "dist" / f"{name}.zip", handler, {})
        assert isinstance(answer, dict)
        assert answer["function"] == name
    # SAM's slash form, imported in the image (said in the table's state of each function).
    assert [line for line in result.output.splitlines() if line.startswith("daily_job ")]
    assert all(
        ", handler imports in " in line
        for line in result.output.splitlines()
        if line.startswith(tuple(f"{n} " for n in ("daily_job", "updater", "db_tasks")))
    )

    groups = project("functions-groups")
    result = build(groups)
    assert result.status == 0, result.error
    orders, report = groups / "dist" / "orders.zip", groups / "dist" / "report.zip"
    assert "click" not in distributions(orders) | distributions(report)  # main: deploy tools
    assert "requests" in distributions(orders)
    assert "python-dateutil" not in distributions(orders)
    assert distributions(report) == {"python-dateutil", "six"}
    assert invoke(orders, "orders_fn.handler.handler", {})["function"] == "orders"  # type: ignore[index]
    assert invoke(report, "report_fn.handler.handler", {})["function"] == "report"  # type: ignore[index]

    package = project("functions-package")
    result = build(package)
    assert result.status == 0, result.error
    layer = package / "dist" / "orders-layer.zip"
    for name, handler in (("orders", "app.orders_lambda"), ("s3_event", "app.s3_event_lambda")):
        code = package / "dist" / f"{name}.zip"
        answer = invoke_with_layer(
            docker_client, stand_in_image, code, layer=layer, handler=f"{handler}.handler",
            tmp=tmp_path,
        )  # fmt: skip
        assert isinstance(answer, dict)
        assert answer["function"] == name


SHAPES = [
    ("sam-codeuri", "", "app.lambda_handler"),
    ("handler-next-to-pyproject", "", "lambda_function.lambda_handler"),
    ("cdk-root", "", "src.pkg.fn.handler.lambda_handler"),
    ("no-root", "--no-root", "cookbook.hello.handler"),
    ("poetry11-lock", "", "legacy_api.handler.lambda_handler"),
]


@pytest.mark.docker
@pytest.mark.parametrize(("fixture", "arguments", "handler"), SHAPES)
def test_each_project_shape_builds_and_its_handler_runs(
    project: Callable[[str], Path],
    *,
    build: Callable[..., Build],
    invoke: Invoke,
    fixture: str,
    arguments: str,
    handler: str,
) -> None:
    assert (FIXTURES / fixture / "poetry.lock").is_file()
    path = project(fixture)
    result = build(path, f"--verify --handler {handler} {arguments}")
    assert result.status == 0, result.error
    answer = invoke(result.zip_path, handler, {})
    assert isinstance(answer, dict)
    assert answer["function"]
