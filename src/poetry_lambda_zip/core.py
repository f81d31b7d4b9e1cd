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
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import entries_from_files
from poetry_lambda_zip.archive import entries_from_tar
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.archive import timestamp_from_environment
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.builders import TREE_PREFIX
from poetry_lambda_zip.builders import CompileSettings
from poetry_lambda_zip.builders import InstallJob
from poetry_lambda_zip.builders import VerifyJob
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import DockerUnavailableError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fetch import WheelFetcher
from poetry_lambda_zip.fingerprint import carries_fingerprint
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.fingerprint import fingerprint
from poetry_lambda_zip.fingerprint import recorded
from poetry_lambda_zip.fingerprint import tree_key
from poetry_lambda_zip.install import install
from poetry_lambda_zip.install import merged_reports
from poetry_lambda_zip.layout import apply_excludes
from poetry_lambda_zip.layout import distribution_sizes
from poetry_lambda_zip.layout import layer_output
from poetry_lambda_zip.layout import merge_entries
from poetry_lambda_zip.layout import normalize_installed
from poetry_lambda_zip.layout import outputs_for_layout
from poetry_lambda_zip.layout import owners
from poetry_lambda_zip.network import network_settings
from poetry_lambda_zip.project import build_project_wheel
from poetry_lambda_zip.project import collect_includes
from poetry_lambda_zip.resolve import resolve
from poetry_lambda_zip.resolve import select_extras
from poetry_lambda_zip.resolve import select_groups
from poetry_lambda_zip.sources import index_credentials
from poetry_lambda_zip.sources import source_trees
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.target import LambdaTarget
from poetry_lambda_zip.target import newest_runtime_for
from poetry_lambda_zip.tree_cache import TreeCache

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence
    from types import FrameType

    from poetry.poetry import Poetry

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.archive import Entry
    from poetry_lambda_zip.builders import Builder
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.fetch import Fetcher
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

#: A larger zip cannot be uploaded directly; it has to go through S3.
ZIPPED_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: A build's scratch directory in the temporary directory: PREFIX + stale.owner_tag() + ".…".
_TEMPORARY_PREFIX = "lambda-zip-"
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
    layout: str = "function"

    @property
    def outputs(self) -> tuple[Path, ...]:
        if self.layout == "split":
            return (self.output, layer_output(self.output))
        return (self.output,)


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    #: The zips written: the function (or layer) zip first, then a split layout's layer.
    archives: tuple[ArchiveStats, ...]
    builder: str
    #: Unzipped bytes per distribution (by canonical name), from their RECORD files.
    sizes: dict[str, int]
    report: dict[str, dict[str, int]]
    #: How long importing the handler took from a read-only /var/task (--verify).
    import_seconds: float | None = None
    #: The outputs already carried this build's fingerprint: nothing was rebuilt.
    up_to_date: bool = False


def plan(request: BuildRequest, poetry: Poetry, progress: Progress) -> BuildPlan:
    """Resolve the request against the lock for its target, without side effects."""
    for warning in request.warnings:
        progress.warning(warning)
    target = _target(request, poetry, progress)

    started = time.monotonic()
    groups = select_groups(poetry.package, request.groups)
    extras = select_extras(poetry.package, request.extras, request.all_extras)
    excluded_names = frozenset(canonicalize_name(n) for n in request.exclude_packages)
    requirements = resolve(
        poetry.locker, poetry.package, target, groups, extras, exclude_packages=excluded_names
    )
    for warning in requirements.warnings:
        progress.warning(warning)
    for excluded in requirements.excluded:
        if excluded.name in excluded_names or excluded.reason.startswith("only needed by"):
            progress.info(f"  left out {excluded.name} {excluded.version}: {excluded.reason}")
    progress.phase(
        "resolve",
        time.monotonic() - started,
        f"{len(requirements.requirements)} distributions for {target.description},"
        f" {len(requirements.excluded)} other locked ones left out",
    )
    for requirement in requirements.built_from_source:
        progress.info(f"  {requirement.name} {requirement.version}: {requirement.describe()}")

    output = request.output or _default_output(request.project_dir, poetry, target)
    if request.layout == "layer" and request.output is None:
        output = layer_output(output)
    outputs = (output, layer_output(output)) if request.layout == "split" else (output,)
    _check_outputs(outputs)
    includes, include_warnings = collect_includes(request.project_dir, request.include, outputs)
    for warning in include_warnings:
        progress.warning(warning)
    if request.layout == "layer" and includes:
        progress.warning("A layer holds dependencies only: the include files are left out.")
        includes = []
    if request.layout != "layer" and not poetry.is_package_mode and not request.include:
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
        layout=request.layout,
    )


