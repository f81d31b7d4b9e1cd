"""The README's install section, run as a person copies it: each command of its console block
and the pip line below it, in a fresh venv holding Poetry (one per way of installing), with this
checkout as ``/path/to/poetry-lambda-zip``; the plugin is then listed and builds a project.

The per-project way (``[tool.poetry.requires-plugins]`` and ``poetry install``) gets the plugin's
wheel, built from this checkout, from a local index (pypiserver) the project names as a
supplemental source. ``poetry self add poetry-lambda-zip`` and ``pipx inject poetry
poetry-lambda-zip`` (from PyPI) are said to work "once released": until the package is on the
index they cannot be run, and the test checks the README says so."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import tomlkit
from poetry.core.pyproject.toml import PyProjectTOML
from poetry.packages.locker import Locker

from tests.conftest import ROOT
from tests.conftest import unavailable
from tests.test_examples import EXAMPLES
from tests.test_examples import scratch_venv

if TYPE_CHECKING:
    from collections.abc import Iterator

CHECKOUT = "/path/to/poetry-lambda-zip"


def install_section() -> str:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Install\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert section is not None
    return section[1]


def console_commands() -> list[str]:
    """The ``$ `` lines of the install section's console block, comments cut off."""
    (block,) = re.findall(r"```console\n(.*?)```", install_section(), re.DOTALL)
    return [
        line[2:].split("  #")[0].strip() for line in block.splitlines() if line.startswith("$ ")
    ]


def test_the_install_section_is_what_this_test_runs() -> None:
    assert console_commands() == [
        "poetry self add poetry-lambda-zip",
        f"poetry self add {CHECKOUT}",
        "poetry self show plugins",
    ]
    section = install_section()
    assert "poetry self add poetry-lambda-zip                 # from PyPI, once released" in section
    assert "`/path/to/poetry-venv/bin/pip install /path/to/checkout`" in section
    assert "(`pipx inject poetry poetry-lambda-zip`," in section
    assert "Until the first release is on PyPI,\ninstall from a checkout." in section
    assert requires_plugins() == {"poetry-lambda-zip": ">=0.1"}


def requires_plugins() -> dict[str, str]:
    (block,) = re.findall(r"```toml\n(.*?)```", install_section(), re.DOTALL)
    table = tomlkit.parse(block).unwrap()["tool"]["poetry"]["requires-plugins"]
    assert isinstance(table, dict)
    return table


def poetry_venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv with Poetry, and an environment giving Poetry config, data and cache
    directories of its own (``poetry self`` writes into them)."""
    venv = scratch_venv(tmp_path / "poetry", "poetry", ["poetry>=2,<3"]).parent
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ["PATH"]]),
        "POETRY_CONFIG_DIR": str(tmp_path / "config"),
        "POETRY_DATA_DIR": str(tmp_path / "data"),
        "POETRY_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("VIRTUAL_ENV", None)
    return venv, env


def run(command: str, env: dict[str, str], cwd: Path) -> str:
    """One README command, ``/path/to/…`` replaced by this checkout and the venv."""
    words = [ROOT.as_posix() if word in (CHECKOUT, "/path/to/checkout") else word
             for word in shlex.split(command)]  # fmt: skip
    done = subprocess.run(
        words, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}"
    return done.stdout


def builds_an_example(env: dict[str, str], tmp_path: Path, project: Path | None = None) -> None:
    if project is None:
        project = tmp_path / "project"
        shutil.copytree(EXAMPLES / "cdk", project, ignore=shutil.ignore_patterns("dist", "cdk.out"))
    run("poetry lambda-zip --builder local -o dist/function.zip", env, project)
    with zipfile.ZipFile(project / "dist" / "function.zip") as archive:
        assert {"app.py", "six.py"} <= set(archive.namelist())


@pytest.fixture
def plugin_index(tmp_path: Path) -> Iterator[str]:
    """pypiserver on loopback serving the plugin's wheel built from this checkout."""
    server = shutil.which("pypi-server", path=str(Path(sys.executable).parent))
    if server is None:
        unavailable("pypiserver is not installed (the test dependency group)")
    packages = tmp_path / "packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(packages),
         str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [server, "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".", str(packages)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "pypiserver did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_requires_plugins_installs_the_plugin_for_the_project(
    plugin_index: str, tmp_path: Path
) -> None:
    _venv, env = poetry_venv(tmp_path)
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "cdk", project, ignore=shutil.ignore_patterns("dist", "cdk.out"))
    pyproject = project / "pyproject.toml"
    document = tomlkit.parse(pyproject.read_text())
    poetry_table = document["tool"]["poetry"]
    poetry_table["requires-plugins"] = requires_plugins()
    source = {"name": "plugins", "url": plugin_index, "priority": "supplemental"}
    poetry_table["source"] = tomlkit.aot()
    poetry_table["source"].append(source)
    pyproject.write_text(tomlkit.dumps(document))
    # The source is supplemental and only the plugin comes from it: the locked packages stay
    # what they are, the content-hash follows pyproject.toml.
    lock_path = project / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    data = PyProjectTOML(pyproject).data
    lock["metadata"]["content-hash"] = Locker(lock_path, data)._get_content_hash()
    lock_path.write_text(tomlkit.dumps(lock))
    # Without the plugin, the command is unknown.
    missing = subprocess.run(
        ["poetry", "lambda-zip", "--help"], cwd=project, env=env, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "lambda-zip does not exist" in missing.stdout + missing.stderr
    installed = run("poetry install", env, project)
    assert "Installing poetry-lambda-zip (0.1.0)" in installed
    assert (project / ".poetry").is_dir()
    builds_an_example(env, tmp_path, project)


@pytest.mark.parametrize("way", ["poetry self add", "pip into Poetry's venv"])
def test_each_install_command_installs_a_working_plugin(way: str, tmp_path: Path) -> None:
    venv, env = poetry_venv(tmp_path)
    if way == "poetry self add":
        (command,) = (c for c in console_commands() if c.endswith(CHECKOUT))
        run(command, env, tmp_path)
    else:
        (command,) = re.findall(
            r"`(/path/to/poetry-venv/bin/pip install [^`]+)`", install_section()
        )
        run(command.replace("/path/to/poetry-venv", str(venv)), env, tmp_path)
    plugins = run("poetry self show plugins", env, tmp_path)
    assert "poetry-lambda-zip" in plugins
    (listed,) = (line for line in plugins.splitlines() if "poetry-lambda-zip (" in line)
    assert "1 application plugin" in plugins.split(listed, 1)[1].splitlines()[1]
    builds_an_example(env, tmp_path)
