"""What a plan asks of the builder, and what the fingerprints cover: the dependencies' job
(requirement set, source trees, steps, tree key), the project's job, and the parts of a function
zip or layer that decide its bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.assemble import DependencyJob
from poetry_lambda_zip.assemble import ProjectJob
from poetry_lambda_zip.builders import identity_for
from poetry_lambda_zip.builders.contract import Steps
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.fingerprint import FunctionZip
from poetry_lambda_zip.fingerprint import fingerprint
from poetry_lambda_zip.fingerprint import tree_key
from poetry_lambda_zip.fingerprint import wheel_members
from poetry_lambda_zip.index_access import credentials_for
from poetry_lambda_zip.shortcut.patch import ProjectParts
from poetry_lambda_zip.source_trees import source_trees

if TYPE_CHECKING:
    from pathlib import Path

    from poetry_lambda_zip.builders.contract import Builder
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.plan import BuildPlan

__all__ = [
    "dependency_job",
    "layer_fingerprint",
    "project_job",
    "project_only_key",
    "project_parts",
]


def project_only_key(project: ProjectJob, builder: Builder, progress: Progress) -> tuple[str, str]:
    """Without dependencies, the key and builder identity the fingerprints hold: the
    project's tree alone, finished by ``builder`` (its Python's bytecode), by this plugin."""
    steps = project.steps
    identity = identity_for(builder, steps, progress)
    return tree_key((), steps, identity), identity


def dependency_job(
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
    # Anything compiled, built or stripped depends on the toolchain that did it.
    identity = identity_for(builder, steps, progress)
    key = tree_key(requirements, steps, identity, decided.project_dir)
    return DependencyJob(requirements, steps, key, identity)


def project_job(
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


def project_parts(
    decided: BuildPlan, key: str, project: ProjectJob, made_by: str | None
) -> ProjectParts:
    """What the function zip's fingerprint covers of the project (its wheel's members, the
    include files' contents), with the rest of it and how its project part is made."""
    includes = tuple(project.includes)
    made = FunctionZip(
        dependencies_key=key,
        options=_zip_options(decided),
        timestamp=decided.timestamp,
        wheel=wheel_members(project.wheel) if project.wheel is not None else None,
        includes=tuple((name, file_sha256(path)) for name, path in includes),
        compile_prefix=project.steps.compile_prefix,
        made_by=made_by,
    )
    return ProjectParts(made, tuple(path for _, path in includes))


def layer_fingerprint(decided: BuildPlan, key: str) -> str:
    """A layer's fingerprint covers the dependencies alone: it outlives a change to the
    project's code."""
    return fingerprint(key, None, (), _zip_options(decided), decided.timestamp)


def _zip_options(decided: BuildPlan) -> dict[str, Any]:
    request = decided.request
    return {"layout": request.layout.value, "exclude": sorted(request.exclude)}
