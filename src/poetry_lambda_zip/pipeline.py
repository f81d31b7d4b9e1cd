"""The pipeline, top-down in ``build_functions()``: plan each function -> group the functions by
requirement set -> per group one dependency tree (a kept tree, or fetched, unpacked here and
finished by the builder; assembled on first use) -> per function: fingerprints, up to date?, the
project's tree, package, write what changed -> verify. ``build()`` is the one-function case.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import tempfile
import threading
import time
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import ArchiveStats
from poetry_lambda_zip.archive import entries_below
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import file_sha256
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.assemble import DependencyJob
from poetry_lambda_zip.assemble import DependencyTree
from poetry_lambda_zip.assemble import ProjectJob
from poetry_lambda_zip.assemble import assemble
from poetry_lambda_zip.assemble import dependencies_tree
from poetry_lambda_zip.builders import Steps
from poetry_lambda_zip.builders import TreeReport
from poetry_lambda_zip.builders import VerifyJob
from poetry_lambda_zip.builders import builder_unchanged
from poetry_lambda_zip.builders import choose_builder
from poetry_lambda_zip.builders import require_engine_for_verify
from poetry_lambda_zip.builders import verify_handler
from poetry_lambda_zip.contents import LAYER_PREFIX
from poetry_lambda_zip.contents import Layout
from poetry_lambda_zip.contents import apply_excludes
from poetry_lambda_zip.contents import distribution_sizes
from poetry_lambda_zip.contents import merge_entries
from poetry_lambda_zip.contents import normalize_installed
from poetry_lambda_zip.contents import outputs_for_layout
from poetry_lambda_zip.contents import owners
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import LambdaZipError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fetch import WheelFetcher
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.fingerprint import fingerprint
from poetry_lambda_zip.fingerprint import read_recorded
from poetry_lambda_zip.fingerprint import tree_key
from poetry_lambda_zip.fingerprint import wheel_members
from poetry_lambda_zip.handler import check_handler
from poetry_lambda_zip.index_access import credentials_for
from poetry_lambda_zip.never_read import named_in
from poetry_lambda_zip.one_at_a_time import one_build_at_a_time
from poetry_lambda_zip.patch import EditRecord
from poetry_lambda_zip.patch import Prepared
from poetry_lambda_zip.patch import ProjectParts
from poetry_lambda_zip.patch import patch_job
from poetry_lambda_zip.patch import prepare
from poetry_lambda_zip.patch import record_edits
from poetry_lambda_zip.patch import write
from poetry_lambda_zip.plan import BuildPlan
from poetry_lambda_zip.plan import check_outputs_together
from poetry_lambda_zip.plan import plan
from poetry_lambda_zip.project import build_project_wheel
from poetry_lambda_zip.project import wheel_directories
from poetry_lambda_zip.source_trees import source_trees
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.stamps import Stamp
from poetry_lambda_zip.stamps import Stamps
from poetry_lambda_zip.stamps import cache_directory
from poetry_lambda_zip.stamps import outputs_now
from poetry_lambda_zip.tree_cache import TreeCache

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator
    from collections.abc import Sequence
    from types import FrameType

    from poetry.poetry import Poetry

    from poetry_lambda_zip.archive import Entry
    from poetry_lambda_zip.builders import Builder
    from poetry_lambda_zip.builders import Finished
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.fetch import Fetcher
    from poetry_lambda_zip.request import BuildRequest

__all__ = [
    "ZIPPED_DIRECT_UPLOAD_LIMIT",
    "BuildResult",
    "Outcome",
    "build",
    "build_functions",
    "plan_functions",
]

#: A larger zip cannot be uploaded directly; it has to go through S3.
ZIPPED_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: A build's scratch directory in the temporary directory: PREFIX + stale.owner_tag() + ".…".
_TEMPORARY_PREFIX = "lambda-zip-"


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    #: The outputs: the function (or layer) zip first, then a split layout's layer.
    archives: tuple[ArchiveStats, ...]
    builder: str
    #: Unzipped bytes per distribution (by canonical name), from their RECORD files.
    sizes: dict[str, int]
    report: TreeReport
    #: How long importing the handler took from a read-only /var/task (--verify).
    import_seconds: float | None = None
    #: The outputs already carried this build's fingerprints: nothing was rebuilt.
    up_to_date: bool = False
    #: The outputs this build wrote (the others already held what it would have written).
    written: tuple[Path, ...] = ()
    #: Of those, the ones that replaced a zip another builder wrote: (path, that builder).
    replaced: tuple[tuple[Path, str], ...] = ()
    #: The builder's identity the fingerprints hold (``DependencyJob.identity``, or the
    #: project's alone without dependencies).
    identity: str = ""
    #: What the function zip took from the project, when an edit of the project's files can
    #: be patched into it (``patch``); None: the next edit takes the full path.
    parts: ProjectParts | None = None
    #: Outputs that carried this build's fingerprint but had been changed after they were
    #: written (``zip -g``, an editor): rebuilt, and said so.
    altered: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One function's build: its result, or the error that stopped it."""

    function: str | None
    result: BuildResult | None = None
    error: LambdaZipError | None = None
    #: Settled from the function's stamp, without loading the project: its outputs, up to
    #: date, or patched after an edit of the project's own files (those ``written``).
    shortcut: tuple[ArchiveStats, ...] = ()
    written: tuple[Path, ...] = ()