def build(
    request: BuildRequest,
    poetry: Poetry,
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
) -> BuildResult:
    """Build the Lambda package(s) ``request`` asks for and return what was written."""
    decided = plan(request, poetry, progress)
    network = network_settings(os.environ, request.ca_bundle, _source_certificates(poetry))
    for warning in network.warnings:
        progress.warning(warning)
    builder = builder or _choose_builder(request, decided, poetry, progress)
    requirements = decided.requirements.requirements
    _remove_what_killed_runs_left(decided.outputs)
    scratch = tempfile.TemporaryDirectory(prefix=f"{_TEMPORARY_PREFIX}{owner_tag()}.")
    with _terminate_as_interrupt(), scratch as tmp:
        workdir = Path(tmp)
        ships_project = decided.layout != "layer"
        wheel = build_project_wheel(poetry, workdir / "wheel") if ships_project else None
        job = InstallJob(
            target=decided.target,
            image=decided.image,
            requirements=requirements,
            project_wheel=wheel,
            trees=tuple(source_trees(requirements, workdir / "checkouts")),
            default_index=decided.default_index,
            credentials=tuple(index_credentials(poetry, requirements)),
            network=network,
            build_id=uuid.uuid4().hex[:12],
            docker_network=request.docker_network,
            includes=tuple(
                (path.relative_to(decided.project_dir).as_posix(), path)
                for path in decided.includes
            ),
            slim=request.slim,
            compile=_compile_settings(decided, poetry) if request.compile else None,
            cache=request.cache,
        )
        if job.compile is not None and builder.name == "local":
            from poetry_lambda_zip.builders.local import cannot_compile_here

            problem = cannot_compile_here(job)
            if problem is not None:
                progress.warning(problem)
                job = replace(job, compile=None)
        timestamp = timestamp_from_environment()
        options = {"layout": request.layout, "exclude": sorted(request.exclude)}
        # Unpacked wheels without bytecode or stripping are the same bytes from any builder
        # and image (a test holds the builders to that); anything compiled, built or stripped
        # depends on the toolchain that did it.
        toolchain_free = not (job.compile or job.slim or job.trees) and not any(
            r.artifact.built_in_image for r in requirements
        )
        identity = "wheels only" if toolchain_free else builder.identity(job, progress)
        key = tree_key(job, identity)
        current = fingerprint(job, key, options, timestamp)
        if not request.force and recorded(decided.outputs) == current:
            return BuildResult(
                plan=decided,
                archives=tuple(existing_stats(path) for path in decided.outputs),
                builder=builder.name,
                sizes={},
                report={},
                up_to_date=True,
            )
        cache = _tree_cache(poetry).reporting_to(progress.warning) if request.cache else None
        installed = install(
            builder,
            job,
            fetcher=fetcher
            or WheelFetcher(
                poetry,
                cache=request.cache,
                scratch=workdir / "downloads",
                ca_bundle=request.ca_bundle,
                force=request.force,
            ),
            key=key,
            cache=cache,
            force=request.force,
            workdir=workdir,
            progress=progress,
        )
        report = merged_reports(result.report for result in installed)
        _report_extras(report, request, progress)

        started = time.monotonic()
        with _tree_entries([result.tree for result in installed]) as installed_entries:
            entries = normalize_installed(installed_entries)
            entries, exclude_warnings = apply_excludes(entries, request.exclude)
            for warning in exclude_warnings:
                progress.warning(warning)
            owner = owners(entries)
            sizes = distribution_sizes(entries, owner)
            project_files = {
                name for name, owned_by in owner.items() if owned_by == decided.project_name
            } | {path.relative_to(decided.project_dir).as_posix() for path in decided.includes}
            outputs = outputs_for_layout(decided.layout, decided.output, entries, project_files)
            written = write_zips_atomically(
                outputs,
                timestamp,
                check=lambda stats: _check_size(stats, sizes, progress),
                comment=comment(current),
            )
        files = sum(stats.files for stats in written)
        progress.phase("package", time.monotonic() - started, f"{files} files")

    verified = None
    if request.verify and request.handler:
        function_zip = written[0].path if decided.layout != "layer" else None
        layer_zip = written[-1].path if decided.layout != "function" else None
        verified = builder.verify(
            VerifyJob(
                target=decided.target,
                image=decided.image,
                handler=request.handler,
                function_zip=function_zip,
                layer_zip=layer_zip,
                build_id=job.build_id,
            ),
            progress,
        )
    return BuildResult(
        plan=decided,
        archives=tuple(written),
        builder=builder.name,
        sizes=sizes,
        report=report,
        import_seconds=verified,
    )


