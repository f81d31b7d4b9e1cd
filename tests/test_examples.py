"""The deploy recipes in examples/: each one's files agree with each other and with its
project's pyproject.toml, every lock is fresh, every project builds, and SAM's makefile builder
really builds the sam-makefile recipe through `poetry lambda-zip`.

PyYAML is not among the test tools, so the recipes' YAML is read by ``parse_yaml`` below: the
block-style subset they are written in, strictly (anything else is an error, not a guess). The
SAM test also loads each YAML file with the PyYAML that SAM CLI brings.
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any
from typing import Union

import pytest
import tomlkit
from poetry.factory import Factory

from tests.conftest import ROOT
from tests.conftest import unavailable
from tests.docker_helpers import RUNNER
from tests.docker_helpers import Build

EXAMPLES = ROOT / "examples"
#: The recipes that are Poetry projects (pyproject.toml, poetry.lock, hello/app.py).
PROJECTS = ["sam-makefile", "sam-prebuilt-zip", "terraform", "cdk", "serverless"]
RECIPES = [*PROJECTS, "github-actions", "gitlab-ci"]
#: The recipes' YAML files and the composite action, relative to the repository.
YAML_FILES = sorted(
    {
        str(path.relative_to(ROOT))
        for suffix in ("yml", "yaml")
        for path in EXAMPLES.rglob(f"*.{suffix}")
        if ".aws-sam" not in path.parts  # what a `sam build` by hand left
    }
    | {"action.yml"}
)

Yaml = Union[dict[str, "Yaml"], list["Yaml"], str, None]


# -- a strict reader for the YAML subset the recipes use ------------------------------------


class YamlSubsetError(ValueError):
    pass


_KEY = re.compile(r"^(?P<key>[A-Za-z_$][\w.$/-]*):(?:\s+(?P<value>.*))?$")
_BLOCK_SCALAR = re.compile(r"^(?P<head>.*?)\s*[|>][-+]?$")


def _strip_comment(line: str) -> str:
    """The line without a ``# comment`` (a ``#`` at the start or after a space, outside quotes)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and (i == 0 or line[i - 1] in " :[,-"):
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.rstrip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _lines(text: str) -> list[tuple[int, str, str | None]]:
    """(indent, content, block scalar text or None) of each line that holds something."""
    raw = text.splitlines()
    result: list[tuple[int, str, str | None]] = []
    i = 0
    while i < len(raw):
        line = raw[i]
        i += 1
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise YamlSubsetError(f"line {i}: a tab in the indentation")
        content = _strip_comment(line)
        if not content.strip() or content.strip() == "---":
            continue
        indent = _indent(content)
        scalar = _BLOCK_SCALAR.match(content.strip())
        if scalar and (scalar["head"].endswith(":") or scalar["head"] == "-"):
            body: list[str] = []
            while i < len(raw) and (not raw[i].strip() or _indent(raw[i]) > indent):
                body.append(raw[i])
                i += 1
            margin = min((_indent(b) for b in body if b.strip()), default=0)
            text_value = "\n".join(b[margin:] for b in body).strip("\n") + "\n"
            result.append((indent, scalar["head"], text_value))
        else:
            result.append((indent, content.strip(), None))
    return result


