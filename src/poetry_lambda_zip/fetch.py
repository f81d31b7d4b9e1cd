"""Wheels fetched on this machine through Poetry: its sources, credentials, certificates, timeout
and artifact cache. Each file is checked against the lock's sha256: as it downloads, and again
whenever a cached copy is reused. Files already fetched are found by that sha256 without asking
any index (the lock pins them).

A damaged cached copy is discarded with a warning and downloaded again; only a fresh download
that does not match is blamed on the index. A cache that cannot be written (read-only, full)
costs one warning and the downloads go to the build's temporary directory instead.

Downloads run in daemon threads, so an interrupted build (SIGTERM, Ctrl-C) ends at once even
while a download stalls: the main thread stops waiting, removes every partial file
(``.OWNER.TOKEN.NAME.part``, see ``stale``) and no thread can create another one after that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import BinaryIO
from typing import Protocol
from typing import Union

from poetry_lambda_zip import locations
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import ResolveError
from poetry_lambda_zip.redact import redact
from poetry_lambda_zip.stale import partial_name
from poetry_lambda_zip.stale import remove_stale
from poetry_lambda_zip.tree_steps import join_pem

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence

    from poetry.core.packages.utils.link import Link
    from poetry.poetry import Poetry
    from poetry.repositories.http_repository import HTTPRepository
    from poetry.utils.authenticator import Authenticator
    from poetry.utils.cache import ArtifactCache

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.resolve import Requirement

__all__ = ["Fetcher", "WheelFetcher"]

_DOWNLOADS = 8
#: How often the waiting main thread wakes: a signal the kernel hands to a download thread only
#: runs its Python handler (in the main thread) once the main thread stops waiting.
_POLL = 0.1
_CHUNK = 1 << 16
_REQUESTS_CA_BUNDLE = "REQUESTS_CA_BUNDLE"
#: The index of files fetched before, next to Poetry's artifacts: ``XX/SHA256`` -> the file.


class Fetcher(Protocol):
    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        """Each requirement's wheel as a local file, in order, checked against the lock."""
        ...


