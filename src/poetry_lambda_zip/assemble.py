"""The installed trees, assembled on this machine: the dependencies' (a tree an earlier build
kept, or their wheels fetched and unpacked here; one tree for every function with that
requirement set) and the project's (its wheel and include files). Each is handed to the builder
only for the steps that need the target's toolchain (``Steps.need_toolchain``); slimming alone
is done here. The project's tree is apart from the dependencies', so a code change touches only
it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path  # noqa: TC003 - dataclass field types are evaluated at runtime
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders import WHEELS_ONLY
from poetry_lambda_zip.builders.bytecode_here import finish_here
from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import LambdaZipError
from poetry_lambda_zip.fit import FitOptions
from poetry_lambda_zip.wheels import PinnedWheel
from poetry_lambda_zip.wheels import Unpacked
from poetry_lambda_zip.wheels import add_project_files
from poetry_lambda_zip.wheels import install_wheels

if TYPE_CHECKING:
    from collections.abc import Callable

    from poetry_lambda_zip.builders.contract import Builder
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.fetch import Fetcher
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.tree_cache import TreeCache

__all__ = ["DependencyJob", "DependencyTree", "ProjectJob", "assemble", "dependencies_tree"]


@dataclass(frozen=True)
class DependencyJob:
    """The requirement set: wheels to fetch and unpack here, then the builder's steps (which
    list what has no wheel), kept under ``key`` (``fingerprint.tree_key``)."""

    requirements: tuple[Requirement, ...]
    steps: Steps
    key: str
    #: The builder's identity in ``key`` (``builders.identity_for``).
    identity: str = WHEELS_ONLY
    #: The --exclude globs of every function packaged from the tree: the size check before
    #: unpacking leaves out what they remove (they prune the zips, not the tree).
    excludes: tuple[str, ...] = ()

    def fit_options(self) -> FitOptions:
        """What the build does to the tree's files, for the size check before unpacking."""
        steps = self.steps
        return FitOptions(
            steps.target, self.excludes, steps.slim, compile=steps.compile_prefix is not None
        )

    @property
    def made_by_toolchain(self) -> bool:
        """Whether the builder's toolchain decides the tree's bytes (``Steps``)."""
        return self.steps.may_need_toolchain()


@dataclass(frozen=True)
class ProjectJob:
    """The project's own files: its wheel (None without one) and the include files as (path
    in the package, file here)."""

    wheel: Path | None
    includes: tuple[tuple[str, Path], ...]
    steps: Steps


class DependencyTree:
    """The dependencies' tree of ``job``, assembled once (by ``assemble``, e.g.
    ``dependencies_tree`` bound to its arguments) on first use and shared by every function
    whose requirement set it is. A failure is kept and raised to each of them. Once they are
    all packaged, ``keep`` hands a tree assembled by this build to ``keeper`` (the tree cache,
    which moves it there rather than copying it on the way to the zip)."""

    def __init__(
        self,
        job: DependencyJob,
        assemble: Callable[[], Finished],
        keeper: Callable[[Finished], None] | None = None,
    ) -> None:
        self.job = job
        self._assemble = assemble
        self._keeper = keeper
        self._lock = threading.Lock()
        self._tree: Finished | None = None
        self._error: BaseException | None = None

    def keep(self) -> None:
        """The group is done with the tree: a tree assembled here (not one reused from the
        cache) goes to the keeper. The tree is not to be used after this."""
        with self._lock:
            tree, self._tree = self._tree, None
            self._error = self._error or BuildFailedError("The dependencies' tree was kept.")
        if tree is not None and not tree.kept and self._keeper is not None:
            self._keeper(tree)

    def get(self) -> Finished:
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._tree is None:
                try:
                    self._tree = self._assemble()
                except LambdaZipError as e:
                    self._error = e
                    raise
            return self._tree