def _scalar(value: str) -> Yaml:
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1].strip()
        return [_scalar(item.strip()) for item in inner.split(",")] if inner else []
    if value[:1] in "{&*!|>%@`":
        raise YamlSubsetError(f"not in the subset: {value!r}")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if value[:1] in "'\"":
        raise YamlSubsetError(f"unterminated quote: {value!r}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines = _lines(text)
        self.pos = 0

    def document(self) -> Yaml:
        if not self.lines:
            return None
        node = self.node(self.lines[0][0])
        if self.pos != len(self.lines):
            content = self.lines[self.pos][1]
            raise YamlSubsetError(f"unexpected indentation at {content!r}")
        return node

    def node(self, indent: int) -> Yaml:
        content = self.lines[self.pos][1]
        if content == "-" or content.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def value(self, indent: int, inline: str | None, block: str | None) -> Yaml:
        """The value of a key or item at ``indent`` whose text after ``:``/``-`` is ``inline``."""
        if block is not None:
            return block
        if inline:
            return _scalar(inline)
        if self.pos < len(self.lines):
            nested, content, _ = self.lines[self.pos]
            is_item = content == "-" or content.startswith("- ")
            if nested > indent or (nested == indent and is_item):
                return self.node(nested)
        return None

    def mapping(self, indent: int) -> dict[str, Yaml]:
        result: dict[str, Yaml] = {}
        while self.pos < len(self.lines):
            level, content, block = self.lines[self.pos]
            if level < indent or content == "-" or content.startswith("- "):
                break
            if level > indent:
                raise YamlSubsetError(f"unexpected indentation at {content!r}")
            match = _KEY.match(content)
            if match is None:
                raise YamlSubsetError(f"not a 'key: value' line: {content!r}")
            if match["key"] in result:
                raise YamlSubsetError(f"duplicate key {match['key']!r}")
            self.pos += 1
            result[match["key"]] = self.value(indent, match["value"], block)
        return result

    def sequence(self, indent: int) -> list[Yaml]:
        result: list[Yaml] = []
        while self.pos < len(self.lines):
            level, content, block = self.lines[self.pos]
            if level != indent or not (content == "-" or content.startswith("- ")):
                if level > indent:
                    raise YamlSubsetError(f"unexpected indentation at {content!r}")
                break
            rest = content[1:].lstrip()
            if rest and _KEY.match(rest):
                # "- key: value": a mapping whose keys line up with this first one.
                self.lines[self.pos] = (level + len(content) - len(rest), rest, block)
                result.append(self.mapping(level + len(content) - len(rest)))
            else:
                self.pos += 1
                result.append(self.value(indent, rest, block))
        return result


def parse_yaml(text: str) -> Yaml:
    """The block-style YAML subset of the recipes: mappings, sequences, plain, quoted and
    ``|`` block scalars, one-line ``[a, b]`` lists. Values stay strings."""
    return _Parser(text).document()


def mapping(node: Yaml) -> dict[str, Yaml]:
    assert isinstance(node, dict), node
    return node


def sequence(node: Yaml) -> list[Yaml]:
    assert isinstance(node, list), node
    return node


def string(node: Yaml) -> str:
    assert isinstance(node, str), node
    return node


def test_the_yaml_reader_reads_its_subset_and_refuses_the_rest() -> None:
    text = (
        "a: 1  # comment\n"
        "b:\n"
        "  - x\n"
        "  - k: 'it''s'\n"
        "    run: |\n"
        "      echo # kept\n"
        "\n"
        "      done\n"
        "c: [p, q]\n"
        "d:\n"
        "- e\n"
        'url: "http://h/#x"\n'
    )
    assert parse_yaml(text) == {
        "a": "1",
        "b": ["x", {"k": "it's", "run": "echo # kept\n\ndone\n"}],
        "c": ["p", "q"],
        "d": ["e"],
        "url": "http://h/#x",
    }
    for bad in ("a: 1\n  b: 2\n", "a: 1\na: 2\n", "a: {b: 1}\n", "just text\n", "a:\n\t- b\n"):
        with pytest.raises(YamlSubsetError):
            parse_yaml(bad)


# -- what the recipes say --------------------------------------------------------------------


def settings(example: str) -> dict[str, object]:
    """[tool.poetry-lambda-zip] of the example's pyproject.toml."""
    document = tomlkit.parse((EXAMPLES / example / "pyproject.toml").read_text()).unwrap()
    table = document["tool"]["poetry-lambda-zip"]
    assert isinstance(table, dict)
    return table


def readme_outputs(example: str) -> set[str]:
    """The ``-o`` paths of the ``poetry lambda-zip`` commands in the example's README.md."""
    outputs = set()
    for line in (EXAMPLES / example / "README.md").read_text().splitlines():
        for command in re.findall(r"poetry lambda-zip[^`&|)]*", line):
            words = shlex.split(command)
            if "-o" in words:
                outputs.add(words[words.index("-o") + 1])
    return outputs


def readme_output(example: str) -> str:
    outputs = readme_outputs(example)
    assert len(outputs) == 1, f"{example}/README.md: -o of its commands: {outputs}"
    return outputs.pop()


def handler_file(example: str) -> Path:
    """The source file the handler of [tool.poetry-lambda-zip] names, through the includes."""
    table = settings(example)
    module = str(table["handler"]).rsplit(".", 1)[0].replace(".", "/") + ".py"
    includes = table["include"]
    assert isinstance(includes, list)
    for include in includes:
        base = include.get("from", "") if isinstance(include, dict) else ""
        pattern = include["include"] if isinstance(include, dict) else include
        candidate = EXAMPLES / example / base / module
        if candidate.is_file() and fnmatch.fnmatch(module, pattern.replace("**/", "")):
            return candidate
    raise AssertionError(f"{example}: no include puts {module} at the zip root")


def functions(template: Yaml) -> dict[str, dict[str, Yaml]]:
    resources = mapping(mapping(template)["Resources"])
    return {
        name: mapping(resource)
        for name, resource in resources.items()
        if mapping(resource)["Type"] == "AWS::Serverless::Function"
    }


def make_targets(makefile: str) -> dict[str, list[str]]:
    """Each rule's target and its recipe lines (the tab-indented lines below it)."""
    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in makefile.splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line[1:])
        elif (rule := re.match(r"^([\w.-]+):(?!=)", line)) is not None:
            current = targets.setdefault(rule[1], [])
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


