"""The no-op shortcut: a build whose inputs all read as they did when its outputs were last
written is up to date, known before Poetry loads the project (which costs more than the rest
of a no-op).

After a build, each function's *stamp* (one small JSON file per command line, beside the kept
trees in Poetry's cache directory) records what can change the build: the request, this
plugin's, Poetry's, Python's and zlib's versions, the environment variables and Poetry config
files a build reads, every file below the project's directory and below path dependencies and
include files outside it (name, size, mtime, ctime, mode), the builder's identity (for the
docker builder the image's id), and each output's fingerprint. A later run whose inputs all
read the same, whose outputs still carry those fingerprints and whose builder is the same one
is up to date. A stamp is written only when nothing it covers changed while the build ran.

A stamp may also carry the edit shortcut's record (``patch``): when only the project's own
files changed, their entries are patched into the zip. Anything else takes the full path, which
decides from contents (``fingerprint``): no stamp or a damaged one, any other listed file
touched (even with the same contents), a symlinked directory or more than ``_MAX_FILES`` files
below a root, --force, --verify, --no-cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import sys
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip import __version__
from poetry_lambda_zip.archive import ArchiveStats
from poetry_lambda_zip.fingerprint import read_recorded
from poetry_lambda_zip.never_read import NEVER_READ
from poetry_lambda_zip.stale import write_atomically

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence

    from poetry_lambda_zip.request import BuildRequest

__all__ = ["Stamp", "Stamps", "outputs_now"]

#: Raised when a stamp's format changes: older stamps are then never a match.
_FORMAT = 5
#: More files than this below a root: no shortcut (listing them would cost what it saves).
_MAX_FILES = 20_000
#: Environment variables a build reads (Poetry's settings, the docker SDK's, pip's in the image,
#: CA bundles, proxies, SOURCE_DATE_EPOCH), by prefix or by name (either case for proxies).
_VARIABLE_PREFIXES = ("POETRY_", "DOCKER_", "PIP_")
_VARIABLES = frozenset(
    {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "SOURCE_DATE_EPOCH", "HTTP_PROXY",
     "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}
)  # fmt: skip


class _NoShortcut(Exception):
    """Something below a root the stamp cannot vouch for (a symlinked directory, too many
    files, an unreadable directory)."""


@dataclass(frozen=True)
class Stamp:
    """What one function's outputs were last built from."""

    #: sha256 over every input the listing covers (``Stamps.inputs``).
    inputs: str
    #: Roots listed besides the project's directory (path dependencies, include files).
    roots: tuple[str, ...]
    #: Each output, the fingerprint it carried when the stamp was written, its file's state
    #: (``outputs_now``).
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    #: The builder identity the fingerprints hold ("docker sha256:…", "local 3.11.9",
    #: "wheels only") and, for the docker builder, the image's name.
    identity: str
    image: str | None
    #: What each output holds, as shown for an up-to-date build: sha256, zipped and unzipped
    #: size, files, distributions.
    archives: tuple[tuple[str, int, int, int, int], ...]
    #: What the edit shortcut reads (``patch.EditRecord``, as JSON); None: it never applies.
    edit: dict[str, Any] | None = None
    #: The project's directories poetry-core reads whole (``project.wheel_directories``).
    whole: tuple[str, ...] = ()

    @staticmethod
    def archives_of(stats: Iterable[ArchiveStats]) -> tuple[tuple[str, int, int, int, int], ...]:
        """What a stamp keeps of each output's ``ArchiveStats`` (its path is in ``outputs``)."""
        return tuple(
            (a.sha256, a.zipped_size, a.unzipped_size, a.files, a.distributions) for a in stats
        )

    @property
    def stats(self) -> tuple[ArchiveStats, ...]:
        """Each output as an up-to-date build shows it."""
        return tuple(
            ArchiveStats(Path(path), *archive)
            for (path, _, _), archive in zip(self.outputs, self.archives)
        )

    @property
    def paths(self) -> tuple[Path, ...]:
        """The outputs, the function zip (or the layer of a layer-only build) first."""
        return tuple(Path(path) for path, _, _ in self.outputs)

    @property
    def first_fingerprint(self) -> str:
        """The fingerprint the first output carried when the stamp was written."""
        return self.outputs[0][1].split()[0]

    def to_json(self) -> str:
        return json.dumps({"format": _FORMAT, "inputs": self.inputs, "roots": self.roots,
                           "outputs": self.outputs, "identity": self.identity,
                           "image": self.image, "archives": self.archives,
                           "edit": self.edit, "whole": self.whole}, indent=1)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Stamp | None:
        """The stamp ``text`` holds, or None for anything else (another format, damage)."""
        try:
            data = json.loads(text)
            if data["format"] != _FORMAT:
                return None
            stamp = cls(
                inputs=str(data["inputs"]),
                roots=tuple(str(root) for root in data["roots"]),
                outputs=tuple(
                    (str(path), str(said), tuple(int(number) for number in state))
                    for path, said, state in data["outputs"]
                ),
                identity=str(data["identity"]),
                image=None if data["image"] is None else str(data["image"]),
                archives=tuple(
                    (str(sha256), int(zipped), int(unzipped), int(files), int(distributions))
                    for sha256, zipped, unzipped, files, distributions in data["archives"]
                ),
                edit=data["edit"] if isinstance(data["edit"], dict) else None,
                whole=tuple(str(directory) for directory in data["whole"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return stamp


class Stamps:
    """The stamps in ``directory`` (in Poetry's cache directory), and the listing of what
    builds read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: Never listed: the cache directory, should it lie in the project (as CI jobs that
        #: cache it often have it).
        self._pruned = os.path.abspath(directory.parent)
        #: Each root's files as listed (None: not to be vouched for), until ``forget``.
        self._walks: dict[str, list[tuple[str, list[int]]] | None] = {}
        #: The directories each listing passed over (``never_read``), relative to its root.
        self._passed_over: dict[str, list[str]] = {}

    def forget(self) -> None:
        """List every root again (after a build: what it may have changed)."""
        self._walks.clear()
        self._passed_over.clear()

    def look(self, root: Path) -> None:
        """List ``root`` now: before anything of it is read, so that a stamp says what the
        build read, not what it found afterwards."""
        self._walked(str(root))

    def read(self, request: BuildRequest) -> Stamp | None:
        try:
            text = self._path(request).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return Stamp.from_json(text)

    def current(self, request: BuildRequest, stamp: Stamp, outputs: Iterable[str]) -> bool:
        """Whether the request's inputs and outputs are still what its ``stamp`` records (the
        builder is checked by the caller). ``outputs``: every output of the run (none of them
        is an input)."""
        if self.inputs(request, stamp.roots, outputs, whole=stamp.whole) != stamp.inputs:
            return False
        return outputs_now(Path(path) for path, _, _ in stamp.outputs) == stamp.outputs

    def inputs(
        self,
        request: BuildRequest,
        roots: Sequence[str],
        outputs: Iterable[str],
        aside: frozenset[str] = frozenset(),
        *,
        whole: Sequence[str] = (),
    ) -> str | None:
        """sha256 over the request's inputs as they read now, but for ``outputs`` and the
        files ``aside`` (absolute paths); None when they cannot be vouched for: also when the
        listing passed over a directory (``never_read``) in or around one of the project's
        directories that poetry-core reads ``whole`` for the wheel."""
        skipped = aside | frozenset(os.path.abspath(output) for output in outputs)
        if self._wheel_reads_passed_over(str(request.project_dir), whole):
            return None
        try:
            listings = [self._listing(root, skipped) for root in (str(request.project_dir), *roots)]
        except _NoShortcut:
            return None
        document = {
            "format": _FORMAT,
            # zlib's too: the edit shortcut copies deflated bytes a full build might deflate
            # again (``archive``).
            "versions": [
                __version__,
                _version("poetry"),
                _version("poetry-core"),
                sys.version,
                zlib.ZLIB_RUNTIME_VERSION,
            ],
            "request": repr(request),
            "environment": sorted(
                (name, value)
                for name, value in os.environ.items()
                if name.startswith(_VARIABLE_PREFIXES) or name.upper() in _VARIABLES
            ),
            "config": [_state(path) for path in _poetry_config_files()],
            "roots": list(roots),
            "listings": listings,
        }
        return hashlib.sha256(json.dumps(document).encode()).hexdigest()

    def _wheel_reads_passed_over(self, root: str, whole: Sequence[str]) -> bool:
        if not whole or self._walked(root) is None:
            return False
        wheel = [PurePosixPath(directory) for directory in whole]
        for passed in map(PurePosixPath, self._passed_over.get(root, ())):
            if any(passed.is_relative_to(read) or read.is_relative_to(passed) for read in wheel):
                return True
        return False

    def listed(self, root: Path) -> list[tuple[str, list[int]]]:
        """The files below ``root`` and their states, as listed (empty when not to be vouched
        for)."""
        return self._walked(str(root)) or []

    def write(self, request: BuildRequest, stamp: Stamp) -> None:
        """Write ``stamp`` atomically; a stamp that cannot be written is no stamp."""
        text = stamp.to_json()
        with contextlib.suppress(OSError):
            write_atomically(self._path(request), lambda path: path.write_text(text, "utf-8"))

    def _path(self, request: BuildRequest) -> Path:
        return self.directory / f"{hashlib.sha256(repr(request).encode()).hexdigest()}.json"

    def _listing(self, root: str, skipped: frozenset[str]) -> str:
        """sha256 over every file below ``root`` (or of ``root``, a file) but ``skipped``:
        name, size, mtime, ctime, mode, inode."""
        walked = self._walked(root)
        if walked is None:
            raise _NoShortcut(root)
        entries = [
            entry
            for entry in walked
            if os.path.abspath(os.path.join(root, entry[0])) not in skipped
        ]
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def _walked(self, root: str) -> list[tuple[str, list[int]]] | None:
        if root not in self._walks:
            passed_over: list[str] = []
            try:
                self._walks[root] = sorted(self._walk(root, passed_over))
            except _NoShortcut:
                self._walks[root] = None
            self._passed_over[root] = passed_over
        return self._walks[root]

    def _walk(self, root: str, passed_over: list[str]) -> list[tuple[str, list[int]]]:
        """The files below ``root`` but what no build reads; the directories passed over
        for that (but bytecode caches) go to ``passed_over``."""
        try:
            if not stat.S_ISDIR(os.stat(root).st_mode):
                return [("", _state(Path(root)))]
        except OSError:
            return [("", [])]  # missing: listed as missing
        entries: list[tuple[str, list[int]]] = []
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as listed:
                    for entry in listed:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name in NEVER_READ:
                                if entry.name != "__pycache__":  # poetry-core skips it too
                                    relative = os.path.relpath(entry.path, root)
                                    passed_over.append(relative.replace(os.sep, "/"))
                            elif os.path.abspath(entry.path) != self._pruned:
                                pending.append(entry.path)
                        elif entry.is_symlink() and entry.is_dir():
                            raise _NoShortcut(entry.path)
                        else:
                            name = os.path.relpath(entry.path, root)
                            entries.append((name, _state(Path(entry.path))))
            except OSError as e:
                raise _NoShortcut(directory) from e
            if len(entries) > _MAX_FILES:
                raise _NoShortcut(root)
        return entries


def _state(path: Path) -> list[int]:
    """A file's size, mtime, ctime and mode (following links); [] when it is missing. The
    ctime changes with every write and cannot be set back, so a file put back with its old
    mtime is still seen."""
    try:
        info = path.stat()
    except OSError:
        return []
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode, info.st_ino]


@functools.cache
def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _poetry_config_files() -> list[Path]:
    from poetry.locations import CONFIG_DIR

    return [Path(CONFIG_DIR) / "config.toml", Path(CONFIG_DIR) / "auth.toml"]


def outputs_now(paths: Iterable[Path]) -> tuple[tuple[str, str, tuple[int, ...]], ...] | None:
    """Each output: its path, the fingerprint it carries (and builder), its file's state;
    None when one carries no fingerprint (a zip this plugin did not write, or none) or is not
    as it was written (``Recorded.intact``: its fingerprint then says nothing of it)."""
    found = []
    for path in paths:
        recorded = read_recorded(path)
        if recorded is None or not recorded.intact:
            return None
        said = f"{recorded.fingerprint} {recorded.builder or ''}".rstrip()
        found.append((str(path), said, tuple(_state(path))))
    return tuple(found)
