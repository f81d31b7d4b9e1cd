"""Helpers for tests that build through the Docker engine."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import TYPE_CHECKING

import tomlkit
from cleo.io.outputs.output import Verbosity
from cleo.testers.application_tester import ApplicationTester
from docker.errors import NotFound
from packaging.utils import canonicalize_name
from poetry.console.application import Application

from poetry_lambda_zip.builders.docker import CONTAINER_LABEL
from poetry_lambda_zip.builders.docker import OWNER_LABEL
from poetry_lambda_zip.builders.docker import OWNER_VARIABLE

if TYPE_CHECKING:
    import docker

#: Calls ``module.function(event, None)`` and prints the JSON answer, as Lambda's runtime would.
RUNNER = """
import json, sys
module, function = sys.argv[1].rsplit(".", 1)
module = module.replace("/", ".")  # SAM's dir/module.function
handler = getattr(__import__(module, fromlist=[function]), function)
print(json.dumps(handler(json.loads(sys.argv[2]), None)))
"""


class Build:
    """``poetry lambda-zip -C PATH ARGS`` through Poetry's application, plugin loading included."""

    def __init__(self, path: Path, arguments: str, verbosity: Verbosity = Verbosity.NORMAL) -> None:
        tester = ApplicationTester(Application())
        self.status = tester.execute(
            f"lambda-zip -C {path} {arguments}", decorated=False, verbosity=verbosity
        )
        self.output = tester.io.fetch_output()
        self.error = tester.io.fetch_error()

    @property
    def warnings(self) -> list[str]:
        """The warning lines the build printed (on stderr)."""
        return [line for line in self.error.splitlines() if line.startswith("Warning: ")]

    @property
    def zip_path(self) -> Path:
        line = next(line for line in self.output.splitlines() if line.startswith("Built "))
        return Path(line.removeprefix("Built "))

    @property
    def sha256(self) -> str:
        return next(
            line.split()[1] for line in self.output.splitlines() if line.startswith("  sha256 ")
        )


def distributions(zip_path: Path) -> set[str]:
    """Canonical names of the distributions in the zip, from their METADATA."""
    with zipfile.ZipFile(zip_path) as archive:
        return {
            canonicalize_name(Parser().parsestr(archive.read(name).decode())["Name"])
            for name in archive.namelist()
            if name.endswith(".dist-info/METADATA")
        }


def owner() -> str:
    """This test's owner: conftest sets it per test, so its builds (in-process or not) label
    what they create with it. The engine is shared: tests look at nothing else."""
    value = os.environ.get(OWNER_VARIABLE)
    assert value, f"{OWNER_VARIABLE} is not set: the autouse fixture in tests/conftest.py sets it"
    return value


def owner_filter() -> str:
    """The label filter matching what this test's builds (and the test itself) created."""
    return f"{OWNER_LABEL}={owner()}"


def leftover_containers(client: docker.DockerClient) -> list[str]:
    """Names of this test's containers still on the engine, running or not."""
    # ignore_removed: the SDK inspects each listed container; one may be gone by then.
    listed = client.containers.list(
        all=True, filters={"label": owner_filter()}, ignore_removed=True
    )
    return [container.name for container in listed]


def inspect_build_containers(client: docker.DockerClient) -> list[str]:
    """``docker inspect`` of each of this test's build containers running now, as JSON text
    (one that is gone between listing and inspecting is skipped: builds run short containers
    side by side)."""
    found = []
    for container in client.containers.list(
        filters={"label": [CONTAINER_LABEL, owner_filter()]}, ignore_removed=True
    ):
        try:
            found.append(json.dumps(client.api.inspect_container(container.id)))
        except NotFound:
            continue
    return found


#: The distributions fixtures/binary-wheel puts into a function zip.
BINARY_WHEEL_DISTRIBUTIONS = {
    "annotated-types",
    "fast-api-handler",
    "orjson",
    "pydantic",
    "pydantic-core",
    "typing-extensions",
    "typing-inspection",
}


def break_lock_hashes(project: Path, package: str) -> None:
    """Make every locked sha256 of ``package`` wrong, as a tampered download would look."""
    lock_path = project / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    for locked in lock["package"]:
        if locked["name"] == package:
            for entry in locked["files"]:
                entry["hash"] = "sha256:" + "0" * 64
    lock_path.write_text(tomlkit.dumps(lock))


def sealed_again(path: Path) -> None:
    """Seal a zip a test changed as the writer seals what it writes (``archive.SEAL``): the
    last 64 bytes, the sha256 of every byte before them."""
    body = path.read_bytes()[:-64]
    path.write_bytes(body + hashlib.sha256(body).hexdigest().encode())


def unpack(zip_path: Path, destination: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(destination)
    return destination


def run_in_task(
    client: docker.DockerClient,
    image: str,
    task: Path,
    command: list[str],
    layer: Path | None = None,
    *,
    stderr: bool = True,
) -> tuple[int, str]:
    """Run ``command`` as nobody with ``task`` read-only at /var/task (and a layer at /opt),
    as on Lambda: nothing there is writable. Returns the exit code and the output."""
    volumes = {str(task): {"bind": "/var/task", "mode": "ro"}}
    if layer is not None:
        volumes[str(layer)] = {"bind": "/opt", "mode": "ro"}
    container = client.containers.run(
        image, command, volumes=volumes, environment={"PYTHONPATH": "/var/task:/opt/python"},
        working_dir="/var/task", user="65534:65534", detach=True,
    )  # fmt: skip
    try:
        code = container.wait()["StatusCode"]
        return code, container.logs(stdout=True, stderr=stderr).decode()
    finally:
        container.remove(force=True)
