"""Source trees: the requirements the lock cannot pin to a file, built in the image.

Directory dependencies keep their layout relative to each other (a path dependency may name
another one as ``../lib``); git dependencies are checked out at the locked commit with Poetry's
own git backend. Credentials for indexes come from Poetry's Authenticator (config, keyring,
``POETRY_HTTP_BASIC_<SOURCE>_*`` variables).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import ResolveError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from poetry_lambda_zip.resolve import Requirement

__all__ = ["SourceTree", "source_trees"]

#: What makes a directory a project pip can build.
_PROJECT_FILES = ("pyproject.toml", "setup.py")


@dataclass(frozen=True)
class SourceTree:
    """A directory to build inside the image: where it is here, and where it goes there (but
    what no build reads, ``never_read``)."""

    name: str
    path: Path
    #: Path below the builder's source root, keeping sibling path dependencies side by side.
    relative: PurePosixPath


def source_trees(requirements: Iterable[Requirement], checkouts: Path) -> list[SourceTree]:
    """Directory requirements as they are on disk, git requirements checked out under
    ``checkouts`` at the locked commit."""
    directories: list[tuple[Requirement, Path]] = []
    trees: list[SourceTree] = []
    for requirement in requirements:
        origin = requirement.origin
        if origin.type == "directory" and origin.url:
            path = Path(origin.url)
            if not path.is_dir():
                raise ResolveError(
                    f"{requirement.name}: the path dependency {path} does not exist.",
                    "Check the path in pyproject.toml, then run `poetry lock`.",
                )
            if path.resolve() == Path(path.anchor) or not any(
                (path / marker).is_file() for marker in _PROJECT_FILES
            ):
                raise ResolveError(
                    f"{requirement.name}: the path dependency {path} is not a Python project"
                    f" (it has no {' or '.join(_PROJECT_FILES)}); it is not sent to the build.",
                    "Point the dependency at the directory holding the package's pyproject.toml,"
                    " then run `poetry lock`.",
                )
            directories.append((requirement, path))
        elif origin.type == "git" and origin.url:
            checkout = _checkout(requirement, checkouts)
            if origin.subdirectory:
                checkout = checkout / origin.subdirectory
            trees.append(
                SourceTree(
                    requirement.name,
                    checkout,
                    PurePosixPath("git") / checkout.relative_to(checkouts).as_posix(),
                )
            )
    if directories:
        root = Path(os.path.commonpath([path for _, path in directories]))
        if len(directories) == 1:
            root = root.parent
        trees += [
            SourceTree(r.name, path, PurePosixPath("path") / path.relative_to(root).as_posix())
            for r, path in directories
        ]
    return sorted(trees, key=lambda tree: tree.name)


def _checkout(requirement: Requirement, checkouts: Path) -> Path:
    from poetry.vcs.git import Git

    origin = requirement.origin
    try:
        repository = Git.clone(
            url=origin.location(),
            name=str(requirement.name),
            revision=origin.reference,
            source_root=checkouts,
            clean=True,
        )
    except BuildInterrupted:
        raise
    except Exception as e:  # dulwich and Poetry raise a variety of errors
        raise ConfigError(
            f"{requirement.name}: cannot check out {origin.url} at {origin.reference}: {e}",
            "Check that the repository is reachable with the credentials Poetry uses.",
        ) from e
    with repository:
        return Path(repository.path)
