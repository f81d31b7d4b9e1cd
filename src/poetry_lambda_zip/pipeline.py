"""The pipeline, top-down in ``build_functions()``: the shortcut settles what it can
(``shortcut``) -> plan each function -> outputs checked together -> group the functions by
requirement set -> per group one dependency tree (a kept tree, or fetched, unpacked here and
finished by the builder; assembled on first use) -> per function: fingerprints, up to date?, the
project's tree, the zips (``zips``) -> verify -> the shortcut records what was built.
``build()`` is the one-function case.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from poetry_lambda_zip import locations
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import forget_seals
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.assemble import DependencyTree
from poetry_lambda_zip.assemble import assemble
from poetry_lambda_zip.assemble import dependencies_tree
from poetry_lambda_zip.builders import choose_builder
from poetry_lambda_zip.builders import require_engine_for_verify
from poetry_lambda_zip.builders import verify_handler
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.builders.contract import VerifyJob
from poetry_lambda_zip.contents import Layout
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import LambdaZipError
from poetry_lambda_zip.fetch import WheelFetcher
from poetry_lambda_zip.fingerprint import read_recorded
from poetry_lambda_zip.fit import FitOptions
from poetry_lambda_zip.jobs import dependency_job
from poetry_lambda_zip.jobs import layer_fingerprint
from poetry_lambda_zip.jobs import project_job
from poetry_lambda_zip.jobs import project_only_key
from poetry_lambda_zip.jobs import project_parts
from poetry_lambda_zip.one_at_a_time import one_build_at_a_time
from poetry_lambda_zip.plan import check_outputs_together
from poetry_lambda_zip.plan import plan
from poetry_lambda_zip.progress import Stoppable
from poetry_lambda_zip.progress import shown_for
from poetry_lambda_zip.progress import shown_for_functions
from poetry_lambda_zip.project import build_project_wheel
from poetry_lambda_zip.results import BuildResult
from poetry_lambda_zip.results import Outcome
from poetry_lambda_zip.sbom import direct_dependencies
from poetry_lambda_zip.sbom import require_library
from poetry_lambda_zip.sbom import write_sbom
from poetry_lambda_zip.shortcut import Shortcut
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.tree_cache import TreeCache
from poetry_lambda_zip.wheels import PinnedWheel
from poetry_lambda_zip.wheels import estimate_sizes
from poetry_lambda_zip.zips import check_handler_in
from poetry_lambda_zip.zips import package_trees
from poetry_lambda_zip.zips import report_steps

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator
    from collections.abc import Sequence
    from types import FrameType

    from poetry.poetry import Poetry

    from poetry_lambda_zip.builders.contract import Builder
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.fetch import Fetcher
    from poetry_lambda_zip.fit import SizeEstimate
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.request import BuildRequest

__all__ = ["build", "build_functions", "plan_functions"]


def build(
    request: BuildRequest,
    poetry: Poetry,
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
) -> BuildResult:
    """Build the Lambda package(s) ``request`` asks for and return what was written."""
    (outcome,) = build_functions(
        [request], lambda: poetry, progress, builder, fetcher, results_in_full=True
    )
    if outcome.result is None or outcome.error is not None:
        raise outcome.error or BuildFailedError("The build ended without a result.")
    return outcome.result


def build_functions(
    requests: Sequence[BuildRequest],
    load: Callable[[], Poetry],
    progress: Progress,
    builder: Builder | None = None,
    fetcher: Fetcher | None = None,
    *,
    results_in_full: bool = False,
) -> list[Outcome]:
    """Build every function's package(s): plan each; functions with one requirement set
    (and target and steps) share one dependency tree, assembled once; distinct sets build
    concurrently, bounded by the cores. One function's failure is its outcome alone.

    ``load`` loads the project: it is not called when the shortcut settles every function
    (``shortcut``), unless ``results_in_full`` (every result with its plan, e.g. for JSON).
    One build of a project runs at a time (``one_at_a_time``)."""
    with one_build_at_a_time(requests[0].project_dir, progress):
        forget_seals()  # what an earlier run in this process checked is checked again
        # What a killed run left, removed whichever way this one goes (a no-op too).
        remove_stale(locations.scratch_root(), locations.SCRATCH_PREFIX)
        sbom = any(request.sbom for request in requests)
        if sbom:
            require_library()  # before anything is built
        shortcut = Shortcut.for_requests(requests)
        # An SBOM is written from the plan and the zip: the shortcut settles neither.
        if shortcut is not None and not (results_in_full or sbom):
            settled = shortcut.settle(progress)
            if settled is not None:
                return settled
        project = load()
        started = time.monotonic()
        members, failed = _plans(requests, project, progress)
        if len(requests) > 1:
            _say_resolved(members, time.monotonic() - started, progress)
        check_outputs_together([member.plan for member in members])
        if any(member.plan.request.verify for member in members):
            require_engine_for_verify()
        outputs = [path for member in members for path in member.plan.outputs]
        for output in outputs:
            remove_stale_temporaries(output)
        if shortcut is not None:
            shortcut.snapshot([member.plan for member in members], project, outputs)
        with _terminate_as_interrupt(), _scratch() as workdir:
            wheel = _project_wheel(members, project, workdir)
            context = _Context(project, progress, builder, fetcher, workdir, wheel)
            outcomes = _run_groups(list(_groups(members).values()), context)
        order = {request.function: number for number, request in enumerate(requests)}
        ordered = sorted([*outcomes, *failed], key=lambda outcome: order[outcome.function])
        outcomes = [_verify(outcome, members) for outcome in ordered]
        if sbom:
            outcomes = [_with_sboms(outcome, project) for outcome in outcomes]
        if shortcut is not None:
            shortcut.record(outcomes, outputs)
        return outcomes


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The build's own temporary directory, named so that a later run recognises it as stale
    if this one is killed."""
    with tempfile.TemporaryDirectory(
        prefix=f"{locations.SCRATCH_PREFIX}{owner_tag()}."
    ) as directory:
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
    #: stop at their next step (``progress.Stoppable``), writing nothing.
    stop: threading.Event = field(default_factory=threading.Event)


