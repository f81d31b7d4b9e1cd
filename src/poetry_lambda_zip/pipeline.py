"""The pipeline, top-down in ``build()``: plan -> dependencies (a kept tree, or fetched and
unpacked here and finished by the builder) -> the project's files -> package -> write -> verify.
"""

from __future__ import annotations

import contextlib
import signal
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import entries_from_files
from poetry_lambda_zip.archive import entries_from_tar
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.builders import TREE_PREFIX
from poetry_lambda_zip.builders import InstallJob
from poetry_lambda_zip.builders import VerifyJob
from poetry_lambda_zip.builders import choose_builder
from poetry_lambda_zip.contents import apply_excludes
from poetry_lambda_zip.contents import distribution_sizes
from poetry_lambda_zip.contents import merge_entries
from poetry_lambda_zip.contents import normalize_installed
from poetry_lambda_zip.contents import outputs_for_layout
from poetry_lambda_zip.contents import owners
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fetch import WheelFetcher
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.fingerprint import fingerprint
from poetry_lambda_zip.fingerprint import recorded
from poetry_lambda_zip.fingerprint import tree_key
from poetry_lambda_zip.install import install
from poetry_lambda_zip.install import merged_reports
from poetry_lambda_zip.plan import BuildPlan
from poetry_lambda_zip.plan import plan
from poetry_lambda_zip.project import build_project_wheel
from poetry_lambda_zip.source_trees import source_trees
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.tree_cache import TreeCache

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence
    from types import FrameType

    from poetry.poetry import Poetry

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.archive import Entry
    from poetry_lambda_zip.builders import Builder
    from poetry_lambda_zip.builders import InstallResult
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.fetch import Fetcher
    from poetry_lambda_zip.request import BuildRequest

__all__ = ["ZIPPED_DIRECT_UPLOAD_LIMIT", "BuildResult", "build"]

#: A larger zip cannot be uploaded directly; it has to go through S3.
ZIPPED_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: A build's scratch directory in the temporary directory: PREFIX + stale.owner_tag() + ".…".
_TEMPORARY_PREFIX = "lambda-zip-"


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


