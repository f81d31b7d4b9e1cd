"""The local builder: no container. Each locked wheel for the target is fetched through Poetry
(sources, credentials, certificates, artifact cache), checked against the lock's sha256 and
unpacked the way ``pip install --target`` lays it out."""

from __future__ import annotations

import os
import shutil
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING

from packaging.utils import parse_wheel_filename

from poetry_lambda_zip.archive import file_sha256
from poetry_lambda_zip.builders import InstallResult
from poetry_lambda_zip.builders._inside import compile_tree
from poetry_lambda_zip.builders._inside import merge_trees
from poetry_lambda_zip.builders._inside import slim_tree
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from poetry.poetry import Poetry
    from poetry.repositories.http_repository import HTTPRepository

    from poetry_lambda_zip.builders import InstallJob
    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.builders import VerifyJob
    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "LocalBuilder",
    "install_wheel",
    "no_wheel_error",
    "not_installable_locally",
    "unpack",
]

#: The interpreter Lambda's images run: what pip writes into rewritten script shebangs.
_LAMBDA_PYTHON = "/var/lang/bin/python3"
_DOWNLOADS = 8


def not_installable_locally(requirements: Iterable[Requirement]) -> list[Requirement]:
    """Requirements without a wheel for the target: sdists, directories, git checkouts."""
    return [r for r in requirements if r.artifact.kind != "wheel"]