def build(
    request: BuildRequest,
    poetry: Poetry,
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
) -> BuildResult:
    """Build the Lambda package(s) ``request`` asks for and return what was written."""
    (outcome,) = build_functions(
        [request], poetry, progress, builder, fetcher, results_in_full=True
    )
    if outcome.result is None or outcome.error is not None:
        raise outcome.error or BuildFailedError("The build ended without a result.")
    return outcome.result


def build_functions(
    requests: Sequence[BuildRequest],
    poetry: Poetry | Callable[[], Poetry],
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
    *,
    results_in_full: bool = False,
) -> list[Outcome]:
    """Build every function's package(s): plan each; functions with one requirement set
    (and target and steps) share one dependency tree, assembled once; distinct sets build
    concurrently, bounded by the cores. One function's failure is its outcome alone.

    ``poetry`` may be a function that loads the project: it is not called when every
    function's stamp shows nothing changed (``stamps``) or only the project's own files
    (``patch``), unless ``results_in_full`` (every result with its plan, e.g. for JSON)."""
    project_dir = requests[0].project_dir
    cache = cache_directory(project_dir)
    with one_build_at_a_time(project_dir, cache, progress):
        return _build_functions(
            requests, poetry, progress, builder=builder, fetcher=fetcher, cache=cache,
            results_in_full=results_in_full,
        )  # fmt: skip


def _build_functions(
    requests: Sequence[BuildRequest],
    poetry: Poetry | Callable[[], Poetry],
    progress: Progress,
    *,
    builder: Builder | None,
    fetcher: Fetcher | None,
    cache: Path | None,
    results_in_full: bool,
) -> list[Outcome]:
    # What a killed run left, removed whichever way this one goes (a no-op too).
    remove_stale(Path(tempfile.gettempdir()), _TEMPORARY_PREFIX)
    stamps = _stamps(requests, cache) if builder is None and fetcher is None else None
    if stamps is not None:
        stamps.look(requests[0].project_dir)  # before Poetry reads pyproject.toml and the lock
        settled = None if results_in_full else _shortcut(requests, stamps, progress)
        if settled is not None:
            return settled
    project = poetry() if callable(poetry) else poetry
    members, failed = _plans(requests, project, progress)
    check_outputs_together([member.plan for member in members])
    if any(member.plan.request.verify for member in members):
        require_engine_for_verify()
    outputs = [path for member in members for path in member.plan.outputs]
    for output in outputs:
        remove_stale_temporaries(output)
    read = _inputs_read(members, stamps, outputs, project)
    with _terminate_as_interrupt(), _scratch() as workdir:
        wheel = _project_wheel(members, project, workdir)
        context = _Context(project, progress, builder, fetcher, workdir, wheel)
        groups = list(_groups(members).values())
        outcomes = _run_groups(groups, context)
    outcomes += failed
    order = {request.function: number for number, request in enumerate(requests)}
    outcomes = [
        _verify(outcome, members) for outcome in sorted(outcomes, key=lambda o: order[o.function])
    ]
    if stamps is not None:
        _write_stamps(outcomes, stamps, read, outputs)
    return outcomes


def _stamps(requests: Sequence[BuildRequest], cache: Path | None) -> Stamps | None:
    """The stamps, when the builds may use them: not with --force, --verify or --no-cache."""
    if any(request.force or request.verify or not request.cache for request in requests):
        return None
    return None if cache is None else Stamps(cache / "lambda-zip-stamps")


