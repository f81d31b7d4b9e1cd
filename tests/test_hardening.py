"""Bad input, faults, concurrency: each provoked for real. After each: a clear message and exit
code, no container, no temporary directory, no partial output, an existing good zip untouched."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import tomlkit

from poetry_lambda_zip.fingerprint import comment
from tests.conftest import FIXTURES
from tests.conftest import unavailable
from tests.docker_helpers import Build
from tests.docker_helpers import leftover_containers

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

    import docker

POETRY = str(Path(sys.executable).with_name("poetry"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of its own for this test's builds, checked empty afterwards."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory
    assert list(directory.iterdir()) == [], "a temporary file or directory was left behind"


def good_zip(path: Path) -> bytes:
    """Yesterday's package at ``path``: a zip with this plugin's fingerprint (an earlier
    build's), which a build may replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return 'yesterday'\n")
        archive.comment = comment("0" * 64)
    return path.read_bytes()


# ---- bad input: exit code, message with the fix, nothing written ---------------------------


def test_no_pyproject(tmp_path: Path) -> None:
    result = Build(tmp_path, "")
    assert result.status == 2
    assert "could not find a pyproject.toml" in result.error
    assert "Run the command in the project's directory" in result.error
    assert "Traceback" not in result.error
    assert list(tmp_path.iterdir()) == []


def test_pyproject_that_is_not_a_poetry_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    result = Build(tmp_path, "")
    assert result.status == 2
    assert "[project.name] or [tool.poetry.name] is required" in result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]


def test_lock_written_by_a_newer_poetry(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    lock = path / "poetry.lock"
    lock.write_text(lock.read_text().replace('lock-version = "2.1"', 'lock-version = "3.0"'))
    result = Build(path, "--runtime python3.11")
    assert result.status == 3
    assert "not compatible with the current version of Poetry" in result.error
    assert "Upgrade Poetry" in result.error
    assert not (path / "dist").exists()


def test_output_that_is_a_directory(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    (path / "out").mkdir()
    result = Build(path, "--runtime python3.11 -o out --dry-run")
    assert result.status == 6
    assert "is a directory" in result.error
    assert "Pass a file name to -o" in result.error


@pytest.mark.usefixtures("private_tmp")
def test_output_under_a_file_is_not_writable(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    (path / "notes.txt").write_text("a file, not a directory")
    result = Build(path, "--runtime python3.11 --builder local -o notes.txt/function.zip")
    assert result.status == 6
    assert "Cannot write to" in result.error
    assert "Pass a writable path to -o" in result.error


def test_include_link_leaving_the_project_is_refused(project: Callable[[str], Path]) -> None:
    path = project("non-package")
    (path / "secrets.txt").symlink_to("/etc/hostname")
    result = Build(path, "--runtime python3.11 --include secrets.txt --dry-run")
    assert result.status == 2
    assert "is a link to /etc/hostname, outside the project" in result.error


@pytest.mark.usefixtures("private_tmp")
def test_include_link_inside_the_project_is_followed(project: Callable[[str], Path]) -> None:
    path = project("non-package")
    (path / "handler.py").symlink_to("index.py")
    result = Build(path, "--runtime python3.11 --builder local --no-compile --include handler.py")
    assert result.status == 0, result.error

    with zipfile.ZipFile(result.zip_path) as archive:
        info = archive.getinfo("handler.py")
        assert archive.read(info) == (path / "index.py").read_bytes()
        assert (info.external_attr >> 16) & 0o170000 == 0o100000  # a file, not a link


# ---- faults through the real engine --------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("private_tmp")
def test_index_unreachable(
    project: Callable[[str], Path], build: Callable[..., Build], docker_client: docker.DockerClient
) -> None:
    # docopt is an sdist: pip builds it in the image, which has no network here.
    path = project("sdist-only")
    output = path / "dist" / "usage_parser-0.1.0-python3.11-x86_64.zip"
    good = good_zip(output)
    result = build(path, "--network none --builder docker")
    assert result.status == 5
    assert "pip failed" in result.error
    assert output.read_bytes() == good
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]
    assert leftover_containers(docker_client) == []


@pytest.mark.docker
def test_disk_full_while_writing_keeps_the_good_zip(
    project: Callable[[str], Path], build: Callable[..., Build], tmp_path: Path
) -> None:
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode:
        unavailable(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        output = small / "function.zip"
        good = good_zip(output)
        result = build(project("binary-wheel"), f"--builder docker -o {output}")
        assert result.status == 6
        assert "No space left on device" in result.error
        assert output.read_bytes() == good
        assert sorted(p.name for p in small.iterdir()) == ["function.zip"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ---- concurrency ---------------------------------------------------------------------------


@pytest.mark.docker
def test_eight_builds_at_once(
    stand_in_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    path = tmp_path / "pure-python"
    shutil.copytree(FIXTURES / "pure-python", path)
    outputs = [path / "shared.zip"] * 4 + [path / f"own-{n}.zip" for n in range(4)]
    command = [POETRY, "lambda-zip", "-C", str(path), "--runtime", "python3.11", "--image",
               stand_in_image, "--builder", "docker", "-o"]  # fmt: skip
    processes = [
        subprocess.Popen(
            [*command, str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for output in outputs
    ]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, error) in zip(processes, results):
        assert process.returncode == 0, error
    digests = {hashlib.sha256(output.read_bytes()).hexdigest() for output in set(outputs)}
    assert len(digests) == 1
    stated = {
        line.split()[1] for out, _ in results for line in out.splitlines() if "  sha256 " in line
    }
    assert stated == digests
    assert sorted(p.name for p in path.glob("*.zip")) == sorted({o.name for o in outputs})
    assert not list(path.glob(".*.tmp"))
    assert leftover_containers(docker_client) == []


def test_lock_tampering_is_caught_before_anything_runs(project: Callable[[str], Path]) -> None:
    """A lock whose file list was emptied is refused by name, before any builder starts."""
    path = project("pure-python")
    lock_path = path / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    for package in lock["package"]:
        if package["name"] == "six":
            package["files"] = tomlkit.array()
    lock_path.write_text(tomlkit.dumps(lock))
    result = Build(path, "--runtime python3.11")
    assert result.status == 3
    assert "six 1.17.0: poetry.lock lists no sha256-hashed wheel" in result.error