# -- every recipe ----------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_has_a_readme_that_names_the_command(recipe: str) -> None:
    readme = EXAMPLES / recipe / "README.md"
    assert readme.is_file()
    text = readme.read_text()
    assert text.startswith("# ")
    assert "poetry lambda-zip" in text or "poetry self add poetry-lambda-zip" in text
    assert f"`{recipe}/`" in (EXAMPLES / "README.md").read_text()


@pytest.mark.parametrize("path", YAML_FILES)
def test_yaml_files_parse(path: str) -> None:
    document = parse_yaml((ROOT / path).read_text())
    assert isinstance(document, dict)
    assert document


@pytest.mark.parametrize("example", PROJECTS)
def test_each_project_has_a_fresh_lock(example: str) -> None:
    path = EXAMPLES / example
    assert (path / "poetry.lock").is_file()
    locker = Factory().create_poetry(path).locker
    assert locker.is_locked()
    assert locker.is_fresh(), (
        f"relock: .venv/bin/python scripts/relock_fixture.py examples/{example}"
    )


@pytest.mark.parametrize("example", PROJECTS)
def test_each_project_builds_and_its_handler_answers(example: str, tmp_path: Path) -> None:
    """The local builder, no container: the handler is checked in the zip before it is written,
    then called with the zip as the only place its code comes from."""
    path = tmp_path / example
    shutil.copytree(EXAMPLES / example, path, ignore=shutil.ignore_patterns("dist", ".aws-sam"))
    output = tmp_path / "function.zip"
    table = settings(example)
    result = Build(path, f"--builder local --no-compile -o {output}")
    assert result.status == 0, result.error
    with zipfile.ZipFile(output) as archive:
        names = set(archive.namelist())
    # A split layout's layer holds the dependencies under python/, as Lambda's /opt/python.
    code_path = [str(output)]
    if table.get("layout") == "split":
        layer = tmp_path / "function-layer.zip"
        with zipfile.ZipFile(layer) as archive:
            assert all(name.startswith("python/") for name in archive.namelist())
            names |= {name.removeprefix("python/") for name in archive.namelist()}
        code_path.append(f"{layer}/python")
    assert {"app.py", "six.py", "six-1.17.0.dist-info/RECORD"} <= names
    assert not any(name.startswith(("hello/", "dist/")) for name in names), names
    assert handler_file(example).name == "app.py"
    answer = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {code_path!r}\n{RUNNER}",
         str(table["handler"]), json.dumps({"queryStringParameters": {"name": "test"}})],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    response = json.loads(answer.stdout)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"message": "hello test", "six": "1.17.0"}


# -- SAM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["sam-makefile", "sam-prebuilt-zip"])
def test_sam_templates_agree_with_the_project(example: str) -> None:
    template = parse_yaml((EXAMPLES / example / "template.yaml").read_text())
    assert mapping(template)["Transform"] == "AWS::Serverless-2016-10-31"
    (properties,) = (mapping(f["Properties"]) for f in functions(template).values())
    table = settings(example)
    assert properties["Handler"] == table["handler"]
    assert properties["Runtime"] == table["runtime"]
    assert properties["Architectures"] == [table.get("arch", "x86_64")]


