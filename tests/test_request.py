from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.request import BuildRequest
from poetry_lambda_zip.request import Include
from poetry_lambda_zip.request import function_requests
from poetry_lambda_zip.resolve import GroupSelection


def test_command_line_wins_over_the_config_table(tmp_path: Path) -> None:
    request = BuildRequest.from_settings(
        tmp_path,
        {"runtime": "python3.12", "include": ["b.py"]},
        {"runtime": "python3.11", "arch": "arm64", "include": ["a.py"], "with": ["dev"]},
    )
    assert request.runtime == "python3.12"
    assert request.arch == "arm64"
    assert request.include == (Include("b.py"),)
    assert request.groups == GroupSelection(with_=("dev",))


def test_config_paths_are_relative_to_the_project_and_option_paths_to_the_cwd(
    tmp_path: Path,
) -> None:
    from_config = BuildRequest.from_settings(tmp_path, {}, {"output": "out/f.zip"})
    assert from_config.output == tmp_path / "out" / "f.zip"
    from_option = BuildRequest.from_settings(tmp_path, {"output": "f.zip"}, {})
    assert from_option.output == Path.cwd() / "f.zip"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        BuildRequest.from_settings(
            tmp_path,
            {"only": ["main"], "with": ["dev"], "arch": "armv7"},
            {"runtime": "python3.8", "include": "index.py"},
        )
    message = caught.value.message
    for expected in ("--only cannot", "armv7", "python3.8", "include must be a list"):
        assert expected in message


def test_unknown_config_key_is_a_warning_with_the_nearest_key(tmp_path: Path) -> None:
    request = BuildRequest.from_settings(tmp_path, {}, {"runtim": "python3.12"})
    assert request.warnings == (
        "Unknown key 'runtim' in [tool.poetry-lambda-zip] is ignored. Did you mean 'runtime'?",
    )


def test_comma_separated_lists_split_like_poetry_install(tmp_path: Path) -> None:
    request = BuildRequest.from_settings(tmp_path, {"with": ["a,b", "c"], "extras": ["x, y"]}, {})
    assert request.groups.with_ == ("a", "b", "c")
    assert request.extras == ("x", "y")


def test_values_read_by_tomlkit_become_plain_python(tmp_path: Path) -> None:
    document = tomlkit.parse(
        'include = ["index.py", { from = "app", include = "*.py" }]\nruntime = "python3.12"\n'
        "all-extras = true"
    )
    request = BuildRequest.from_settings(tmp_path, {}, document)
    assert request.include == (Include("index.py"), Include("*.py", "app"))
    assert all(type(part) is str for include in request.include for part in vars(include).values())
    assert type(request.runtime) is str
    assert request.all_extras is True


def test_include_entries_can_be_re_rooted_on_the_command_line_and_in_the_table(
    tmp_path: Path,
) -> None:
    assert Include.parse("index.py") == Include("index.py")
    assert Include.parse("hello_world:**/*.py") == Include("**/*.py", "hello_world")
    assert Include.parse("lib:*.py:vendor") == Include("*.py", "lib", "vendor")
    table = {"include": ["a.py", {"include": "x/*", "from": "b", "to": "c"}, {"from": "b"}]}
    with pytest.raises(ConfigError) as caught:
        BuildRequest.from_settings(tmp_path, {"include": ["::"]}, {})
    assert "is not GLOB, FROM:GLOB or FROM:GLOB:TO" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        BuildRequest.from_settings(tmp_path, {}, table)
    assert "{'from': 'b'}" in caught.value.message


FUNCTIONS = {
    "runtime": "python3.12",
    "include": ["common/*.py"],
    "functions": {
        "orders": {"handler": "app.orders.handler", "only": ["orders_fn"]},
        "report": {"handler": "report/app.handler", "runtime": "python3.11", "root": False},
    },
}


def test_each_function_is_its_table_over_the_top_level_keys_under_the_command_line(
    tmp_path: Path,
) -> None:
    orders, report = function_requests(tmp_path, {"arch": "arm64"}, FUNCTIONS)
    assert (orders.function, orders.runtime, orders.arch, orders.root) == (
        "orders", "python3.12", "arm64", True,
    )  # fmt: skip
    assert orders.groups.only == ("orders_fn",)
    assert orders.include == (Include("common/*.py"),)
    assert (report.function, report.runtime, report.root) == ("report", "python3.11", False)
    assert report.handler == "report/app.handler"
    (named,) = function_requests(tmp_path, {}, FUNCTIONS, ["report"])
    assert named.function == "report"
    (plain,) = function_requests(tmp_path, {}, {"runtime": "python3.12"})
    assert plain.function is None


def test_function_problems_are_reported_together_with_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        function_requests(tmp_path, {}, FUNCTIONS, ["order"])
    assert "No function is named 'order'. Did you mean 'orders'?" in caught.value.message
    broken = {"functions": {"a": {"image": "x", "layout": "flat"}, "b": {"handler": "1x"}}}
    with pytest.raises(ConfigError) as caught:
        function_requests(tmp_path, {"output": "one.zip"}, broken)
    message = caught.value.message
    assert "--output names one zip; 2 functions are built" in message
    assert "a: image cannot be set for one function" in message
    assert "a: Unknown layout 'flat'" in message
    assert "b: handler '1x' is not of the form module.function" in message
    with pytest.raises(ConfigError, match=r"has no \[tool\.poetry-lambda-zip\.functions\]"):
        function_requests(tmp_path, {}, {}, ["orders"])
