"""Builders install a requirement set for a Lambda target and hand back the installed tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from poetry_lambda_zip.network import NetworkSettings
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.sources import Credential
    from poetry_lambda_zip.sources import SourceTree
    from poetry_lambda_zip.target import LambdaTarget

__all__ = ["TREE_PREFIX", "Builder", "InstallJob", "Progress"]

#: Top directory of the tar a builder returns; the package's files are below it.
TREE_PREFIX = "target"


@dataclass(frozen=True)
class InstallJob:
    """Everything a builder needs: no Poetry objects, no host paths but the project wheel."""

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


class Progress(Protocol):
    """Where builders report; the command turns it into console lines."""

    def phase(self, name: str, seconds: float, detail: str) -> None: ...

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def installer_output(self, line: str) -> None: ...


class Builder(Protocol):
    name: str

    def install(self, job: InstallJob, workdir: Path, progress: Progress) -> Path:
        """Install ``job`` and return a tar file whose files sit below ``TREE_PREFIX/``."""
        ...
