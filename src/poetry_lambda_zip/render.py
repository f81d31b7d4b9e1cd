"""Plans and results as the user reads them: text for people, JSON for machines (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.redact import redact

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.errors import LambdaZipError
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.results import BuildResult
    from poetry_lambda_zip.results import Outcome

__all__ = [
    "SCHEMA_VERSION",
    "error_json",
    "failure_json",
    "fleet_table",
    "outcomes_json",
    "plan_json",
    "plan_lines",
    "result_json",
    "size_text",
]

#: Bumped when a key is renamed or removed; new keys may appear at any time.
SCHEMA_VERSION = 1


def plan_json(plan: BuildPlan) -> dict[str, Any]:
    target = plan.target
    return {
        "schema": SCHEMA_VERSION,
        "target": {
            "runtime": target.runtime,
            "arch": target.arch,
            "python": target.python_version_text,
            "glibc": "{}.{}".format(*target.glibc),
            "platform_tags": target.platforms(),
            "image": plan.docker.image,
        },
        "groups": sorted(plan.requirements.groups),
        "extras": sorted(plan.requirements.extras),
        "project": {
            "name": plan.project_name,
            "version": plan.project_version,
            "package_mode": plan.package_mode,
            "includes": [name for name, _ in plan.includes],
        },
        "distributions": [
            {
                "name": r.name,
                "version": r.version,
                "artifact": {
                    "kind": r.artifact.kind,
                    "filename": r.artifact.filename,
                    "sha256": r.artifact.sha256,
                },
                "source": {
                    "type": r.origin.type,
                    "url": None if r.origin.url is None else redact(r.origin.url),
                    "name": r.origin.source_name,
                    "reference": r.origin.reference,
                    "subdirectory": r.origin.subdirectory,
                },
                "hash_checked": r.artifact.sha256 is not None,
            }
            for r in plan.requirements.requirements
        ],
        "excluded": [
            {"name": e.name, "version": e.version, "reason": e.reason}
            for e in plan.requirements.excluded
        ],
        "output": str(plan.output),
        "function": plan.request.function,
        "handler": plan.request.handler,
        "root": plan.root,
        "size_estimate": None
        if plan.size is None
        else {
            "unzipped": plan.size.plan.total,
            "zipped": plan.size.zipped,
            "wheels": plan.size.wheels,
            "not_counted": plan.size.missing,
            "fits_with": plan.size.plan.fits_with if plan.size.plan.over else [],
        },
    }


def plan_lines(plan: BuildPlan) -> list[str]:
    target = plan.target
    platforms = target.platforms()
    requirements = plan.requirements
    width = max((len(f"{r.name} {r.version}") for r in requirements.requirements), default=0)
    lines = [
        f"Target   {target.description}",
        f"Image    {plan.docker.image}"
        if plan.request.builder != "local"
        else "Image    none (--builder local: no container)",
        f"Tags     cp{target.python_version_text.replace('.', '')} on {platforms[0]}"
        f" ... {platforms[-1]} ({len(platforms)} platforms)",
        f"Groups   {', '.join(sorted(requirements.groups))};"
        f" extras: {', '.join(sorted(requirements.extras)) or 'none'}",
        "",
        f"Distributions ({len(requirements.requirements)}):",
    ]
    lines += [
        f"  {f'{r.name} {r.version}':<{width}}  {r.describe()}" for r in requirements.requirements
    ]
    version = f" {plan.project_version}" if plan.project_version else ""
    code = "wheel built by poetry-core"
    if not plan.root:
        code = "no package (package-mode = false)" if not plan.package_mode else "not shipped"
        if plan.package_mode and plan.layout.ships_project:
            code = "not built (--no-root)"
    lines += ["", f"Project  {plan.project_name}{version}: {code}"]
    if plan.includes:
        included = ", ".join(name for name, _ in plan.includes)
        lines.append(f"Include  {included}")
    if requirements.excluded:
        lines += ["", f"Left out ({len(requirements.excluded)}):"]
        lines += [f"  {e.name} {e.version}: {e.reason}" for e in requirements.excluded]
    if plan.request.handler:
        lines.append(f"Handler  {plan.request.handler}")
    lines += ["", f"Output   {plan.output}"]
    if plan.size is not None:
        lines.append(f"Size     dependencies {plan.size.line()}")
    if plan.request.function is not None:
        lines = [f"Function {plan.request.function}", *lines]
    return lines


def result_json(result: BuildResult) -> dict[str, Any]:
    versions: dict[str, str] = {r.name: r.version for r in result.plan.requirements.requirements}
    return {
        "schema": SCHEMA_VERSION,
        "layout": result.plan.layout.value,
        "outputs": [
            {
                "kind": kind,
                "path": str(archive.path.resolve()),
                "sha256": archive.sha256,
                "code_sha256": archive.code_sha256,
                "zipped_size": archive.zipped_size,
                "unzipped_size": archive.unzipped_size,
                "files": archive.files,
                "sbom": str(sbom.resolve()) if sbom is not None else None,
            }
            for kind, archive, sbom in zip(
                result.plan.layout.kinds, result.archives, _sboms(result)
            )
        ],
        "function": result.plan.request.function,
        "handler": result.plan.request.handler,
        "written": [str(path.resolve()) for path in result.written],
        "altered": [str(path.resolve()) for path in result.altered],
        "up_to_date": result.up_to_date,
        "import_seconds": result.import_seconds,
        "slim": result.report.to_json().get("slim"),
        "compile": result.report.to_json().get("compile"),
        "runtime": result.plan.target.runtime,
        "arch": result.plan.target.arch,
        "builder": result.builder,
        "distributions": [
            {
                "name": name,
                "version": versions.get(name, result.plan.project_version),
                "unzipped_size": size,
            }
            for name, size in result.sizes.items()
        ],
    }


def _sboms(result: BuildResult) -> tuple[Path | None, ...]:
    """Each output's SBOM (``--sbom``), None for each without --sbom."""
    return result.sboms or (None,) * len(result.archives)