class LocalBuilder:
    name = "local"

    def __init__(self, poetry: Poetry) -> None:
        self._poetry = poetry
        self._repositories: dict[str, HTTPRepository] = {}
        self._cache = True
        self._scratch: Path | None = None

    def install(self, job: InstallJob, workdir: Path, progress: Progress) -> InstallResult:
        missing = not_installable_locally(job.requirements)
        if missing:
            raise no_wheel_error(missing, job.target.runtime)
        started = time.monotonic()
        self._cache = job.cache
        self._scratch = workdir / "downloads"
        wheels = []
        if job.requirements:
            with ThreadPoolExecutor(_DOWNLOADS) as pool:
                wheels = list(pool.map(self._fetch, job.requirements))
            progress.phase("fetch", time.monotonic() - started, f"{len(wheels)} wheels")
        return unpack(job, wheels, workdir / "target", progress)

    def identity(self, job: InstallJob, progress: Progress) -> str:
        # Bytecode is compiled by this interpreter when its version is the runtime's.
        return f"local {sys.version.split()[0]}" if job.compile else "local"

    def verify(self, check: VerifyJob, progress: Progress) -> float:
        from poetry_lambda_zip.builders.docker import DockerBuilder

        return DockerBuilder().verify(check, progress)

    def _fetch(self, requirement: Requirement) -> Path:
        artifact, origin = requirement.artifact, requirement.origin
        assert artifact.filename is not None
        assert artifact.sha256 is not None
        if origin.type == "file":
            assert origin.url is not None
            path = Path(origin.url)
        else:
            path = self._known(artifact.sha256, artifact.filename) or self._download(requirement)
        found = file_sha256(path)
        if found != artifact.sha256:
            raise BuildFailedError(
                f"{artifact.filename} ({requirement.name} {requirement.version}) does not match"
                f" poetry.lock: expected sha256 {artifact.sha256}, downloaded {found}.",
                "Do not deploy this. If the index legitimately changed the file, run"
                " `poetry lock` and review the change.",
            )
        if origin.type != "file" and self._cache:
            self._remember(found, artifact.filename, path)
        return path

    def _download(self, requirement: Requirement) -> Path:
        from poetry.core.packages.utils.link import Link
        from poetry.utils.cache import ArtifactCache
        from poetry.utils.download import download_file

        artifact, origin = requirement.artifact, requirement.origin
        assert artifact.filename is not None
        if origin.type == "url":
            assert origin.url is not None
            link = Link(origin.url)
            session = None
        else:
            repository = self._repository(origin.source_name, origin.url)
            from poetry.core.packages.package import Package

            links = repository.find_links_for_package(
                Package(requirement.name, requirement.version)
            )
            found = next((link for link in links if link.filename == artifact.filename), None)
            if found is None:
                raise BuildFailedError(
                    f"{artifact.filename} is not on {repository.url} any more.",
                    "Run `poetry lock` to pick files the index still serves.",
                )
            link, session = found, repository.session
        cache = ArtifactCache(cache_dir=self._poetry.config.artifacts_cache_directory)
        if self._cache:
            cached = cache.get_cached_archive_for_link(link, strict=True)
            if cached is not None:
                return cached
            directory = cache.get_cache_directory_for_link(link)
        else:
            assert self._scratch is not None
            directory = self._scratch / artifact.sha256  # type: ignore[operator]
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{artifact.filename}.{os.getpid()}.part"
        try:
            download_file(link.url, partial, session=session)
        except Exception as e:  # requests and Poetry raise many kinds
            raise BuildFailedError(
                f"Downloading {artifact.filename} failed: {e}",
                "Check the network, the proxy settings and Poetry's credentials for the source.",
            ) from e
        final = directory / artifact.filename
        os.replace(partial, final)
        return final

    def _index(self) -> Path:
        return Path(self._poetry.config.artifacts_cache_directory).parent / "lambda-zip-by-hash"

    def _known(self, sha256: str, filename: str) -> Path | None:
        """A file fetched before with this sha256 (the lock pins it, so no index is asked)."""
        link = self._index() / sha256[:2] / f"{sha256}-{filename}"
        return link.resolve() if self._cache and link.exists() else None

    def _remember(self, sha256: str, filename: str, path: Path) -> None:
        link = self._index() / sha256[:2] / f"{sha256}-{filename}"
        link.parent.mkdir(parents=True, exist_ok=True)
        partial = link.with_name(f".{link.name}.{os.getpid()}")
        partial.unlink(missing_ok=True)
        partial.symlink_to(path)
        os.replace(partial, link)

    def _repository(self, source_name: str | None, url: str | None) -> HTTPRepository:
        """The configured source (with its credentials), or PyPI through its simple API."""
        from poetry.repositories.legacy_repository import LegacyRepository

        key = source_name or "PyPI"
        if key not in self._repositories:
            pool = self._poetry.pool
            if source_name and pool.has_repository(source_name):
                repository = pool.repository(source_name)
            else:
                pypi = pool.repository("PyPI") if pool.has_repository("PyPI") else None
                pypi_url = getattr(pypi, "url", None) or url
                repository = LegacyRepository(
                    "PyPI-simple", str(pypi_url or url), config=self._poetry.config
                )
            self._repositories[key] = repository  # type: ignore[assignment]
        return self._repositories[key]


def unpack(job: InstallJob, wheels: list[Path], target: Path, progress: Progress) -> InstallResult:
    """Install the fetched wheels, the project's wheel and include files into ``target`` on
    this machine, then slim and precompile as the job asks (what pip and the container script
    do in the docker builder)."""
    started = time.monotonic()
    version = job.target.python_version_text
    target.mkdir(parents=True, exist_ok=True)
    for wheel in [*wheels, *([job.project_wheel] if job.project_wheel else [])]:
        install_wheel(wheel, target, version)
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
        host = "{}.{}".format(*sys.version_info[:2])
        if host == version:
            settings = {
                "prefix": job.compile.prefix,
                "project_prefix": job.compile.project_prefix,
                "project": job.compile.project,
            }
            report["compile"] = compile_tree(str(target), settings, [n for n, _ in job.includes])
        else:
            progress.warning(
                f"Not precompiling: this Python is {host}, {job.target.runtime} needs"
                f" {version} bytecode (use --builder docker, or run Poetry with {version})."
            )
    what = f"{len(wheels)} wheels" if wheels else "the project's files"
    progress.phase("install", time.monotonic() - started, f"{what} for {job.target.runtime}")
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