def _choose_builder(
    request: BuildRequest, decided: BuildPlan, poetry: Poetry, progress: Progress
) -> Builder:
    from poetry_lambda_zip.builders.docker import DockerBuilder
    from poetry_lambda_zip.builders.docker import engine_answers
    from poetry_lambda_zip.builders.docker import engine_location
    from poetry_lambda_zip.builders.local import LocalBuilder
    from poetry_lambda_zip.builders.local import no_wheel_error
    from poetry_lambda_zip.builders.local import not_installable_locally

    missing = not_installable_locally(decided.requirements.requirements)
    runtime = decided.target.runtime
    if request.builder == "docker":
        return DockerBuilder()
    if request.builder == "local":
        if missing:
            raise no_wheel_error(missing, runtime)
        progress.info("Builder: local (--builder local)")
        return LocalBuilder()
    if engine_answers():
        progress.info(f"Builder: docker (an engine answers at {engine_location()})")
        return DockerBuilder()
    if missing:
        error = no_wheel_error(missing, runtime)
        raise DockerUnavailableError(
            f"{error.message}\nNo Docker engine is reachable at {engine_location()} either.",
            f"Start Docker or set DOCKER_HOST. {error.fix}",
        )
    progress.info(
        f"Builder: local (no Docker engine answers at {engine_location()}; every package has a"
        f" wheel for {runtime})"
    )
    return LocalBuilder()


def _check_outputs(outputs: Sequence[Path]) -> None:
    """Outputs replace only what this plugin wrote: a file without its fingerprint (a
    pyproject.toml, a source file, a vendored wheel, someone's zip) is never overwritten."""
    for output in outputs:
        if output.is_dir():
            raise OutputError(
                f"The output path {output} is a directory.", "Pass a file name to -o."
            )
        if output.exists() and not carries_fingerprint(output):
            raise OutputError(
                f"{output} exists and was not written by poetry-lambda-zip; it is not replaced.",
                "Pass another path to -o, or move that file away if it is an old package to"
                " replace.",
            )


def _tree_cache(poetry: Poetry) -> TreeCache:
    cache_dir = Path(poetry.config.artifacts_cache_directory).parent
    return TreeCache(cache_dir / "lambda-zip-trees")


@contextlib.contextmanager
def _tree_entries(trees: list[Path]) -> Iterator[list[Entry]]:
    """The installed files, from builders' tars or directories, as one tree."""
    with contextlib.ExitStack() as stack:
        parts = []
        for tree in trees:
            if tree.is_dir():
                files = sorted(path for path in tree.rglob("*") if path.is_file())
                parts.append(entries_from_files(tree, files))
            else:
                archive = stack.enter_context(tarfile.open(tree))
                parts.append(entries_from_tar(archive, TREE_PREFIX))
        yield merge_entries(parts)


def _remove_what_killed_runs_left(outputs: Sequence[Path]) -> None:
    remove_stale(Path(tempfile.gettempdir()), _TEMPORARY_PREFIX)
    for output in outputs:
        remove_stale_temporaries(output)


def _compile_settings(decided: BuildPlan, poetry: Poetry) -> CompileSettings:
    function, layer = "/var/task", "/opt/python"
    return CompileSettings(
        prefix=function if decided.layout == "function" else layer,
        project_prefix=layer if decided.layout == "layer" else function,
        project=decided.project_name if poetry.is_package_mode else None,
    )


def _report_extras(
    report: dict[str, dict[str, int]], request: BuildRequest, progress: Progress
) -> None:
    if "slim" in report:
        slim = report["slim"]
        progress.info(
            f"  slim: removed {slim['files_removed']} files, stripped"
            f" {slim['libraries_stripped']} libraries, {slim['bytes_saved'] / 1e6:.1f} MB saved"
        )
        if request.slim and not slim.get("strip_available"):
            progress.warning("The image has no `strip`; debug symbols of .so files were kept.")
    if "compile" in report:
        compiled = report["compile"]
        progress.info(
            f"  compiled {compiled['compiled']} modules for {request.runtime or 'the runtime'}"
            f" (unchecked-hash .pyc), {compiled['failed']} could not be compiled"
        )


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


def _check_size(written: list[ArchiveStats], sizes: dict[str, int], progress: Progress) -> None:
    unzipped = sum(stats.unzipped_size for stats in written)
    if unzipped > UNZIPPED_LIMIT:
        largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:10]
        table = "\n".join(f"  {size / 1e6:8.1f} MB  {name}" for name, size in largest)
        raise OutputError(
            f"The package unzips to {unzipped:,} bytes; Lambda allows at most"
            f" {UNZIPPED_LIMIT:,} for a function and its layers. The largest distributions:\n"
            f"{table}",
            "Leave out what the runtime provides (--exclude-package), prune files (--exclude,"
            " --slim), or ship a container image instead.",
        )
    for stats in written:
        if stats.zipped_size > ZIPPED_DIRECT_UPLOAD_LIMIT:
            progress.warning(
                f"{stats.path.name} is {stats.zipped_size / 1e6:.1f} MB zipped: over 50 MB it"
                " must be uploaded through S3, not directly."
            )


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (CI cancelling the job) and SIGINT (Ctrl-C) into BuildInterrupted (exit
    130) in the main thread, so cleanup code runs. The main thread never waits on a stalled
    download (those run in daemon threads), so the build ends at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise BuildInterrupted(
            f"The build was interrupted ({signal.Signals(signum).name}); its container and"
            " temporary files were removed."
        )

    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, interrupt) for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            # None: a handler not installed from Python; the default is the nearest we can do.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