def plan_functions(
    requests: Sequence[BuildRequest], poetry: Poetry, progress: Progress
) -> list[BuildPlan]:
    """Every function's plan, building nothing (``--dry-run``); the first problem is raised."""
    plans = [plan(request, poetry, shown_for(request, progress)) for request in requests]
    check_outputs_together(plans)
    return [replace(decided, size=_size_estimate(decided, poetry)) for decided in plans]


def _size_estimate(decided: BuildPlan, poetry: Poetry) -> SizeEstimate | None:
    """The dependencies' size from the wheels an earlier build fetched (nothing downloaded);
    None when none of them is here."""
    if not decided.request.cache:
        return None
    fetcher = WheelFetcher(poetry, cache=True, scratch=Path(tempfile.gettempdir()))
    requirements = decided.requirements.requirements
    found = [(r, fetcher.cached(r)) for r in requirements]
    wheels = [PinnedWheel.of_requirement(r, path) for r, path in found if path is not None]
    if not wheels:
        return None
    options = FitOptions(
        decided.target, decided.request.exclude, decided.slim, decided.compile is not None
    )
    version = decided.target.python_version_text
    return estimate_sizes(wheels, version, options, len(requirements) - len(wheels))


def _plans(
    requests: Sequence[BuildRequest], poetry: Poetry, progress: Progress
) -> tuple[list[_Member], list[Outcome]]:
    members, failed = [], []
    for request in requests:
        shown = shown_for(request, progress)
        try:
            members.append(_Member(plan(request, poetry, shown), shown))
        except LambdaZipError as e:
            if len(requests) == 1:
                raise
            failed.append(Outcome(request.function, error=e))
    return members, failed


