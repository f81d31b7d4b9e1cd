"""Engines other than the local socket's: a remote one over TCP, one that goes away mid-build
(both private engines the tests start), and a build from a job container that shares only the
engine's socket (Docker-outside-of-Docker)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip.builders.docker import OWNER_LABEL
from poetry_lambda_zip.builders.docker import OWNER_VARIABLE
from tests.conftest import ROOT
from tests.conftest import unavailable
from tests.docker_helpers import leftover_containers
from tests.docker_helpers import owner
from tests.docker_helpers import owner_filter
from tests.private_engine import private_engine

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

    import docker

    from tests.docker_helpers import Build
    from tests.private_engine import PrivateEngine

pytestmark = pytest.mark.docker

POETRY = str(Path(sys.executable).with_name("poetry"))
PURE_PYTHON_ZIP = "hello_pure-0.1.0-python3.11-x86_64.zip"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def engine(stand_in_tar: Path) -> Iterator[PrivateEngine]:
    """A private engine with the stand-in image, shared by this module's tests that leave it
    running (the one that stops an engine starts its own)."""
    with private_engine(stand_in_tar) as started:
        print(f"private engine: started in {started.started_seconds:.1f} s,"
              f" stand-in image loaded in {started.loaded_seconds:.1f} s")  # fmt: skip
        yield started


def cache_volume(client: docker.DockerClient, image: str) -> str:
    image_id = client.images.get(image).id.removeprefix("sha256:")[:12]
    return f"poetry-lambda-zip-cache-python3.11-x86_64-{image_id}"


def test_a_build_through_a_tcp_engine_equals_the_one_on_the_local_engine(
    engine: PrivateEngine,
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with contextlib.closing(engine.client()) as private:
        # The image keeps its id through save and load: the fingerprint (which names the
        # image's id) and so the zip's bytes can match.
        assert private.images.get(engine.image).id == docker_client.images.get(engine.image).id
        remote_path = project("pure-python")
        local_path = shutil.copytree(remote_path, remote_path.parent / "local" / "pure-python")
        with monkeypatch.context() as patch:
            patch.setenv("DOCKER_HOST", engine.tcp)
            # --network host: the private engine has no bridge.
            remote = build(remote_path, "--builder docker --network host")
            assert remote.status == 0, remote.error
            assert "the dependencies: precompiled in the python3.11 image" in remote.output
            # Made there (a new engine), by this build: it carries the owner.
            volume = private.volumes.get(cache_volume(private, engine.image))
            assert volume.attrs["Labels"] == {OWNER_LABEL: owner()}
            assert leftover_containers(private) == []
    # --force: not the dependency tree the TCP build kept (same image id), a build of its own.
    local = build(local_path, "--builder docker --network host --force")
    assert local.status == 0, local.error
    assert "the dependencies: precompiled in the python3.11 image" in local.output
    assert remote.zip_path.name == local.zip_path.name == PURE_PYTHON_ZIP
    assert remote.zip_path.read_bytes() == local.zip_path.read_bytes()
    assert leftover_containers(docker_client) == []


def test_losing_the_engine_mid_build_exits_4_and_leaves_nothing(
    stand_in_tar: Path, stand_in_image: str, project: Callable[[str], Path], tmp_path: Path
) -> None:
    path = project("sdist-only")  # pip builds docopt in the image: the container runs seconds
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # An engine of its own, as it is stopped; the shared one is never touched.
    with private_engine(stand_in_tar) as engine, contextlib.closing(engine.client()) as client:
        process = subprocess.Popen(
            # --force: Poetry's own cache may keep docopt's installed tree from an earlier
            # build (same image id), and then no dependency container would run.
            [POETRY, "lambda-zip", "-C", str(path), "--runtime", "python3.11", "--image",
             stand_in_image, "--builder", "docker", "--network", "host", "--force"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # The private engine's containers reach the index only through its proxy.
            env={**os.environ, "DOCKER_HOST": engine.unix, "HTTPS_PROXY": engine.proxy,
                 "TMPDIR": str(scratch)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            running = {"label": owner_filter(), "status": "running"}
            while not client.containers.list(filters=running, ignore_removed=True):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the build container never ran"
                time.sleep(0.1)
            # SIGTERM: dockerd stops accepting connections at once, and the build fails at
            # its next request. (It kills the container after its 10 s stop timeout; a log
            # stream cut that way, or by SIGKILL, reads as a container that ended without a
            # result: exit 5.)
            engine.stop_daemon()
            _, error = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 4, error
        assert "Lost the Docker engine" in error
        assert "Traceback" not in error
        assert not (path / "dist").exists()
        assert list(scratch.iterdir()) == []
        # As the message says: once the engine is back, the build container is gone.
        engine.start()
        deadline = time.monotonic() + 30
        while leftover_containers(client):
            assert time.monotonic() < deadline, leftover_containers(client)
            time.sleep(0.5)


# ---- Docker-outside-of-Docker ------------------------------------------------------------


@pytest.fixture(scope="session")
def plugin_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin and everything it needs as wheels, built here once per session."""
    directory = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        unavailable(f"pip wheel of the plugin failed:\n{result.stderr[-2000:]}")
    return directory


