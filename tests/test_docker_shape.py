"""Package shape through the real engine: bytecode, slim, layouts, --verify."""

from __future__ import annotations

import json
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip import locations
from poetry_lambda_zip.builders.contract import steps_digest
from tests.docker_helpers import BINARY_WHEEL_DISTRIBUTIONS
from tests.docker_helpers import RUNNER
from tests.docker_helpers import distributions
from tests.docker_helpers import run_in_task
from tests.docker_helpers import unpack

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import docker

    from tests.docker_helpers import Build

pytestmark = pytest.mark.docker

EXPECTED = BINARY_WHEEL_DISTRIBUTIONS
PROBE = """
import importlib.metadata, json
found = importlib.metadata.distributions(path=["/var/task", "/opt/python"])
print(json.dumps(sorted({d.metadata["Name"].lower().replace("_", "-") for d in found})))
"""
EVENT = '{"item": "x", "quantity": 1}'


def test_bytecode_is_unchecked_hash_for_the_runtime_and_used_from_a_read_only_task(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path: Path,
) -> None:
    path = project("binary-wheel")
    result = build(path, "--verify --handler fast_api_handler.app.handler")
    assert result.status == 0, result.error
    assert "imports in" in result.output
    zip_path = result.zip_path
    with zipfile.ZipFile(zip_path) as archive:
        pyc = [n for n in archive.namelist() if n.endswith(".pyc")]
        header = archive.read("fast_api_handler/__pycache__/app.cpython-311.pyc")[:16]
    assert "pydantic/__pycache__/main.cpython-311.pyc" in pyc
    assert all(".cpython-311." in name for name in pyc)
    assert int.from_bytes(header[4:8], "little") == 0b01  # PEP 552: hash-based, unchecked

    task = unpack(zip_path, tmp_path / "task")
    code, output = run_in_task(
        docker_client, stand_in_image, task,
        ["python3", "-v", "-c", RUNNER, "fast_api_handler.app.handler", EVENT],
    )  # fmt: skip
    assert code == 0, output
    assert "code object from '/var/task/fast_api_handler/__pycache__/app.cpython-311.pyc'" in output
    assert "code object from '/var/task/pydantic/__pycache__/main.cpython-311.pyc'" in output


def test_no_compile_ships_no_bytecode(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    result = build(project("pure-python"), "--no-compile")
    assert result.status == 0, result.error
    with zipfile.ZipFile(result.zip_path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".pyc")]


def test_slim_strips_and_prunes_but_every_distribution_is_still_found(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path: Path,
) -> None:
    path = project("binary-wheel")
    full = build(path, "-o full.zip")
    slim = build(path, "-o slim.zip --slim")
    assert full.status == slim.status == 0, full.error + slim.error
    assert "stripped" in slim.output
    full_zip, slim_zip = path / "full.zip", path / "slim.zip"
    with zipfile.ZipFile(full_zip) as before, zipfile.ZipFile(slim_zip) as after:
        so_before = {i.filename: i.file_size for i in before.infolist() if ".so" in i.filename}
        so_after = {i.filename: i.file_size for i in after.infolist() if ".so" in i.filename}
        assert not [n for n in after.namelist() if n.endswith(".pyi")]
    assert so_before.keys() == so_after.keys()
    assert sum(so_after.values()) < sum(so_before.values())
    assert distributions(slim_zip) == EXPECTED
    task = unpack(slim_zip, tmp_path / "task")
    code, output = run_in_task(docker_client, stand_in_image, task, ["python3", "-c", PROBE])
    assert code == 0, output
    assert set(json.loads(output)) == EXPECTED
    code, output = run_in_task(
        docker_client, stand_in_image, task,
        ["python3", "-c", RUNNER, "fast_api_handler.app.handler", '{"item": "x", "quantity": 3}'],
    )  # fmt: skip
    assert json.loads(output) == {"item": "x", "total": 9}


