"""What a builder is: it gets a directory (wheels or the project's files, unpacked here) and the
``Steps`` it must add (build these sources, slim and strip, precompile), and returns a directory
holding the finished tree plus a ``TreeReport``. How it gets there (a container, tar streams,
this machine's Python) is its own business. ``steps_digest`` names the version of the steps
(``tree_steps``) every builder runs."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol
from typing import TypeVar

from poetry_lambda_zip.tree_steps import SHARED_LIBRARY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from poetry_lambda_zip.entries import Known
    from poetry_lambda_zip.entries import Shipped
    from poetry_lambda_zip.index_access import Credential
    from poetry_lambda_zip.index_access import NetworkSettings
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.source_trees import SourceTree
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "Builder",
    "CompileReport",
    "DockerSettings",
    "Finished",
    "Progress",
    "SlimReport",
    "Steps",
    "TreeReport",
    "VerifyJob",
    "steps_digest",
]


@dataclass(frozen=True)
class Steps:
    """What a builder adds to an unpacked tree. No Poetry objects; host paths only for the
    source trees it sends along."""

    target: LambdaTarget
    #: Requirements without a wheel unpacked here: pip builds or installs them with the
    #: target's toolchain, locked artifacts (sdists, archives) with their hashes required,
    #: directory and git requirements from ``trees`` (the lock has no hash for them).
    build: tuple[Requirement, ...] = ()
    trees: tuple[SourceTree, ...] = ()
    #: Remove what never runs on Lambda; strip shared libraries' debug symbols.
    slim: bool = False
    #: Precompile, tracebacks naming files below this prefix (/var/task, /opt/python).
    compile_prefix: str | None = None
    #: Only what building needs: credentials for the indexes the builds come from, and the
    #: proxies and CA bundle (none for steps that download nothing).
    credentials: tuple[Credential, ...] = ()
    network: NetworkSettings | None = None

    @property
    def builds(self) -> bool:
        return bool(self.build or self.trees)

    def may_need_toolchain(self) -> bool:
        """Whether the result may depend on the toolchain that finishes it (before the tree is
        unpacked): unpacked wheels alone are the same bytes from any builder and image."""
        return self.builds or self.slim or self.compile_prefix is not None

    def need_toolchain(self, tree: Path) -> bool:
        """Whether ``tree`` needs the builder (the image's toolchain, for the docker builder):
        building, precompiling (its Python's bytecode) or stripping a shared library in it.
        Slimming alone is the same everywhere and is done here."""
        if self.builds or self.compile_prefix is not None:
            return True
        return self.strips(tree)

    def strips(self, tree: Path) -> bool:
        """Whether slimming ``tree`` strips a shared library (needs the target's ``strip``)."""
        return self.slim and _holds_shared_library(tree)

    def describe(self) -> str:
        """What the steps do, for the progress line."""
        done = [f"pip built or installed {len(self.build)}"] if self.builds else []
        done += ["slimmed"] if self.slim else []
        done += ["precompiled"] if self.compile_prefix is not None else []
        return ", ".join(done) or "merged"


def _holds_shared_library(tree: Path) -> bool:
    return any(SHARED_LIBRARY.search(name) for _, _, files in os.walk(tree) for name in files)


_Counts = TypeVar("_Counts", bound="_StepCounts")


@dataclass(frozen=True)
class _StepCounts:
    """What one step counted: two reports of it add up count by count."""

    def __add__(self: _Counts, other: _Counts) -> _Counts:
        return type(self)(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))


@dataclass(frozen=True)
class SlimReport(_StepCounts):
    files_removed: int = 0
    bytes_saved: int = 0
    libraries_stripped: int = 0
    #: Shared libraries that kept their debug symbols: no ``strip`` for the target.
    libraries_unstripped: int = 0


@dataclass(frozen=True)
class CompileReport(_StepCounts):
    compiled: int = 0
    failed: int = 0
    #: Modules in test directories inside packages, left as source (``compile_tree``).
    tests: int = 0


@dataclass(frozen=True)
class TreeReport:
    """What the steps did beyond installing; None for a step that did not run."""

    slim: SlimReport | None = None
    compile: CompileReport | None = None

    def __add__(self, other: TreeReport) -> TreeReport:
        return TreeReport(_add(self.slim, other.slim), _add(self.compile, other.compile))

    def to_json(self) -> dict[str, dict[str, int]]:
        """As ``tree_steps`` reports it (and --json shows it)."""
        steps = {"slim": self.slim, "compile": self.compile}
        return {name: vars(counts) for name, counts in steps.items() if counts is not None}

    @classmethod
    def from_json(cls, document: Any) -> TreeReport:
        """From ``tree_steps``' report (the container's output, a kept tree's record): a
        document of any other shape raises ValueError."""
        if not isinstance(document, dict) or set(document) - {"slim", "compile"}:
            raise ValueError(f"not a tree report: {document!r}")
        slim, compile_counts = document.get("slim"), document.get("compile")
        return cls(
            None if slim is None else SlimReport(**_checked_counts(slim, SlimReport)),
            None
            if compile_counts is None
            else CompileReport(**_checked_counts(compile_counts, CompileReport)),
        )


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def _checked_counts(counts: Any, kind: type[SlimReport | CompileReport]) -> dict[str, int]:
    names = set(vars(kind()))
    if not isinstance(counts, dict) or set(counts) != names:
        raise ValueError(f"not {kind.__name__} counts: {counts!r}")
    if not all(type(value) is int and value >= 0 for value in counts.values()):
        raise ValueError(f"not {kind.__name__} counts: {counts!r}")
    return counts


@dataclass(frozen=True)
class Finished:
    """A builder's result: the directory holding the finished tree."""

    directory: Path
    report: TreeReport
    #: Where it was done, for the progress line: "here", "in the python3.12 image".
    where: str
    #: Finished here (``finish_here``): its bytecode by this machine's Python, in a fresh
    #: interpreter.
    here: bool = False
    #: Taken from the tree cache, where it stays (``tree_cache``).
    kept: bool = False
    #: Where the fetched wheels hold the files they installed, by path in the tree
    #: (``install_wheels``): a file the steps left as it was is zipped with those bytes.
    shipped: Mapping[str, Shipped] | None = None
    #: The sha256 of the tree's files this build hashed already, by path (``Known``).
    known: Mapping[str, Known] | None = None


class Progress(Protocol):
    """Where builders report; the command turns it into console lines."""

    def phase(self, name: str, seconds: float, detail: str) -> None: ...

    def count(self, name: str, done: int, total: int) -> None:
        """How far a long phase is (``done`` of ``total``); drawn on a terminal only."""
        ...

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def installer_output(self, line: str) -> None: ...


class Builder(Protocol):
    name: str

    def finish(self, tree: Path, steps: Steps, workdir: Path, progress: Progress) -> Finished:
        """Add ``steps`` to the unpacked ``tree`` (which it may change or move); ``workdir`` is
        an empty directory of its own. Returns the directory holding the finished tree."""
        ...

    def identity(self, steps: Steps, progress: Progress) -> str:
        """What, besides the steps, decides the finished tree: e.g. the image's id."""
        ...

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        """Why this builder cannot precompile for ``target``, if it cannot."""
        ...


@dataclass(frozen=True)
class VerifyJob:
    target: LambdaTarget
    handler: str
    #: Unpacked into a read-only /var/task.
    function_zip: Path | None
    #: Unpacked into a read-only /opt (its python/ directory is on sys.path).
    layer_zip: Path | None


@dataclass(frozen=True)
class DockerSettings:
    """What the docker builder runs with, settled in the plan; ``--verify`` imports the
    handler in the same image, whichever builder built."""

    image: str
    #: Where build dependencies come from: the project's primary source, None for PyPI.
    default_index: str | None
    #: Docker network for the build container (e.g. "host"); None for the engine's default.
    network: str | None = None
    #: Keep pip's downloads and built wheels in a Docker volume.
    cache: bool = True
    #: Where the verdicts "this machine's Python compiles as the image does" are kept (None:
    #: nowhere, every tree compiles in the image); see ``builders.bytecode_here``.
    bytecode_verdicts: Path | None = None


@functools.cache
def steps_digest() -> str:
    """sha256 of ``tree_steps``, the code that slims and compiles every tree (here and in the
    image): another version of it may compile other bytes."""
    steps = resources.files("poetry_lambda_zip").joinpath("tree_steps.py").read_bytes()
    return hashlib.sha256(steps).hexdigest()
