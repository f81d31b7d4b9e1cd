"""What a build hands back: each function's BuildResult, or the error that stopped it (an
Outcome), one shape the command branches on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.builders.contract import TreeReport
    from poetry_lambda_zip.errors import LambdaZipError
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.shortcut.patch import ProjectParts

__all__ = ["BuildResult", "Outcome"]


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
    #: With --sbom: each output's CycloneDX document, in the order of ``archives``.
    sboms: tuple[Path, ...] = ()


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
