"""The pipeline with a fake builder: layouts, excludes, size limits, atomic outputs (no Docker)."""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING

import pytest
from poetry.factory import Factory

from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.index_access import index_credentials
from poetry_lambda_zip.pipeline import build
from poetry_lambda_zip.plan import plan
from poetry_lambda_zip.request import BuildRequest
from tests.test_wheels import make_wheel

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.results import BuildResult
    from poetry_lambda_zip.target import LambdaTarget

RECORD = "{name}-1.0.dist-info/RECORD"


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.counts: list[tuple[str, int, int]] = []

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self.lines.append(f"{name} {detail}")

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def installer_output(self, line: str) -> None:
        self.lines.append(line)

    def count(self, name: str, done: int, total: int) -> None:
        self.counts.append((name, done, total))


class FakeBuilder:
    """Finishes in place and records what it was asked: the steps, and the files of the tree
    it got. Like an image building an sdist, it adds ``built`` (path -> bytes) to the tree
    that holds the dist-info of ``beside``."""

    name = "fake"

    def __init__(self, built: dict[str, bytes] | None = None, beside: str = "six") -> None:
        self.built = built or {}
        self.beside = beside
        #: Each call's steps and the files of the tree it got, sorted.
        self.calls: list[tuple[Steps, list[str]]] = []

    def finish(self, tree: Path, steps: Steps, workdir: Path, progress: Progress) -> Finished:
        files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
        self.calls.append((steps, files))
        if any(tree.glob(f"{self.beside}-*.dist-info")):
            for name, data in self.built.items():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                (tree / name).write_bytes(data)
        return Finished(tree, TreeReport(), "in the fake image")

    def identity(self, steps: Steps, progress: Progress) -> str:
        return "fake"

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        return None

    def call_with(self, name: str) -> tuple[Steps, list[str]]:
        """The one call whose tree held the file ``name``."""
        (found,) = [call for call in self.calls if name in call[1]]
        return found


