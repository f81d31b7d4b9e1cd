"""Deterministic zip writer: sorted entries, fixed times, normalized modes, atomic output."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_EPOCH",
    "UNZIPPED_LIMIT",
    "ArchiveStats",
    "Entry",
    "entries_from_files",
    "entries_from_tar",
    "existing_stats",
    "file_sha256",
    "refuse_directory",
    "remove_stale_temporaries",
    "timestamp_from_environment",
    "write_tree",
    "write_zips_atomically",
]

#: 1980-01-01T00:00:00Z, the earliest time a zip entry can carry.
DEFAULT_EPOCH = 315532800
#: Lambda refuses a function whose code and layers unzip to more than this many bytes.
UNZIPPED_LIMIT = 262_144_000
_FILE_MODE = 0o644
_EXECUTABLE_MODE = 0o755
_UNIX = 3
#: A distribution's metadata at the zip root, or below a layer's python/.
_METADATA = re.compile(r"^(python/)?[^/]+\.dist-info/METADATA$")


@dataclass(frozen=True)
class Entry:
    """One file of the package: where it goes in the zip, and how to read it."""

    name: str
    size: int
    executable: bool
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class ArchiveStats:
    path: Path
    sha256: str
    zipped_size: int
    unzipped_size: int
    files: int
    distributions: int


def timestamp_from_environment(environ: dict[str, str] | None = None) -> int:
    """``SOURCE_DATE_EPOCH`` when set (clamped to what zip can store), else 1980-01-01."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return DEFAULT_EPOCH
    try:
        return max(int(value), DEFAULT_EPOCH)
    except ValueError:
        raise OutputError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds.",
            "Unset it or set it to a Unix timestamp, e.g. $(git log -1 --format=%ct).",
        ) from None


def entries_from_tar(archive: tarfile.TarFile, prefix: str) -> list[Entry]:
    """The files of a tar stream from ``get_archive``, minus the leading ``prefix/``."""
    entries = []
    for member in archive.getmembers():
        if member.isdir():
            continue
        name = PurePosixPath(member.name)
        if name.parts[:1] != (prefix,):
            continue
        relative = PurePosixPath(*name.parts[1:]).as_posix()
        if member.issym() or member.islnk():
            resolved = _resolve_link(archive, member)
            entries.append(_tar_entry(archive, resolved, relative))
        elif member.isfile():
            entries.append(_tar_entry(archive, member, relative))
    return entries


def entries_from_files(root: Path, files: Iterable[Path]) -> list[Entry]:
    """Project files (already checked to lie inside ``root``), named relative to it."""
    entries = []
    for path in files:
        info = path.stat()
        entries.append(
            Entry(
                name=path.relative_to(root).as_posix(),
                size=info.st_size,
                executable=bool(info.st_mode & stat.S_IXUSR),
                open=functools.partial(_open_binary, path),
            )
        )
    return entries


def refuse_directory(output: Path) -> None:
    """An output path must name a file (checked in the plan, and again before writing)."""
    if output.is_dir():
        raise OutputError(f"The output path {output} is a directory.", "Pass a file name to -o.")


def write_tree(entries: Iterable[Entry], directory: Path) -> None:
    """Write ``entries`` (e.g. a builder's tar, links resolved) as regular files below
    ``directory``, which must not exist: what the zip gets from them is unchanged (names,
    bytes, the executable bit)."""
    directory.mkdir()
    for entry in entries:
        parts = PurePosixPath(entry.name).parts
        if not parts or entry.name.startswith("/") or ".." in parts:
            raise ConflictError(entry.name, "the builder", "Report this as a bug.", "outside it")
        path = directory.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with entry.open() as source, path.open("xb") as destination:
                shutil.copyfileobj(source, destination)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise ConflictError(
                entry.name, "the builder", "Report this as a bug.", "twice, or as a directory"
            ) from None
        path.chmod(_EXECUTABLE_MODE if entry.executable else _FILE_MODE)


