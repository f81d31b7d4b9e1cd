"""The incremental wing: a build whose inputs read as they did when its outputs were last
written is settled without loading the project (``stamps``), and an edit of the project's own
files alone is patched into the zip (``patch``), byte for byte what the full path writes.

Its one contract with the pipeline is ``Shortcut``: settle the requests from the stamps or say
it cannot; list what the build reads before it reads it; record the outcomes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip import locations
from poetry_lambda_zip.archive import remove_stale_temporaries
from poetry_lambda_zip.builders import builder_unchanged
from poetry_lambda_zip.builders import image_to_check
from poetry_lambda_zip.never_read import named_in
from poetry_lambda_zip.progress import shown_for
from poetry_lambda_zip.project import wheel_directories
from poetry_lambda_zip.results import Outcome
from poetry_lambda_zip.shortcut.patch import EditRecord
from poetry_lambda_zip.shortcut.patch import Prepared
from poetry_lambda_zip.shortcut.patch import patch_job
from poetry_lambda_zip.shortcut.patch import prepare
from poetry_lambda_zip.shortcut.patch import record_edits
from poetry_lambda_zip.shortcut.patch import write
from poetry_lambda_zip.shortcut.stamps import Stamp
from poetry_lambda_zip.shortcut.stamps import Stamps
from poetry_lambda_zip.shortcut.stamps import outputs_now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry.poetry import Poetry

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.request import BuildRequest
    from poetry_lambda_zip.results import BuildResult

__all__ = ["Shortcut"]


class Shortcut:
    """The wing's contract: ``settle`` the requests from their stamps (None: it cannot, the
    full path runs), ``snapshot`` what the full path is about to read, ``record`` what it
    built. Its stamps are listed first (``look``), before Poetry reads anything."""

    def __init__(self, requests: Sequence[BuildRequest], stamps: Stamps) -> None:
        self._requests = requests
        self._stamps = stamps
        self._read: dict[str | None, _Read] = {}
        stamps.look(requests[0].project_dir)  # before Poetry reads pyproject.toml and the lock

    @classmethod
    def for_requests(cls, requests: Sequence[BuildRequest]) -> Shortcut | None:
        """The wing, where the builds may use it: not with --force, --verify or --no-cache,
        nor without a cache directory to keep stamps in."""
        if any(request.force or request.verify or not request.cache for request in requests):
            return None
        directory = locations.stamps(requests[0].project_dir)
        return None if directory is None else cls(requests, Stamps(directory))

    def settle(self, progress: Progress) -> list[Outcome] | None:
        """Every function up to date by its stamp, or patched; None: every one is built."""
        return _shortcut(self._requests, self._stamps, progress)

    def snapshot(self, plans: Sequence[BuildPlan], poetry: Poetry, outputs: Sequence[Path]) -> None:
        """What each planned function's build reads, listed before it reads it."""
        self._read = _inputs_read(plans, self._stamps, outputs, poetry)

    def record(self, outcomes: Sequence[Outcome], outputs: Sequence[Path]) -> None:
        """A stamp for each function built (or found up to date) whose inputs did not change
        while it was built."""
        _write_stamps(outcomes, self._stamps, self._read, outputs)


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
    outputs = [str(path) for stamp in stamped.values() for path in stamp.paths]
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
            outcomes.append(Outcome(request.function, shortcut=stamped[request].stats))
        else:
            outcomes.append(_patched(ready, stamps, outputs, shown_for(request, progress)))
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
        archives = Stamp.archives_of(done.archives)
        edit = done.record.to_json()
        stamps.write(job.request, replace(stamp, inputs=job.inputs, outputs=found,
                                          archives=archives, edit=edit))  # fmt: skip
    return Outcome(job.request.function, shortcut=done.archives, written=done.written)


def _inputs_read(
    plans: Sequence[BuildPlan], stamps: Stamps, outputs: Sequence[Path], poetry: Poetry
) -> dict[str | None, _Read]:
    """Each function's stamp roots, the directories its wheel reads whole, and its inputs
    before its build reads them (None: not to be vouched for, e.g. an include that names a
    directory no listing reads, ``never_read``)."""
    read = {}
    wheel = wheel_directories(poetry) if any(decided.root for decided in plans) else ()
    for decided in plans:
        roots = _stamp_roots(decided)
        whole = wheel if decided.root else ()
        names = any(named_in(i.base, i.pattern) for i in decided.request.include)
        inputs = None if names else stamps.inputs(decided.request, roots, map(str, outputs),
                                                  whole=whole)  # fmt: skip
        read[decided.request.function] = _Read(roots, whole, inputs)
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
        docker_image = image_to_check(result.identity, result.plan.docker.image)
        archives = Stamp.archives_of(result.archives)
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
    record = EditRecord(rest=rest, sources=sources, zip=parts.zip)
    return record.to_json()