def assemble(
    builder: Builder,
    dependencies: DependencyTree | None,
    project: ProjectJob,
    *,
    workdir: Path,
    progress: Progress,
) -> list[Finished]:
    """The dependencies' tree (None: the requirement set is empty) and the project's,
    installed side by side: the project's is finished while the dependencies download."""
    install_project: Callable[[], Finished] | None = None
    if project.wheel is not None or project.includes:

        def install_project() -> Finished:
            return _project_tree(builder, project, _subdirectory(workdir, "project"), progress)

    trees = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(install_project) if install_project is not None else None
        if dependencies is not None:
            trees.append(dependencies.get())
        if pending is not None:
            trees.append(pending.result())
    return trees


def dependencies_tree(
    builder: Builder,
    job: DependencyJob,
    *,
    fetcher: Fetcher,
    cache: TreeCache | None,
    force: bool,
    workdir: Path,
    progress: Progress,
) -> Finished:
    """Reused from ``cache`` (unless ``force``), or fetched, unpacked and finished (and kept
    in the cache once the functions are packaged: ``DependencyTree.keep``)."""
    started = time.monotonic()
    directory = _subdirectory(workdir, "dependencies")
    reused = cache.get(job.key) if cache is not None and not force else None
    if cache is not None and reused is not None:
        progress.phase(
            "install",
            time.monotonic() - started,
            f"dependencies unchanged: reused from an earlier build ({cache.directory})",
        )
        return reused
    unpacked = directory / "unpacked"
    learned = _unpacked_wheels(job, fetcher, unpacked, progress)
    finished = _finish(
        builder, unpacked, job.steps, workdir=directory, what="the dependencies",
        progress=progress,
    )  # fmt: skip
    return replace(finished, shipped=learned.shipped, known=learned.known)


def _unpacked_wheels(
    job: DependencyJob, fetcher: Fetcher, unpacked: Path, progress: Progress
) -> Unpacked:
    """Fetch the wheels (in parallel, from the download cache when it has them) and unpack
    them into ``unpacked``: each file checked against the requirement it was fetched for, all
    of them against Lambda's size limit before any is unpacked. Returns what unpacking
    learned of the files (``install_wheels``)."""
    wheels = [r for r in job.requirements if r.artifact.kind == "wheel"]
    files = fetcher.fetch_all(wheels, progress)
    started = time.monotonic()
    if len(files) != len(wheels):
        raise BuildFailedError(f"Fetched {len(files)} files for {len(wheels)} wheels.")
    pinned = [PinnedWheel.of_requirement(r, path) for r, path in zip(wheels, files)]
    learned = install_wheels(
        pinned, unpacked, job.steps.target.python_version_text, job.fit_options()
    )
    unpacked.mkdir(exist_ok=True)
    if files:
        progress.phase(
            "unpack",
            time.monotonic() - started,
            f"{len(files)} wheels for {job.steps.target.runtime}",
        )
    return learned


def _project_tree(builder: Builder, job: ProjectJob, workdir: Path, progress: Progress) -> Finished:
    unpacked = workdir / "unpacked"
    add_project_files(job.wheel, job.includes, unpacked, job.steps.target.python_version_text)
    return _finish(
        builder, unpacked, job.steps, workdir=workdir, what="the project's files",
        progress=progress,
    )  # fmt: skip


def _finish(
    builder: Builder, tree: Path, steps: Steps, *, workdir: Path, what: str, progress: Progress
) -> Finished:
    """``tree`` finished: by the builder when it needs the target's toolchain, else here."""
    started = time.monotonic()
    if steps.need_toolchain(tree):
        finished = builder.finish(tree, steps, _subdirectory(workdir, "builder"), progress)
        done = steps.describe()
    else:
        finished = Finished(tree, finish_here(tree, steps), "here", here=True)
        done = "slimmed" if steps.slim else "unpacked"
    progress.phase("install", time.monotonic() - started, f"{what}: {done} {finished.where}")
    return finished


def _subdirectory(workdir: Path, name: str) -> Path:
    path = workdir / name
    path.mkdir()
    return path