def _shortcut(
    requests: Sequence[BuildRequest], stamps: Stamps, progress: Progress
) -> list[Outcome] | None:
    """Every function up to date by its stamp (its inputs and outputs as they were when it
    was written, and the same builder), or brought up to date by patching its zip after an
    edit of the project's own files alone; None: then every function is built."""
    started = time.monotonic()
    found = {request: stamps.read(request) for request in requests}
    stamped = {request: stamp for request, stamp in found.items() if stamp is not None}
    if len(stamped) != len(found):
        return None
    outputs = [path for stamp in stamped.values() for path, _, _ in stamp.outputs]
    for output in outputs:
        remove_stale_temporaries(Path(output))
    # The builders are asked (the engine, for the docker builder's image id) while the stamps
    # are compared and any patch's bytecode compiles; nothing is written before they answer.
    with ThreadPoolExecutor(max_workers=1) as pool:
        same_builders = pool.submit(_same_builders, stamped)
        prepared: dict[BuildRequest, Prepared | None] = {}
        for request, stamp in stamped.items():
            if stamps.current(request, stamp, outputs):
                prepared[request] = None
                continue
            job = patch_job(request, stamp, stamps, outputs)
            ready = prepare(job) if job is not None else None
            if ready is None:
                return None
            prepared[request] = ready
        if not same_builders.result():
            return None
    edited = sorted({s.path for p in prepared.values() if p for s in p.job.changed})
    progress.phase(
        "check",
        time.monotonic() - started,
        f"only the project's own files changed since the last build ({', '.join(edited)}):"
        " patching the zip where their contents did"
        if edited
        else "nothing read by the last build changed since (pyproject.toml, poetry.lock, the"
        " project's files, settings, builder)",
    )
    outcomes = []
    for request, ready in prepared.items():
        if ready is None:
            stamp = stamped[request]
            archives = tuple(
                ArchiveStats(Path(path), *archive)
                for (path, _, _), archive in zip(stamp.outputs, stamp.archives)
            )
            outcomes.append(Outcome(request.function, shortcut=archives))
        else:
            outcomes.append(_patched(ready, stamps, outputs, _shown_for(request, progress)))
    return outcomes


def _same_builders(stamped: dict[BuildRequest, Stamp]) -> bool:
    return all(
        builder_unchanged(stamp.identity, stamp.image, request.builder)
        for request, stamp in stamped.items()
    )


def _patched(
    ready: Prepared, stamps: Stamps, outputs: Sequence[str], progress: Progress
) -> Outcome:
    """The prepared patch written, and the function's stamp written again (when nothing
    changed meanwhile)."""
    started = time.monotonic()
    done = write(ready, progress)
    job = ready.job
    if done.written:
        progress.phase("package", time.monotonic() - started, f"{len(job.changed)} files patched")
    stamp = job.stamp
    stamps.forget()
    found = outputs_now(archive.path for archive in done.archives)
    now = stamps.inputs(job.request, stamp.roots, outputs, whole=stamp.whole)
    if now == job.inputs and found is not None:
        archives = tuple(
            (a.sha256, a.zipped_size, a.unzipped_size, a.files, a.distributions)
            for a in done.archives
        )
        edit = done.record.to_json()
        stamps.write(job.request, replace(stamp, inputs=job.inputs, outputs=found,
                                          archives=archives, edit=edit))  # fmt: skip
    return Outcome(job.request.function, shortcut=done.archives, written=done.written)


def _inputs_read(
    members: Sequence[_Member], stamps: Stamps | None, outputs: Sequence[Path], poetry: Poetry
) -> dict[str | None, _Read]:
    """Each function's stamp roots, the directories its wheel reads whole, and its inputs
    before its build reads them (None: not to be vouched for, e.g. an include that names a
    directory no listing reads, ``never_read``)."""
    if stamps is None:
        return {}
    read = {}
    wheel = wheel_directories(poetry) if any(m.plan.root for m in members) else ()
    for member in members:
        decided = member.plan
        roots = _stamp_roots(decided)
        whole = wheel if decided.root else ()
        names = any(named_in(i.base, i.pattern) for i in decided.request.include)
        inputs = None if names else stamps.inputs(decided.request, roots, map(str, outputs),
                                                  whole=whole)  # fmt: skip
        read[member.function] = _Read(roots, whole, inputs)
    return read


@dataclass(frozen=True)
class _Read:
    """What a function's stamp lists besides the project's directory, and what it read."""

    roots: tuple[str, ...]
    whole: tuple[str, ...]
    inputs: str | None


def _stamp_roots(decided: BuildPlan) -> tuple[str, ...]:
    """What a build reads outside the project's directory: path dependencies, include
    files."""
    inside = decided.project_dir.resolve()
    paths = [path for _, path in decided.includes]
    for requirement in decided.requirements.requirements:
        origin = requirement.origin
        if origin.type in ("directory", "file") and origin.url is not None:
            paths.append(decided.project_dir / origin.url)
    outside = {str(path.resolve()) for path in paths if not path.resolve().is_relative_to(inside)}
    return tuple(sorted(outside))