def engine_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        unavailable(f"sharing the engine's socket needs a local one (DOCKER_HOST={host})")
    return Path(host.removeprefix("unix://"))


def tar_of(entries: dict[str, Path]) -> bytes:
    """A tar for put_archive: each path (a file, or a directory with its contents) under
    its name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, path in entries.items():
            archive.add(path, name)
    return buffer.getvalue()


def run(container: docker.models.containers.Container, command: list[str]) -> str:
    code, output = container.exec_run(command)
    text = str(output.decode(errors="replace"))
    assert code == 0, f"{' '.join(command)} exited {code}:\n{text[-3000:]}"
    return text


def test_a_job_container_sharing_only_the_socket_builds_the_same_zip(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    stand_in_image: str,
    plugin_wheels: Path,
) -> None:
    socket = engine_socket()
    if not socket.is_socket():
        unavailable(f"no engine socket at {socket}")
    path = project("pure-python")
    # The job container: the engine's socket is all it shares with this machine; the project
    # and the plugin's wheels are copied in, the zip is copied out.
    job = docker_client.containers.create(
        stand_in_image,
        ["sleep", "infinity"],
        entrypoint="",
        labels={OWNER_LABEL: owner()},
        environment={OWNER_VARIABLE: owner(), "REQUESTS_CA_BUNDLE": "/tmp/ca.pem",
                     "SSL_CERT_FILE": "/tmp/ca.pem", "PIP_CERT": "/tmp/ca.pem"},
        volumes={str(socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
    )  # fmt: skip
    try:
        job.start()
        job.put_archive("/tmp", tar_of({"wheels": plugin_wheels, "ca.pem": HOST_CA_BUNDLE}))
        job.put_archive("/", tar_of({"work/project": path}))
        mounts = [(m["Type"], m["Source"]) for m in job.attrs["Mounts"]]
        assert mounts == [("bind", str(socket))]
        python = "/var/lang/bin/python3"
        run(job, [python, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                  "/tmp/wheels", "poetry-lambda-zip"])  # fmt: skip
        output = run(job, ["/var/lang/bin/poetry", "lambda-zip", "-C", "/work/project",
                           "--runtime", "python3.11", "--image", stand_in_image,
                           "--builder", "docker"])  # fmt: skip
        # One tree compiles in the image through the socket (the other waits for its bytecode
        # verdict and compiles in the job container).
        assert "precompiled in the python3.11 image" in output
        stream, _ = job.get_archive(f"/work/project/dist/{PURE_PYTHON_ZIP}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(PURE_PYTHON_ZIP)
            assert member is not None
            inside = member.read()
    finally:
        job.remove(force=True)
    here = build(path, "--builder docker")
    assert here.status == 0, here.error
    assert here.zip_path.read_bytes() == inside
    assert leftover_containers(docker_client) == []