def test_split_layout_runs_with_the_layer_at_opt(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path: Path,
) -> None:
    path = project("binary-wheel")
    function = build(path, "-o function/app.zip")
    split = build(
        path,
        "--layout split -o split/app.zip --json --verify --handler fast_api_handler.app.handler",
    )
    assert function.status == split.status == 0, function.error + split.error
    report = json.loads(split.output)
    kinds = {o["kind"]: o["path"] for o in report["outputs"]}
    assert kinds == {
        "function": str(path / "split/app.zip"),
        "layer": str(path / "split/app-layer.zip"),
    }
    assert report["import_seconds"] > 0
    with (
        zipfile.ZipFile(path / "function/app.zip") as whole,
        zipfile.ZipFile(kinds["function"]) as code,
        zipfile.ZipFile(kinds["layer"]) as layer,
    ):
        layer_names = {n.removeprefix("python/") for n in layer.namelist()}
        assert set(code.namelist()) | layer_names == set(whole.namelist())
        assert not set(code.namelist()) & layer_names
        assert distributions(path / "split/app.zip") == {"fast-api-handler"}
    task = unpack(path / "split/app.zip", tmp_path / "task")
    opt = unpack(path / "split/app-layer.zip", tmp_path / "opt")
    code_, output = run_in_task(
        docker_client, stand_in_image, task,
        ["python3", "-c", RUNNER, "fast_api_handler.app.handler", '{"item": "x", "quantity": 2}'],
        layer=opt,
    )  # fmt: skip
    assert code_ == 0, output
    assert json.loads(output) == {"item": "x", "total": 6}


def test_verify_fails_with_the_traceback_when_the_handler_does_not_import(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    # The module is in the zip (a missing one stops the build before it is written, exit 2);
    # the function is not.
    result = build(project("pure-python"), "--verify --handler hello_pure.handler.missing")
    assert result.status == 5
    assert "does not import" in result.error
    assert "AttributeError: module 'hello_pure.handler' has no attribute 'missing'" in result.error


def test_bytecode_compiled_here_is_the_images_byte_for_byte(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = project("binary-wheel")
    first = build(path)  # no verdicts kept at all: the image compiles every tree
    assert first.status == 0, first.error
    assert "the project's files: precompiled in the python3.11 image" in first.output
    assert "the dependencies: precompiled in the python3.11 image" in first.output
    in_the_image = first.zip_path.read_bytes()

    # Verdicts kept: the image compiles one tree (the first to ask), which is compared here;
    # the other waits for that verdict (no container of its own) and compiles here.
    record = tmp_path / "bytecode-here.json"
    monkeypatch.setattr(locations, "bytecode_verdicts", lambda project_dir: record)
    probed = build(path, "--force")
    assert probed.status == 0, probed.error
    here = "precompiled here (its bytecode is the image's, byte for byte)"
    assert probed.output.count("precompiled in the python3.11 image") == 1
    assert probed.output.count(here) == 1
    interpreter = f"{sys.implementation.name} {sys.version.split()[0]} {steps_digest()[:16]}"
    ((key, verdict),) = json.loads(record.read_text()).items()  # the stand-in image's verdict
    assert key.startswith("sha256:")
    assert key.endswith(f" {interpreter}")
    assert verdict is True
    assert probed.zip_path.read_bytes() == in_the_image

    # With the verdict, every tree that needs only bytecode compiles here.
    second = build(path, "--force")
    assert second.status == 0, second.error
    assert f"the project's files: {here}" in second.output
    assert second.zip_path.read_bytes() == in_the_image


def test_verify_after_leaving_out_the_sdk_imports_the_runtimes_own(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    # The advice a package over the limit gets: the runtime provides the AWS SDK for Python.
    path = project("aws-sdk")
    result = build(path, "--exclude-package boto3 --verify --handler sdk_user.handler.handler")
    assert result.status == 0, result.error
    assert "imports in" in result.output
    with zipfile.ZipFile(result.zip_path) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert "sdk_user" in tops
    sdk = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"}
    assert not tops & sdk
