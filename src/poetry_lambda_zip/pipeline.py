"""The pipeline, top-down in ``build()``: plan -> jobs (the project's wheel, the steps) ->
up to date? -> assemble the trees (the dependencies': a kept tree, or fetched, unpacked here and
finished by the builder; the project's files) -> package and write -> verify.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import entries_from_files
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.assemble import DependencyJob
from poetry_lambda_zip.assemble import ProjectJob
from poetry_lambda_zip.assemble import assemble
from poetry_lambda_zip.builders import Steps
from poetry_lambda_zip.builders import TreeReport
from poetry_lambda_zip.builders import VerifyJob
from poetry_lambda_zip.builders import choose_builder
from poetry_lambda_zip.builders import verify_handler
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
from poetry_lambda_zip.index_access import credentials_for
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
    from poetry_lambda_zip.builders import Finished
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
    report: TreeReport
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
        request.builder, decided.requirements.built_from_source, decided.target,
        decided.docker, progress,
    )  # fmt: skip
    _remove_what_killed_runs_left(decided.outputs)
    with _terminate_as_interrupt(), _scratch() as workdir:
        dependencies, project = _jobs(decided, poetry, builder, workdir, progress)
        current = _fingerprint(decided, dependencies, project)
        if not request.force and recorded(decided.outputs) == current:
            return _up_to_date(decided, builder)
        trees = assemble(
            builder, dependencies, project,
            fetcher=fetcher or _fetcher(decided, poetry, workdir),
            cache=_tree_cache(poetry).reporting_to(progress.warning) if request.cache else None,
            force=request.force, workdir=workdir, progress=progress,
        )  # fmt: skip
        report = sum((tree.report for tree in trees), TreeReport())
        _report_steps(decided, report, progress)
        written, sizes = _package(decided, trees, current, progress)
    seconds = _verify(decided, written, progress)
    return BuildResult(decided, tuple(written), builder.name, sizes, report, seconds)


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The build's own temporary directory, named so that a later run recognises it as stale
    if this one is killed."""
    with tempfile.TemporaryDirectory(prefix=f"{_TEMPORARY_PREFIX}{owner_tag()}.") as directory:
        yield Path(directory)


def _jobs(
    decided: BuildPlan, poetry: Poetry, builder: Builder, workdir: Path, progress: Progress
) -> tuple[DependencyJob, ProjectJob]:
    """What to install: the requirement set (and what the builder must build of it: sdists,
    path and git dependencies, git checked out at the locked commit), and the project's wheel
    (built by poetry-core) with its include files; each with the steps that finish it."""
    requirements = decided.requirements.requirements
    wheel = None
    if decided.layout.ships_project:
        wheel = build_project_wheel(poetry, workdir / "wheel")
    prefixes = decided.compile
    problem = builder.cannot_compile(decided.target) if prefixes else None
    if problem is not None:
        progress.warning(problem)
        prefixes = None
    built = decided.requirements.built_from_source
    trees = tuple(source_trees(requirements, workdir / "checkouts"))
    downloads = bool(built or trees)
    dependency_steps = Steps(
        decided.target,
        build=built,
        trees=trees,
        slim=decided.slim,
        compile_prefix=prefixes.dependencies if prefixes else None,
        credentials=credentials_for(built, decided.docker.default_index, decided.credentials),
        network=decided.network if downloads else None,
    )
    project_steps = Steps(
        decided.target,
        slim=decided.slim,
        compile_prefix=prefixes.project if prefixes else None,
    )
    # Unpacked wheels without bytecode or stripping are the same bytes from any builder and
    # image (a test holds the builders to that); anything compiled, built or stripped depends
    # on the toolchain that did it.
    identity = "wheels only"
    if dependency_steps.may_need_toolchain():
        identity = builder.identity(dependency_steps, progress)
    key = tree_key(requirements, dependency_steps, identity)
    return (
        DependencyJob(requirements, dependency_steps, key),
        ProjectJob(wheel, decided.includes, project_steps),
    )


def _fingerprint(decided: BuildPlan, dependencies: DependencyJob, project: ProjectJob) -> str:
    """What the outputs carry: when it matches, nothing needs to be built."""
    request = decided.request
    options = {"layout": request.layout.value, "exclude": sorted(request.exclude)}
    return fingerprint(
        dependencies.key, project.wheel, project.includes, options, decided.timestamp
    )


def _up_to_date(decided: BuildPlan, builder: Builder) -> BuildResult:
    archives = tuple(existing_stats(path) for path in decided.outputs)
    return BuildResult(decided, archives, builder.name, {}, TreeReport(), up_to_date=True)


def _fetcher(decided: BuildPlan, poetry: Poetry, workdir: Path) -> Fetcher:
    request = decided.request
    return WheelFetcher(
        poetry,
        cache=request.cache,
        scratch=workdir / "downloads",
        ca_bundle=request.ca_bundle,
        force=request.force,
    )


def _package(
    decided: BuildPlan, trees: Sequence[Finished], fingerprint: str, progress: Progress
) -> tuple[list[ArchiveStats], dict[str, int]]:
    """The installed trees as the layout's zips, written atomically; and the unzipped size of
    each distribution."""
    started = time.monotonic()
    entries = normalize_installed(merge_entries([_entries(tree.directory) for tree in trees]))
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


def _entries(directory: Path) -> list[Entry]:
    return entries_from_files(
        directory, sorted(path for path in directory.rglob("*") if path.is_file())
    )


def _verify(
    decided: BuildPlan, written: Sequence[ArchiveStats], progress: Progress
) -> float | None:
    """With --verify: import the handler from the zips as Lambda would; the import time."""
    request = decided.request
    if not (request.verify and request.handler):
        return None
    kinds = dict(zip(decided.layout.kinds, written))
    check = VerifyJob(
        target=decided.target,
        handler=request.handler,
        function_zip=kinds["function"].path if "function" in kinds else None,
        layer_zip=kinds["layer"].path if "layer" in kinds else None,
    )
    return verify_handler(check, decided.docker, progress)


def _tree_cache(poetry: Poetry) -> TreeCache:
    cache_dir = Path(poetry.config.artifacts_cache_directory).parent
    return TreeCache(cache_dir / "lambda-zip-trees")


def _remove_what_killed_runs_left(outputs: Sequence[Path]) -> None:
    remove_stale(Path(tempfile.gettempdir()), _TEMPORARY_PREFIX)
    for output in outputs:
        remove_stale_temporaries(output)


def _report_steps(decided: BuildPlan, report: TreeReport, progress: Progress) -> None:
    if report.slim is not None:
        slim = report.slim
        progress.info(
            f"  slim: removed {slim.files_removed} files, stripped"
            f" {slim.libraries_stripped} libraries, {slim.bytes_saved / 1e6:.1f} MB saved"
        )
        if slim.libraries_unstripped:
            progress.warning(
                f"No `strip` for {decided.target.machine} where the tree was slimmed:"
                f" {slim.libraries_unstripped} shared libraries kept their debug symbols."
            )
    if report.compile is not None:
        progress.info(
            f"  compiled {report.compile.compiled} modules for {decided.target.runtime}"
            f" (unchecked-hash .pyc), {report.compile.failed} could not be compiled"
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
