"""The local builder: no container. The requirement set's wheels are fetched and unpacked on
this machine for every builder (``install``); this builder also slims and precompiles the tree
here, where the docker builder does that in the image."""

from __future__ import annotations

import os
import shutil
import sys
import time
import zipfile
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING

from packaging.utils import parse_wheel_filename

from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.builders._inside import compile_tree
from poetry_lambda_zip.builders._inside import merge_trees
from poetry_lambda_zip.builders._inside import slim_tree
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence

    from poetry_lambda_zip.builders import InstallJob
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.builders import VerifyJob
    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "LocalBuilder",
    "cannot_compile_here",
    "install_wheel",
    "install_wheels",
    "no_wheel_error",
    "not_installable_locally",
    "unpack",
]

#: The interpreter Lambda's images run: what pip writes into rewritten script shebangs.
_LAMBDA_PYTHON = "/var/lang/bin/python3"


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
        return unpack(job, job.unpacked or workdir / "target", progress)

    def identity(self, job: InstallJob, progress: Progress) -> str:
        # Bytecode is compiled by this interpreter when its version is the runtime's.
        return f"local {sys.version.split()[0]}" if job.compile else "local"

    def verify(self, check: VerifyJob, progress: Progress) -> float:
        from poetry_lambda_zip.builders.docker import DockerBuilder

        return DockerBuilder().verify(check, progress)


def cannot_compile_here(job: InstallJob) -> str | None:
    """Why this interpreter cannot precompile for the job's runtime, if it cannot."""
    host = "{}.{}".format(*sys.version_info[:2])
    version = job.target.python_version_text
    if host == version:
        return None
    return (
        f"Not precompiling: this Python is {host}, {job.target.runtime} needs {version} bytecode"
        f" (use --builder docker, or run Poetry with {version})."
    )


def install_wheels(wheels: Sequence[Path], target: Path, python_version: str) -> None:
    """Unpack fetched wheels into one tree, as one ``pip install --target`` would."""
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        install_wheel(wheel, target, python_version)


def unpack(job: InstallJob, target: Path, progress: Progress) -> InstallResult:
    """Add the project's wheel and include files to ``target`` on this machine (it may hold the
    unpacked dependencies already), then slim and precompile as the job asks: what pip and the
    container script do in the docker builder."""
    started = time.monotonic()
    version = job.target.python_version_text
    install_wheels([job.project_wheel] if job.project_wheel else [], target, version)
    if job.includes:
        includes = target.parent / "include"
        for name, path in job.includes:
            (includes / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, includes / name)
        conflict = merge_trees([str(includes)], str(target))
        if conflict:
            raise BuildFailedError(f"Two files want the same place in the zip: {conflict}.")
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


def install_wheel(wheel: Path, target: Path, python_version: str) -> None:
    """Unpack a wheel where ``pip install --target`` puts its files (.data/ included)."""
    name, _, _, _ = parse_wheel_filename(wheel.name)
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            destination = _destination(info.filename, str(name), python_version)
            path = target.joinpath(*destination.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, path.open("wb") as sink:
                if destination.parts[0] == "bin" and ".data/scripts/" in info.filename:
                    _copy_script(source, sink)
                elif destination.name == "RECORD" and destination.parent.name.endswith(
                    ".dist-info"
                ):
                    _copy_record(source, sink, str(name), python_version)
                else:
                    shutil.copyfileobj(source, sink)
            executable = (info.external_attr >> 16) & 0o111
            path.chmod(0o755 if executable else 0o644)


def _destination(member: str, name: str, python_version: str) -> PurePosixPath:
    parts = PurePosixPath(member).parts
    if PurePosixPath(member).is_absolute() or ".." in parts:
        raise BuildFailedError(f"The wheel member {member!r} would land outside the package.")
    if parts[0].endswith(".data") and len(parts) > 2:
        kind, rest = parts[1], parts[2:]
        if kind in ("purelib", "platlib", "data"):
            return PurePosixPath(*rest)
        if kind == "scripts":
            return PurePosixPath("bin", *rest)
        if kind == "headers":
            return PurePosixPath("include", "site", f"python{python_version}", name, *rest)
    return PurePosixPath(*parts)


def _copy_script(source: IO[bytes], sink: IO[bytes]) -> None:
    """pip rewrites a ``#!python`` first line to the interpreter that installs."""
    first = source.readline()
    if first.startswith(b"#!python"):
        first = f"#!{_LAMBDA_PYTHON}\n".encode()
    sink.write(first)
    shutil.copyfileobj(source, sink)


def _copy_record(source: IO[bytes], sink: IO[bytes], name: str, python_version: str) -> None:
    """RECORD names files where they are installed, as pip's does (hashes are redone later)."""
    for raw in source:
        path, _, rest = raw.decode("utf-8").partition(",")
        installed = _destination(path, name, python_version).as_posix() if path else path
        sink.write(f"{installed},{rest}".encode())


def no_wheel_error(missing: list[Requirement], runtime: str) -> ConfigError:
    """What to say when the local builder cannot do the job, and the two ways out."""
    lines = "\n".join(f"  - {r.name} {r.version}: {r.describe()}" for r in missing)
    return ConfigError(
        f"The local builder can only unpack wheels; these have none for {runtime}:\n{lines}",
        "Build with --builder docker (it builds them inside the Lambda image), or choose a"
        " newer runtime or other versions that publish wheels for it.",
    )