def _write_stamps(
    outcomes: Sequence[Outcome],
    stamps: Stamps,
    read: dict[str | None, _Read],
    outputs: Sequence[Path],
) -> None:
    """A stamp for each function built (or found up to date) whose inputs did not change
    while it was built."""
    stamps.forget()
    for outcome in outcomes:
        result = outcome.result
        if result is None or outcome.error is not None or outcome.function not in read:
            continue
        entry = read[outcome.function]
        roots, whole, before = entry.roots, entry.whole, entry.inputs
        if before is None:  # not to be vouched for (e.g. too many files): not listed again
            continue
        request = result.plan.request
        now = stamps.inputs(request, roots, map(str, outputs), whole=whole)
        found = outputs_now(archive.path for archive in result.archives)
        if now != before or found is None:
            continue
        docker_image = result.plan.docker.image if result.identity.startswith("docker ") else None
        archives = tuple(
            (a.sha256, a.zipped_size, a.unzipped_size, a.files, a.distributions)
            for a in result.archives
        )
        edit = _edit_record(result, stamps, roots, whole, outputs)
        stamp = Stamp(before, roots, found, result.identity, docker_image, archives, edit, whole)
        stamps.write(request, stamp)


def _edit_record(
    result: BuildResult,
    stamps: Stamps,
    roots: tuple[str, ...],
    whole: tuple[str, ...],
    outputs: Sequence[Path],
) -> dict[str, Any] | None:
    """What the edit shortcut needs of a function just built, as the stamp keeps it; None when
    an edit of its project cannot be patched in (``patch``)."""
    parts = result.parts
    if parts is None:
        return None
    if result.up_to_date:
        # Nothing was finished now: the zip is the one the last build wrote, patchable if
        # that build's stamp said so for the same project part.
        earlier = stamps.read(result.plan.request)
        record = EditRecord.from_json(earlier.edit) if earlier is not None else None
        if record is None or record.fingerprint() != parts.fingerprint():
            return None
    project_dir = result.plan.request.project_dir
    sources = record_edits(parts, project_dir, stamps.listed(project_dir))
    if sources is None:
        return None
    aside = frozenset(os.path.abspath(project_dir / source.path) for source in sources)
    rest = stamps.inputs(result.plan.request, roots, map(str, outputs), aside, whole=whole)
    if rest is None:
        return None
    record = EditRecord(
        rest=rest,
        sources=sources,
        dependencies_key=parts.dependencies_key,
        options=parts.options,
        timestamp=parts.timestamp,
        wheel=parts.wheel,
        includes=tuple((name, sha256) for name, _, sha256 in parts.includes),
        compile_prefix=parts.compile_prefix,
        made_by=parts.made_by,
    )
    return record.to_json()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The build's own temporary directory, named so that a later run recognises it as stale
    if this one is killed."""
    with tempfile.TemporaryDirectory(prefix=f"{_TEMPORARY_PREFIX}{owner_tag()}.") as directory:
        yield Path(directory)


@dataclass(frozen=True)
class _Member:
    """A function being built: its plan, and where its progress lines go."""

    plan: BuildPlan
    progress: Progress

    @property
    def function(self) -> str | None:
        return self.plan.request.function


@dataclass(frozen=True)
class _Context:
    poetry: Poetry
    progress: Progress
    builder: Builder | None
    fetcher: Fetcher | None
    workdir: Path
    #: The project's wheel, built once for every function that ships it.
    wheel: Path | None
    #: Set when the build was interrupted: the groups building beside the interrupted one
    #: stop at their next step (``_Stoppable``), writing nothing.
    stop: threading.Event = field(default_factory=threading.Event)


def plan_functions(
    requests: Sequence[BuildRequest], poetry: Poetry, progress: Progress
) -> list[BuildPlan]:
    """Every function's plan, building nothing (``--dry-run``); the first problem is raised."""
    plans = [plan(request, poetry, _shown_for(request, progress)) for request in requests]
    check_outputs_together(plans)
    return plans


def _shown_for(request: BuildRequest, progress: Progress) -> Progress:
    """Where a function's lines go: prefixed with its name when it is one of a table's."""
    return progress if request.function is None else _Prefixed(progress, request.function)


def _plans(
    requests: Sequence[BuildRequest], poetry: Poetry, progress: Progress
) -> tuple[list[_Member], list[Outcome]]:
    members, failed = [], []
    for request in requests:
        shown = _shown_for(request, progress)
        try:
            members.append(_Member(plan(request, poetry, shown), shown))
        except LambdaZipError as e:
            if len(requests) == 1:
                raise
            failed.append(Outcome(request.function, error=e))
    return members, failed


def _project_wheel(members: Sequence[_Member], poetry: Poetry, workdir: Path) -> Path | None:
    """poetry-core's wheel of the project, when a function ships it: the same for all."""
    if not any(member.plan.root for member in members):
        return None
    return build_project_wheel(poetry, workdir / "wheel")


