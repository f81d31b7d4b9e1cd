"""Wheels fetched on this machine through Poetry: its sources, credentials, certificates and
artifact cache. Each file is checked against the lock's sha256; files already fetched are found
by that sha256 without asking any index (the lock pins them)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Protocol

from poetry_lambda_zip.archive import file_sha256
from poetry_lambda_zip.errors import BuildFailedError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence

    from poetry.poetry import Poetry
    from poetry.repositories.http_repository import HTTPRepository

    from poetry_lambda_zip.builders import Progress
    from poetry_lambda_zip.resolve import Requirement

__all__ = ["Fetcher", "WheelFetcher"]

_DOWNLOADS = 8
_REQUESTS_CA_BUNDLE = "REQUESTS_CA_BUNDLE"
_USERINFO = re.compile(r"://[^/@\s]+@")


class Fetcher(Protocol):
    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        """Each requirement's wheel as a local file, in order, checked against the lock."""
        ...


class WheelFetcher:
    def __init__(
        self, poetry: Poetry, *, cache: bool, scratch: Path, ca_bundle: Path | None = None
    ) -> None:
        """``cache``: use (and fill) Poetry's artifact cache; else download into ``scratch``.
        ``ca_bundle`` (``--ca-bundle``): trusted in addition to the default certificates."""
        self._poetry = poetry
        self._cache = cache
        self._scratch = scratch
        self._ca_bundle = ca_bundle
        self._repositories: dict[str, HTTPRepository] = {}

    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        """Every requirement's wheel, several downloads at a time, in the requirements' order."""
        if not requirements:
            return []
        started = time.monotonic()
        with self._trusting(), ThreadPoolExecutor(_DOWNLOADS) as pool:
            wheels = list(pool.map(self.fetch, requirements))
        progress.phase("fetch", time.monotonic() - started, f"{len(wheels)} wheels")
        return wheels

    @contextlib.contextmanager
    def _trusting(self) -> Iterator[None]:
        """Let requests (under Poetry's sessions) trust ``--ca-bundle`` too, as pip in the
        container does: REQUESTS_CA_BUNDLE names a file with the default and the user's
        certificates while the downloads run."""
        if self._ca_bundle is None:
            yield
            return
        import certifi

        combined = self._scratch / "ca-bundle.pem"
        combined.parent.mkdir(parents=True, exist_ok=True)
        combined.write_bytes(
            Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + self._ca_bundle.read_bytes()
        )
        previous = os.environ.get(_REQUESTS_CA_BUNDLE)
        os.environ[_REQUESTS_CA_BUNDLE] = str(combined)
        try:
            yield
        finally:
            if previous is None:
                del os.environ[_REQUESTS_CA_BUNDLE]
            else:
                os.environ[_REQUESTS_CA_BUNDLE] = previous

    def fetch(self, requirement: Requirement) -> Path:
        """The locked wheel as a local file, checked against the lock's sha256."""
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

            try:
                links = repository.find_links_for_package(
                    Package(requirement.name, requirement.version)
                )
            except Exception as e:  # requests and Poetry raise many kinds
                raise _unreachable(f"Listing {requirement.name} on {repository.url}", e) from e
            found = next((link for link in links if link.filename == artifact.filename), None)
            if found is None:
                raise _not_found(repository, requirement)
            link, session = found, repository.session
        cache = ArtifactCache(cache_dir=self._poetry.config.artifacts_cache_directory)
        if self._cache:
            cached = cache.get_cached_archive_for_link(link, strict=True)
            if cached is not None:
                return cached
            directory = cache.get_cache_directory_for_link(link)
        else:
            directory = self._scratch / artifact.sha256  # type: ignore[operator]
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{artifact.filename}.{os.getpid()}.part"
        try:
            download_file(link.url, partial, session=session)
        except Exception as e:  # requests and Poetry raise many kinds
            raise _unreachable(f"Downloading {artifact.filename}", e) from e
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


def _unreachable(what: str, error: Exception) -> BuildFailedError:
    # A proxy or index URL in the message may carry a password.
    message = _USERINFO.sub("://", f"{what} failed: {error or type(error).__name__}")
    return BuildFailedError(
        message,
        "Check the network, the proxy settings (HTTPS_PROXY) and the CA bundle (--ca-bundle),"
        " and Poetry's credentials for the source.",
    )


def _not_found(repository: HTTPRepository, requirement: Requirement) -> BuildFailedError:
    """Why the index listed no such file: it refused us (credentials), or it is gone."""
    page = f"{repository.url.rstrip('/')}/{requirement.name}/"
    try:
        status = repository.session.get(page, raise_for_status=False).status_code
    except Exception:  # requests and Poetry raise many kinds; the listing failed anyway
        status = None
    filename = requirement.artifact.filename
    if status in (401, 403):
        name = requirement.origin.source_name or repository.name
        variable = re.sub(r"[^A-Z0-9]", "_", name.upper())
        return BuildFailedError(
            f"The source {name} ({repository.url}) refused access ({status}) to"
            f" {requirement.name}: {filename} cannot be fetched.",
            f"Give Poetry the source's credentials: `poetry config http-basic.{name} USER`"
            f" or POETRY_HTTP_BASIC_{variable}_USERNAME / _PASSWORD.",
        )
    return BuildFailedError(
        f"{filename} ({requirement.name} {requirement.version}) is not on {repository.url}"
        " any more.",
        "Run `poetry lock` to pick files the index still serves.",
    )
