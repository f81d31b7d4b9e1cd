"""Everything decided from the request, once, before anything is built: the target, the
requirement set, outputs, layout, include files and their names in the zip, the index, credentials
and network settings, compile and slim settings. What ``--dry-run`` shows."""

from __future__ import annotations

import os
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from poetry_lambda_zip import locations
from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import refuse_directory
from poetry_lambda_zip.archive import timestamp_from_environment
from poetry_lambda_zip.archive import too_large
from poetry_lambda_zip.builders.contract import DockerSettings
from poetry_lambda_zip.contents import Layout
from poetry_lambda_zip.contents import layer_output
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import carries_fingerprint
from poetry_lambda_zip.index_access import Credential
from poetry_lambda_zip.index_access import NetworkSettings
from poetry_lambda_zip.index_access import index_credentials
from poetry_lambda_zip.index_access import network_settings
from poetry_lambda_zip.project import collect_includes
from poetry_lambda_zip.project import wheel_entries
from poetry_lambda_zip.request import CONFIG_TABLE
from poetry_lambda_zip.resolve import resolve
from poetry_lambda_zip.resolve import select_extras
from poetry_lambda_zip.resolve import select_groups
from poetry_lambda_zip.target import RUNTIMES
from poetry_lambda_zip.target import LambdaTarget
from poetry_lambda_zip.target import newest_runtime_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry.poetry import Poetry

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.fit import SizeEstimate
    from poetry_lambda_zip.request import BuildRequest
    from poetry_lambda_zip.resolve import RequirementSet

__all__ = ["BuildPlan", "CompilePrefixes", "check_outputs_together", "plan"]

#: The name poetry-core gives a package-mode = false project that has none.
_UNNAMED = "non-package-mode"


@dataclass(frozen=True)
class CompilePrefixes:
    """Where tracebacks say a precompiled file is on Lambda: /var/task for the function,
    /opt/python for a layer."""

    dependencies: str
    project: str


@dataclass(frozen=True)
class BuildPlan:
    """Everything decided before anything is built; what ``--dry-run`` shows."""

    request: BuildRequest
    target: LambdaTarget
    #: The image, the index for build dependencies, Docker's network, the pip cache volume.
    docker: DockerSettings
    requirements: RequirementSet
    output: Path
    project_name: str
    project_version: str | None
    package_mode: bool
    #: The project's own wheel is built and shipped (package mode, not --no-root, not a layer).
    root: bool
    #: Project files for the zip root: (name in the zip, file here).
    includes: tuple[tuple[str, Path], ...]
    project_dir: Path
    #: CA certificates and proxies, and the index credentials, for what the builder builds.
    network: NetworkSettings
    credentials: tuple[Credential, ...]
    #: How to precompile (None: no bytecode).
    compile: CompilePrefixes | None
    slim: bool
    #: Every entry's time in the zip (SOURCE_DATE_EPOCH, else 1980-01-01).
    timestamp: int
    layout: Layout = Layout.FUNCTION
    #: The dependencies' estimated size, for ``--dry-run`` (``pipeline.plan_functions``).
    size: SizeEstimate | None = None

    @property
    def outputs(self) -> tuple[Path, ...]:
        """The zips written, in the order of ``layout.kinds``."""
        return _outputs(self.output, self.layout)


