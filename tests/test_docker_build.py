"""Builds fixture projects through a real Docker engine with the stand-in Lambda image, then runs
their handlers from the zip unpacked into a read-only /var/task."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cleo.io.outputs.output import Verbosity
from cleo.testers.application_tester import ApplicationTester
from poetry.console.application import Application

from poetry_lambda_zip.index_access import CA_BUNDLE_VARIABLES
from tests.conftest import FIXTURES
from tests.docker_helpers import BINARY_WHEEL_DISTRIBUTIONS
from tests.docker_helpers import Build
from tests.docker_helpers import break_lock_hashes
from tests.docker_helpers import distributions
from tests.docker_helpers import inspect_build_containers
from tests.docker_helpers import leftover_containers
from tests.docker_helpers import owner_filter

if TYPE_CHECKING:
    from collections.abc import Callable

    import docker

pytestmark = pytest.mark.docker


def test_pure_python_project_runs_from_a_read_only_var_task(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    invoke: Callable[..., object],
    docker_client: docker.DockerClient,
) -> None:
    path = project("pure-python")
    result = build(path)
    assert result.status == 0, result.error
    for phase in ("resolve", "image", "install", "package"):
        assert phase in result.output
    zip_path = path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip"
    assert result.zip_path == zip_path
    assert distributions(zip_path) == {"hello-pure", "python-dateutil", "six"}
    assert invoke(zip_path, "hello_pure.handler.handler", {"when": "2024-02-29T12:00:00"}) == {
        "weekday": "Thursday",
        "year": 2024,
    }
    assert leftover_containers(docker_client) == []


def test_binary_wheels_for_the_target_import_and_dev_group_stays_out(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("binary-wheel")
    result = build(path, "-o out/function.zip --json")
    assert result.status == 0, result.error
    zip_path = path / "out" / "function.zip"
    expected = BINARY_WHEEL_DISTRIBUTIONS
    assert distributions(zip_path) == expected
    with zipfile.ZipFile(zip_path) as archive:
        compiled = [n for n in archive.namelist() if n.endswith(".so")]
        unzipped = sum(info.file_size for info in archive.infolist())
    assert any("cpython-311-x86_64-linux-gnu" in name for name in compiled)
    answer = invoke(zip_path, "fast_api_handler.app.handler", {"item": "tea", "quantity": 2})
    assert answer == {"item": "tea", "total": 6}

    report = json.loads(result.output)
    (output,) = report["outputs"]
    assert output["path"] == str(zip_path)
    assert output["sha256"] == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert output["zipped_size"] == zip_path.stat().st_size
    assert output["unzipped_size"] == unzipped
    assert (report["runtime"], report["arch"], report["builder"]) == (
        "python3.11",
        "x86_64",
        "docker",
    )
    sizes = {d["name"]: d for d in report["distributions"]}
    assert set(sizes) == expected
    assert sizes["fast-api-handler"]["version"] == "1.2.0"
    assert sizes["pydantic-core"]["unzipped_size"] > 1_000_000
    assert sum(d["unzipped_size"] for d in sizes.values()) == unzipped
    assert "resolve" in result.error  # human lines on stderr


def test_markers_extras_and_groups_are_decided_for_the_target(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("markers")
    result = build(path, "--extras yaml")
    assert result.status == 0, result.error
    zip_path = path / "dist" / "marker_demo-0.3.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {"marker-demo", "pyyaml", "six"}
    assert invoke(zip_path, "marker_demo.handler.handler", {}) == {
        "six": True,
        "tomli": False,
        "colorama": False,
        "win32api": False,
        "typing_extensions": False,
        "yaml": True,
        "iniconfig": False,
    }


def test_project_locked_by_poetry_1_builds_the_same_set(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("poetry1-lock")
    result = build(path, "-E yaml")
    assert result.status == 0, result.error
    zip_path = path / "dist" / "legacy_service-2.0.1-python3.11-x86_64.zip"
    assert distributions(zip_path) == {
        "certifi",
        "charset-normalizer",
        "idna",
        "legacy-service",
        "pysocks",
        "pyyaml",
        "requests",
        "urllib3",
    }
    assert invoke(zip_path, "legacy_service.handler.handler", {}) == {
        "requests": True,
        "socks": True,
        "idna": True,
        "tomli": False,
        "colorama": False,
        "yaml": True,
        "iniconfig": False,
    }


def test_sdist_only_dependency_is_built_into_a_wheel_inside_the_image(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("sdist-only")
    result = build(path)
    assert result.status == 0, result.error
    zip_path = path / "dist" / "usage_parser-0.1.0-python3.11-x86_64.zip"
    assert distributions(zip_path) == {"docopt", "usage-parser"}
    assert invoke(zip_path, "usage_parser.handler.handler", {"argv": ["ada", "--shout"]}) == {
        "greeting": "hello ADA"
    }


def test_package_mode_false_project_ships_its_included_handler(
    project: Callable[[str], Path], build: Callable[..., Build], invoke: Callable[..., object]
) -> None:
    path = project("non-package")
    result = build(path)
    assert result.status == 0, result.error
    zip_path = path / "dist" / "seed_handler-python3.11-x86_64.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert {"index.py", "config/settings.json"} <= set(archive.namelist())
    assert distributions(zip_path) == {"idna"}
    assert invoke(zip_path, "index.handler", {"domain": "bücher.example"}) == {
        "greeting": "hello from index.py",
        "ascii": "xn--bcher-kva.example",
    }


def test_two_builds_in_different_places_have_one_sha256(
    build: Callable[..., Build], tmp_path: Path
) -> None:
    first_path = tmp_path / "one" / "pure-python"
    second_path = tmp_path / "two" / "a" / "checkout"
    for path in (first_path, second_path):
        shutil.copytree(FIXTURES / "pure-python", path, ignore=shutil.ignore_patterns("dist"))
    first = build(first_path)
    second = build(second_path, f"-o {tmp_path / 'other-name.zip'}")
    assert first.status == second.status == 0, first.error + second.error
    assert first.sha256 == second.sha256
    zip_path = first_path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip"
    with zipfile.ZipFile(zip_path) as archive:
        content = b"".join(archive.read(name) for name in archive.namelist())
    assert str(tmp_path).encode() not in content


def test_image_python_other_than_the_runtimes_stops_before_installing(
    project: Callable[[str], Path], stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    path = project("pure-python")
    result = Build(path, f"--runtime python3.12 --image {stand_in_image}")
    assert result.status == 4
    assert "has Python 3.11" in result.error
    assert "python3.12 needs Python 3.12" in result.error
    assert "Traceback" not in result.error
    assert "Collecting" not in result.output
    assert not (path / "dist").exists()
    assert leftover_containers(docker_client) == []


def test_a_hash_that_does_not_match_fails_and_keeps_the_good_zip(
    project: Callable[[str], Path], build: Callable[..., Build], docker_client: docker.DockerClient
) -> None:
    path = project("pure-python")
    assert build(path).status == 0
    zip_path = path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip"
    good = zip_path.read_bytes()

    break_lock_hashes(path, "six")

    result = build(path)
    assert result.status == 5
    # Wheels are fetched on this machine and checked against the lock before any container.
    assert "does not match poetry.lock: expected sha256 " + "0" * 64 in result.error
    assert zip_path.read_bytes() == good
    assert sorted(p.name for p in zip_path.parent.iterdir()) == [zip_path.name]
    assert leftover_containers(docker_client) == []


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_install_removes_the_container(
    project: Callable[[str], Path],
    stand_in_image: str,
    docker_client: docker.DockerClient,
    signal_number: int,
) -> None:
    # docopt is built from its sdist in the image: pip is busy for seconds.
    path = project("sdist-only")
    poetry = Path(sys.executable).with_name("poetry")
    process = subprocess.Popen(
        [str(poetry), "lambda-zip", "-C", str(path), "--runtime", "python3.11",
         "--image", stand_in_image],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not leftover_containers(docker_client) and process.poll() is None:
        assert time.monotonic() < deadline, "the build container never appeared"
        time.sleep(0.1)
    process.send_signal(signal_number)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "removed" in error
    assert leftover_containers(docker_client) == []
    assert not (path / "dist").exists()


def test_missing_image_that_cannot_be_pulled_exits_4(
    project: Callable[[str], Path], docker_client: docker.DockerClient
) -> None:
    path = project("pure-python")
    result = Build(path, "--runtime python3.11 --image poetry-lambda-zip/absent:never")
    assert result.status == 4
    assert "is not on the engine and cannot be pulled" in result.error
    assert "Pulling poetry-lambda-zip/absent:never for linux/amd64" in result.output
    assert leftover_containers(docker_client) == []


def test_image_of_the_wrong_architecture_is_refused(
    project: Callable[[str], Path], stand_in_image: str
) -> None:
    result = Build(
        project("pure-python"), f"--runtime python3.11 --arch arm64 --image {stand_in_image}"
    )
    assert result.status == 4
    assert "is for linux/amd64, but arm64 needs linux/arm64" in result.error


def test_explicit_ca_bundle_is_what_the_installer_trusts(
    project: Callable[[str], Path], build: Callable[..., Build], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = ssl.get_default_verify_paths().cafile
    assert bundle is not None
    # requests (under Poetry's downloads here) also reads CURL_CA_BUNDLE.
    for variable in (*CA_BUNDLE_VARIABLES, "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    # --no-cache: the wheels are downloaded here (through the bundle) and the project's
    # bytecode is compiled in the image, whose pip is handed the same bundle.
    result = build(project("pure-python"), f"--ca-bundle {bundle} --no-cache")
    assert result.status == 0, result.error
    assert "fetch       " in result.output


def test_proxy_settings_reach_the_installer_but_never_the_output(
    project: Callable[[str], Path],
    stand_in_image: str,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    # Nothing listens on the container's own loopback: pip fails *through the proxy*, retrying
    # for a few seconds, during which the container's configuration is inspected.
    secret = "pr0xy-s3cret"
    monkeypatch.setenv("HTTPS_PROXY", f"http://builder:{secret}@127.0.0.1:9")
    tester = ApplicationTester(Application())
    # An sdist is built in the image: pip there needs the index, through the proxy.
    arguments = (
        f"lambda-zip -C {project('sdist-only')} --runtime python3.11 --image {stand_in_image}"
    )
    status: list[int] = []
    thread = threading.Thread(
        target=lambda: status.append(tester.execute(arguments, verbosity=Verbosity.DEBUG))
    )
    thread.start()
    inspected = []
    while thread.is_alive():
        inspected += inspect_build_containers(docker_client)
        time.sleep(0.2)
    thread.join()
    output = tester.io.fetch_output() + tester.io.fetch_error()
    assert status == [5]
    assert "ProxyError" in output
    assert secret not in output
    assert inspected, "the build container was never seen running"
    assert not [attrs for attrs in inspected if secret in attrs]
    assert leftover_containers(docker_client) == []


def test_noop_rebuild_starts_no_container_and_downloads_are_kept_per_target(
    project: Callable[[str], Path],
    build: Callable[..., Build],
    docker_client: docker.DockerClient,
    stand_in_image: str,
) -> None:
    path = project("pure-python")
    first = build(path, "--builder docker")
    assert first.status == 0, first.error
    # Keyed by runtime, arch and the image's id: nothing mixes. The volume may predate this
    # test (an earlier build created it, with its own owner); any other this build created
    # carries this test's owner label. Nobody else's volumes are looked at.
    image_id = docker_client.images.get(stand_in_image).id.removeprefix("sha256:")[:12]
    expected = f"poetry-lambda-zip-cache-python3.11-x86_64-{image_id}"
    assert docker_client.volumes.get(expected).name == expected
    created = {v.name for v in docker_client.volumes.list(filters={"label": owner_filter()})}
    assert created <= {expected}
    again = build(path, "--builder docker")
    assert again.status == 0, again.error
    assert "Up to date" in again.output
    assert "install" not in again.output
    assert again.sha256 == first.sha256
    forced = build(path, "--builder docker --force --no-cache")
    assert forced.status == 0, forced.error
    assert "install" in forced.output
    assert forced.sha256 == first.sha256


def test_a_code_change_reinstalls_only_the_project_and_matches_a_full_rebuild(
    project: Callable[[str], Path], build: Callable[..., Build], docker_client: docker.DockerClient
) -> None:
    path = project("pure-python")
    first = build(path)
    assert first.status == 0, first.error
    assert "unpack      " in first.output

    handler = path / "src" / "hello_pure" / "handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    changed = build(path)
    assert changed.status == 0, changed.error
    assert "dependencies unchanged: reused from an earlier build" in changed.output
    assert "fetch" not in changed.output
    assert "unpack      " not in changed.output
    # Bytecode is on by default: the project's files are compiled by the image's Python.
    assert "the project's files: precompiled in the python3.11 image" in changed.output
    with zipfile.ZipFile(changed.zip_path) as archive:
        assert archive.read("hello_pure/handler.py").endswith(b"# changed\n")
        assert "hello_pure/__pycache__/handler.cpython-311.pyc" in archive.namelist()
        assert "six.py" in archive.namelist()

    full = build(path, "--force")
    assert full.status == 0, full.error
    assert "the dependencies: precompiled in the python3.11 image" in full.output
    assert full.sha256 == changed.sha256
    assert leftover_containers(docker_client) == []
