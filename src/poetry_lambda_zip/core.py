"""The pipeline: lock -> requirement set -> builder -> archive. One call, ``build()``."""

from __future__ import annotations

import contextlib
import os
import signal
import tarfile
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from poetry_lambda_zip.archive import distribution_sizes
from poetry_lambda_zip.archive import entries_from_files
from poetry_lambda_zip.archive import entries_from_tar
from poetry_lambda_zip.archive import timestamp_from_environment
from poetry_lambda_zip.archive import write_zip_atomically
from poetry_lambda_zip.builders import TREE_PREFIX
from poetry_lambda_zip.builders import InstallJob
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.network import network_settings
from poetry_lambda_zip.project import build_project_wheel
from poetry_lambda_zip.project import collect_includes
from poetry_lambda_zip.resolve import resolve
from poetry_lambda_zip.resolve import select_extras
from poetry_lambda_zip.resolve import select_groups
from poetry_lambda_zip.sources import index_credentials
from poetry_lambda_zip.sources import source_trees
from poetry_lambda_zip.target import LambdaTarget
from poetry_lambda_zip.target import newest_runtime_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

    from poetry.poetry import Poetry

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.archive import Entry
    from poetry_lambda_zip.builders import Builder
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.request import BuildRequest
    from poetry_lambda_zip.resolve import RequirementSet

__all__ = [
    "UNZIPPED_LIMIT",
    "ZIPPED_DIRECT_UPLOAD_LIMIT",
    "BuildPlan",
    "BuildResult",
    "build",
    "plan",
]