def _groups(members: Sequence[_Member]) -> dict[tuple[object, ...], list[_Member]]:
    """Functions by what decides their dependencies' tree: target, requirement set, the
    builder asked for, slimming and the bytecode's path."""
    groups: dict[tuple[object, ...], list[_Member]] = {}
    for member in members:
        decided = member.plan
        key = (
            decided.target,
            decided.requirements.requirements,
            decided.request.builder,
            decided.docker,
            decided.slim,
            decided.compile.dependencies if decided.compile else None,
        )
        groups.setdefault(key, []).append(member)
    return groups


def _run_groups(groups: Sequence[list[_Member]], context: _Context) -> list[Outcome]:
    """The first group here, the others in threads: a Ctrl-C reaches this one at once; the
    others end with the step they are in."""
    workers = min(len(groups), os.cpu_count() or 1) - 1
    if workers < 1:
        return [outcome for group in groups for outcome in _build_group(group, context)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(_build_group, group, context) for group in groups[1:]]
        try:
            outcomes = _build_group(groups[0], context)
        except BaseException:
            context.stop.set()  # the others stop at their next step, before writing a zip
            for future in pending:
                future.cancel()
            raise
        for future in pending:
            outcomes += future.result()
    return outcomes


def _build_group(group: Sequence[_Member], context: _Context) -> list[Outcome]:
    """The functions of one requirement set, one after another, on one dependency tree."""
    group = [replace(m, progress=_Stoppable(m.progress, context.stop)) for m in group]
    # What the group shares is said once, for all of its functions.
    first = group[0]
    if len(group) > 1:
        names = ",".join(str(member.function) for member in group)
        shared = _Stoppable(_Prefixed(context.progress, names), context.stop)
        first = replace(first, progress=shared)
    directory = Path(tempfile.mkdtemp(dir=context.workdir, prefix="group-"))
    try:
        builder = context.builder or choose_builder(
            first.plan.request.builder, first.plan.requirements.built_from_source,
            first.plan.target, first.plan.docker, first.progress,
        )  # fmt: skip
        dependencies = _dependencies(first, builder, context, directory)
    except LambdaZipError as e:
        if isinstance(e, BuildInterrupted):
            raise
        return [Outcome(member.function, error=e) for member in group]
    layers = _shared_layers(group)
    outcomes = []
    for number, member in enumerate(group):
        try:
            result = _build_one(
                member, builder, dependencies, layers=layers, context=context,
                workdir=directory / f"function-{number}",
            )  # fmt: skip
            outcomes.append(Outcome(member.function, result=result))
        except LambdaZipError as e:
            if isinstance(e, BuildInterrupted):
                raise
            outcomes.append(Outcome(member.function, error=e))
    if dependencies is not None:
        dependencies.keep()  # every function is packaged: the tree may move to the cache
    return outcomes


def _dependencies(
    first: _Member, builder: Builder, context: _Context, directory: Path
) -> DependencyTree | None:
    """The group's dependencies' tree, assembled on first use; None for no requirements."""
    job = _dependency_job(first.plan, builder, directory / "checkouts", first.progress)
    if not job.requirements:
        return None
    request = first.plan.request
    cache = _tree_cache(context.poetry).reporting_to(first.progress.warning)
    assemble_once = functools.partial(
        dependencies_tree, builder, job,
        fetcher=context.fetcher or _fetcher(first.plan, context.poetry, directory),
        cache=cache if request.cache else None,
        force=request.force, workdir=directory, progress=first.progress,
    )  # fmt: skip
    keeper = functools.partial(cache.put, job.key, move=True) if request.cache else None
    return DependencyTree(job, assemble_once, keeper)


def _shared_layers(group: Sequence[_Member]) -> dict[str, Path]:
    """Functions of one requirement set with the split layout share one layer: the first
    one's. Returns the layer path by function."""
    split = [member for member in group if member.plan.layout is Layout.SPLIT]
    return {str(member.function): split[0].plan.outputs[1] for member in split}


