"""Shared fixtures: fixture projects in tmp dirs, in-process command runs, the Docker engine."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from typing import NoReturn

import pytest
from cleo.io.outputs.output import Verbosity
from cleo.testers.command_tester import CommandTester
from poetry.factory import Factory

from poetry_lambda_zip import locations
from poetry_lambda_zip.builders.docker import OWNER_VARIABLE
from poetry_lambda_zip.command import LambdaZipCommand
from tests.docker_helpers import RUNNER
from tests.docker_helpers import Build
from tests.docker_helpers import run_in_task
from tests.docker_helpers import unpack

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

    import docker

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
STAND_IN_SCRIPT = ROOT / "tests" / "images" / "build-stand-in.sh"
#: CI sets this (and CI=true): Docker tests then fail instead of skipping without an engine.
REQUIRE_DOCKER = "POETRY_LAMBDA_ZIP_REQUIRE_DOCKER"


def docker_required() -> bool:
    return os.environ.get(REQUIRE_DOCKER) == "1" or os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    if docker_required():
        pytest.fail(f"{reason} (Docker tests must run here: {REQUIRE_DOCKER}/CI is set)")
    pytest.skip(reason)


def mount_tmpfs(directory: Path, options: str) -> None:
    """A tmpfs on ``directory`` (``size=1m`` for a full disk, ``ro`` for a read-only one); the
    test unmounts it."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode:
        unavailable(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")


@pytest.fixture(autouse=True)
def tree_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache of installed dependency trees (downloads stay shared):
    a test that needs an install to happen must not find one left by another test."""
    directory = tmp_path / "tree-cache"
    monkeypatch.setattr(locations, "trees", lambda project_dir: directory)
    return directory


@pytest.fixture(autouse=True)
def bytecode_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No verdicts "this machine compiles as the image does" (builders.bytecode_here) unless a
    test asks for them (``verdicts_here``): tests that look at what the image did must see
    the image do it."""
    monkeypatch.setattr(locations, "bytecode_verdicts", lambda project_dir: None)


@pytest.fixture(autouse=True)
def no_stamps(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No no-op shortcut (``shortcut``) unless a test asks for it (``stamps_here``): a test
    that builds twice must see the second build decide from contents. Locks of its own (not
    in the test's directory, which may be its project)."""
    monkeypatch.setattr(locations, "stamps", lambda project_dir: None)
    locks = tmp_path_factory.mktemp("locks")
    monkeypatch.setattr(locations, "locks", lambda project_dir: locks)


@pytest.fixture
def stamps_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own cache directory for stamps (they go to its lambda-zip-stamps/)."""
    directory = tmp_path / "stamps-cache" / "lambda-zip-stamps"
    monkeypatch.setattr(locations, "stamps", lambda project_dir: directory)
    return directory


@pytest.fixture
def verdicts_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own file of bytecode verdicts."""
    record = tmp_path / "bytecode-here.json"
    monkeypatch.setattr(locations, "bytecode_verdicts", lambda project_dir: record)
    return record


@pytest.fixture(autouse=True)
def build_owner(monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test labels what its builds create with an owner of its own (subprocess builds
    inherit it): the engine may be shared, so tests check only their own containers and
    volumes, never count anyone else's."""
    owner = f"poetry-lambda-zip-tests-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(OWNER_VARIABLE, owner)
    return owner


@pytest.fixture
def project(tmp_path: Path) -> Callable[[str], Path]:
    """Copy a fixture project into a temporary directory and return its path."""

    def copy(name: str) -> Path:
        destination = tmp_path / name
        shutil.copytree(
            FIXTURES / name, destination, ignore=shutil.ignore_patterns("dist", "__pycache__")
        )
        return destination

    return copy


@pytest.fixture
def run_command() -> Callable[[Path, str], CommandTester]:
    """Run ``poetry lambda-zip ARGS`` in-process against the project at the given path."""

    def run(path: Path, arguments: str = "") -> CommandTester:
        command = LambdaZipCommand()
        command.set_poetry(Factory().create_poetry(path))
        tester = CommandTester(command)
        tester.execute(arguments)
        return tester

    return run


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    import docker

    client = None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        if client is not None:
            client.close()
        unavailable(f"no Docker engine answers: {e}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def stand_in_image(docker_client: docker.DockerClient) -> str:
    """Tag of the local stand-in for the python3.11 x86_64 Lambda image (built if missing)."""
    if shutil.which("debootstrap") is None:
        try:
            docker_client.images.get("poetry-lambda-zip/stand-in:python3.11-x86_64")
        except Exception:
            unavailable("the stand-in image is missing and debootstrap is not installed")
    result = subprocess.run(
        ["bash", str(STAND_IN_SCRIPT), "x86_64"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        unavailable(f"building the stand-in image failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def stand_in_tar(
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The stand-in image as ``docker save`` writes it, once per session (for engines the
    tests start themselves)."""
    path = tmp_path_factory.mktemp("stand-in") / "stand-in.tar"
    with path.open("wb") as handle:
        for chunk in docker_client.images.get(stand_in_image).save(named=True):
            handle.write(chunk)
    return path


@pytest.fixture
def build(stand_in_image: str) -> Callable[..., Build]:
    """Build a project for python3.11 x86_64 with the stand-in image, plus ``arguments``."""

    def run(path: Path, arguments: str = "", verbosity: Verbosity = Verbosity.NORMAL) -> Build:
        return Build(path, f"--runtime python3.11 --image {stand_in_image} {arguments}", verbosity)

    return run


@pytest.fixture
def invoke(
    docker_client: docker.DockerClient, stand_in_image: str, tmp_path: Path
) -> Callable[[Path, str, dict[str, object]], object]:
    """Unpack a zip into a read-only /var/task and call the handler, as nobody."""

    def call(zip_path: Path, handler: str, event: dict[str, object]) -> object:
        task = unpack(zip_path, tmp_path / f"task-{zip_path.stem}")
        command = ["python3", "-c", RUNNER, handler, json.dumps(event)]
        code, output = run_in_task(docker_client, stand_in_image, task, command, stderr=False)
        assert code == 0, output
        return json.loads(output)

    return call


PRIVATE_PORT = 38080  # the URL in fixtures/private-index
PRIVATE_USER = "ci-reader"
PRIVATE_PASSWORD = "idx-s3cret-pass"


@pytest.fixture(scope="session")
def private_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pypiserver on loopback serving fixtures/private-index/packages, basic auth required."""
    server = shutil.which("pypi-server", path=str(Path(sys.executable).parent))
    if server is None:
        unavailable("pypiserver is not installed (pip install -e '.[test]')")
    htpasswd = tmp_path_factory.mktemp("index") / "htpasswd"
    digest = base64.b64encode(hashlib.sha1(PRIVATE_PASSWORD.encode()).digest()).decode()
    htpasswd.write_text(f"{PRIVATE_USER}:{{SHA}}{digest}\n")
    log = htpasswd.with_name("pypiserver.log")
    with log.open("w") as handle:
        process = subprocess.Popen(
            [server, "run", "-i", "127.0.0.1", "-p", str(PRIVATE_PORT), "-P", str(htpasswd),
             "-a", "download,list,update", str(FIXTURES / "private-index" / "packages")],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{PRIVATE_PORT}/simple/"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False).returncode:
            assert time.monotonic() < deadline, f"pypiserver did not start: {log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_USERNAME", PRIVATE_USER)
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_PASSWORD", PRIVATE_PASSWORD)
