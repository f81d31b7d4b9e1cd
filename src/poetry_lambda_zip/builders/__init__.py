"""Builders finish an installed tree for a Lambda target and hand it back: they add what must
be built or installed with the target's toolchain (sdists, path and git dependencies, the
project's wheel) to the wheels already unpacked on this machine, then slim and precompile."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING
from typing import Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry_lambda_zip.index_access import Credential
    from poetry_lambda_zip.index_access import NetworkSettings
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.source_trees import SourceTree
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "TREE_PREFIX",
    "Builder",
    "CompileSettings",
    "InstallJob",
    "InstallResult",
    "Progress",
    "VerifyJob",
    "choose_builder",
]

#: Top directory of the tar a builder returns; the package's files are below it.
TREE_PREFIX = "target"


@dataclass(frozen=True)
class InstallJob:
    """Everything a builder needs: no Poetry objects; host paths only for files it sends along
    (the project wheel, local files, source trees, include files, the unpacked tree)."""

    target: LambdaTarget
    image: str
    requirements: tuple[Requirement, ...]
    #: The project's own wheel, installed next to the requirements; None without package mode.
    project_wheel: Path | None
    #: Directory and git requirements, to be built in the image (the lock has no hash for them).
    trees: tuple[SourceTree, ...]
    #: Where build dependencies come from: the project's primary source, None for PyPI.
    default_index: str | None
    credentials: tuple[Credential, ...]
    network: NetworkSettings
    build_id: str
    #: Docker network for the build container (e.g. "host"); None for the engine's default.
    docker_network: str | None = None
    #: Project files for the package root: (path in the package, file here).
    includes: tuple[tuple[str, Path], ...] = ()
    slim: bool = False
    compile: CompileSettings | None = None
    #: Reuse downloads across builds (a Docker volume / Poetry's artifact cache).
    cache: bool = True
    #: Files already fetched and unpacked on this machine (wheels, the project's files): the
    #: builder adds what it installs, then slims and precompiles the whole tree.
    unpacked: Path | None = None
    #: What the job installs, for progress lines.
    what: str = "the dependencies"


@dataclass(frozen=True)
class CompileSettings:
    """How to precompile: tracebacks show the path a file has on Lambda (/var/task for the
    function, /opt/python for a layer)."""

    prefix: str
    project_prefix: str
    #: The project's distribution name, whose files (and the includes) get ``project_prefix``.
    project: str | None


@dataclass(frozen=True)
class InstallResult:
    #: A tar whose files sit below ``TREE_PREFIX/``, or a directory holding them.
    tree: Path
    #: What the builder did beyond installing: {"slim": {...}, "compile": {...}}.
    report: dict[str, dict[str, int]] = field(default_factory=dict)


class Progress(Protocol):
    """Where builders report; the command turns it into console lines."""

    def phase(self, name: str, seconds: float, detail: str) -> None: ...

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def installer_output(self, line: str) -> None: ...


class Builder(Protocol):
    name: str

    def install(self, job: InstallJob, workdir: Path, progress: Progress) -> InstallResult:
        """Install ``job`` (merged with ``job.unpacked``); the result holds the package's
        files: a tar below ``TREE_PREFIX/``, or a directory."""
        ...

    def verify(self, check: VerifyJob, progress: Progress) -> float:
        """Import the handler from the built zips as Lambda would; return the import time."""
        ...

    def identity(self, job: InstallJob, progress: Progress) -> str:
        """What, besides the job, decides the output: e.g. the image's id."""
        ...

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        """Why this builder cannot precompile for ``target``, if it cannot."""
        ...


@dataclass(frozen=True)
class VerifyJob:
    target: LambdaTarget
    image: str
    handler: str
    #: Unpacked into a read-only /var/task.
    function_zip: Path | None
    #: Unpacked into a read-only /opt (its python/ directory is on sys.path).
    layer_zip: Path | None
    build_id: str


def choose_builder(
    kind: str, requirements: Sequence[Requirement], target: LambdaTarget, progress: Progress
) -> Builder:
    """The builder ``kind`` (--builder) names; for "auto" Docker when an engine answers, else
    the local builder when every requirement has a wheel for the target."""
    from poetry_lambda_zip.builders.docker import DockerBuilder
    from poetry_lambda_zip.builders.docker import engine_answers
    from poetry_lambda_zip.builders.docker import engine_location
    from poetry_lambda_zip.builders.local import LocalBuilder
    from poetry_lambda_zip.builders.local import no_wheel_error
    from poetry_lambda_zip.builders.local import not_installable_locally
    from poetry_lambda_zip.errors import DockerUnavailableError

    missing = not_installable_locally(requirements)
    runtime = target.runtime
    if kind == "docker":
        return DockerBuilder()
    if kind == "local":
        if missing:
            raise no_wheel_error(missing, runtime)
        progress.info("Builder: local (--builder local)")
        return LocalBuilder()
    if engine_answers():
        progress.info(f"Builder: docker (an engine answers at {engine_location()})")
        return DockerBuilder()
    if missing:
        error = no_wheel_error(missing, runtime)
        raise DockerUnavailableError(
            f"{error.message}\nNo Docker engine is reachable at {engine_location()} either.",
            f"Start Docker or set DOCKER_HOST. {error.fix}",
        )
    progress.info(
        f"Builder: local (no Docker engine answers at {engine_location()}; every package has a"
        f" wheel for {runtime})"
    )
    return LocalBuilder()