def test_sam_makefile_target_is_the_functions_logical_id() -> None:
    example = EXAMPLES / "sam-makefile"
    template = parse_yaml((example / "template.yaml").read_text())
    ((logical_id, function),) = functions(template).items()
    assert mapping(function["Metadata"])["BuildMethod"] == "makefile"
    # SAM copies CodeUri and runs make there: the Makefile and the project both live in it.
    code = example / string(mapping(function["Properties"])["CodeUri"])
    assert (code / "pyproject.toml").is_file()
    makefile = (code / "Makefile").read_text()
    recipe = make_targets(makefile)[f"build-{logical_id}"]
    assert re.search(r"^LAMBDA_ZIP_ARGS \?=", makefile, re.MULTILINE)
    build, unpack = recipe
    assert build == 'poetry lambda-zip -o "$(ARTIFACTS_DIR)/function.zip" $(LAMBDA_ZIP_ARGS)'
    assert unpack.startswith('cd "$(ARTIFACTS_DIR)" && unzip -q -o function.zip')


def test_sam_prebuilt_zip_code_uri_is_what_the_readme_builds() -> None:
    template = parse_yaml((EXAMPLES / "sam-prebuilt-zip" / "template.yaml").read_text())
    (function,) = functions(template).values()
    assert "Metadata" not in function
    assert mapping(function["Properties"])["CodeUri"] == readme_output("sam-prebuilt-zip")
    assert "sam deploy" in (EXAMPLES / "sam-prebuilt-zip" / "README.md").read_text()


def install_tool(what: str, command: list[str], timeout: float = 900) -> None:
    """Run ``command`` that installs a deploy tool into a scratch place: a failure is
    ``unavailable`` (it fails in CI, skips visibly elsewhere), bounded by ``timeout``."""
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        unavailable(f"installing {what} needs {command[0]}")
    started = time.monotonic()
    try:
        installed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        unavailable(f"installing {what} took more than {timeout:.0f}s: {shlex.join(command)}")
    if installed.returncode:
        unavailable(f"installing {what} failed:\n{installed.stderr[-2000:]}")
    print(f"{what} installed in {time.monotonic() - started:.0f}s: {shlex.join(command)}")


def scratch_venv(parent: Path, what: str, requirements: list[str]) -> Path:
    """A venv of its own with ``requirements`` pip-installed, for a tool; its bin directory."""
    venv = parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    install_tool(what, [*pip, "--disable-pip-version-check", *requirements])
    return venv / "bin"