def plan(request: BuildRequest, poetry: Poetry, progress: Progress) -> BuildPlan:
    """Resolve the request against the lock for its target and settle every setting, writing
    nothing."""
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

    output = request.output or _default_output(request, poetry, target)
    if request.layout is Layout.LAYER and request.output is None:
        output = layer_output(output)
    outputs = _outputs(output, request.layout)
    _check_outputs(outputs)
    includes, include_warnings = collect_includes(request.project_dir, request.include, outputs)
    for warning in include_warnings:
        progress.warning(warning)
    _check_include_sizes(includes)
    if not request.layout.ships_project and includes:
        progress.warning("A layer holds dependencies only: the include files are left out.")
        includes = []
    root = request.layout.ships_project and poetry.is_package_mode and request.root
    if root:
        _check_has_package(poetry)
    elif request.layout.ships_project and not request.include:
        why = "--no-root" if poetry.is_package_mode else "package-mode = false"
        progress.warning(
            f"{why} and no include: the zip holds only the dependencies."
            ' Add e.g. include = ["index.py"] to [tool.poetry-lambda-zip].'
        )
    name, version = _project_identity(request.project_dir, poetry)
    project_dir = request.project_dir.resolve()
    network = network_settings(os.environ, request.ca_bundle, _source_certificates(poetry))
    for warning in network.warnings:
        progress.warning(warning)
    return BuildPlan(
        request=request,
        target=target,
        docker=DockerSettings(
            image=request.image or target.default_image,
            default_index=_default_index(poetry),
            network=request.docker_network,
            cache=request.cache,
            bytecode_verdicts=locations.bytecode_verdicts(project_dir) if request.cache else None,
        ),
        requirements=requirements,
        output=output,
        project_name=name,
        project_version=version,
        package_mode=poetry.is_package_mode,
        root=root,
        includes=tuple(includes),
        project_dir=project_dir,
        network=network,
        credentials=tuple(index_credentials(poetry, requirements.requirements)),
        compile=_compile_prefixes(request.layout) if request.compile else None,
        slim=request.slim,
        timestamp=timestamp_from_environment(),
        layout=request.layout,
    )


def check_outputs_together(plans: Sequence[BuildPlan]) -> None:
    """No two outputs of a run may be one file: every function's zip and layer, and -o, as
    they resolve (links followed), and also where they differ only in case or Unicode
    normalisation, which is one file on macOS and Windows as they are set up by default.
    Every clash is named at once, before anything is fetched or written."""
    claimed: dict[str, tuple[str, Path]] = {}
    clashes: list[str] = []
    for decided in plans:
        for kind, output in zip(decided.layout.kinds, decided.outputs):
            resolved = output.resolve()
            key = unicodedata.normalize("NFC", str(resolved)).casefold()
            who = _whose(decided, kind)
            earlier = claimed.setdefault(key, (who, resolved))
            if earlier[0] == who:
                continue
            if earlier[1] == resolved:
                clashes.append(f"{earlier[0]} and {who} both write {resolved}.")
            else:
                clashes.append(
                    f"{earlier[0]} writes {earlier[1]} and {who} {resolved}: one file where"
                    " the file system ignores case or Unicode normalisation (macOS, Windows)."
                )
    if clashes:
        raise ConfigError(
            "Two outputs of this run are one file; the second would replace the first:\n"
            + "\n".join(f"  {clash}" for clash in clashes),
            f'Give each function an output of its own (output = "dist/NAME.zip" in'
            f" [tool.{CONFIG_TABLE}.functions.NAME], or leave it out for dist/NAME.zip).",
        )


def _whose(decided: BuildPlan, kind: str) -> str:
    """An output as the user knows it: the function's zip or layer (or the build's)."""
    function = decided.request.function
    owner = f"function {function}" if function is not None else "the build"
    return f"{owner}'s {'layer' if kind == 'layer' else 'zip'}"


def _outputs(output: Path, layout: Layout) -> tuple[Path, ...]:
    return (output, layer_output(output)) if layout is Layout.SPLIT else (output,)


def _check_outputs(outputs: Sequence[Path]) -> None:
    """Outputs replace only what this plugin wrote: a file without its fingerprint (a
    pyproject.toml, a source file, a vendored wheel, someone's zip) is never overwritten."""
    for output in outputs:
        refuse_directory(output)
        if output.exists() and not carries_fingerprint(output):
            raise OutputError(
                f"{output} exists and was not written by poetry-lambda-zip; it is not replaced.",
                "Pass another path to -o, or move that file away if it is an old package to"
                " replace.",
            )


def _check_include_sizes(includes: Sequence[tuple[str, Path]]) -> None:
    """Include files that alone are over Lambda's limit are refused from their sizes, before
    anything is copied (a sparse file of gigabytes reads as its size says)."""
    sizes = {name: path.stat().st_size for name, path in includes}
    total = sum(sizes.values())
    if total > UNZIPPED_LIMIT:
        raise too_large(
            "The include files alone come to",
            total,
            sizes,
            "Narrow the include patterns to what the handler reads (data this large belongs in"
            " S3 or EFS), or ship a container image instead.",
        )


