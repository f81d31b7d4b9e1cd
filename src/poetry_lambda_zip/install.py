"""The builder stage: the requirement set and the project's files installed for the target.

The dependencies' wheels are fetched and unpacked on this machine (the same bytes everywhere);
the builder adds what needs the image (sdists, path and git dependencies built by pip there,
bytecode from its Python, ``strip``); an earlier build's tree is reused when nothing that
decides it changed; the project's own files are installed apart, so a code change touches only
them.
"""

from __future__ import annotations

import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.builders.local import finish_here
from poetry_lambda_zip.tree_steps import SHARED_LIBRARY
from poetry_lambda_zip.wheels import PinnedWheel
from poetry_lambda_zip.wheels import install_wheels

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.builders import Builder
    from poetry_lambda_zip.builders import InstallJob
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.fetch import Fetcher
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.tree_cache import TreeCache

__all__ = ["install", "merged_reports"]


def install(
    builder: Builder,
    job: InstallJob,
    *,
    fetcher: Fetcher,
    key: str,
    cache: TreeCache | None,
    force: bool,
    workdir: Path,
    progress: Progress,
) -> list[InstallResult]:
    """Install the dependencies (or reuse the tree an earlier build kept under ``key``, their
    ``tree_key``) and the project's own files: unpacked on this machine, and when they need the
    image's toolchain finished by the builder while the dependencies install."""
    # Every file of the project's job is the project's: its bytecode names the project's path.
    compile_settings = job.compile
    if compile_settings is not None:
        compile_settings = replace(compile_settings, prefix=compile_settings.project_prefix)
    project = replace(
        _downloading_from(job, ()),
        requirements=(),
        trees=(),
        build_id=f"{job.build_id}-project",
        what="the project's files",
        compile=compile_settings,
    )
    install_project: Callable[[], InstallResult] | None = None
    if project.project_wheel is not None or project.includes:
        project_dir = _subdirectory(workdir, "project")

        def install_project() -> InstallResult:
            if not _needs_toolchain(project):
                return finish_here(project, project_dir / "target", progress)
            # Unpacked here either way; the builder only precompiles (and strips) them.
            bare = replace(project, slim=False, compile=None)
            here = finish_here(bare, project_dir / "unpacked", progress)
            finish = replace(project, project_wheel=None, includes=(), unpacked=here.tree)
            return builder.install(finish, project_dir, progress)

    installed = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(install_project) if install_project is not None else None
        dependencies = replace(job, project_wheel=None, includes=())
        if dependencies.requirements or dependencies.trees:
            started = time.monotonic()
            reused = cache.get(key) if cache is not None and not force else None
            if cache is not None and reused is not None:
                progress.phase(
                    "install",
                    time.monotonic() - started,
                    f"dependencies unchanged: reused from an earlier build ({cache.directory})",
                )
                installed.append(reused)
            else:
                directory = _subdirectory(workdir, "dependencies")
                result = _install_dependencies(builder, dependencies, fetcher, directory, progress)
                if cache is not None:
                    cache.put(key, result)
                installed.append(result)
        if pending is not None:
            installed.append(pending.result())
    return installed


def _install_dependencies(
    builder: Builder, job: InstallJob, fetcher: Fetcher, workdir: Path, progress: Progress
) -> InstallResult:
    """Fetch and unpack the wheels here (in parallel, from the download cache when it has them);
    the builder adds what must be built in the image (sdists, path and git dependencies), then
    slims and precompiles. With none of that to do, no builder runs: wheels unpack the same
    everywhere."""
    wheels = [r for r in job.requirements if r.artifact.kind == "wheel"]
    files = fetcher.fetch_all(wheels, progress)
    started = time.monotonic()
    unpacked = workdir / "unpacked"
    # Each file is checked against the requirement it was fetched for (fetch_all keeps their
    # order), and all of them against Lambda's size limit before any is unpacked.
    pinned = [PinnedWheel.of_requirement(r, path) for r, path in zip(wheels, files)]
    install_wheels(pinned, unpacked, job.target.python_version_text)
    if files:
        progress.phase(
            "unpack", time.monotonic() - started, f"{len(files)} wheels for {job.target.runtime}"
        )
    rest = tuple(r for r in job.requirements if r.artifact.kind != "wheel")
    job = replace(_downloading_from(job, rest), requirements=rest, unpacked=unpacked)
    if rest or job.trees or job.compile is not None or job.slim:
        return builder.install(job, workdir, progress)
    return InstallResult(unpacked)


def _downloading_from(job: InstallJob, built: Sequence[Requirement]) -> InstallJob:
    """``job`` with only the secrets the builder needs to build ``built`` (and the source
    trees): credentials for the indexes they and their build dependencies come from, and the
    proxy settings; none at all for a job that downloads nothing."""
    if not built and not job.trees:
        return replace(job, credentials=(), network=replace(job.network, proxies={}))
    urls = [r.origin.url for r in built if r.origin.type == "index" and r.origin.url]
    hosts = {urlsplit(url).hostname for url in [*urls, job.default_index] if url}
    return replace(job, credentials=tuple(c for c in job.credentials if c.host in hosts))


def _needs_toolchain(project: InstallJob) -> bool:
    """Whether the project's files need the builder's toolchain (the image's, for the docker
    builder): precompiling (its Python's bytecode) or stripping shared libraries (``strip``)."""
    if project.compile is not None:
        return True
    if not project.slim:
        return False
    names = [name for name, _ in project.includes]
    if project.project_wheel is not None:
        with zipfile.ZipFile(project.project_wheel) as wheel:
            names += wheel.namelist()
    return any(SHARED_LIBRARY.search(name) for name in names)


def _subdirectory(workdir: Path, name: str) -> Path:
    path = workdir / name
    path.mkdir()
    return path


def merged_reports(reports: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """The dependencies' and the project's slim and compile counts, added up."""
    merged: dict[str, dict[str, int]] = {}
    for report in reports:
        for step, counts in report.items():
            totals = merged.setdefault(step, {})
            for name, count in counts.items():
                if name == "strip_available":
                    totals[name] = max(totals.get(name, 0), count)
                else:
                    totals[name] = totals.get(name, 0) + count
    return merged