#: Lambda refuses a function whose code and layers unzip to more than this many bytes.
UNZIPPED_LIMIT = 262_144_000
#: A larger zip cannot be uploaded directly; it has to go through S3.
ZIPPED_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: The name poetry-core gives a package-mode = false project that has none.
_UNNAMED = "non-package-mode"


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before a container starts; what ``--dry-run`` shows."""

    target: LambdaTarget
    image: str
    requirements: RequirementSet
    output: Path
    project_name: str
    project_version: str | None
    package_mode: bool
    includes: tuple[Path, ...]
    project_dir: Path
    #: Where build dependencies of sdists and source trees come from (None: PyPI).
    default_index: str | None


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    archive: ArchiveStats
    builder: str
    #: Unzipped bytes per distribution (by canonical name), from their RECORD files.
    sizes: dict[str, int]


def plan(request: BuildRequest, poetry: Poetry, progress: Progress) -> BuildPlan:
    """Resolve the request against the lock for its target, without side effects."""
    for warning in request.warnings:
        progress.warning(warning)
    target = _target(request, poetry, progress)

    started = time.monotonic()
    groups = select_groups(poetry.package, request.groups)
    extras = select_extras(poetry.package, request.extras, request.all_extras)
    requirements = resolve(poetry.locker, poetry.package, target, groups, extras)
    progress.phase(
        "resolve",
        time.monotonic() - started,
        f"{len(requirements.requirements)} distributions for {target.description},"
        f" {len(requirements.excluded)} other locked ones left out",
    )
    for requirement in requirements.built_from_source:
        progress.info(f"  {requirement.name} {requirement.version}: {requirement.describe()}")

    output = request.output or _default_output(request.project_dir, poetry, target)
    if output.is_dir():
        raise OutputError(f"The output path {output} is a directory.", "Pass a file name to -o.")
    includes, include_warnings = collect_includes(request.project_dir, request.include)
    for warning in include_warnings:
        progress.warning(warning)
    if not poetry.is_package_mode and not request.include:
        progress.warning(
            "package-mode = false and no include: the zip holds only the dependencies."
            ' Add e.g. include = ["index.py"] to [tool.poetry-lambda-zip].'
        )
    name, version = _project_identity(request.project_dir, poetry)
    return BuildPlan(
        target=target,
        image=request.image or target.default_image,
        requirements=requirements,
        output=output,
        project_name=name,
        project_version=version,
        package_mode=poetry.is_package_mode,
        includes=tuple(includes),
        project_dir=request.project_dir.resolve(),
        default_index=_default_index(poetry),
    )


def build(
    request: BuildRequest, poetry: Poetry, progress: Progress, builder: Builder | None = None
) -> BuildResult:
    """Build the Lambda package ``request`` asks for and return what was written."""
    decided = plan(request, poetry, progress)
    network = network_settings(os.environ, request.ca_bundle, _source_certificates(poetry))
    for warning in network.warnings:
        progress.warning(warning)
    if builder is None:
        from poetry_lambda_zip.builders.docker import DockerBuilder

        builder = DockerBuilder()

    requirements = decided.requirements.requirements
    with _terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="lambda-zip-") as tmp:
        workdir = Path(tmp)
        job = InstallJob(
            target=decided.target,
            image=decided.image,
            requirements=requirements,
            project_wheel=build_project_wheel(poetry, workdir / "wheel"),
            trees=tuple(source_trees(requirements, workdir / "checkouts")),
            default_index=decided.default_index,
            credentials=tuple(index_credentials(poetry, requirements)),
            network=network,
            build_id=uuid.uuid4().hex[:12],
            docker_network=request.docker_network,
        )
        tree = builder.install(job, workdir, progress)

        started = time.monotonic()
        with tarfile.open(tree) as installed:
            entries = entries_from_tar(installed, TREE_PREFIX)
            sizes = distribution_sizes(entries)
            entries += entries_from_files(decided.project_dir, decided.includes)
            stats = write_zip_atomically(
                entries,
                decided.output,
                timestamp_from_environment(),
                check=lambda stats: _check_size(stats, entries, progress),
            )
        progress.phase("package", time.monotonic() - started, f"{stats.files} files")
    return BuildResult(plan=decided, archive=stats, builder=builder.name, sizes=sizes)


def _target(request: BuildRequest, poetry: Poetry, progress: Progress) -> LambdaTarget:
    runtime = request.runtime
    if runtime is None:
        runtime = newest_runtime_for(poetry.package.python_constraint)
        if runtime is None:
            raise ConfigError(
                f"No Lambda Python runtime satisfies the project's Python requirement"
                f" ({poetry.package.python_versions}).",
                "Widen requires-python to include a Lambda runtime (python3.9 to python3.14).",
            )
        progress.info(
            f"Runtime {runtime}: the newest Lambda runtime allowed by the project's Python"
            f" requirement ({poetry.package.python_versions}). Pass --runtime to choose another."
        )
    return LambdaTarget(runtime=runtime, arch=request.arch)


def _project_identity(project_dir: Path, poetry: Poetry) -> tuple[str, str | None]:
    """Name and version; a package-mode = false project may have neither (named after its
    directory then, with no version)."""
    package = poetry.package
    name = package.name if package.name != _UNNAMED else project_dir.resolve().name
    versioned = poetry.is_package_mode or "version" in poetry.pyproject.data.get("project", {})
    return name, package.version.text if versioned else None


def _default_output(project_dir: Path, poetry: Poetry, target: LambdaTarget) -> Path:
    """dist/NAME-VERSION-RUNTIME-ARCH.zip"""
    name, version = _project_identity(project_dir, poetry)
    stem = name.replace("-", "_").replace(".", "_")
    suffix = f"-{version}" if version else ""
    return project_dir / "dist" / f"{stem}{suffix}-{target.runtime}-{target.arch}.zip"


def _default_index(poetry: Poetry) -> str | None:
    """The first primary source (Poetry then does not use PyPI), else None for PyPI."""
    from poetry.repositories.repository_pool import Priority

    for repository in poetry.pool.all_repositories:
        if poetry.pool.get_priority(repository.name) is not Priority.PRIMARY:
            continue
        url = getattr(repository, "url", None)
        return None if repository.name == "PyPI" or not url else str(url)
    return None


def _source_certificates(poetry: Poetry) -> list[Path]:
    paths = []
    for repository in poetry.pool.all_repositories:
        certificates = getattr(repository, "certificates", None)
        if certificates is not None and certificates.cert is not None:
            paths.append(Path(certificates.cert))
    return paths


def _check_size(stats: ArchiveStats, entries: list[Entry], progress: Progress) -> None:
    if stats.unzipped_size > UNZIPPED_LIMIT:
        sizes: Counter[str] = Counter()
        for entry in entries:
            sizes[entry.name.split("/", 1)[0]] += entry.size
        largest = "\n".join(
            f"  {size / 1e6:8.1f} MB  {name}" for name, size in sizes.most_common(10)
        )
        raise OutputError(
            f"The package unzips to {stats.unzipped_size:,} bytes; Lambda allows at most"
            f" {UNZIPPED_LIMIT:,} for a function and its layers. The largest parts:\n{largest}",
            "Leave out dependencies the runtime provides or move some into a layer or an image.",
        )
    if stats.zipped_size > ZIPPED_DIRECT_UPLOAD_LIMIT:
        progress.warning(
            f"The zip is {stats.zipped_size / 1e6:.1f} MB: over 50 MB it must be uploaded"
            " through S3, not directly."
        )


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (CI cancelling the job) into an exception so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise BuildInterrupted(
            "The build was terminated (SIGTERM); its container and files were removed."
        )

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
