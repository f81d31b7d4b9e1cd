"""The local builder: no container. The wheels are installed on this machine for every builder
(``wheels``); this builder slims and precompiles the tree here, where the docker builder does
that in the image, and cannot build what has no wheel."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.tree_steps import compile_tree
from poetry_lambda_zip.tree_steps import slim_tree
from poetry_lambda_zip.wheels import add_project_files

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from poetry_lambda_zip.builders import InstallJob
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.builders import VerifyJob
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "LocalBuilder",
    "finish_here",
    "no_wheel_error",
    "not_installable_locally",
]


def not_installable_locally(requirements: Iterable[Requirement]) -> list[Requirement]:
    """Requirements without a wheel for the target: sdists, directories, git checkouts."""
    return [r for r in requirements if r.artifact.kind != "wheel"]


class LocalBuilder:
    name = "local"

    def install(self, job: InstallJob, workdir: Path, progress: Progress) -> InstallResult:
        """Finish ``job`` here: its requirements' wheels are already in ``job.unpacked``;
        anything else they would need built cannot be done without the image."""
        missing = not_installable_locally(job.requirements)
        if missing or job.trees:
            raise no_wheel_error(missing, job.target.runtime)
        return finish_here(job, job.unpacked or workdir / "target", progress)

    def identity(self, job: InstallJob, progress: Progress) -> str:
        # Bytecode is compiled by this interpreter when its version is the runtime's.
        return f"local {sys.version.split()[0]}" if job.compile else "local"

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        """This interpreter compiles bytecode only for its own Python version."""
        host = "{}.{}".format(*sys.version_info[:2])
        version = target.python_version_text
        if host == version:
            return None
        return (
            f"Not precompiling: this Python is {host}, {target.runtime} needs {version}"
            f" bytecode (use --builder docker, or run Poetry with {version})."
        )

    def verify(self, check: VerifyJob, progress: Progress) -> float:
        from poetry_lambda_zip.builders.docker import DockerBuilder

        return DockerBuilder().verify(check, progress)


def finish_here(job: InstallJob, target: Path, progress: Progress) -> InstallResult:
    """Add the job's project files to ``target`` here, then slim and precompile it as the job
    asks, with this machine's Python and ``strip``: what the container script does in the image."""
    started = time.monotonic()
    version = job.target.python_version_text
    add_project_files(job.project_wheel, job.includes, target, version)
    report: dict[str, dict[str, int]] = {}
    if job.slim:
        native = os.uname().machine == job.target.machine
        report["slim"] = slim_tree(str(target), shutil.which("strip") if native else None)
    if job.compile is not None:
        settings = {
            "prefix": job.compile.prefix,
            "project_prefix": job.compile.project_prefix,
            "project": job.compile.project,
        }
        report["compile"] = compile_tree(str(target), settings, [n for n, _ in job.includes])
    done = ", slimmed" if job.slim else ""
    done += ", precompiled" if job.compile is not None else ""
    progress.phase("install", time.monotonic() - started, f"{job.what}: unpacked{done} here")
    return InstallResult(target, report)


def no_wheel_error(missing: list[Requirement], runtime: str) -> ConfigError:
    """What to say when the local builder cannot do the job, and the two ways out."""
    lines = "\n".join(f"  - {r.name} {r.version}: {r.describe()}" for r in missing)
    return ConfigError(
        f"The local builder can only unpack wheels; these have none for {runtime}:\n{lines}",
        "Build with --builder docker (it builds them inside the Lambda image), or choose a"
        " newer runtime or other versions that publish wheels for it.",
    )