def _build_one(
    member: _Member,
    builder: Builder,
    dependencies: DependencyTree | None,
    *,
    layers: dict[str, Path],
    context: _Context,
    workdir: Path,
) -> BuildResult:
    """One function: up to date, or its project's tree on the shared dependencies' tree,
    packaged; only the outputs whose fingerprint changed are written."""
    decided, progress = member.plan, member.progress
    outputs = list(decided.outputs)
    if decided.layout is Layout.SPLIT:
        outputs[1] = layers[str(member.function)]
    project = _project_job(decided, builder, context.wheel, progress)
    if dependencies is not None:
        key, identity = dependencies.job.key, dependencies.job.identity
    else:
        key, identity = _project_only_key(project, builder, progress)
    # The zip names its builder where the builder decides its bytes (bytecode, builds,
    # stripping); unpacked wheels alone are the same bytes from any builder, and so is the zip.
    toolchain = project.steps.may_need_toolchain() or (
        dependencies is not None and dependencies.job.made_by_toolchain
    )
    parts = _project_parts(decided, key, project, builder.name if toolchain else None)
    fingerprints = {"function": parts.fingerprint(), "layer": _layer_fingerprint(decided, key)}
    # Each output's comment, read once: up to date?, written by which builder?, rewrite it?
    # Its fingerprint is trusted only while the zip is as it was written.
    found = {path: read_recorded(path) for path in outputs}
    carried = {
        path: (earlier := found[path]) is not None and earlier.fingerprint == fingerprints[kind]
        for kind, path in zip(decided.layout.kinds, outputs)
    }
    altered = tuple(
        path
        for path, earlier in found.items()
        if carried[path] and earlier is not None and not earlier.intact
    )
    current = {path: carried[path] and path not in altered for path in outputs}
    # An edit of the project's files can be patched in later where the zip holds all of them
    # (no excludes) and the project's tree was finished here (its bytecode by this machine's
    # Python; for a zip found up to date, as the stamp of the build that wrote it says).
    patchable = (
        decided.layout.ships_project
        and not decided.request.exclude
        and (project.wheel is not None or bool(project.includes))
    )
    if not decided.request.force and all(current.values()):
        _check_handler_in(decided, outputs)  # the handler is no part of the zips' bytes
        archives = tuple(existing_stats(path) for path in outputs)
        return BuildResult(
            decided, archives, builder.name, {}, TreeReport(), up_to_date=True,
            identity=identity, parts=parts if patchable else None,
        )  # fmt: skip
    workdir.mkdir()
    trees = assemble(builder, dependencies, project, workdir=workdir, progress=progress)
    report = sum((tree.report for tree in trees), TreeReport())
    _report_steps(decided, report, progress)
    archives, written, sizes = _package(
        decided, trees, outputs, fingerprints, progress, builder=parts.made_by, current=current,
        stop=context.stop,
    )  # fmt: skip
    # Zips another builder wrote (e.g. --builder local over the docker builder's): said.
    replaced = tuple(
        (path, earlier.builder)
        for path, earlier in found.items()
        if path in written and earlier and earlier.builder and earlier.builder != builder.name
    )
    return BuildResult(
        decided, archives, builder.name, sizes, report, written=written, replaced=replaced,
        identity=identity, parts=parts if patchable and trees[-1].here else None,
        altered=altered,
    )  # fmt: skip


def _project_only_key(project: ProjectJob, builder: Builder, progress: Progress) -> tuple[str, str]:
    """Without dependencies, the key and builder identity the fingerprints hold: the
    project's tree alone, finished by ``builder`` (its Python's bytecode), by this plugin."""
    steps = project.steps
    identity = builder.identity(steps, progress) if steps.may_need_toolchain() else "wheels only"
    return tree_key((), steps, identity), identity


def _dependency_job(
    decided: BuildPlan, builder: Builder, checkouts: Path, progress: Progress
) -> DependencyJob:
    """The requirement set and what the builder must add to it: sdists, path and git
    dependencies (git checked out at the locked commit), slimming, bytecode."""
    requirements = decided.requirements.requirements
    built = decided.requirements.built_from_source
    trees = tuple(source_trees(requirements, checkouts))
    steps = Steps(
        decided.target,
        build=built,
        trees=trees,
        slim=decided.slim,
        compile_prefix=_compile_prefix(decided, builder, progress, "dependencies"),
        credentials=credentials_for(built, decided.docker.default_index, decided.credentials),
        network=decided.network if built else None,
    )
    # Unpacked wheels without bytecode or stripping are the same bytes from any builder and
    # image (a test holds the builders to that); anything compiled, built or stripped depends
    # on the toolchain that did it.
    identity = builder.identity(steps, progress) if steps.may_need_toolchain() else "wheels only"
    key = tree_key(requirements, steps, identity, decided.project_dir)
    return DependencyJob(requirements, steps, key, identity)


def _project_job(
    decided: BuildPlan, builder: Builder, wheel: Path | None, progress: Progress
) -> ProjectJob:
    """The project's wheel (when the function ships it) and its include files."""
    steps = Steps(
        decided.target,
        slim=decided.slim,
        compile_prefix=_compile_prefix(decided, builder, progress, "project"),
    )
    return ProjectJob(wheel if decided.root else None, decided.includes, steps)


def _compile_prefix(
    decided: BuildPlan, builder: Builder, progress: Progress, which: str
) -> str | None:
    """The path bytecode names for the dependencies' or the project's files; None when not
    precompiling (said once, for the dependencies)."""
    if decided.compile is None:
        return None
    problem = builder.cannot_compile(decided.target)
    if problem is not None:
        if which == "dependencies":
            progress.warning(problem)
        return None
    return decided.compile.dependencies if which == "dependencies" else decided.compile.project


