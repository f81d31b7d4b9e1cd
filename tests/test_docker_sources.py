"""Every kind of locked dependency, built through the real engine: path, file, git, a private
index with basic auth."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cleo.io.outputs.output import Verbosity
from docker.errors import NotFound

from tests.conftest import FIXTURES
from tests.docker_helpers import Build
from tests.docker_helpers import distributions
from tests.docker_helpers import inspect_build_containers
from tests.docker_helpers import leftover_containers
from tests.docker_helpers import owner_filter

if TYPE_CHECKING:
    from collections.abc import Callable

    import docker

pytestmark = pytest.mark.docker

PRIVATE_PORT = 38080  # the URL in fixtures/private-index
PRIVATE_USER = "ci-reader"
PRIVATE_PASSWORD = "idx-s3cret-pass"


def test_monorepo_path_dependencies_outside_the_project(
    tmp_path: Path, build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    root = tmp_path / "monorepo"
    shutil.copytree(FIXTURES / "monorepo", root, ignore=shutil.ignore_patterns("dist"))
    service = root / "services" / "api"
    result = build(service, "-E yaml")
    assert result.status == 0, result.error
    assert "greeting 1.1.0: build from path" in result.output
    zip_path = service / "dist" / "orders_api-0.4.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {
        "docopt",
        "greeting",
        "orders-api",
        "pyyaml",
        "six",
        "textutils",
    }
    assert invoke(zip_path, "orders_api.handler.handler", {"item": "tea"}) == {
        "message": "ORDER RECEIVED: TEA!",
        "modules": {"tomli": False, "yaml": True, "six": True},
    }


def test_file_dependencies_wheel_and_sdist(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("local-files")
    result = build(path)
    assert result.status == 0, result.error
    zip_path = path / "dist" / "uses_files-0.1.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {"legacy-helper", "uses-files", "vendored-tool"}
    assert invoke(zip_path, "uses_files.handler.handler", {"n": 21}) == {
        "tool": "vendored 1.0.0",
        "doubled": 42,
    }


def test_a_changed_file_dependency_fails_the_locks_hash(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    path = project("local-files")
    wheel = path / "vendor" / "vendored_tool-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("vendored_tool/backdoor.py", "print('not what was locked')")
    result = build(path)
    assert result.status == 5
    assert "3cc1cbd40e2ebf7742a8e98c057a218ba2f4bb5fdfdab518b165dffb9ad45196" in result.error


def git(*arguments: str, cwd: Path) -> None:
    identity = ["-c", "user.name=Fixture", "-c", "user.email=fixture@example.com"]
    subprocess.run(["git", *identity, *arguments], cwd=cwd, check=True, capture_output=True)


def test_git_dependency_is_built_at_the_locked_commit(
    tmp_path: Path, build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    root = tmp_path / "git-dependency"
    shutil.copytree(FIXTURES / "git-dependency", root)
    library, service = root / "greeting-lib", root / "service"
    git("init", "-q", cwd=library)
    git("add", "-A", cwd=library)
    git("commit", "-qm", "locked", cwd=library)
    pyproject = service / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("GIT_URL", library.as_uri()))
    poetry = Path(sys.executable).with_name("poetry")
    subprocess.run([str(poetry), "lock"], cwd=service, check=True, capture_output=True)
    (library / "git_greeting" / "__init__.py").write_text('MESSAGE = "the branch moved on"\n')
    git("commit", "-qam", "later", cwd=library)

    result = build(service)
    assert result.status == 0, result.error
    zip_path = service / "dist" / "git_service-0.1.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {"git-greeting", "git-service"}
    assert invoke(zip_path, "git_service.handler.handler", {}) == {
        "message": "greetings from the locked commit"
    }


def grep_volume(client: docker.DockerClient, image: str, volume: str, text: str) -> str:
    """Files in a Docker volume that contain ``text`` (read through a throwaway container)."""
    container = client.containers.run(
        image,
        ["grep", "-rlF", text, "/volume"],
        entrypoint="",
        volumes={volume: {"bind": "/volume", "mode": "ro"}},
        detach=True,
    )
    try:
        container.wait()
        return str(container.logs().decode())
    finally:
        container.remove(force=True)


@pytest.mark.usefixtures("private_index", "credentials")
def test_private_index_credentials_are_used_here_and_reach_nothing_else(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    invoke: Callable[..., object],
    docker_client: docker.DockerClient,
    stand_in_image: str,
) -> None:
    path = project("private-index")
    outcome: list[Build] = []
    thread = threading.Thread(
        # --no-cache: the wheels are fetched from the index, with the credentials, not found
        # by their sha256 among files an earlier test fetched.
        target=lambda: outcome.append(
            build(path, "--network host --no-cache", verbosity=Verbosity.DEBUG)
        )
    )
    thread.start()
    inspected = []
    while thread.is_alive():
        inspected += inspect_build_containers(docker_client)
        time.sleep(0.1)
    thread.join()
    result = outcome[0]
    assert result.status == 0, result.error
    # The wheels are fetched here through Poetry's credentials; the container only compiles.
    assert "fetch       " in result.output
    zip_path = result.zip_path
    assert distributions(zip_path) == {
        "internal-service",
        "private-greeting",
        "six",
        "tagged-build",
    }
    # The stand-in image's glibc (2.36) would load the manylinux_2_28 wheel too; the plan pins
    # the one python3.11's Amazon Linux 2 (glibc 2.26) can load, and only that one is fetched.
    assert invoke(zip_path, "internal_service.handler.handler", {"name": "ci"}) == {
        "message": "hello ci, from the private index",
        "tagged_build": "manylinux_2_17_x86_64",
    }
    secret = PRIVATE_PASSWORD.encode()
    assert secret not in zip_path.read_bytes()
    with zipfile.ZipFile(zip_path) as archive:
        assert not [n for n in archive.namelist() if secret in archive.read(n)]
    assert PRIVATE_PASSWORD not in result.output + result.error
    assert inspected, "the build container was never seen"
    assert not [attrs for attrs in inspected if PRIVATE_PASSWORD in attrs]
    # Only what this test's builds used or created: the stand-in image, images and volumes
    # carrying this test's owner, the cache volume named for the stand-in's id.
    image = docker_client.images.get(stand_in_image)
    images = [image, *docker_client.images.list(filters={"label": owner_filter()})]
    assert not [i for i in images if PRIVATE_PASSWORD in json.dumps(i.attrs)]
    assert leftover_containers(docker_client) == []
    volumes = {v.name for v in docker_client.volumes.list(filters={"label": owner_filter()})}
    cache = f"poetry-lambda-zip-cache-python3.11-x86_64-{image.id.removeprefix('sha256:')[:12]}"
    with contextlib.suppress(NotFound):
        volumes.add(docker_client.volumes.get(cache).name)
    for volume in sorted(volumes):
        assert not grep_volume(docker_client, stand_in_image, volume, PRIVATE_PASSWORD)

    as_json = build(path, "--network host --json")
    assert as_json.status == 0, as_json.error
    assert PRIVATE_PASSWORD not in as_json.output + as_json.error
    assert json.loads(as_json.output)["outputs"][0]["path"] == str(zip_path)


@pytest.mark.usefixtures("private_index")
def test_private_index_without_credentials_names_the_source_and_the_fix(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    # --no-cache: files fetched by an earlier test are found by their sha256 without asking
    # the index (the lock pins them); this build has to ask it.
    result = build(project("private-index"), "--network host --no-cache")
    assert result.status == 5
    assert "The source private (http://127.0.0.1:38080/simple" in result.error
    assert "refused access (401)" in result.error
    assert "poetry config http-basic.private USER" in result.error


def test_url_dependency_is_fetched_and_hash_checked(
    tmp_path: Path, build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(FIXTURES / "local-files" / "vendor")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split(" port ")[1].split()[0]
        url = f"http://127.0.0.1:{port}/vendored_tool-1.0.0-py3-none-any.whl"
        project = tmp_path / "url-service"
        (project / "url_service").mkdir(parents=True)
        (project / "url_service" / "__init__.py").write_text(
            "from vendored_tool import version\n\n\ndef handler(event, context):\n"
            "    return {'tool': version()}\n"
        )
        (project / "pyproject.toml").write_text(
            '[project]\nname = "url-service"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n'
            f'dependencies = ["vendored-tool @ {url}"]\n'
        )
        poetry = Path(sys.executable).with_name("poetry")
        subprocess.run([str(poetry), "lock"], cwd=project, check=True, capture_output=True)
        result = build(project, "--network host --dry-run")
        assert "wheel vendored_tool-1.0.0-py3-none-any.whl (url http://127.0.0.1:" in result.output
        result = build(project, "--network host")
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert result.status == 0, result.error
    zip_path = project / "dist" / "url_service-0.1.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {"url-service", "vendored-tool"}
    assert invoke(zip_path, "url_service.handler", {}) == {"tool": "vendored 1.0.0"}