def _compile_prefixes(layout: Layout) -> CompilePrefixes:
    """The dependencies are in the function zip or in a layer; the project's own files are in
    the function zip unless there is none."""
    function, layer = "/var/task", "/opt/python"
    return CompilePrefixes(
        dependencies=function if layout is Layout.FUNCTION else layer,
        project=function if layout.ships_project else layer,
    )


def _target(request: BuildRequest, poetry: Poetry, progress: Progress) -> LambdaTarget:
    runtime = request.runtime
    if runtime is None:
        runtime = newest_runtime_for(poetry.package.python_constraint)
        if runtime is None:
            raise _no_runtime_error(poetry)
        progress.info(
            f"Runtime {runtime}: the newest Lambda runtime allowed by the project's Python"
            f" requirement ({poetry.package.python_versions}). Pass --runtime to choose another."
        )
    return LambdaTarget(runtime=runtime, arch=request.arch)


def _no_runtime_error(poetry: Poetry) -> ConfigError:
    """No runtime Lambda offers runs a Python the project allows: name the runtime it would
    need, when that is one Lambda no longer offers."""
    from poetry.core.constraints.version import parse_constraint

    allowed = poetry.package.python_versions
    needed = next(
        (
            f"python3.{minor}"
            for minor in range(int(RUNTIMES[0].split(".")[1]) - 1, -1, -1)
            if poetry.package.python_constraint.allows_any(parse_constraint(f"~3.{minor}"))
        ),
        None,
    )
    oldest, newest = RUNTIMES[0], RUNTIMES[-1]
    if needed is not None:
        return ConfigError(
            f"The project's Python requirement ({allowed}) allows only Pythons Lambda no longer"
            f" runs: it would need {needed}; the oldest Python runtime Lambda offers is {oldest}.",
            f"Allow Python {oldest.removeprefix('python')} or newer (requires-python, or python"
            " under [tool.poetry.dependencies]), then run `poetry lock`.",
        )
    return ConfigError(
        f"No Lambda Python runtime satisfies the project's Python requirement ({allowed}).",
        f"Widen requires-python to include a Lambda runtime ({oldest} to {newest}).",
    )


def _project_identity(project_dir: Path, poetry: Poetry) -> tuple[str, str | None]:
    """Name and version; a package-mode = false project may have neither (named after its
    directory then, with no version)."""
    package = poetry.package
    name = package.name if package.name != _UNNAMED else project_dir.resolve().name
    versioned = poetry.is_package_mode or "version" in poetry.pyproject.data.get("project", {})
    return name, package.version.text if versioned else None


def _check_has_package(poetry: Poetry) -> None:
    """The project's package must be there to be built: poetry-core's error for a project
    with none (plain directories of handlers) becomes the two ways out."""
    from poetry.core.masonry.utils.module import Module
    from poetry.core.masonry.utils.module import ModuleOrPackageNotFoundError

    package = poetry.package
    packages, includes = wheel_entries(poetry)
    try:
        Module(
            package.name, str(poetry.pyproject_path.parent), packages=packages, includes=includes
        )
    except ModuleOrPackageNotFoundError:
        raise ConfigError(
            f"The project {package.name} has no package of its own to build: no module"
            f" {package.name.replace('-', '_')} and no `packages` in pyproject.toml.",
            "Build the dependencies and include files only: pass --no-root (or set root ="
            f" false in [tool.{CONFIG_TABLE}]), or declare package-mode = false under"
            " [tool.poetry] if the project is never built as a package.",
        ) from None


def _default_output(request: BuildRequest, poetry: Poetry, target: LambdaTarget) -> Path:
    """dist/FUNCTION.zip for a function of the functions table, else
    dist/NAME-VERSION-RUNTIME-ARCH.zip"""
    project_dir = request.project_dir
    if request.function is not None:
        return locations.dist(project_dir) / f"{request.function}.zip"
    name, version = _project_identity(project_dir, poetry)
    stem = name.replace("-", "_").replace(".", "_")
    suffix = f"-{version}" if version else ""
    return locations.dist(project_dir) / f"{stem}{suffix}-{target.runtime}-{target.arch}.zip"


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