class WheelFetcher:
    def __init__(
        self,
        poetry: Poetry,
        *,
        cache: bool,
        scratch: Path,
        ca_bundle: Path | None = None,
        force: bool = False,
    ) -> None:
        """``cache``: use (and fill) Poetry's artifact cache; else download into ``scratch``.
        ``ca_bundle`` (``--ca-bundle``): trusted in addition to the default certificates.
        ``force``: download every file again, refreshing the cache."""
        self._poetry = poetry
        self._cache = cache
        self._scratch = scratch
        self._ca_bundle = ca_bundle
        self._force = force
        self._repositories: dict[str, HTTPRepository] = {}
        self._direct: Authenticator | None = None
        self._sessions_lock = threading.Lock()
        self._run = _Run()
        #: Cleared (with one warning) when the download cache cannot be written.
        self._cache_writable = cache
        #: Cached copies found damaged (and reported) that could not be removed.
        self._damaged_paths: set[Path] = set()

    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        """Every requirement's wheel, several downloads at a time, in the requirements' order.

        The downloads run in daemon threads: when this is interrupted, it returns at once
        instead of waiting for a stalled download, and removes the partial files of those still
        running. When one fails, no other starts; of those that fail, the first in order is
        raised."""
        if not requirements:
            return []
        started = time.monotonic()
        self._run = run = _Run()
        pending = list(enumerate(requirements))
        wheels: dict[int, Path] = {}
        errors: dict[int, BaseException] = {}
        try:
            with self._trusting():
                for _ in range(min(_DOWNLOADS, len(pending))):
                    threading.Thread(
                        target=self._work, args=(pending,), name="lambda-zip-fetch", daemon=True
                    ).start()
                while len(wheels) + len(errors) < run.expected(len(requirements)):
                    try:
                        done = run.events.get(timeout=_POLL)
                    except queue.Empty:
                        continue
                    if isinstance(done, str):
                        progress.warning(done)
                    elif isinstance(done[1], BaseException):
                        errors[done[0]] = done[1]
                        run.stop()
                    else:
                        wheels[done[0]] = done[1]
                        progress.count("fetch", len(wheels), len(requirements))
            if errors:
                raise errors[min(errors)]
        finally:
            run.cancel()
        progress.phase("fetch", time.monotonic() - started, f"{len(wheels)} wheels")
        return [wheels[number] for number in range(len(requirements))]

    def _work(self, pending: list[tuple[int, Requirement]]) -> None:
        run = self._run
        while True:
            with run.lock:
                if run.cancelled or run.stopping or not pending:
                    return
                number, requirement = pending.pop(0)
                run.taken += 1
            try:
                run.events.put((number, self._fetch(requirement)))
            except BaseException as e:  # handed to the main thread, which raises it
                run.events.put((number, e))

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
            join_pem([Path(certifi.where()).read_bytes(), self._ca_bundle.read_bytes()])
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

    def cached(self, requirement: Requirement) -> Path | None:
        """The requirement's wheel as an earlier build fetched it (found by the lock's sha256,
        checked against it); None when there is none. Nothing is downloaded (``--dry-run``)."""
        if requirement.artifact.kind != "wheel" or requirement.origin.type == "file":
            return None
        try:
            return self._known(requirement)
        except ResolveError:
            return None

    def _fetch(self, requirement: Requirement) -> Path:
        """The locked wheel as a local file, checked against the lock's sha256: a file
        dependency as it is, else a cached copy that still matches, else a fresh download."""
        origin = requirement.origin
        _, sha256 = requirement.locked_file
        if origin.type == "file":
            path = Path(origin.location())
            try:
                found = file_sha256(path)
            except OSError as e:
                raise ResolveError(
                    f"{requirement.name} {requirement.version}: the file dependency {path}"
                    f" cannot be read ({e.strerror}).",
                    "Check the path in pyproject.toml, then run `poetry lock`.",
                ) from e
            if found != sha256:
                raise _mismatch(requirement, found, "found")
            return path
        if self._cache and not self._force:
            known = self._known(requirement)
            if known is not None:
                return known
        link, session = self._link(requirement)
        cached = self._cached(requirement, link) if self._cache else None
        if cached is not None:
            self._remember(sha256, cached)
            return cached
        downloaded: Path | None = None
        if self._cache_writable:
            directory = self._artifact_cache().get_cache_directory_for_link(link)
            with contextlib.suppress(_CacheNotWritable):
                downloaded = self._download(requirement, link.url, session, directory)
        if downloaded is None:
            scratch = self._scratch / sha256
            downloaded = self._download(requirement, link.url, session, scratch, in_cache=False)
        if self._cache_writable:
            self._remember(sha256, downloaded)
        return downloaded

    def _known(self, requirement: Requirement) -> Path | None:
        """A file fetched before with this sha256 (the lock pins it, so no index is asked)."""
        filename, sha256 = requirement.locked_file
        entry = self._by_hash(sha256)
        try:
            path = entry.resolve(strict=True)
        except OSError:
            return None  # none, or a link left dangling by `poetry cache clear`
        if path.name != filename:
            self._run.events.put(
                f"The download cache's entry {entry} for {requirement.name}"
                f" {requirement.version} leads to {path}, not to {filename}: discarded."
            )
        elif self._matches(requirement, path):
            return path
        with contextlib.suppress(OSError):
            entry.unlink()
        return None

    def _cached(self, requirement: Requirement, link: Link) -> Path | None:
        """The copy in Poetry's artifact cache, if it still matches the lock."""
        filename, _ = requirement.locked_file
        path = self._artifact_cache().get_cache_directory_for_link(link) / filename
        if self._force or not path.is_file():
            return None
        if self._matches(requirement, path):
            return path
        return None

    def _matches(self, requirement: Requirement, path: Path) -> bool:
        """Whether the cached ``path`` still has the lock's sha256; a damaged one is discarded
        (with a warning) so that it is downloaded again."""
        if path in self._damaged_paths:
            return False
        try:
            found = file_sha256(path)
        except OSError as e:
            problem = f"cannot be read ({e.strerror or e})"
        else:
            if found == requirement.artifact.sha256:
                return True
            problem = f"has sha256 {found}, not the {requirement.artifact.sha256} poetry.lock pins"
        self._run.events.put(
            f"The cached download {path} of {requirement.name} {requirement.version} {problem}:"
            " it was damaged after it was downloaded. Discarded; downloading it again."
        )
        if path.resolve().is_relative_to(self._artifacts().resolve()):
            try:
                path.unlink()
            except OSError as e:
                self._damaged_paths.add(path)
                self._not_writable(path, e)
        return False

    def _link(self, requirement: Requirement) -> tuple[Link, Authenticator]:
        """Where the file is: its URL, or the link the index lists (with the index's session)."""
        from poetry.core.packages.package import Package
        from poetry.core.packages.utils.link import Link

        artifact, origin = requirement.artifact, requirement.origin
        if origin.type == "url":
            return Link(origin.location()), self._url_session()
        repository = self._repository(origin.source_name, origin.url)
        try:
            links = repository.find_links_for_package(
                Package(requirement.name, requirement.version)
            )
        except Exception as e:  # requests and Poetry raise many kinds
            raise _unreachable(f"Listing {requirement.name} on {repository.url}", e) from e
        found = next((link for link in links if link.filename == artifact.filename), None)
        if found is None:
            raise _not_found(repository, requirement)
        return found, repository.session

    def _download(
        self,
        requirement: Requirement,
        url: str,
        session: Authenticator,
        directory: Path,
        *,
        in_cache: bool = True,
    ) -> Path:
        """Download ``url`` into ``directory``: the file appears under its name only once
        complete and matching the lock. With ``in_cache``, a failure to write is reported once
        and raised as _CacheNotWritable (download elsewhere), otherwise it is an error."""
        filename, _ = requirement.locked_file
        final = directory / filename
        partial = directory / partial_name(filename)
        remove_stale(directory, ".", ".part")  # what a killed download left here
        try:
            handle = self._run.create(partial)
        except OSError as e:
            raise self._write_failed(directory, e, in_cache) from e
        try:
            with handle:
                found = self._stream(url, session, handle, filename)
            if found != requirement.artifact.sha256:
                raise _mismatch(requirement, found, "downloaded")
            self._run.publish(partial, final)
        except _WriteFailed as e:
            raise self._write_failed(directory, e.error, in_cache) from e.error
        except OSError as e:  # closing (flushing) the file, or renaming it into place
            raise self._write_failed(directory, e, in_cache) from e
        finally:
            self._run.remove(partial)
        return final

    def _stream(self, url: str, session: Authenticator, handle: BinaryIO, filename: str) -> str:
        """Write the body of ``url`` to ``handle``; its sha256. Network failures (a stall
        beyond the read timeout included) are BuildFailedError, naming the URL without its
        credentials."""
        digest = hashlib.sha256()
        try:
            response = session.get(
                url, stream=True, timeout=_timeout(), headers={"Accept-Encoding": "identity"}
            )
            with response:
                for chunk in response.iter_content(_CHUNK):
                    self._run.check()
                    digest.update(chunk)
                    _write(handle, chunk)
        except (_Cancelled, _WriteFailed):
            raise
        except Exception as e:  # requests and Poetry raise many kinds
            where = url.partition("#")[0]  # an index's link ends with #sha256=…
            raise _unreachable(f"Downloading {filename} from {where}", e, url) from e
        return digest.hexdigest()

    def _write_failed(self, directory: Path, error: OSError, in_cache: bool) -> Exception:
        if in_cache:
            self._not_writable(directory, error)
            return _CacheNotWritable()
        return BuildFailedError(
            f"Cannot write the downloads to {directory}: {error.strerror or error}.",
            "Free space in the temporary directory (TMPDIR) or point TMPDIR elsewhere.",
        )

    def _not_writable(self, path: Path, error: OSError) -> None:
        """The download cache cannot be written: say so once, then download without it."""
        with self._run.lock:
            if not self._cache_writable:
                return
            self._cache_writable = False
        self._run.events.put(
            f"Poetry's download cache cannot be written ({path}: {error.strerror or error}):"
            " downloading into the build's temporary directory, nothing is kept for the next"
            " build."
        )

    def _remember(self, sha256: str, path: Path) -> None:
        """Index ``path`` by its sha256 (a link), unless it already is."""
        entry = self._by_hash(sha256)
        with contextlib.suppress(OSError):
            if entry.resolve(strict=True) == path.resolve():
                return
        if not self._cache_writable:
            return
        try:
            self._run.link(entry, path.resolve())
        except OSError as e:
            self._not_writable(entry.parent, e)

    def _by_hash(self, sha256: str) -> Path:
        return self._artifacts().parent / locations.BY_HASH / sha256[:2] / sha256

    def _artifacts(self) -> Path:
        return Path(self._poetry.config.artifacts_cache_directory)

    def _artifact_cache(self) -> ArtifactCache:
        from poetry.utils.cache import ArtifactCache

        return ArtifactCache(cache_dir=self._artifacts())

    def _repository(self, source_name: str | None, url: str | None) -> HTTPRepository:
        """The configured source (with its credentials and certificates), or PyPI through
        its simple API; without Poetry's HTTP cache (see ``_url_session``)."""
        from poetry.repositories.legacy_repository import LegacyRepository

        key = source_name or "PyPI"
        with self._sessions_lock:
            if key not in self._repositories:
                pool = self._poetry.pool
                if source_name and pool.has_repository(source_name):
                    repository = pool.repository(source_name)
                    name, index = repository.name, getattr(repository, "url", url)
                else:
                    pypi = pool.repository("PyPI") if pool.has_repository("PyPI") else None
                    name, index = "PyPI-simple", getattr(pypi, "url", None) or url
                self._repositories[key] = LegacyRepository(
                    name, str(index), config=self._poetry.config, disable_cache=True
                )
            return self._repositories[key]

    def _url_session(self) -> Authenticator:
        """Poetry's credentials and certificates for any URL, without its HTTP cache: that
        would copy each wheel through a temporary file (left behind if the build is
        interrupted) into a second cache."""
        from poetry.utils.authenticator import Authenticator

        with self._sessions_lock:
            if self._direct is None:
                self._direct = Authenticator(
                    config=self._poetry.config, disable_cache=True, pool_size=_DOWNLOADS
                )
            return self._direct