def distribution(name: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """A distribution's files plus its dist-info, RECORD listing them all."""
    dist_info = f"{name}-1.0.dist-info"
    files = {**files, f"{dist_info}/METADATA": f"Name: {name}\nVersion: 1.0\n".encode()}
    record = "".join(f"{path},,\n" for path in files) + f"{dist_info}/RECORD,,\n"
    return {**files, f"{dist_info}/RECORD": record.encode()}


class FakeIndex:
    """Serves each locked wheel as a small wheel made here: the locked name and version, the
    files ``contents`` lists for that name (none by default) and its dist-info."""

    def __init__(self, directory: Path, contents: dict[str, dict[str, bytes]] | None = None):
        self.directory = directory
        self.contents = contents or {}

    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        return [
            make_wheel(self.directory, r.name, r.version, self.contents.get(r.name, {}))
            for r in requirements
        ]


def fake_build(
    request: BuildRequest,
    builder: FakeBuilder,
    recorder: Recorder,
    contents: dict[str, dict[str, bytes]] | None = None,
) -> BuildResult:
    poetry = Factory().create_poetry(request.project_dir)
    index = FakeIndex(request.project_dir.parent / "fake-index", contents or TREE)
    return build(request, poetry, recorder, builder, index)


def run(
    path: Path, built: dict[str, bytes] | None = None, **options: object
) -> tuple[BuildResult, Recorder]:
    request = BuildRequest.from_settings(path, {"runtime": "python3.11", **options}, {})
    recorder = Recorder()
    result = fake_build(request, FakeBuilder(built), recorder)
    return result, recorder


def names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


#: What the fake index serves besides dist-info: six's module.
TREE = {"six": {"six.py": b"# six\n"}}
SIX = "six-1.17.0.dist-info"


def test_split_is_the_function_layout_cut_in_two(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    run(path)
    function = names(path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip")
    run(path, layout="split", output=str(path / "split" / "f.zip"))
    code = names(path / "split" / "f.zip")
    layer = names(path / "split" / "f-layer.zip")
    assert code == {n for n in function if n.startswith("hello_pure")}
    assert {n.removeprefix("python/") for n in layer} | code == function
    assert all(n.startswith("python/") for n in layer)


def test_layer_layout_holds_dependencies_only(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    run(path, layout="layer")
    layer = names(path / "dist" / "hello_pure-0.1.0-python3.11-x86_64-layer.zip")
    dateutil = "python/python_dateutil-2.9.0.post0.dist-info"
    assert layer == {"python/six.py"} | {
        f"python/{dist_info}/{name}"
        for dist_info in (SIX, dateutil.removeprefix("python/"))
        for name in ("METADATA", "RECORD", "WHEEL")
    }


def test_excludes_prune_and_an_unused_pattern_warns(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    _, recorder = run(path, exclude=["six.py", "*.pyi"])
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
    # Built in the image (after the declared sizes of the wheels were checked).
    big: dict[str, bytes] = {}
    for number in range(12):
        big |= distribution(f"big{number:02}", {f"big{number:02}/blob": bytes(22_000_000 + number)})
    with pytest.raises(OutputError) as caught:
        run(path, big)
    message = caught.value.message
    assert "262,144,000" in message
    listed = [line.split()[-1] for line in message.splitlines() if " MB  " in line]
    assert listed == [f"big{number:02}" for number in range(11, 1, -1)]
    # The plan: the runtime provides six and python-dateutil, and nothing makes it fit.
    assert "  - --exclude-package python-dateutil --exclude-package six saves " in message
    assert caught.value.fix is not None
    assert caught.value.fix.startswith("Even with all of these it stays ")
    assert "container image" in caught.value.fix
    assert output.read_bytes() == good
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]


def test_a_zip_over_50_mb_warns_about_s3(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    noise = distribution("noise", {"noise/blob": os.urandom(53_000_000)})
    _, recorder = run(path, noise)
    assert any("must be uploaded through S3" in w for w in recorder.warnings)


def test_the_builder_gets_includes_compile_and_slim_settings(
    project: Callable[[str], Path],
) -> None:
    path = project("non-package")
    builder = FakeBuilder()
    request = BuildRequest.from_settings(
        path, {"runtime": "python3.11", "slim": True}, {"include": ["index.py", "config/*.json"]}
    )
    fake_build(request, builder, Recorder())
    # Two trees: the dependencies' (their wheels unpacked here), and the project's files
    # (copied here); the builder slims and precompiles both, and builds nothing.
    assert len(builder.calls) == 2
    dependencies, files = builder.call_with("idna-3.20.dist-info/METADATA")
    assert "index.py" not in files
    project_steps, project_files = builder.call_with("index.py")
    assert project_files == ["config/settings.json", "index.py"]
    for steps in (dependencies, project_steps):
        assert (steps.build, steps.trees) == ((), ())
        assert steps.slim
        assert steps.compile_prefix == "/var/task"


def test_only_the_project_is_reinstalled_and_force_or_no_cache_reinstall_all(
    project: Callable[[str], Path], tree_cache: Path
) -> None:
    path = project("pure-python")
    run(path)
    handler = path / "src" / "hello_pure" / "handler.py"
    handler.write_text("def handler(event, context):\n    return 2\n")

    for options, reinstalls, reused in [
        ({}, False, True),
        ({"force": True}, True, False),
        ({"force": True, "no-cache": True}, True, False),
    ]:
        builder = FakeBuilder()
        request = BuildRequest.from_settings(path, {"runtime": "python3.11", **options}, {})
        recorder = Recorder()
        result = fake_build(request, builder, recorder)
        dependency_trees = [files for _, files in builder.calls if f"{SIX}/METADATA" in files]
        assert len(dependency_trees) == reinstalls
        assert any("reused from an earlier build" in line for line in recorder.lines) == reused
        assert "six.py" in names(result.archives[0].path)


def test_a_file_both_the_project_and_a_dependency_install_must_agree(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    # Without bytecode, and with no shared library to strip, slimming needs no builder: both
    # trees are finished here. six's wheel also installs a file of the project's package.
    options = {"runtime": "python3.11", "compile": False, "slim": True, "force": True}
    request = BuildRequest.from_settings(path, {**options, "no-cache": True}, {})
    init = (path / "src" / "hello_pure" / "__init__.py").read_bytes()
    agreeing = FakeBuilder()
    contents = {"six": {"six.py": b"# six\n", "hello_pure/__init__.py": init}}
    result = fake_build(request, agreeing, Recorder(), contents)
    assert agreeing.calls == []
    with zipfile.ZipFile(result.archives[0].path) as archive:
        assert archive.read("hello_pure/__init__.py") == init
        assert (
            archive.read("hello_pure/handler.py")
            == (path / "src" / "hello_pure" / "handler.py").read_bytes()
        )

    clashing = {"six": {"six.py": b"# six\n", "hello_pure/handler.py": b"x"}}
    with pytest.raises(BuildFailedError, match=r"hello_pure/handler.py is installed by a dep"):
        fake_build(request, FakeBuilder(), Recorder(), clashing)


def test_secrets_reach_no_job_that_downloads_nothing(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The private source's credentials (Poetry's variables) and a proxy password: the wheels
    # are fetched here, so the builder only compiles, for the dependencies and for the project.
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_USERNAME", "reader")
    monkeypatch.setenv("POETRY_HTTP_BASIC_PRIVATE_PASSWORD", "s3cret")
    monkeypatch.setenv("HTTPS_PROXY", "http://builder:pr0xy@127.0.0.1:3128")
    path = project("private-index")
    builder = FakeBuilder()
    request = BuildRequest.from_settings(path, {"runtime": "python3.11"}, {})
    poetry = Factory().create_poetry(path)
    assert index_credentials(poetry, plan(request, poetry, Recorder()).requirements.requirements)
    fake_build(request, builder, Recorder())
    builder.call_with(f"{SIX}/METADATA")
    assert len(builder.calls) == 2
    for steps, _ in builder.calls:
        assert steps.credentials == ()
        assert steps.network is None


def test_long_phases_report_how_far_they_are(project: Callable[[str], Path]) -> None:
    path = project("pure-python")
    result, recorder = run(path)
    packaged = [(done, total) for name, done, total in recorder.counts if name == "package"]
    assert packaged
    assert packaged[-1] == (result.archives[0].unzipped_size,) * 2
    assert [done for done, _ in packaged] == sorted(done for done, _ in packaged)
