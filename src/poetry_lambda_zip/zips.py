"""The installed trees as the layout's zips: entries merged and normalised, excludes applied,
the handler checked, the zips whose fingerprint changed written atomically within Lambda's
limits; what a finished tree's steps did, said."""

from __future__ import annotations

import time
import unicodedata
import zipfile
from typing import TYPE_CHECKING

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import existing_stats
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.contents import LAYER_PREFIX
from poetry_lambda_zip.contents import apply_excludes
from poetry_lambda_zip.contents import distribution_sizes
from poetry_lambda_zip.contents import merge_entries
from poetry_lambda_zip.contents import normalize_installed
from poetry_lambda_zip.contents import outputs_for_layout
from poetry_lambda_zip.contents import owners
from poetry_lambda_zip.entries import entries_below
from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.fit import ZIPPED_DIRECT_UPLOAD_LIMIT
from poetry_lambda_zip.fit import FitOptions
from poetry_lambda_zip.fit import Part
from poetry_lambda_zip.fit import size_plan
from poetry_lambda_zip.handler import check_handler

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.builders.contract import Finished
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import TreeReport
    from poetry_lambda_zip.entries import Entry
    from poetry_lambda_zip.fit import SizePlan
    from poetry_lambda_zip.plan import BuildPlan

__all__ = ["ZIPPED_DIRECT_UPLOAD_LIMIT", "check_handler_in", "package_trees", "report_steps"]

#: A larger zip cannot be uploaded directly; it has to go through S3.


def package_trees(
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
        check=lambda stats: _check_size(
            [*stats, *kept.values()], parts, progress, stop, _plan(decided, entries, owner)
        ),
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


def _check_size(
    written: list[ArchiveStats],
    sizes: dict[str, int],
    progress: Progress,
    stop: threading.Event,
    plan: Callable[[int], SizePlan],
) -> None:
    """The zips written (not yet in place) against Lambda's limits; none is put in place once
    the build was interrupted. Over the limit, ``plan`` says what would bring it under."""
    if stop.is_set():
        raise BuildInterrupted("Stopped: another part of the build was interrupted.")
    unzipped = sum(stats.unzipped_size for stats in written)
    if unzipped > UNZIPPED_LIMIT:
        raise plan(unzipped).error("The package unzips to", sizes)
    for stats in written:
        if stats.zipped_size > ZIPPED_DIRECT_UPLOAD_LIMIT:
            progress.warning(
                f"{stats.path.name} is {stats.zipped_size / 1e6:.1f} MB zipped: over 50 MB it"
                " must be uploaded through S3, not directly."
            )


def _plan(
    decided: BuildPlan, entries: Sequence[Entry], owner: dict[str, str]
) -> Callable[[int], SizePlan]:
    """The size plan of the package's files (pruned and compiled already) once it is over: the
    zips' unzipped bytes beyond these files (layers of other functions) count as they are."""

    def plan(unzipped: int) -> SizePlan:
        parts = [Part(owner.get(entry.name), entry.name, entry.size) for entry in entries]
        options = FitOptions(decided.target, (), decided.slim, compile=decided.compile is not None)
        extra = max(0, unzipped - sum(part.size for part in parts))
        return size_plan(parts, options, bytecode_built=True, extra=extra)

    return plan


def report_steps(decided: BuildPlan, report: TreeReport, progress: Progress) -> None:
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


def check_handler_in(decided: BuildPlan, outputs: Sequence[Path]) -> None:
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