#: What a download thread reports: a warning, or (its number, its file or its error).
_Event = Union[str, tuple[int, Union[Path, BaseException]]]


class _Run:
    """One ``fetch_all``: the main thread's queue of events, and the files being written.

    Every file or directory a download thread creates is created under ``lock`` after checking
    ``cancelled``; ``cancel`` sets it and removes the partial files under the same lock. So
    once the main thread has cancelled, no thread can leave anything behind, wherever it is
    stuck."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        #: A download failed: the others that started finish, no other starts.
        self.stopping = False
        #: How many downloads started.
        self.taken = 0
        self.events: queue.Queue[_Event] = queue.Queue()
        self._partials: set[Path] = set()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True

    def expected(self, total: int) -> int:
        """How many downloads will report: all of them, or once stopping those started."""
        with self.lock:
            return self.taken if self.stopping else total

    def check(self) -> None:
        if self.cancelled:
            raise _Cancelled

    def create(self, partial: Path) -> BinaryIO:
        with self.lock:
            self.check()
            partial.parent.mkdir(parents=True, exist_ok=True)
            handle = partial.open("wb")
            self._partials.add(partial)
            return handle

    def publish(self, partial: Path, final: Path) -> None:
        with self.lock:
            self.check()
            os.replace(partial, final)
            self._partials.discard(partial)

    def link(self, entry: Path, target: Path) -> None:
        partial = entry.with_name(partial_name(entry.name))
        with self.lock:
            self.check()
            entry.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(entry.parent, ".", ".part")
            partial.unlink(missing_ok=True)
            partial.symlink_to(target)
            try:
                os.replace(partial, entry)
            finally:
                partial.unlink(missing_ok=True)

    def remove(self, partial: Path) -> None:
        with self.lock:
            self._partials.discard(partial)
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            for partial in self._partials:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            self._partials.clear()


class _Cancelled(Exception):
    """The main thread gave up on this run: the thread stops quietly."""


class _CacheNotWritable(Exception):
    """Writing into the download cache failed (and was reported): use the scratch directory."""


class _WriteFailed(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _write(handle: BinaryIO, chunk: bytes) -> None:
    """Write errors apart from network errors (requests' are OSErrors too)."""
    try:
        handle.write(chunk)
    except OSError as e:
        raise _WriteFailed(e) from e


def _timeout() -> tuple[float, float]:
    """Connect and read timeouts: Poetry's (POETRY_REQUESTS_TIMEOUT, 15 s by default), as its
    own downloader uses them. A read timeout bounds each wait for data, so a stalled download
    fails instead of hanging."""
    from poetry.utils import constants

    return (constants.REQUESTS_TIMEOUT, constants.REQUESTS_TIMEOUT)


def _mismatch(requirement: Requirement, found: str, how: str) -> BuildFailedError:
    artifact = requirement.artifact
    return BuildFailedError(
        f"{artifact.filename} ({requirement.name} {requirement.version}) does not match"
        f" poetry.lock: expected sha256 {artifact.sha256}, {how} {found}.",
        "Do not deploy this. If the index legitimately changed the file, run"
        " `poetry lock` and review the change.",
    )


def _unreachable(what: str, error: Exception, url: str | None = None) -> BuildFailedError:
    causes = _causes(error)
    message = f"{what} failed: " + " (".join(causes) + ")" * (len(causes) - 1)
    # A proxy or index URL in the message may carry a password; so may the netloc Poetry
    # repeats ("All attempts to connect to user:password@host failed").
    if url is not None:
        netloc = url.partition("://")[2].partition("/")[0]
        userinfo, at, _ = netloc.rpartition("@")
        if at:
            message = message.replace(f"{userinfo}@", "")
    message = redact(message)
    fix = (
        "Check the network, the proxy settings (HTTPS_PROXY) and the CA bundle (--ca-bundle),"
        " and Poetry's credentials for the source."
    )
    if "timed out" in message.lower():
        fix += (
            f" The server sent nothing for {_timeout()[1]:g} s (POETRY_REQUESTS_TIMEOUT): for a"
            " slow index, raise it (e.g. POETRY_REQUESTS_TIMEOUT=60)."
        )
    return BuildFailedError(message, fix)


def _causes(error: BaseException) -> list[str]:
    """What went wrong, outermost first: Poetry's "All attempts to connect ... failed" says
    nothing of why (a refused connection, a timeout) without the error it wraps."""
    causes: list[str] = []
    current: BaseException | None = error
    while current is not None and len(causes) < 3:
        text = str(current) or type(current).__name__
        if not any(text in cause for cause in causes):
            causes.append(text)
        current = current.__cause__ or current.__context__
    return causes


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