def _project_parts(
    decided: BuildPlan, key: str, project: ProjectJob, made_by: str | None
) -> ProjectParts:
    """What the function zip's fingerprint covers of the project (its wheel's members, the
    include files' contents), with the rest of it and how its project part is made."""
    return ProjectParts(
        dependencies_key=key,
        options=_zip_options(decided),
        timestamp=decided.timestamp,
        wheel=wheel_members(project.wheel) if project.wheel is not None else None,
        includes=tuple((name, path, file_sha256(path)) for name, path in project.includes),
        compile_prefix=project.steps.compile_prefix,
        made_by=made_by,
    )


def _layer_fingerprint(decided: BuildPlan, key: str) -> str:
    """A layer's fingerprint covers the dependencies alone: it outlives a change to the
    project's code."""
    return fingerprint(key, None, (), _zip_options(decided), decided.timestamp)


def _zip_options(decided: BuildPlan) -> dict[str, Any]:
    request = decided.request
    return {"layout": request.layout.value, "exclude": sorted(request.exclude)}


def _check_handler_in(decided: BuildPlan, outputs: Sequence[Path]) -> None:
    """The handler is in the zips found up to date, as a build checks it in what it packages
    (the handler may have changed since they were written, their contents not)."""
    handler = decided.request.handler
    if handler is None or not decided.layout.ships_project:
        return
    names = []
    for kind, path in zip(decided.layout.kinds, outputs):
        with zipfile.ZipFile(path) as archive:
            listed = archive.namelist()
        names += [n.removeprefix(LAYER_PREFIX) for n in listed] if kind == "layer" else listed
    check_handler(handler, names)


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
    decided: BuildPlan,
    trees: Sequence[Finished],
    outputs: Sequence[Path],
    fingerprints: dict[str, str],
    progress: Progress,
    *,
    builder: str | None,
    current: dict[Path, bool],
    stop: threading.Event,
) -> tuple[tuple[ArchiveStats, ...], tuple[Path, ...], dict[str, int]]:
    """The installed trees as the layout's zips; the handler checked in them; the zips whose
    fingerprint changed written atomically. Returns every output's stats, the outputs
    written, and the unzipped size of each distribution."""
    started = time.monotonic()
    entries = normalize_installed(
        merge_entries([entries_below(tree.directory, tree.shipped, tree.known) for tree in trees])
    )
    entries, exclude_warnings = apply_excludes(entries, decided.request.exclude)
    for warning in exclude_warnings:
        progress.warning(warning)
    owner = owners(entries)
    sizes = distribution_sizes(entries, owner)
    project_files = {
        name for name, owned_by in owner.items() if owned_by == decided.project_name
    } | {name for name, _ in decided.includes}
    handler = decided.request.handler
    if handler is not None and decided.layout.ships_project:
        check_handler(handler, [entry.name for entry in entries])
    _warn_folded(sorted(project_files), progress)
    zips = outputs_for_layout(decided.layout, outputs, entries, project_files)
    _refuse_empty(decided, zips)
    # What a package over the limit is made of: the distributions, and the include files.
    included = {name for name, _ in decided.includes}
    parts = {**sizes, **{f"{e.name} (include)": e.size for e in entries if e.name in included}}
    force = decided.request.force
    pending, kept = [], {}
    for kind, (path, zipped) in zip(decided.layout.kinds, zips):
        if force or not current[path]:
            pending.append((path, zipped, comment(fingerprints[kind], builder)))
        else:
            kept[path] = existing_stats(path)
    written = write_zips_atomically(
        pending,
        decided.timestamp,
        check=lambda stats: _check_size([*stats, *kept.values()], parts, progress, stop),
        reuse=not force,  # --force: everything from scratch, deflating too
        count=lambda done, total: progress.count("package", done, total),
    )
    files = sum(stats.files for stats in written)
    progress.phase("package", time.monotonic() - started, f"{files} files")
    by_path = {**kept, **{stats.path: stats for stats in written}}
    return tuple(by_path[path] for path in outputs), tuple(s.path for s in written), sizes