def _say_resolved(members: Sequence[_Member], seconds: float, progress: Progress) -> None:
    """What the functions' plans resolved, said once for all of them."""
    if not members:
        return
    sets = {member.plan.requirements.requirements: member.plan for member in members}
    described = {decided.target.description for decided in sets.values()}
    where = f" for {described.pop()}" if len(described) == 1 else ""
    plural = "s" if len(members) > 1 else ""
    distinct = len({requirement for requirements in sets for requirement in requirements})
    counted = f"{distinct} distributions"
    if len(sets) > 1:
        sizes = ", ".join(str(size) for size in sorted(len(r) for r in sets))
        counted = f"{len(sets)} requirement sets: {counted} in all ({sizes})"
    else:
        counted = f"1 requirement set: {counted}"
    progress.phase("resolve", seconds, f"{len(members)} function{plural}, {counted}{where}")


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
    group = [replace(m, progress=Stoppable(m.progress, context.stop)) for m in group]
    # What the group shares is said once, for all of its functions.
    first = group[0]
    if len(group) > 1:
        names = [str(member.function) for member in group]
        shared = Stoppable(shown_for_functions(names, context.progress), context.stop)
        first = replace(first, progress=shared)
    directory = Path(tempfile.mkdtemp(dir=context.workdir, prefix="group-"))
    try:
        builder = context.builder or choose_builder(
            first.plan.request.builder, first.plan.requirements.built_from_source,
            first.plan.target, first.plan.docker, first.progress,
        )  # fmt: skip
        excludes = set.intersection(*(set(m.plan.request.exclude) for m in group))
        dependencies = _dependencies(first, builder, context, directory, tuple(sorted(excludes)))
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
    first: _Member,
    builder: Builder,
    context: _Context,
    directory: Path,
    excludes: tuple[str, ...],
) -> DependencyTree | None:
    """The group's dependencies' tree, assembled on first use; None for no requirements.
    ``excludes``: the globs every function of the group has (for the size check)."""
    job = dependency_job(first.plan, builder, directory / "checkouts", first.progress)
    job = replace(job, excludes=excludes)
    if not job.requirements:
        return None
    request = first.plan.request
    kept = _tree_cache(request.project_dir) if request.cache else None
    cache = kept.reporting_to(first.progress.warning) if kept is not None else None
    assemble_once = functools.partial(
        dependencies_tree, builder, job,
        fetcher=context.fetcher or _fetcher(first.plan, context.poetry, directory),
        cache=cache, force=request.force, workdir=directory, progress=first.progress,
    )  # fmt: skip
    keeper = functools.partial(cache.put, job.key, move=True) if cache is not None else None
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
    project = project_job(decided, builder, context.wheel, progress)
    if dependencies is not None:
        key, identity = dependencies.job.key, dependencies.job.identity
    else:
        key, identity = project_only_key(project, builder, progress)
    # The zip names its builder where the builder decides its bytes (bytecode, builds,
    # stripping); unpacked wheels alone are the same bytes from any builder, and so is the zip.
    toolchain = project.steps.may_need_toolchain() or (
        dependencies is not None and dependencies.job.made_by_toolchain
    )
    parts = project_parts(decided, key, project, builder.name if toolchain else None)
    fingerprints = {"function": parts.fingerprint(), "layer": layer_fingerprint(decided, key)}
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
        check_handler_in(decided, outputs)  # the handler is no part of the zips' bytes
        archives = tuple(existing_stats(path) for path in outputs)
        return BuildResult(
            decided, archives, builder.name, {}, TreeReport(), up_to_date=True,
            identity=identity, parts=parts if patchable else None,
        )  # fmt: skip
    workdir.mkdir()
    trees = assemble(builder, dependencies, project, workdir=workdir, progress=progress)
    report = sum((tree.report for tree in trees), TreeReport())
    report_steps(decided, report, progress)
    archives, written, sizes = package_trees(
        decided, trees, outputs, fingerprints, progress, builder=parts.zip.made_by, current=current,
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


def _fetcher(decided: BuildPlan, poetry: Poetry, workdir: Path) -> Fetcher:
    request = decided.request
    return WheelFetcher(
        poetry,
        cache=request.cache,
        scratch=workdir / "downloads",
        ca_bundle=request.ca_bundle,
        force=request.force,
    )


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


def _with_sboms(outcome: Outcome, project: Poetry) -> Outcome:
    """With --sbom: each output's CycloneDX document beside it, read from the zip that is
    there (written now or up to date), so it describes that zip whichever way it came."""
    result = outcome.result
    if result is None or not result.plan.request.sbom:
        return outcome
    decided = result.plan
    direct = direct_dependencies(project.package, decided.requirements.groups)
    try:
        sboms = tuple(
            write_sbom(decided, kind, archive, direct)
            for kind, archive in zip(decided.layout.kinds, result.archives)
        )
    except LambdaZipError as e:
        return replace(outcome, error=e)
    return replace(outcome, result=replace(result, sboms=sboms))


def _tree_cache(project_dir: Path) -> TreeCache | None:
    directory = locations.trees(project_dir)
    return None if directory is None else TreeCache(directory)


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