def write_zips_atomically(
    outputs: Sequence[tuple[Path, Iterable[Entry], bytes]],
    timestamp: int,
    check: Callable[[list[ArchiveStats]], None] | None = None,
) -> list[ArchiveStats]:
    """Write every zip (path, entries, the zip's comment) to a temporary file next to its
    output, run ``check`` on all of them, then move them into place.

    A failure at any point (including ``check``) leaves no partial file and every existing
    output untouched.
    """
    planned = [(output, _sorted_unique(entries), comment) for output, entries, comment in outputs]
    for output, _, _ in planned:
        refuse_directory(output)
    temporaries: list[Path] = []
    try:
        written = []
        for output, ordered, comment in planned:
            temporary = _temporary_next_to(output)
            temporaries.append(temporary)
            written.append(_write_one(ordered, output, temporary, timestamp, comment))
        if check is not None:
            check(written)
        for temporary, (output, _, _) in zip(temporaries, planned):
            os.chmod(temporary, 0o644)
            os.replace(temporary, output)
    except OSError as e:
        raise OutputError(
            f"Writing {e.filename or 'the package'} failed: {e.strerror or e}.",
            "Check free space and permissions where the package is written.",
        ) from e
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return written


def existing_stats(path: Path) -> ArchiveStats:
    """What an already written zip holds (for an up-to-date build)."""
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
    return ArchiveStats(
        path=path,
        sha256=file_sha256(path),
        zipped_size=path.stat().st_size,
        unzipped_size=sum(info.file_size for info in infos),
        files=len(infos),
        distributions=sum(1 for info in infos if _METADATA.match(info.filename)),
    )


def _temporary_prefix(output: Path) -> str:
    """How the temporary files of an output begin (``stale.owner_tag()`` follows)."""
    return f".{output.name}."


def remove_stale_temporaries(output: Path) -> None:
    """Remove the temporary zips a killed run left next to ``output``."""
    remove_stale(output.parent, _temporary_prefix(output), ".tmp")


def _temporary_next_to(output: Path) -> Path:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(
            dir=output.parent, prefix=f"{_temporary_prefix(output)}{owner_tag()}.", suffix=".tmp"
        )
    except OSError as e:
        raise OutputError(
            f"Cannot write to {output.parent}: {e.strerror}.", "Pass a writable path to -o."
        ) from e
    os.close(descriptor)
    return Path(name)


def _write_one(
    ordered: list[Entry], output: Path, temporary: Path, timestamp: int, comment: bytes
) -> ArchiveStats:
    with temporary.open("wb") as handle:
        unzipped = _write_zip(ordered, handle, timestamp, comment)
        handle.flush()
        os.fsync(handle.fileno())
    return ArchiveStats(
        path=output,
        sha256=file_sha256(temporary),
        zipped_size=temporary.stat().st_size,
        unzipped_size=unzipped,
        files=len(ordered),
        distributions=sum(1 for entry in ordered if _METADATA.match(entry.name)),
    )


def _write_zip(entries: list[Entry], handle: IO[bytes], timestamp: int, comment: bytes) -> int:
    date_time = time.gmtime(timestamp)[:6]
    unzipped = 0
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.comment = comment
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = _UNIX
            mode = _EXECUTABLE_MODE if entry.executable else _FILE_MODE
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.file_size = entry.size
            with entry.open() as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            unzipped += entry.size
    return unzipped


def _sorted_unique(entries: Iterable[Entry]) -> list[Entry]:
    by_name: dict[str, Entry] = {}
    for entry in entries:
        _check_name(entry.name)
        if entry.name in by_name:
            raise ConflictError(
                entry.name, "two entries", "Rename the included file or exclude one of them."
            )
        by_name[entry.name] = entry
    return [by_name[name] for name in sorted(by_name)]


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise OutputError(f"Refusing an unsafe path in the package: {name!r}.")


def _resolve_link(archive: tarfile.TarFile, member: tarfile.TarInfo) -> tarfile.TarInfo:
    if member.issym():
        parent = PurePosixPath(member.name).parent
        target = PurePosixPath(os.path.normpath(parent / member.linkname))
    else:
        target = PurePosixPath(member.linkname)
    try:
        resolved = archive.getmember(target.as_posix())
    except KeyError:
        raise OutputError(
            f"{member.name} links to {member.linkname}, outside the installed tree.",
            "Such a link cannot be stored in a Lambda zip; report it to the package's authors.",
        ) from None
    if resolved.issym() or resolved.islnk():
        return _resolve_link(archive, resolved)
    return resolved


def _tar_entry(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> Entry:
    def open_member() -> IO[bytes]:
        handle = archive.extractfile(member)
        if handle is None:
            raise OutputError(f"Cannot read {member.name} from the build output.")
        return handle

    executable = bool(member.mode & stat.S_IXUSR)
    return Entry(name=name, size=member.size, executable=executable, open=open_member)


def _open_binary(path: Path) -> IO[bytes]:
    return path.open("rb")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
