"""The local builder: wheels chosen for the target, fetched through Poetry, no container."""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

import pytest
import tomlkit

from tests.docker_helpers import BINARY_WHEEL_DISTRIBUTIONS
from tests.docker_helpers import Build
from tests.docker_helpers import break_lock_hashes
from tests.docker_helpers import distributions

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")


def elf_machines(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return {
            ELF_MACHINE[int.from_bytes(archive.read(name)[18:20], "little")]
            for name in archive.namelist()
            if name.endswith(".so")
        }


@pytest.mark.usefixtures("no_engine")
def test_auto_without_an_engine_builds_locally_and_says_why(
    project: Callable[[str], Path],
) -> None:
    path = project("binary-wheel")
    result = Build(path, "--runtime python3.11")
    assert result.status == 0, result.error
    assert "Builder: local (no Docker engine answers at DOCKER_HOST=tcp://127.0.0.1:9" in (
        result.output
    )
    assert distributions(result.zip_path) == BINARY_WHEEL_DISTRIBUTIONS
    with zipfile.ZipFile(result.zip_path) as archive:
        # This Python is 3.11, as the runtime: the bytecode is compiled.
        assert "pydantic/__pycache__/main.cpython-311.pyc" in archive.namelist()


def test_arm64_without_emulation_gets_aarch64_libraries_and_no_foreign_bytecode(
    project: Callable[[str], Path],
) -> None:
    path = project("binary-wheel")
    result = Build(path, "--runtime python3.12 --arch arm64 --builder local")
    assert result.status == 0, result.error
    assert elf_machines(result.zip_path) == {"aarch64"}
    assert "Not precompiling: this Python is 3.11, python3.12 needs 3.12 bytecode" in result.error
    with zipfile.ZipFile(result.zip_path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".pyc")]
        assert any("cpython-312-aarch64-linux-gnu.so" in n for n in archive.namelist())


def test_sdist_only_package_stops_the_local_builder_before_writing(
    project: Callable[[str], Path],
) -> None:
    path = project("sdist-only")
    result = Build(path, "--runtime python3.11 --builder local")
    assert result.status == 2
    assert "docopt 0.6.2: build from sdist docopt-0.6.2.tar.gz" in result.error
    assert "--builder docker" in result.error
    # docopt publishes no wheels at all: another runtime would not help, so it is not advised.
    assert "it publishes no wheels at all" in result.error
    assert "runtime or versions" not in result.error
    assert not (path / "dist").exists()


@pytest.mark.usefixtures("no_engine")
def test_auto_without_engine_and_without_wheels_names_both_problems(
    project: Callable[[str], Path],
) -> None:
    path = project("sdist-only")
    result = Build(path, "--runtime python3.11")
    assert result.status == 4
    assert "docopt 0.6.2" in result.error
    assert "No Docker engine is reachable at DOCKER_HOST=tcp://127.0.0.1:9" in result.error
    # Named once, with the reason; no advice that cannot help (docopt has no wheels at all).
    assert (result.output + result.error).count("docopt 0.6.2") == 1
    assert "it publishes no wheels at all" in result.error
    assert "runtime" not in result.error.split("Start Docker")[-1]
    assert not (path / "dist").exists()


def test_manylinux_2_28_only_wheel_on_python311_fails_before_writing(
    project: Callable[[str], Path],
) -> None:
    path = project("private-index")
    lock_path = path / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    for package in lock["package"]:
        if package["name"] == "tagged-build":
            files = package["files"]
            for entry in list(files):
                if "manylinux_2_17" in entry["file"]:
                    files.remove(entry)
    lock_path.write_text(tomlkit.dumps(lock))
    result = Build(path, "--runtime python3.11 --builder local")
    assert result.status == 3
    assert "tagged-build 1.0.0: poetry.lock lists no sha256-hashed wheel for this target" in (
        result.error
    )
    assert not (path / "dist").exists()


def test_a_downloaded_wheel_that_does_not_match_the_lock_is_refused(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    break_lock_hashes(path, "six")
    result = Build(path, "--runtime python3.11 --builder local")
    assert result.status == 5
    assert "six-1.17.0-py2.py3-none-any.whl (six 1.17.0) does not match poetry.lock" in (
        result.error
    )
    assert "expected sha256 " + "0" * 64 in result.error
    assert not (path / "dist").exists()


@pytest.mark.usefixtures("private_index", "credentials")
def test_private_index_through_poetrys_credentials(project: Callable[[str], Path]) -> None:
    path = project("private-index")
    result = Build(path, "--runtime python3.11 --builder local")
    assert result.status == 0, result.error
    assert distributions(result.zip_path) == {
        "internal-service", "private-greeting", "six", "tagged-build",
    }  # fmt: skip
    with zipfile.ZipFile(result.zip_path) as archive:
        built_for = archive.read("tagged_build/__init__.py").decode()
    assert built_for == 'BUILT_FOR = "manylinux_2_17_x86_64"\n'


@pytest.mark.docker
def test_local_and_docker_builders_write_the_same_bytes(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("binary-wheel")
    docker = build(path, "--builder docker --no-compile -o docker.zip")
    local = build(path, "--builder local --no-compile -o local.zip")
    assert docker.status == local.status == 0, docker.error + local.error
    assert local.sha256 == docker.sha256
    assert (path / "local.zip").read_bytes() == (path / "docker.zip").read_bytes()
    compiled = build(path, "--builder local -o compiled.zip")
    assert compiled.status == 0, compiled.error
    event = {"item": "a", "quantity": 5}
    answer = invoke(path / "compiled.zip", "fast_api_handler.app.handler", event)
    assert answer == {"item": "a", "total": 15}


def test_an_index_unreachable_through_the_proxy_says_what_to_check_and_no_secret(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://builder:pr0xy-s3cret@127.0.0.1:9")
    # --no-cache: nothing fetched by an earlier test may stand in for the index.
    result = Build(project("pure-python"), "--runtime python3.11 --builder local --no-cache")
    assert result.status == 5
    assert "Listing python-dateutil on " in result.error
    assert "Check the network, the proxy settings (HTTPS_PROXY)" in result.error
    assert "pr0xy-s3cret" not in result.output + result.error
    assert "Traceback" not in result.error


@pytest.mark.usefixtures("no_engine")
def test_verify_without_an_engine_stops_before_anything_is_built(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    result = Build(
        path, "--runtime python3.11 --builder local --verify --handler hello_pure.handler.handler"
    )
    assert result.status == 4
    assert "--verify imports the handler in the Lambda image" in result.error
    assert "Nothing was built." in result.error
    assert not (path / "dist").exists()