def npm_tool(parent: Path, package: str) -> Path:
    """``npm install -g PACKAGE`` into a scratch prefix (as the recipes' READMEs say, without
    touching the machine's global packages); the prefix's bin directory."""
    prefix = parent / "npm"
    npm = ["npm", "install", "-g", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    install_tool(f"{package} (npm)", [*npm, package], timeout=600)
    return prefix / "bin"


def offline(command: list[str]) -> list[str]:
    """``command`` in a network namespace of its own that has no interface up: whatever the tool
    would contact (AWS, telemetry) cannot be reached, so a success proves it needed nothing."""
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed: cannot run the tool offline")
    for prefix in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [*prefix, *command]
    unavailable(f"unshare --net is not permitted here: {probe.stderr.strip()}")


@pytest.fixture(scope="session")
def sam_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sam`` from AWS SAM CLI, pip-installed into a scratch venv once per session."""
    bin_dir = scratch_venv(
        tmp_path_factory.mktemp("sam-cli"), "aws-sam-cli", ["aws-sam-cli>=1.100"]
    )
    return bin_dir / "sam"


@pytest.mark.docker
def test_sam_build_runs_the_makefile_recipe(
    sam_cli: Path, stand_in_image: str, tmp_path: Path
) -> None:
    for tool in ("make", "unzip"):
        if shutil.which(tool) is None:
            unavailable(f"sam build of examples/sam-makefile needs {tool}")
    app = tmp_path / "sam-makefile"
    shutil.copytree(
        EXAMPLES / "sam-makefile", app, ignore=shutil.ignore_patterns(".aws-sam", "dist")
    )
    env = {
        **os.environ,
        # `poetry` with this plugin, as the Makefile calls it.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "LAMBDA_ZIP_ARGS": f"--runtime python3.11 --image {stand_in_image}",
        "POETRY_CACHE_DIR": str(tmp_path / "poetry-cache"),
        "SAM_CLI_TELEMETRY": "0",
    }
    started = time.monotonic()
    result = subprocess.run(
        [str(sam_cli), "build"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    print(f"sam build took {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Build Succeeded" in result.stdout + result.stderr
    built = app / ".aws-sam" / "build"
    function = built / "HelloFunction"
    assert (function / "app.py").is_file()
    assert (function / "six.py").is_file()
    assert (function / "six-1.17.0.dist-info" / "RECORD").is_file()
    # Built by the image LAMBDA_ZIP_ARGS named: bytecode of its Python.
    assert (function / "__pycache__" / "app.cpython-311.pyc").is_file()
    assert not (function / "function.zip").exists()
    assert not (function / "hello").exists()
    assert (built / "template.yaml").is_file()
    built_template = parse_yaml((built / "template.yaml").read_text())
    properties = mapping(functions(built_template)["HelloFunction"]["Properties"])
    assert properties["CodeUri"] == "HelloFunction"
    assert properties["Handler"] == "app.lambda_handler"


#: yaml.safe_load, every scalar turned into text (YAML 1.1 reads a bare ``on`` key as true).
PYYAML_AS_TEXT = """
import json, sys, yaml
def text(node):
    if isinstance(node, dict):
        return {"on" if key is True else str(key): text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [text(value) for value in node]
    return None if node is None else str(node)
print(json.dumps(text(yaml.safe_load(open(sys.argv[1])))))
"""


@pytest.mark.docker
@pytest.mark.parametrize("path", YAML_FILES)
def test_yaml_files_load_with_pyyaml(sam_cli: Path, path: str) -> None:
    """PyYAML (SAM CLI's) reads every recipe's YAML as the reader here does, scalars as text."""
    loaded = subprocess.run(
        [str(sam_cli.parent / "python"), "-c", PYYAML_AS_TEXT, str(ROOT / path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == parse_yaml((ROOT / path).read_text())


# -- Terraform -------------------------------------------------------------------------------


def test_terraform_hashes_the_zip_the_readme_builds() -> None:
    main = (EXAMPLES / "terraform" / "main.tf").read_text()
    output = readme_output("terraform")
    filename = re.findall(r'^\s*filename\s*=\s*"\$\{path\.module\}/([^"]+)"', main, re.MULTILINE)
    hashed = re.findall(
        r'^\s*source_code_hash\s*=\s*filebase64sha256\("\$\{path\.module\}/([^"]+)"\)',
        main,
        re.MULTILINE,
    )
    assert filename == hashed == [output]
    table = settings("terraform")
    assert re.findall(r'^\s*runtime\s*=\s*"([^"]+)"', main, re.MULTILINE) == [table["runtime"]]
    assert re.findall(r'^\s*handler\s*=\s*"([^"]+)"', main, re.MULTILINE) == [table["handler"]]
    arch = table.get("arch", "x86_64")
    assert re.findall(r"^\s*architectures\s*=\s*(.+)$", main, re.MULTILINE) == [f'["{arch}"]']


def test_terraform_readme_skips_the_deploy_on_the_deployed_functions_hash() -> None:
    readme = (EXAMPLES / "terraform" / "README.md").read_text()
    main = (EXAMPLES / "terraform" / "main.tf").read_text()
    default = re.search(r'variable "function_name" \{[^}]*default\s*=\s*"([^"]+)"', main)
    assert default is not None
    assert f"aws lambda get-function --function-name {default[1]}" in readme
    assert "--query Configuration.CodeSha256 --output text" in readme
    assert "--json | jq -r '.outputs[0].code_sha256'" in readme


def test_terraform_is_formatted(tmp_path: Path) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        unavailable("terraform is not installed")  # fails in CI, skips visibly elsewhere
    checked = subprocess.run(
        [terraform, "fmt", "-check", "-diff", str(EXAMPLES / "terraform")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- CDK -------------------------------------------------------------------------------------


def test_cdk_app_uses_the_zip_the_readme_builds() -> None:
    example = EXAMPLES / "cdk"
    tree = ast.parse((example / "app.py").read_text())
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    (function,) = (
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Function"
    )
    keywords = {keyword.arg: keyword.value for keyword in function.keywords}
    code = keywords["code"]
    assert isinstance(code, ast.Call)
    assert isinstance(code.func, ast.Attribute)
    assert code.func.attr == "from_asset"
    (asset,) = code.args
    path = asset.value if isinstance(asset, ast.Constant) else constants[ast.unparse(asset)]
    assert path == readme_output("cdk")
    table = settings("cdk")
    assert ast.literal_eval(keywords["handler"]) == table["handler"]
    runtime = str(table["runtime"]).upper().replace("PYTHON", "PYTHON_").replace(".", "_")
    assert ast.unparse(keywords["runtime"]) == f"lambda_.Runtime.{runtime}"
    assert json.loads((example / "cdk.json").read_text())["app"] == "python3 app.py"
    requirements = (example / "requirements.txt").read_text()
    assert re.search(r"^aws-cdk-lib\b", requirements, re.MULTILINE)
    assert re.search(r"^constructs\b", requirements, re.MULTILINE)
    assert "aws-cdk" not in (example / "pyproject.toml").read_text()


@pytest.fixture(scope="session")
def cdk_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``cdk`` (npm ``aws-cdk``) and a Python with the CDK app's requirements.txt, each installed
    into a scratch place once per session: (cdk, that Python's bin directory)."""
    parent = tmp_path_factory.mktemp("cdk")
    requirements = EXAMPLES / "cdk" / "requirements.txt"
    python_bin = scratch_venv(parent, "aws-cdk-lib", ["-r", str(requirements)])
    return npm_tool(parent, "aws-cdk") / "cdk", python_bin


def tool_version(command: list[str]) -> str:
    shown = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())


def cdk_synth(cdk: Path, python_bin: Path, app: Path) -> dict[str, Any]:
    """``cdk synth`` of the app, offline; the synthesized Lambda function's resource."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(python_bin), os.environ["PATH"]]),  # python3 of cdk.json
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        offline([str(cdk), "synth", "--no-notices", "--quiet"]),
        cwd=app, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    print(f"cdk synth took {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((app / "cdk.out" / "HelloStack.template.json").read_text())
    (function,) = (
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
    )
    assert isinstance(function, dict)
    return function


def test_cdk_synth_deploys_our_zip_as_it_is(cdk_cli: tuple[Path, Path], tmp_path: Path) -> None:
    """A real ``cdk synth`` of examples/cdk: the function's code asset is our zip, byte for byte,
    uploaded as a file (not zipped again), and an unchanged rebuild gives the same S3 key."""
    cdk, python_bin = cdk_cli
    print(f"cdk {tool_version([str(cdk), '--version'])}")
    app = tmp_path / "cdk"
    shutil.copytree(EXAMPLES / "cdk", app, ignore=shutil.ignore_patterns("dist", "cdk.out"))
    output = readme_output("cdk")
    built = Build(app, f"--builder local -o {output}")
    assert built.status == 0, built.error
    zip_sha256 = hashlib.sha256((app / output).read_bytes()).hexdigest()

    function = cdk_synth(cdk, python_bin, app)
    properties = function["Properties"]
    table = settings("cdk")
    assert properties["Handler"] == table["handler"]
    assert properties["Runtime"] == table["runtime"]
    asset_path = function["Metadata"]["aws:asset:path"]
    assert function["Metadata"]["aws:asset:property"] == "Code"
    asset = app / "cdk.out" / asset_path
    assert hashlib.sha256(asset.read_bytes()).hexdigest() == zip_sha256
    assets = json.loads((app / "cdk.out" / "HelloStack.assets.json").read_text())["files"]
    (asset_id,) = (key for key, entry in assets.items() if entry["source"]["path"] == asset_path)
    assert assets[asset_id]["source"]["packaging"] == "file"  # uploaded as it is
    assert properties["Code"]["S3Key"] == f"{asset_id}.zip"

    # An unchanged build writes the same bytes: the same asset, nothing to deploy.
    shutil.rmtree(app / "cdk.out")
    rebuilt = Build(app, f"--builder local --force -o {output}")
    assert rebuilt.status == 0, rebuilt.error
    assert cdk_synth(cdk, python_bin, app)["Properties"]["Code"]["S3Key"] == f"{asset_id}.zip"


# -- Serverless Framework --------------------------------------------------------------------


def test_serverless_service_deploys_the_split_builds_zips() -> None:
    service = mapping(parse_yaml((EXAMPLES / "serverless" / "serverless.yml").read_text()))
    assert service["frameworkVersion"] == "3"
    provider = mapping(service["provider"])
    table = settings("serverless")
    assert table["layout"] == "split"
    assert provider["runtime"] == table["runtime"]
    assert provider["architecture"] == table.get("arch", "x86_64")
    ((name, function),) = mapping(service["functions"]).items()
    function = mapping(function)
    assert function["handler"] == table["handler"]
    output = readme_output("serverless")
    assert mapping(function["package"])["artifact"] == output
    ((layer_name, layer),) = mapping(service["layers"]).items()
    layer = mapping(layer)
    # -o dist/hello.zip with layout split writes the layer as dist/hello-layer.zip.
    assert mapping(layer["package"])["artifact"] == output.removesuffix(".zip") + "-layer.zip"
    assert sequence(layer["compatibleRuntimes"]) == [table["runtime"]]
    assert sequence(layer["compatibleArchitectures"]) == [provider["architecture"]]
    # The framework's logical id of a layer: its name, title-cased, + LambdaLayer.
    assert sequence(function["layers"]) == [{"Ref": f"{layer_name.title()}LambdaLayer"}]
    assert name == "hello"


@pytest.fixture(scope="session")
def serverless_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``serverless`` v3 (npm), installed into a scratch prefix once per session."""
    return npm_tool(tmp_path_factory.mktemp("serverless"), "serverless@3") / "serverless"


def test_serverless_package_deploys_our_zips_as_they_are(
    serverless_cli: Path, tmp_path: Path
) -> None:
    """A real ``serverless package`` of examples/serverless, with no network but loopback: the
    one AWS call it makes (CloudFormation DescribeStacks, for the layer) is answered by
    tests/offline_aws.py as AWS answers before a first deploy."""
    for tool in ("ip", "openssl"):
        if shutil.which(tool) is None:
            unavailable(f"the stand-in for AWS needs {tool}")
    version = tool_version([str(serverless_cli), "--version"])
    print(f"serverless {version}")
    assert version.startswith("Framework Core: 3.")
    service = tmp_path / "serverless"
    shutil.copytree(
        EXAMPLES / "serverless", service, ignore=shutil.ignore_patterns("dist", ".serverless")
    )
    output = readme_output("serverless")
    built = Build(service, f"--builder local -o {output}")
    assert built.status == 0, built.error
    function_zip = service / output
    layer_zip = service / (output.removesuffix(".zip") + "-layer.zip")
    code_sha256 = base64.b64encode(hashlib.sha256(function_zip.read_bytes()).digest()).decode()

    requests = tmp_path / "aws-requests.jsonl"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",  # AWS's documented example key
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
        "AWS_REGION": "us-east-1",
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "SLS_AWS_REQUEST_MAX_RETRIES": "0",
    }
    with_loopback = ["sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    fake_aws = [sys.executable, str(ROOT / "tests" / "offline_aws.py"), str(requests), "--"]
    started = time.monotonic()
    result = subprocess.run(
        offline([*with_loopback, *fake_aws, str(serverless_cli), "package"]),
        cwd=service, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    print(f"serverless package took {time.monotonic() - started:.1f}s")
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    assert "Service packaged" in printed
    assert "Invalid configuration" not in printed  # the runtime is one v3 knows
    calls = [json.loads(line) for line in requests.read_text().splitlines()]
    assert calls == [
        {"host": "cloudformation.us-east-1.amazonaws.com", "method": "POST", "path": "/",
         "action": "DescribeStacks", "stack": "hello-serverless-dev"},
    ]  # fmt: skip

    template = json.loads(
        (service / ".serverless" / "cloudformation-template-update-stack.json").read_text()
    )
    resources = template["Resources"]
    function = resources["HelloLambdaFunction"]["Properties"]
    assert function["Handler"] == settings("serverless")["handler"]
    assert function["Layers"] == [{"Ref": "DependenciesLambdaLayer"}]
    assert function["Code"]["S3Key"].endswith(f"/{function_zip.name}")
    (version_resource,) = (r for r in resources.values() if r["Type"] == "AWS::Lambda::Version")
    # The framework hashed the artifact it will upload: our zip, byte for byte.
    assert version_resource["Properties"]["CodeSha256"] == code_sha256
    layer = resources["DependenciesLambdaLayer"]["Properties"]
    assert layer["Content"]["S3Key"].endswith(f"/{layer_zip.name}")
    state = json.loads((service / ".serverless" / "serverless-state.json").read_text())
    layers = state["service"]["initialServerlessConfig"]["layers"]
    assert layers["dependencies"]["package"]["artifact"] == str(layer_zip.relative_to(service))
    assert state["service"]["functions"]["hello"]["package"]["artifact"] == output


# -- GitHub Actions --------------------------------------------------------------------------


def steps_of(job: Yaml) -> list[dict[str, Yaml]]:
    return [mapping(step) for step in sequence(mapping(job)["steps"])]


def step_index(steps: list[dict[str, Yaml]], uses: str) -> int:
    (index,) = (i for i, step in enumerate(steps) if string(step.get("uses", "")).startswith(uses))
    return index


def build_command(steps: list[dict[str, Yaml]]) -> tuple[int, list[str]]:
    ((index, run),) = (
        (i, string(step["run"]))
        for i, step in enumerate(steps)
        if "poetry lambda-zip" in string(step.get("run", ""))
    )
    return index, shlex.split(run)


def test_github_workflow_caches_poetry_and_builds_both_architectures() -> None:
    workflow = mapping(parse_yaml((EXAMPLES / "github-actions" / "lambda-zip.yml").read_text()))
    assert "on" in workflow
    jobs = mapping(workflow["jobs"])
    arches: dict[str, str] = {}
    for name, job in jobs.items():
        steps = steps_of(job)
        checkout = step_index(steps, "actions/checkout@")
        setup = step_index(steps, "actions/setup-python@")
        (install,) = (
            i
            for i, s in enumerate(steps)
            if "poetry self add poetry-lambda-zip" in str(s.get("run"))
        )
        # The cache's path is Poetry's cache directory, as `poetry config cache-dir` prints it.
        (locate,) = (s for s in steps if "poetry config cache-dir" in str(s.get("run")))
        cache = step_index(steps, "actions/cache@")
        cache_with = mapping(steps[cache]["with"])
        assert cache_with["path"] == f"${{{{ steps.{string(locate['id'])}.outputs.dir }}}}"
        assert "hashFiles('poetry.lock')" in string(cache_with["key"])
        index, words = build_command(steps)
        assert checkout < setup < install < cache < index, name
        arch = words[words.index("--arch") + 1]
        arches[arch] = name
        output = words[words.index("-o") + 1]
        upload = step_index(steps, "actions/upload-artifact@")
        assert mapping(steps[upload]["with"])["path"] == output
        assert arch in string(cache_with["key"])  # one cache per architecture
        if arch == "arm64":
            qemu = step_index(steps, "docker/setup-qemu-action@")
            assert qemu < index
            assert "arm64" in string(mapping(steps[qemu]["with"])["platforms"])
    assert set(arches) == {"x86_64", "arm64"}


# -- GitLab CI -------------------------------------------------------------------------------


def test_gitlab_job_uses_the_hosts_docker_socket_and_labels_its_containers() -> None:
    document = mapping(parse_yaml((EXAMPLES / "gitlab-ci" / ".gitlab-ci.yml").read_text()))
    assert "services" not in document
    job = mapping(document["package"])
    assert "services" not in job
    assert job["image"] == "python:3.12"
    variables = mapping(job["variables"])
    assert variables["POETRY_LAMBDA_ZIP_OWNER"] == "$CI_JOB_ID"
    assert variables["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    script = [string(line) for line in sequence(job["script"])]
    assert any("poetry-lambda-zip" in line and line.startswith("pip install") for line in script)
    (build,) = (shlex.split(line) for line in script if line.startswith("poetry lambda-zip"))
    patterns = [string(p) for p in sequence(mapping(job["artifacts"])["paths"])]
    assert any(fnmatch.fnmatch(build[build.index("-o") + 1], p) for p in patterns)
    # GitLab caches only paths inside the project: Poetry's cache is put there.
    cache_dir = string(variables["POETRY_CACHE_DIR"]).removeprefix("$CI_PROJECT_DIR/")
    cache = mapping(job["cache"])
    assert sequence(cache["paths"]) == [cache_dir]
    assert sequence(mapping(cache["key"])["files"]) == ["poetry.lock"]
    readme = (EXAMPLES / "gitlab-ci" / "README.md").read_text()
    assert '"/var/run/docker.sock:/var/run/docker.sock"' in readme
    assert "DOCKER_HOST" in readme
