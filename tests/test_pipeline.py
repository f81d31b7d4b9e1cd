"""The pipeline with a fake builder: layouts, excludes, size limits, atomic outputs (no Docker)."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from typing import TYPE_CHECKING

import pytest
from poetry.factory import Factory

from poetry_lambda_zip.builders import TREE_PREFIX
from poetry_lambda_zip.builders import InstallJob
from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.builders import VerifyJob
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.index_access import index_credentials
from poetry_lambda_zip.pipeline import BuildResult
from poetry_lambda_zip.pipeline import build
from poetry_lambda_zip.plan import plan
from poetry_lambda_zip.request import BuildRequest

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.target import LambdaTarget

RECORD = "{name}-1.0.dist-info/RECORD"


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self.lines.append(f"{name} {detail}")

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def installer_output(self, line: str) -> None:
        self.lines.append(line)


class FakeBuilder:
    """Installs nothing: hands back a tree made of ``files`` (path -> bytes): for the project's
    job the files starting with ``project``, for the dependencies' job the others."""

    name = "fake"

    def __init__(self, files: dict[str, bytes], project: str = "hello_pure") -> None:
        self.files = files
        self.project = project
        self.jobs: list[InstallJob] = []
        #: The files each job found unpacked here before it ran.
        self.unpacked: list[list[str]] = []

    def install(self, job: InstallJob, workdir: Path, progress: Progress) -> InstallResult:
        self.jobs.append(job)
        unpacked = job.unpacked
        self.unpacked.append(
            sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file())
            if unpacked is not None
            else []
        )
        tree = workdir / "tree.tar"
        dependencies = job.what == "the dependencies"
        with tarfile.open(tree, "w") as archive:
            for name, data in self.files.items():
                if name.startswith(self.project) == dependencies:
                    continue
                info = tarfile.TarInfo(f"{TREE_PREFIX}/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return InstallResult(tree)

    def verify(self, check: VerifyJob, progress: Progress) -> float:
        raise AssertionError("not asked for")

    def identity(self, job: InstallJob, progress: Progress) -> str:
        return "fake"

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        return None


def distribution(name: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """A distribution's files plus its dist-info, RECORD listing them all."""
    dist_info = f"{name}-1.0.dist-info"
    files = {**files, f"{dist_info}/METADATA": f"Name: {name}\nVersion: 1.0\n".encode()}
    record = "".join(f"{path},,\n" for path in files) + f"{dist_info}/RECORD,,\n"
    return {**files, f"{dist_info}/RECORD": record.encode()}


class NoDownloads:
    """Fetches nothing: every file of the fake tree comes from the fake builder."""

    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        return []


def fake_build(request: BuildRequest, builder: FakeBuilder, recorder: Recorder) -> BuildResult:
    poetry = Factory().create_poetry(request.project_dir)
    return build(request, poetry, recorder, builder, NoDownloads())


def run(path: Path, files: dict[str, bytes], **options: object) -> tuple[BuildResult, Recorder]:
    request = BuildRequest.from_settings(path, {"runtime": "python3.11", **options}, {})
    recorder = Recorder()
    result = fake_build(request, FakeBuilder(files), recorder)
    return result, recorder


def names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


TREE = {
    **distribution("six", {"six.py": b"# six\n"}),
    **distribution("hello_pure", {"hello_pure/__init__.py": b"", "hello_pure/handler.py": b"x"}),
}


def test_split_is_the_function_layout_cut_in_two(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    run(path, TREE)
    function = names(path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip")
    run(path, TREE, layout="split", output=str(path / "split" / "f.zip"))
    code = names(path / "split" / "f.zip")
    layer = names(path / "split" / "f-layer.zip")
    assert code == {n for n in function if n.startswith("hello_pure")}
    assert {n.removeprefix("python/") for n in layer} | code == function
    assert all(n.startswith("python/") for n in layer)


def test_layer_layout_holds_dependencies_only(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    run(path, TREE, layout="layer")
    layer = names(path / "dist" / "hello_pure-0.1.0-python3.11-x86_64-layer.zip")
    assert layer == {"python/six.py", "python/six-1.0.dist-info/METADATA",
                     "python/six-1.0.dist-info/RECORD"}  # fmt: skip


def test_excludes_prune_and_an_unused_pattern_warns(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    _, recorder = run(path, TREE, exclude=["six.py", "*.pyi"])
    assert "six.py" not in names(path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip")
    assert "The exclude pattern '*.pyi' matches no file." in recorder.warnings


def test_over_lambdas_unzipped_limit_fails_listing_the_largest_and_keeps_the_old_zip(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    output = path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip"
    output.parent.mkdir()
    with zipfile.ZipFile(output, "w") as archive:  # an earlier build's
        archive.comment = comment("0" * 64)
    good = output.read_bytes()
    big = {**TREE}
    for number in range(12):
        big |= distribution(f"big{number:02}", {f"big{number:02}/blob": bytes(22_000_000 + number)})
    with pytest.raises(OutputError) as caught:
        run(path, big)
    message = caught.value.message
    assert "262,144,000" in message
    listed = [line.split()[-1] for line in message.splitlines() if " MB  " in line]
    assert listed == [f"big{number:02}" for number in range(11, 1, -1)]
    assert output.read_bytes() == good
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]


def test_a_zip_over_50_mb_warns_about_s3(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    noise = distribution("noise", {"noise/blob": os.urandom(53_000_000)})
    _, recorder = run(path, {**TREE, **noise})
    assert any("must be uploaded through S3" in w for w in recorder.warnings)


def test_the_builder_gets_includes_compile_and_slim_settings(
    project: Callable[[str], Path],
) -> None:
    path = project("non-package")
    builder = FakeBuilder(distribution("idna", {"idna/__init__.py": b""}))
    request = BuildRequest.from_settings(
        path, {"runtime": "python3.11", "slim": True}, {"include": ["index.py", "config/*.json"]}
    )
    fake_build(request, builder, Recorder())
    # Two jobs: the dependencies (their wheels unpacked here, then slimmed and compiled by the
    # builder), and the project's files (copied here, slimmed and compiled by the builder).
    assert sorted(job.what for job in builder.jobs) == ["the dependencies", "the project's files"]
    by_what = dict(zip([job.what for job in builder.jobs], builder.unpacked))
    dependencies, job = sorted(builder.jobs, key=lambda job: job.what)
    assert dependencies.requirements == ()
    assert dependencies.includes == ()
    assert dependencies.slim
    assert dependencies.compile is not None
    assert (dependencies.compile.prefix, dependencies.compile.project_prefix) == (
        "/var/task",
        "/var/task",
    )
    assert job.requirements == ()
    assert job.includes == ()
    assert by_what["the project's files"] == ["config/settings.json", "index.py"]
    assert job.slim
    assert job.compile is not None
    assert (job.compile.prefix, job.compile.project_prefix) == ("/var/task", "/var/task")
    assert job.project_wheel is None


def test_only_the_project_is_reinstalled_and_force_or_no_cache_reinstall_all(
    project: Callable[[str], Path], tree_cache: Path
) -> None:
    path = project("pure-python")
    run(path, TREE)
    handler = path / "src" / "hello_pure" / "handler.py"
    handler.write_text("def handler(event, context):\n    return 2\n")

    for options, reinstalls, reused in [
        ({}, False, True),
        ({"force": True}, True, False),
        ({"force": True, "no-cache": True}, True, False),
    ]:
        builder = FakeBuilder({**TREE, "hello_pure/handler.py": handler.read_bytes()})
        request = BuildRequest.from_settings(path, {"runtime": "python3.11", **options}, {})
        recorder = Recorder()
        result = fake_build(request, builder, recorder)
        dependency_jobs = [job for job in builder.jobs if job.what == "the dependencies"]
        assert len(dependency_jobs) == reinstalls
        assert any("reused from an earlier build" in line for line in recorder.lines) == reused
        assert "six.py" in names(result.archives[0].path)


def test_a_file_both_the_project_and_a_dependency_install_must_agree(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    # Without bytecode the project's own wheel is unpacked on this machine; the fake builder
    # (asked to slim) installs only the dependencies: six, and "ns", which shares a file with
    # the project.
    options = {"runtime": "python3.11", "compile": False, "slim": True, "force": True}
    request = BuildRequest.from_settings(path, {**options, "no-cache": True}, {})
    init = (path / "src" / "hello_pure" / "__init__.py").read_bytes()
    six = distribution("six", {"six.py": b"# six\n"})
    agreeing = FakeBuilder({**six, **distribution("ns", {"hello_pure/__init__.py": init})}, "-")
    result = fake_build(request, agreeing, Recorder())
    assert [job.what for job in agreeing.jobs] == ["the dependencies"]
    with zipfile.ZipFile(result.archives[0].path) as archive:
        assert archive.read("hello_pure/__init__.py") == init
        assert (
            archive.read("hello_pure/handler.py")
            == (path / "src" / "hello_pure" / "handler.py").read_bytes()
        )

    clashing = FakeBuilder({**six, **distribution("ns", {"hello_pure/handler.py": b"x"})}, "-")
    with pytest.raises(BuildFailedError, match=r"hello_pure/handler.py is installed by a dep"):
        fake_build(request, clashing, Recorder())


def test_secrets_reach_no_job_that_downloads_nothing(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The private source's credentials (Poetry's variables) and a proxy password: the wheels
    # are fetched here, so the builder only compiles, for the dependencies and for the project.
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_USERNAME", "reader")
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_PASSWORD", "s3cret")
    monkeypatch.setenv("HTTPS_PROXY", "http://builder:pr0xy@127.0.0.1:3128")
    path = project("private-index")
    builder = FakeBuilder(distribution("six", {"six.py": b""}), "internal_service")
    request = BuildRequest.from_settings(path, {"runtime": "python3.11"}, {})
    poetry = Factory().create_poetry(path)
    assert index_credentials(poetry, plan(request, poetry, Recorder()).requirements.requirements)
    fake_build(request, builder, Recorder())
    assert sorted(job.what for job in builder.jobs) == ["the dependencies", "the project's files"]
    for job in builder.jobs:
        assert job.credentials == ()
        assert dict(job.network.proxies) == {}
