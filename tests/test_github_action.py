"""The composite action (action.yml): its steps call scripts/github_action.py with every input,
and the script, run the way the action runs it (inputs as INPUT_* variables, a
``$GITHUB_OUTPUT`` file), builds with the real ``poetry lambda-zip`` and writes each zip's path
and ``code_sha256`` in GitHub's multi-line output format."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES
from tests.conftest import ROOT
from tests.test_examples import EXAMPLES
from tests.test_examples import Yaml
from tests.test_examples import mapping
from tests.test_examples import parse_yaml
from tests.test_examples import sequence
from tests.test_examples import string

SCRIPT_RUN = 'python3 "$GITHUB_ACTION_PATH/scripts/github_action.py"'


def action() -> dict[str, Yaml]:
    return mapping(parse_yaml((ROOT / "action.yml").read_text()))


def build_step() -> dict[str, Yaml]:
    steps = [mapping(step) for step in sequence(mapping(action()["runs"])["steps"])]
    (step,) = (step for step in steps if step.get("id") == "build")
    return step


def test_action_yml_passes_every_input_to_the_script() -> None:
    document = action()
    runs = mapping(document["runs"])
    assert runs["using"] == "composite"
    steps = [mapping(step) for step in sequence(runs["steps"])]
    install, build = steps
    assert 'poetry self add "$GITHUB_ACTION_PATH"' in string(install["run"])
    assert build["id"] == "build"
    assert build["shell"] == "bash"
    assert string(build["run"]).strip() == SCRIPT_RUN
    assert (ROOT / "scripts" / "github_action.py").is_file()
    inputs = mapping(document["inputs"])
    assert set(inputs) == {"runtime", "arch", "functions", "args", "directory"}
    assert mapping(build["env"]) == {
        f"INPUT_{name.upper()}": f"${{{{ inputs.{name} }}}}" for name in inputs
    }
    # Each output of the action is the step's output of the same name (the runs below check
    # that the script writes exactly those).
    declared = mapping(document["outputs"])
    assert {name: mapping(o)["value"] for name, o in declared.items()} == {
        name: f"${{{{ steps.build.outputs.{name} }}}}" for name in declared
    }


def read_github_output(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner reads it: ``name=value`` or ``name<<DELIMITER`` lines
    up to a line that is the delimiter; anything else is an error."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    assert lines.pop() == "", "the file ends with a newline"
    while lines:
        line = lines.pop(0)
        heredoc = re.fullmatch(r"([\w-]+)<<(\S+)", line)
        if heredoc is None:
            name, separator, value = line.partition("=")
            assert separator, f"not an output line: {line!r}"
        else:
            name, delimiter = heredoc.groups()
            end = lines.index(delimiter)
            value = "\n".join(lines[:end])
            del lines[: end + 1]
        assert name not in values, f"{name} written twice"
        values[name] = value
    return values


def run_action(
    workspace: Path, tmp_path: Path, **inputs: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """The build step as the runner runs it: its env with the inputs (defaults for the rest)."""
    declared = mapping(action()["inputs"])
    given = {name: inputs.get(name, string(mapping(d)["default"])) for name, d in declared.items()}
    env = dict(os.environ)
    for variable, expression in mapping(build_step()["env"]).items():
        name = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", string(expression))
        assert name is not None
        env[variable] = given[name[1]]
    github_output = tmp_path / "github-output"
    github_output.write_text("")
    env.update(
        GITHUB_OUTPUT=str(github_output),
        GITHUB_ACTION_PATH=str(ROOT),
        # `poetry` with this plugin, as the install step leaves it.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
        POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"),
    )
    script = string(build_step()["run"]).strip().replace('"$GITHUB_ACTION_PATH', f'"{ROOT}')
    assert script == f'python3 "{ROOT}/scripts/github_action.py"'
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "github_action.py")],
        cwd=workspace, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    return run, read_github_output(github_output.read_text())


def code_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_the_action_builds_named_functions_and_outputs_each_zip(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(FIXTURES / "functions-dirs", workspace / "lambdas")
    run, values = run_action(
        workspace,
        tmp_path,
        directory="lambdas",
        functions="updater daily_job",
        runtime="python3.12",
        arch="arm64",
        args="--builder local --no-compile",
    )
    assert run.returncode == 0, run.stderr
    zips = json.loads(values["zips"])
    assert sorted(z["function"] for z in zips) == ["daily_job", "updater"]
    for zip_file in zips:
        path = Path(zip_file["path"])
        assert path == workspace / "lambdas" / "dist" / f"{zip_file['function']}.zip"
        assert zip_file["kind"] == "function"
        assert zip_file["code_sha256"] == code_sha256(path)
        assert zip_file["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{zip_file['function']} function: {path} code_sha256 " in run.stdout
    assert values["paths"].split("\n") == [z["path"] for z in zips]
    # Two function zips: no single `path`.
    assert values["path"] == values["code-sha256"] == values["layer-path"] == ""
    assert not (workspace / "lambdas" / "dist" / "db_tasks.zip").exists()
    assert "--runtime python3.12 --arch arm64" in run.stderr  # the command, echoed


def test_the_action_outputs_a_split_builds_function_and_layer(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLES / "cdk", workspace, ignore=shutil.ignore_patterns("dist", "cdk.out"))
    run, values = run_action(
        workspace, tmp_path, args="--builder local --layout split -o 'dist/my function.zip'"
    )
    assert run.returncode == 0, run.stderr
    function = workspace / "dist" / "my function.zip"
    layer = workspace / "dist" / "my function-layer.zip"
    assert values["path"] == str(function)
    assert values["code-sha256"] == code_sha256(function)
    assert values["layer-path"] == str(layer)
    assert values["layer-code-sha256"] == code_sha256(layer)
    assert values["paths"] == f"{function}\n{layer}"
    assert set(values) == set(mapping(action()["outputs"]))


def test_a_failed_build_fails_the_step_with_the_error(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLES / "cdk", workspace, ignore=shutil.ignore_patterns("dist", "cdk.out"))
    run, values = run_action(workspace, tmp_path, runtime="python2.7", args="--builder local")
    assert run.returncode == 2, run.stderr
    (error,) = (line for line in run.stderr.splitlines() if line.startswith("::error::"))
    assert "python2.7" in error
    assert "%0A" in error  # the fix, on the annotation's second line
    assert json.loads(values["zips"]) == []
    assert values["path"] == ""
    assert not (workspace / "dist").exists()
    assert set(values) == set(mapping(action()["outputs"]))


def test_the_example_workflow_uses_the_actions_inputs_and_outputs() -> None:
    workflow = mapping(parse_yaml((EXAMPLES / "github-actions" / "with-action.yml").read_text()))
    document = action()
    steps = [
        mapping(step) for step in sequence(mapping(mapping(workflow["jobs"])["build"])["steps"])
    ]
    (index,) = (
        i
        for i, s in enumerate(steps)
        if string(s.get("uses", "")).endswith("/poetry-lambda-zip@v0")
    )
    assert string(steps[0]["uses"]).startswith("actions/checkout@")
    step = steps[index]
    assert set(mapping(step["with"])) <= set(mapping(document["inputs"]))
    used = set()
    for later in steps[index + 1 :]:
        text = json.dumps(later)
        used |= set(
            re.findall(r"steps\." + re.escape(string(step["id"])) + r"\.outputs\.([\w-]+)", text)
        )
    assert used
    assert used <= set(mapping(document["outputs"]))
    readme = (EXAMPLES / "github-actions" / "README.md").read_text()
    assert "uses: OWNER/poetry-lambda-zip@v0" in readme