def _warn_folded(names: Sequence[str], progress: Progress) -> None:
    """Project files whose names differ only in case or Unicode normalisation: Lambda keeps
    both, a zip unpacked on macOS or Windows (to test it, to inspect it) keeps one."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(unicodedata.normalize("NFC", name).casefold(), name)
        if other != name:
            progress.warning(
                f"{other} and {name} differ only in case or Unicode normalisation: unzipped on"
                " macOS or Windows, one replaces the other (Lambda keeps both). Rename one."
            )


def _refuse_empty(decided: BuildPlan, zips: Sequence[tuple[Path, Sequence[Entry]]]) -> None:
    """Lambda refuses an empty package: a zip with no file stops the function before anything
    is written, saying what would have filled it."""
    for kind, (path, entries) in zip(decided.layout.kinds, zips):
        if entries:
            continue
        if kind == "layer":
            why = "the requirement set is empty (no dependency to put in a layer)"
            fix = 'Leave out the layer (layout = "function"), or add the dependencies it is for.'
        else:
            patterns = ", ".join(repr(str(include)) for include in decided.request.include)
            why = (
                f"include ({patterns}) matches no file" if patterns else "there is no include"
            ) + (" and the project's package is not shipped" if not decided.root else "")
            fix = (
                "Fix the include patterns (paths relative to the directory holding"
                " pyproject.toml), or ship the project's package."
            )
        raise ConfigError(f"{path.name} would hold no file: {why}. Lambda refuses an empty"
                          " package.", fix)  # fmt: skip


def _verify(outcome: Outcome, members: Sequence[_Member]) -> Outcome:
    """With --verify: import the function's handler from its zips as Lambda would."""
    result = outcome.result
    if result is None:
        return outcome
    decided = result.plan
    request = decided.request
    if not (request.verify and request.handler):
        return outcome
    kinds = dict(zip(decided.layout.kinds, result.archives))
    check = VerifyJob(
        target=decided.target,
        handler=request.handler,
        function_zip=kinds["function"].path if "function" in kinds else None,
        layer_zip=kinds["layer"].path if "layer" in kinds else None,
    )
    progress = next(m.progress for m in members if m.function == outcome.function)
    try:
        seconds = verify_handler(check, decided.docker, progress)
    except LambdaZipError as e:
        if len(members) == 1:
            raise
        return replace(outcome, error=e)
    return replace(outcome, result=replace(result, import_seconds=seconds))


def _tree_cache(poetry: Poetry) -> TreeCache:
    cache_dir = Path(poetry.config.artifacts_cache_directory).parent
    return TreeCache(cache_dir / "lambda-zip-trees")


class _Prefixed:
    """Progress of one function among several: its name before every line."""

    def __init__(self, progress: Progress, function: str) -> None:
        self._progress = progress
        self._function = function

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self._progress.phase(f"{self._function} {name}", seconds, detail)

    def info(self, message: str) -> None:
        self._progress.info(f"{self._function}: {message.lstrip()}")

    def warning(self, message: str) -> None:
        self._progress.warning(f"{self._function}: {message}")

    def installer_output(self, line: str) -> None:
        self._progress.installer_output(f"{self._function}: {line}")

    def count(self, name: str, done: int, total: int) -> None:
        self._progress.count(f"{self._function} {name}", done, total)


class _Stoppable:
    """Progress of a group that stops at its next step once ``stop`` is set (the build was
    interrupted in another thread): every line it would print raises BuildInterrupted there,
    and its containers and files are cleaned up on the way out."""

    def __init__(self, progress: Progress, stop: threading.Event) -> None:
        self._progress = progress
        self._stop = stop

    def check(self) -> None:
        if self._stop.is_set():
            raise BuildInterrupted("Stopped: another part of the build was interrupted.")

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self.check()
        self._progress.phase(name, seconds, detail)

    def info(self, message: str) -> None:
        self.check()
        self._progress.info(message)

    def warning(self, message: str) -> None:
        self.check()
        self._progress.warning(message)

    def installer_output(self, line: str) -> None:
        self.check()
        self._progress.installer_output(line)

    def count(self, name: str, done: int, total: int) -> None:
        self.check()
        self._progress.count(name, done, total)


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
            + (
                f", {report.compile.tests} in test directories left as source"
                if report.compile.tests
                else ""
            )
        )


def _check_size(
    written: list[ArchiveStats], sizes: dict[str, int], progress: Progress, stop: threading.Event
) -> None:
    """The zips written (not yet in place) against Lambda's limits; none is put in place once
    the build was interrupted."""
    if stop.is_set():
        raise BuildInterrupted("Stopped: another part of the build was interrupted.")
    unzipped = sum(stats.unzipped_size for stats in written)
    if unzipped > UNZIPPED_LIMIT:
        largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:10]
        table = "\n".join(f"  {size / 1e6:8.1f} MB  {name}" for name, size in largest)
        raise OutputError(
            f"The package unzips to {unzipped:,} bytes; Lambda allows at most"
            f" {UNZIPPED_LIMIT:,} for a function and its layers. The largest distributions"
            f" and include files:\n{table}",
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
        # Once: a second Ctrl-C (people press it again) must not break off the cleanup this
        # one starts (removing containers and scratch directories, the other groups stopping).
        for number in signals:
            signal.signal(number, signal.SIG_IGN)
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