def error_json(error: LambdaZipError) -> dict[str, Any]:
    """A build that stopped: what went wrong, the fix and the exit code (credentials removed)."""
    return {
        "message": redact(error.message),
        "fix": redact(error.fix or ""),
        "exit_code": error.exit_code,
    }


def failure_json(error: LambdaZipError) -> dict[str, Any]:
    """The document of a run without a functions table that stopped: ``{"ok": false, ...}``."""
    return {"schema": SCHEMA_VERSION, "ok": False, "error": error_json(error)}


def outcomes_json(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Every function of a functions table: its result, or its error."""
    return {
        "schema": SCHEMA_VERSION,
        "functions": [
            {
                "function": outcome.function,
                "ok": outcome.error is None,
                **(
                    {"result": result_json(outcome.result)}
                    if outcome.result is not None and outcome.error is None
                    else {}
                ),
                **({"error": error_json(outcome.error)} if outcome.error is not None else {}),
            }
            for outcome in outcomes
        ],
    }


def size_text(size: int) -> str:
    """Bytes in the unit that fits: 812 bytes, 3.2 kB, 13.7 MB (decimal units, as AWS's
    limits are stated)."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


def fleet_table(
    outcomes: Sequence[Outcome], project_dir: Path, *, hashes: bool = False
) -> tuple[list[str], list[str]]:
    """The functions of a table as one table: a row per output (function, output relative to
    the project, zipped and unzipped size, built / up to date), the failed functions last,
    and a line counting each state; with ``hashes`` each output's sha256 and Lambda's
    CodeSha256 after it. Returns the lines and the notes (what a zip replaced)."""
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    sums: list[str] = []
    listed: dict[Path, str] = {}
    states = {"built": 0, "up to date": 0, "failed": 0}
    for outcome in outcomes:
        archives, written = _archives(outcome)
        if outcome.error is not None or not archives:
            continue
        name = str(outcome.function)
        built = any(archive.path in written for archive in archives)
        states["built" if built else "up to date"] += 1
        imported = outcome.result.import_seconds if outcome.result is not None else None
        for number, archive in enumerate(archives):
            state = "built" if archive.path in written else "up to date"
            if number == 0 and imported is not None:  # --verify: the handler imported
                state += f", handler imports in {imported:.2f}s"
            if archive.path in listed:  # a layer the functions share
                state = f"shared with {listed[archive.path]}"
            listed.setdefault(archive.path, name)
            rows.append((
                name if number == 0 else "",
                _relative(archive.path, project_dir),
                size_text(archive.zipped_size),
                size_text(archive.unzipped_size),
                state,
            ))  # fmt: skip
            if hashes:
                sums.append(
                    f"{name}: {_relative(archive.path, project_dir)} sha256 {archive.sha256}"
                    f" code_sha256 {archive.code_sha256}"
                )
        notes += _notes(outcome, project_dir)
    for outcome in outcomes:
        if outcome.error is not None or not _archives(outcome)[0]:
            states["failed"] += 1
            rows.append((str(outcome.function), "-", "", "", "failed"))
    header = ("function", "output", "zipped", "unzipped", "state")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    lines = [
        "  ".join(
            [
                f"{row[0]:<{widths[0]}}",
                f"{row[1]:<{widths[1]}}",
                f"{row[2]:>{widths[2]}}",
                f"{row[3]:>{widths[3]}}",
                row[4],
            ]
        ).rstrip()
        for row in [header, *rows]
    ]
    counted = ", ".join(f"{count} {state}" for state, count in states.items() if count)
    total = len(outcomes)
    summary = f"{total} function{'s' if total != 1 else ''}: {counted}"
    sboms = sorted(
        {
            sbom
            for o in outcomes
            if o.result is not None and o.error is None
            for sbom in o.result.sboms
        }
    )
    if sboms:  # --sbom: beside each zip; named one by one with -v
        sums.append(f"{len(sboms)} SBOMs (CycloneDX), each beside its zip as OUTPUT.zip.cdx.json")
        if hashes:
            sums += [f"  {_relative(sbom, project_dir)}" for sbom in sboms]
    return [*lines, summary, *sums], notes


def _archives(outcome: Outcome) -> tuple[Sequence[ArchiveStats], Sequence[Path]]:
    """A function's outputs and which of them this run wrote (built, or settled from its
    stamp)."""
    if outcome.error is not None:
        return (), ()
    if outcome.result is not None:
        return outcome.result.archives, outcome.result.written
    return outcome.shortcut, outcome.written


def _notes(outcome: Outcome, project_dir: Path) -> list[str]:
    result = outcome.result
    if result is None:
        return []
    notes = [
        f"{outcome.function}: {_relative(path, project_dir)} replaced the zip the {builder}"
        " builder had written there"
        for path, builder in result.replaced
    ]
    notes += [
        f"{outcome.function}: {_relative(path, project_dir)} replaced a zip that was changed"
        " after it was written"
        for path in result.altered
    ]
    return notes


def _relative(path: Path, project_dir: Path) -> str:
    """An output as the user finds it from the project; absolute when it lies elsewhere."""
    resolved = path.resolve()
    base = project_dir.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)