def build(
    request: BuildRequest,
    poetry: Poetry,
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
) -> BuildResult:
    """Build the Lambda package(s) ``request`` asks for and return what was written."""
    decided = plan(request, poetry, progress)
    builder = builder or choose_builder(
        request.builder, decided.requirements.requirements, decided.target, progress
    )
    _remove_what_killed_runs_left(decided.outputs)
    with _terminate_as_interrupt(), _scratch() as workdir:
        job = _install_job(decided, poetry, builder, workdir, progress)
        key, current = _fingerprints(decided, job, builder, progress)
        if not request.force and recorded(decided.outputs) == current:
            return _up_to_date(decided, builder)
        fetcher = fetcher or _fetcher(decided, poetry, workdir)
        installed = _install(
            decided, job, key, poetry=poetry, builder=builder, fetcher=fetcher,
            workdir=workdir, progress=progress,
        )  # fmt: skip
        report = merged_reports(result.report for result in installed)
        _report_extras(report, request, progress)
        written, sizes = _package(decided, installed, current, progress)
    seconds = _verify(decided, builder, written, job.build_id, progress)
    return BuildResult(decided, tuple(written), builder.name, sizes, report, seconds)


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The build's own temporary directory, named so that a later run recognises it as stale
    if this one is killed."""
    with tempfile.TemporaryDirectory(prefix=f"{_TEMPORARY_PREFIX}{owner_tag()}.") as directory:
        yield Path(directory)


def _install_job(
    decided: BuildPlan, poetry: Poetry, builder: Builder, workdir: Path, progress: Progress
) -> InstallJob:
    """The job for the builder: the requirement set, the project's wheel (built by
    poetry-core), its include files, the source trees (git checked out at the locked commit)."""
    request, requirements = decided.request, decided.requirements.requirements
    wheel = None
    if decided.layout.ships_project:
        wheel = build_project_wheel(poetry, workdir / "wheel")
    compile_settings = decided.compile
    problem = builder.cannot_compile(decided.target) if compile_settings else None
    if problem is not None:
        progress.warning(problem)
        compile_settings = None
    return InstallJob(
        target=decided.target,
        image=decided.image,
        requirements=requirements,
        project_wheel=wheel,
        trees=tuple(source_trees(requirements, workdir / "checkouts")),
        default_index=decided.default_index,
        credentials=decided.credentials,
        network=decided.network,
        build_id=uuid.uuid4().hex[:12],
        docker_network=request.docker_network,
        includes=decided.includes,
        slim=request.slim,
        compile=compile_settings,
        cache=request.cache,
    )


def _fingerprints(
    decided: BuildPlan, job: InstallJob, builder: Builder, progress: Progress
) -> tuple[str, str]:
    """The dependencies' tree key and the outputs' fingerprint."""
    # Unpacked wheels without bytecode or stripping are the same bytes from any builder and
    # image (a test holds the builders to that); anything compiled, built or stripped depends
    # on the toolchain that did it.
    toolchain_free = not (job.compile or job.slim or job.trees) and not any(
        r.artifact.built_in_image for r in job.requirements
    )
    identity = "wheels only" if toolchain_free else builder.identity(job, progress)
    key = tree_key(job, identity)
    request = decided.request
    options = {"layout": request.layout.value, "exclude": sorted(request.exclude)}
    return key, fingerprint(job, key, options, decided.timestamp)


def _up_to_date(decided: BuildPlan, builder: Builder) -> BuildResult:
    archives = tuple(existing_stats(path) for path in decided.outputs)
    return BuildResult(decided, archives, builder.name, {}, {}, up_to_date=True)


def _fetcher(decided: BuildPlan, poetry: Poetry, workdir: Path) -> Fetcher:
    request = decided.request
    return WheelFetcher(
        poetry,
        cache=request.cache,
        scratch=workdir / "downloads",
        ca_bundle=request.ca_bundle,
        force=request.force,
    )


def _install(
    decided: BuildPlan,
    job: InstallJob,
    key: str,
    *,
    poetry: Poetry,
    builder: Builder,
    fetcher: Fetcher,
    workdir: Path,
    progress: Progress,
) -> list[InstallResult]:
    """The dependencies (or the tree an earlier build kept) and the project's files."""
    request = decided.request
    cache = _tree_cache(poetry).reporting_to(progress.warning) if request.cache else None
    return install(
        builder,
        job,
        fetcher=fetcher,
        key=key,
        cache=cache,
        force=request.force,
        workdir=workdir,
        progress=progress,
    )


def _package(
    decided: BuildPlan, installed: list[InstallResult], fingerprint: str, progress: Progress
) -> tuple[list[ArchiveStats], dict[str, int]]:
    """The installed trees as the layout's zips, written atomically; and the unzipped size of
    each distribution."""
    started = time.monotonic()
    with _tree_entries([result.tree for result in installed]) as installed_entries:
        entries = normalize_installed(installed_entries)
        entries, exclude_warnings = apply_excludes(entries, decided.request.exclude)
        for warning in exclude_warnings:
            progress.warning(warning)
        owner = owners(entries)
        sizes = distribution_sizes(entries, owner)
        project_files = {
            name for name, owned_by in owner.items() if owned_by == decided.project_name
        } | {name for name, _ in decided.includes}
        outputs = outputs_for_layout(decided.layout, decided.output, entries, project_files)
        written = write_zips_atomically(
            outputs,
            decided.timestamp,
            check=lambda stats: _check_size(stats, sizes, progress),
            comment=comment(fingerprint),
        )
    files = sum(stats.files for stats in written)
    progress.phase("package", time.monotonic() - started, f"{files} files")
    return written, sizes


def _verify(
    decided: BuildPlan,
    builder: Builder,
    written: Sequence[ArchiveStats],
    build_id: str,
    progress: Progress,
) -> float | None:
    """With --verify: import the handler from the zips as Lambda would; the import time."""
    request = decided.request
    if not (request.verify and request.handler):
        return None
    kinds = dict(zip(decided.layout.kinds, written))
    return builder.verify(
        VerifyJob(
            target=decided.target,
            image=decided.image,
            handler=request.handler,
            function_zip=kinds["function"].path if "function" in kinds else None,
            layer_zip=kinds["layer"].path if "layer" in kinds else None,
            build_id=build_id,
        ),
        progress,
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
