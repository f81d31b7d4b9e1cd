"""Untrusted outputs, leftovers of killed runs, and credentials written into source URLs: what
the build refuses, cleans up and never prints (local builder; the index on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import tomlkit
from cleo.io.outputs.output import Verbosity
from poetry.core.pyproject.toml import PyProjectTOML
from poetry.packages.locker import Locker

from poetry_lambda_zip.fingerprint import carries_fingerprint
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.stale import owner_tag
from tests.conftest import FIXTURES
from tests.conftest import PRIVATE_PASSWORD
from tests.conftest import PRIVATE_USER
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable

POETRY = str(Path(sys.executable).with_name("poetry"))
LOCAL = "--runtime python3.11 --builder local --no-compile"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own for the builds' scratch directories."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


# ---- -o never replaces what the plugin did not write -----------------------------------------


@pytest.mark.parametrize("victim", ["pyproject.toml", "poetry.lock", "src/hello_pure/handler.py"])
def test_output_over_a_project_file_is_refused_and_the_file_kept(
    project: Callable[[str], Path], victim: str
) -> None:
    path = project("pure-python")
    before = (path / victim).read_bytes()
    result = Build(path, f"{LOCAL} -o {path / victim}")
    assert result.status == 6, result.error
    assert f"{path / victim} exists and was not written by poetry-lambda-zip" in result.error
    assert "Pass another path to -o" in result.error
    assert (path / victim).read_bytes() == before


def test_a_zip_the_plugin_did_not_write_is_not_replaced(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    theirs = path / "vendor.zip"
    with zipfile.ZipFile(theirs, "w") as archive:
        archive.writestr("vendored.py", "")
    before = theirs.read_bytes()
    result = Build(path, f"{LOCAL} -o vendor.zip --dry-run")
    assert result.status == 6
    assert theirs.read_bytes() == before


def test_an_output_that_is_not_a_regular_file_is_refused_without_reading_it(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    fifo = path / "function.zip"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    result = Build(path, f"{LOCAL} -o function.zip --dry-run")
    assert result.status == 6
    assert "exists and was not written by poetry-lambda-zip" in result.error
    assert fifo.is_fifo()


def test_an_earlier_package_is_replaced(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    output = path / "function.zip"
    earlier_package(output, {"old.py": b""})
    result = Build(path, f"{LOCAL} -o function.zip")
    assert result.status == 0, result.error
    with zipfile.ZipFile(output) as archive:
        assert "old.py" not in archive.namelist()
        assert "hello_pure/handler.py" in archive.namelist()


def test_outputs_are_never_included_and_a_rebuild_is_up_to_date(
    project: Callable[[str], Path],
) -> None:
    path = project("non-package")
    earlier_package(path / "old-package.zip", {"index.py": b"old"})
    first = Build(path, f"{LOCAL} --include '**/*'")
    assert first.status == 0, first.error
    again = Build(path, f"{LOCAL} --include '**/*'")
    assert again.status == 0, again.error
    assert "Up to date" in again.output
    with zipfile.ZipFile(first.zip_path) as archive:
        names = archive.namelist()
    assert "index.py" in names
    assert not [name for name in names if name.endswith(".zip")]
    assert "Left old-package.zip out of include" in first.error
    assert not [w for w in first.warnings + again.warnings if "dist/" in w]  # its own: quietly
    assert again.sha256 == first.sha256


def test_a_killed_runs_temporary_zip_is_neither_included_nor_in_the_way(
    project: Callable[[str], Path],
) -> None:
    """A run killed while writing its zip leaves ``dist/.NAME.zip.PID-HOST.….tmp``; the next
    run with ``include = ["**/*"]`` neither ships it nor trips over removing it."""
    path = project("non-package")
    first = Build(path, f"{LOCAL} --include '**/*'")
    assert first.status == 0, first.error
    left = first.zip_path.with_name(
        f".{first.zip_path.name}.{_dead_pid()}-{owner_tag()[-8:]}.x1.tmp"
    )
    left.write_bytes(b"PK\x03\x04 half a zip")
    (path / "index.py").write_text((path / "index.py").read_text() + "\n# edited\n")
    again = Build(path, f"{LOCAL} --include '**/*'")
    assert again.status == 0, again.error
    assert not left.exists()
    with zipfile.ZipFile(again.zip_path) as archive:
        assert not [name for name in archive.namelist() if name.endswith(".tmp")]


def test_an_output_inside_the_package_is_refused_before_it_ships(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    inside = path / "src" / "hello_pure" / "bundle.zip"
    first = Build(path, f"{LOCAL} -o {inside}")
    assert first.status == 0, first.error
    size = inside.stat().st_size
    second = Build(path, f"{LOCAL} -o {inside} --force")
    assert second.status == 6
    assert "hello_pure/bundle.zip is a package poetry-lambda-zip wrote" in second.error
    assert "Write packages outside the package's directory" in second.error
    assert inside.stat().st_size == size


# ---- what a killed run leaves, the next run removes ------------------------------------------


def test_leftovers_of_dead_runs_are_removed_and_nothing_else(
    project: Callable[[str], Path], private_tmp: Path
) -> None:
    path = project("pure-python")
    dist = path / "dist"
    dist.mkdir()
    output_name = "hello_pure-0.1.0-python3.11-x86_64.zip"
    dead = _dead_pid()
    host = owner_tag().split("-")[1]
    stale_dir = private_tmp / f"lambda-zip-{dead}-{host}.abcd"
    stale_dir.mkdir()
    (stale_dir / "netrc").write_text("secret")
    stale_zip = dist / f".{output_name}.{dead}-{host}.x1y2.tmp"
    stale_zip.write_bytes(b"partial")
    kept = [
        private_tmp / f"lambda-zip-{os.getpid()}-{host}.live",  # a live run's
        private_tmp / f"lambda-zip-{dead}-0000ffff.other-host",  # another machine's
        private_tmp / "lambda-zip-notes",  # not ours at all
        dist / f".{output_name}.{os.getpid()}-{host}.live.tmp",
        dist / "unrelated.tmp",
    ]
    for other in kept:
        other.write_text("keep")
    result = Build(path, LOCAL)
    assert result.status == 0, result.error
    assert not stale_dir.exists()
    assert not stale_zip.exists()
    assert all(other.exists() for other in kept)


def test_a_sigkilled_build_is_cleaned_up_by_the_next_one(
    project: Callable[[str], Path], tmp_path: Path
) -> None:
    path = project("pure-python")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    environment = {**os.environ, "TMPDIR": str(scratch)}
    command = [POETRY, "lambda-zip", "-C", str(path), *LOCAL.split(), "--force", "--no-cache"]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not list(scratch.glob("lambda-zip-*")):
        assert process.poll() is None, "the build ended before its scratch directory was seen"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(scratch.glob("lambda-zip-*")), "the killed build left nothing to clean"
    again = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert list(scratch.iterdir()) == []
    assert not list((path / "dist").glob(".*.tmp"))


# ---- credentials written into a source URL ---------------------------------------------------


@pytest.fixture
def url_with_password(tmp_path: Path) -> Callable[[str], Path]:
    """The private-index project with the source's credentials written into its URL (in
    pyproject.toml and, as Poetry writes it, in poetry.lock), with a fresh content-hash."""

    def make(password: str) -> Path:
        path = tmp_path / f"private-index-{len(list(tmp_path.glob('private-index-*')))}"
        shutil.copytree(FIXTURES / "private-index", path)
        plain = "http://127.0.0.1:38080/simple"
        secret = f"http://{PRIVATE_USER}:{password}@127.0.0.1:38080/simple"
        for name in ("pyproject.toml", "poetry.lock"):
            (path / name).write_text((path / name).read_text().replace(plain, secret))
        lock_path = path / "poetry.lock"
        lock = tomlkit.parse(lock_path.read_text())
        data = PyProjectTOML(path / "pyproject.toml").data
        lock["metadata"]["content-hash"] = Locker(lock_path, data)._get_content_hash()
        lock_path.write_text(tomlkit.dumps(lock))
        return path

    return make


def test_a_password_in_a_source_url_is_not_in_the_plan_or_its_json(
    url_with_password: Callable[[str], Path],
) -> None:
    path = url_with_password(PRIVATE_PASSWORD)
    plan = Build(path, "--runtime python3.11 --dry-run", verbosity=Verbosity.DEBUG)
    assert plan.status == 0, plan.error
    assert "source private (http://127.0.0.1:38080/simple)" in plan.output
    as_json = Build(path, "--runtime python3.11 --dry-run --json")
    assert as_json.status == 0, as_json.error
    sources = {d["source"]["url"] for d in json.loads(as_json.output)["distributions"]}
    assert "http://127.0.0.1:38080/simple" in sources
    for shown in (plan.output + plan.error, as_json.output + as_json.error):
        assert PRIVATE_PASSWORD not in shown


@pytest.mark.usefixtures("private_index")
def test_a_password_in_a_source_url_is_used_but_never_shown(
    url_with_password: Callable[[str], Path],
) -> None:
    built = Build(
        url_with_password(PRIVATE_PASSWORD), f"{LOCAL} --no-cache", verbosity=Verbosity.DEBUG
    )
    assert built.status == 0, built.error
    assert PRIVATE_PASSWORD not in built.output + built.error
    assert PRIVATE_PASSWORD.encode() not in built.zip_path.read_bytes()

    refused = Build(url_with_password("wrong-" + PRIVATE_PASSWORD), f"{LOCAL} --no-cache")
    assert refused.status == 5
    assert "refused access" in refused.error
    assert "http://127.0.0.1:38080/simple" in refused.error
    assert PRIVATE_PASSWORD not in refused.output + refused.error


@pytest.mark.usefixtures("private_index")
def test_poetrys_own_debug_lines_show_no_password(
    url_with_password: Callable[[str], Path], tmp_path: Path
) -> None:
    """As a user runs it: Poetry's logging handler writes its debug lines (``Creating new
    session for user:password@host``) through the command's IO, which redacts every line."""
    path = url_with_password(PRIVATE_PASSWORD)
    environment = {**os.environ, "POETRY_CACHE_DIR": str(tmp_path / "cache")}
    command = [POETRY, "lambda-zip", "-C", str(path), *LOCAL.split(), "-vvv"]
    built = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    shown = built.stdout + built.stderr
    assert "Creating new session for 127.0.0.1:38080" in shown  # the line is there, redacted
    assert PRIVATE_PASSWORD not in shown
    assert f"{PRIVATE_USER}:" not in shown


def earlier_package(path: Path, files: dict[str, bytes]) -> None:
    """A zip carrying this plugin's fingerprint, as an earlier build leaves it."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.comment = comment("0" * 64)
    assert carries_fingerprint(path)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
