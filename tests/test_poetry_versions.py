"""Every Poetry the metadata allows: the oldest (2.0.0) and the newest 2.x, each in a venv of
its own with this checkout's plugin, build a fixture; the zips hold the same dependency entries
as this environment's Poetry writes, and the handler imports and runs from them. Only the
project's own dist-info follows the poetry-core that builds its wheel.

The venvs are kept in the temporary directory between runs on one machine for a week (Poetry
installed once, "the newest" looked up again after that); the plugin is installed into them
again each run (this checkout may be a new one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.conftest import ROOT

#: The oldest Poetry pyproject.toml allows, and the newest 2.x the index has.
VERSIONS = {"oldest": "poetry==2.0.0", "newest": "poetry>=2,<3"}
#: How long a venv is kept: "the newest" is looked up again after that.
_KEPT_SECONDS = 7 * 24 * 3600
#: Files whose bytes follow the poetry-core that builds the project's wheel.
PROJECT_INFO = "hello_pure-0.1.0.dist-info/"


def _venv(name: str, requirement: str) -> Path:
    """A venv holding ``requirement`` and the plugin's other dependencies, kept between runs;
    the plugin from this checkout, installed again every time."""
    venv = Path(tempfile.gettempdir()) / "poetry-lambda-zip-poetry-venvs" / name
    python = venv / "bin" / "python"
    marker = venv / "installed.json"
    wanted = {"requirement": requirement, "python": sys.version}
    fresh = marker.is_file() and time.time() - marker.stat().st_mtime < _KEPT_SECONDS
    if not fresh or json.loads(marker.read_text()) != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off"]
        subprocess.run([*pip, requirement, "docker>=7.1,<8", "installer>=0.7"], check=True)
        marker.write_text(json.dumps(wanted))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)], check=True
    )
    return venv


def _build(poetry: Path, tmp_path: Path, label: str) -> tuple[Path, str]:
    """fixtures/pure-python built by ``poetry`` (local builder); the zip and Poetry's version."""
    project = tmp_path / label / "pure-python"
    shutil.copytree(FIXTURES / "pure-python", project)
    environment = {**os.environ, "POETRY_CACHE_DIR": str(tmp_path / label / "cache")}
    version = subprocess.run(
        [str(poetry), "--version"], capture_output=True, text=True, check=True, env=environment
    ).stdout.strip()
    built = subprocess.run(
        [str(poetry), "lambda-zip", "-C", str(project), "--runtime", "python3.11",
         "--builder", "local"],
        capture_output=True, text=True, check=False, env=environment,
    )  # fmt: skip
    assert built.returncode == 0, f"{version}: {built.stdout}{built.stderr}"
    (output,) = (project / "dist").glob("*.zip")
    return output, version


def _entries(path: Path) -> dict[str, tuple[int, int]]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: (info.CRC, info.external_attr) for info in archive.infolist()}


@pytest.mark.parametrize("which", sorted(VERSIONS))
def test_each_poetry_the_metadata_allows_builds_the_same_dependencies(
    tmp_path: Path, which: str
) -> None:
    venv = _venv(which, VERSIONS[which])
    theirs, version = _build(venv / "bin" / "poetry", tmp_path, which)
    ours, _ = _build(Path(sys.executable).with_name("poetry"), tmp_path, "this")
    if which == "oldest":
        assert version.endswith("2.0.0)"), version
    mine, other = _entries(ours), _entries(theirs)
    assert set(mine) == set(other)
    differing = sorted(name for name in mine if mine[name] != other[name])
    assert all(name.startswith(PROJECT_INFO) for name in differing), (version, differing)
    # The handler imports and runs from the zip (the runtime's Python is this one's, 3.11).
    task = tmp_path / which / "task"
    with zipfile.ZipFile(theirs) as archive:
        archive.extractall(task)
    run = subprocess.run(
        [sys.executable, "-I", "-c",
         "import json, sys; sys.path.insert(0, sys.argv[1]); import hello_pure.handler as h;"
         " print(json.dumps(h.handler({'when': '2024-05-06T00:00:00'}, None)))", str(task)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"weekday": "Monday", "year": 2024}
