from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.request import BuildRequest
from poetry_lambda_zip.resolve import GroupSelection


def test_command_line_wins_over_the_config_table(tmp_path: Path) -> None:
    request = BuildRequest.from_settings(
        tmp_path,
        {"runtime": "python3.12", "include": ["b.py"]},
        {"runtime": "python3.11", "arch": "arm64", "include": ["a.py"], "with": ["dev"]},
    )
    assert request.runtime == "python3.12"
    assert request.arch == "arm64"
    assert request.include == ("b.py",)
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
    document = tomlkit.parse('include = ["index.py"]\nruntime = "python3.12"\nall-extras = true')
    request = BuildRequest.from_settings(tmp_path, {}, document)
    assert type(request.include[0]) is str
    assert type(request.runtime) is str
    assert request.all_extras is True
