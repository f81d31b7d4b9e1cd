"""Deterministic zip writer: sorted entries, fixed times, normalized modes, atomic output."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from collections import deque
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING
from typing import NamedTuple

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Iterator
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_EPOCH",
    "SEAL",
    "UNZIPPED_LIMIT",
    "ArchiveStats",
    "Entry",
    "Known",
    "Shipped",
    "entries_below",
    "entries_from_files",
    "entries_from_tar",
    "existing_stats",
    "file_sha256",
    "files_below",
    "files_sha256",
    "identity_of",
    "refuse_directory",
    "remove_stale_temporaries",
    "timestamp_from_environment",
    "write_tree",
    "write_zips_atomically",
    "zip_intact",
]

#: 1980-01-01T00:00:00Z, the earliest time a zip entry can carry.
DEFAULT_EPOCH = 315532800
#: 2107-12-31T23:59:58Z, the latest (DOS date and time, two-second steps).
LATEST_EPOCH = 4354819198
#: Lambda refuses a function whose code and layers unzip to more than this many bytes.
UNZIPPED_LIMIT = 262_144_000
_FILE_MODE = 0o644
_EXECUTABLE_MODE = 0o755
_UNIX = 3
#: A distribution's metadata at the zip root, or below a layer's python/.
_METADATA = re.compile(r"^(python/)?[^/]+\.dist-info/METADATA$")
#: The extra field (an ID of no registered format, no data) of an entry whose deflated bytes
#: are the wheel's that shipped the file, not this zlib's: a later build reuses only its own.
_FROM_WHEEL = struct.pack("<HH", 0x6C77, 0)
#: The signature a zip member's local header starts with.
_LOCAL_HEADER = b"PK\x03\x04"
#: The end of every zip this writer writes (of its comment, after what it was given): the
#: sha256 of every byte before the digest itself. A zip changed after it was written (``zip
#: -g``, an editor, a partial copy) no longer matches it (``zip_intact``).
SEAL = b" zip sha256:"
_SEALED = len(SEAL) + 64


@dataclass(frozen=True)
class Shipped:
    """Where the wheel that shipped a file holds it deflated: the member's local header and
    sizes, as the wheel's directory gave them when it was unpacked (``install_wheels``)."""

    wheel: Path
    header_offset: int
    compressed: int
    size: int


@dataclass(frozen=True)
class Known:
    """A file's sha256 as this build hashed it (unpacking it, or checking a kept tree), valid
    while the file is what it was then: the same inode, size, mtime and ctime."""

    sha256: str
    identity: tuple[int, int, int, int]

    @classmethod
    def of(cls, sha256: str, info: os.stat_result) -> Known:
        return cls(sha256, identity_of(info))

    def sha256_if_same(self, info: os.stat_result) -> str | None:
        return self.sha256 if identity_of(info) == self.identity else None


def identity_of(info: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file's bytes do (a rename of its directory does not)."""
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


@dataclass(frozen=True)
class Entry:
    """One file of the package: where it goes in the zip, and how to read it."""

    name: str
    size: int
    executable: bool
    open: Callable[[], IO[bytes]]
    #: The entry of this name in the zip an output replaces, unchanged (``patch``): its
    #: deflated bytes and CRC there are copied as they are.
    verbatim: bool = False
    #: The wheel member this file was unpacked from: its deflated bytes are copied into the
    #: zip when they inflate to exactly the file's bytes (else the file is deflated here).
    shipped: Shipped | None = None
    #: The hex sha256 of the entry's bytes, where this build knows it already (``Known``).
    sha256: str | None = None

    def with_bytes(self, data: bytes) -> Entry:
        """The same entry holding ``data`` instead: what described the old bytes (where a
        wheel or the replaced zip holds them deflated, their sha256) goes with them."""
        return replace(
            self,
            size=len(data),
            open=functools.partial(io.BytesIO, data),
            verbatim=False,
            shipped=None,
            sha256=None,
        )


@dataclass(frozen=True)
class ArchiveStats:
    path: Path
    sha256: str
    zipped_size: int
    unzipped_size: int
    files: int
    distributions: int

    @property
    def code_sha256(self) -> str:
        """Base64 of the zip's SHA-256: what Lambda reports as ``CodeSha256`` and Terraform's
        ``filebase64sha256()`` computes."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")


def timestamp_from_environment(environ: dict[str, str] | None = None) -> int:
    """``SOURCE_DATE_EPOCH`` when set (an earlier time than zip can store is 1980-01-01, a
    later one refused), else 1980-01-01."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return DEFAULT_EPOCH
    fix = "Unset it or set it to a Unix timestamp, e.g. $(git log -1 --format=%ct)."
    try:
        seconds = int(value)
    except ValueError:
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds.", fix
        ) from None
    if seconds > LATEST_EPOCH:
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={value} is after 2107-12-31 23:59:58 UTC, the last time a zip"
            " entry can hold.",
            fix,
        )
    return max(seconds, DEFAULT_EPOCH)


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


def entries_from_files(
    root: Path,
    files: Iterable[Path],
    shipped: Mapping[str, Shipped] | None = None,
    known: Mapping[str, Known] | None = None,
) -> list[Entry]:
    """Files (already checked to lie inside ``root``), named relative to it; ``shipped``:
    the wheel member each name was unpacked from, where it was; ``known``: each name's
    sha256, where it was hashed already."""
    return [_file_entry(root, path, path.stat(), shipped, known) for path in files]


def entries_below(
    root: Path,
    shipped: Mapping[str, Shipped] | None = None,
    known: Mapping[str, Known] | None = None,
) -> list[Entry]:
    """Every file below ``root`` (``files_below``), as ``entries_from_files`` makes them."""
    return [_file_entry(root, path, info, shipped, known) for path, info in files_below(root)]


def files_below(root: Path, *, links: bool = True) -> list[tuple[Path, os.stat_result]]:
    """The regular files below ``root`` with their ``stat``, sorted as their paths sort. A link
    to a directory is not entered; with ``links``, a link to a file counts as that file and any
    other link or special file is left out; without, either raises OSError."""
    found: list[tuple[tuple[str, ...], Path, os.stat_result]] = []
    pending: list[tuple[tuple[str, ...], Path]] = [((), root)]
    while pending:
        parts, directory = pending.pop()
        with os.scandir(directory) as listing:
            for item in listing:
                path = directory / item.name
                if item.is_dir(follow_symlinks=False):
                    pending.append(((*parts, item.name), path))
                elif item.is_file(follow_symlinks=links):
                    found.append(((*parts, item.name), path, item.stat(follow_symlinks=links)))
                elif not links:
                    raise OSError(f"{path} is not a regular file")
    found.sort(key=lambda item: item[0])
    return [(path, info) for _, path, info in found]


def _file_entry(
    root: Path,
    path: Path,
    info: os.stat_result,
    shipped: Mapping[str, Shipped] | None,
    known: Mapping[str, Known] | None,
) -> Entry:
    name = path.relative_to(root).as_posix()
    member = shipped.get(name) if shipped else None
    digest = known.get(name) if known else None
    return Entry(
        name=name,
        size=info.st_size,
        executable=bool(info.st_mode & stat.S_IXUSR),
        open=functools.partial(_open_binary, path),
        shipped=member if member is not None and member.size == info.st_size else None,
        sha256=digest.sha256_if_same(info) if digest is not None else None,
    )


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
    *,
    reuse: bool = True,
    count: Callable[[int, int], None] | None = None,
) -> list[ArchiveStats]:
    """Write every zip (path, entries, the zip's comment) to a temporary file next to its
    output, run ``check`` on all of them, then move them into place. With ``reuse``, the
    deflated bytes of an unchanged entry are taken from the zip an output replaces; ``count``
    is told the bytes written so far and in all.

    A failure at any point (including ``check``) leaves no partial file and every existing
    output untouched.
    """
    planned = [(output, _sorted_unique(entries), comment) for output, entries, comment in outputs]
    total = sum(entry.size for _, ordered, _ in planned for entry in ordered)
    for output, _, _ in planned:
        refuse_directory(output)
    temporaries: list[Path] = []
    try:
        written: list[ArchiveStats] = []
        for output, ordered, comment in planned:
            temporary = _temporary_next_to(output)
            temporaries.append(temporary)
            previous = output if reuse else None
            written.append(
                _write_one(
                    ordered,
                    output,
                    temporary,
                    timestamp,
                    comment,
                    previous=previous,
                    count=_counter(count, base=sum(s.unzipped_size for s in written), total=total),
                )
            )
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


def zip_intact(path: Path) -> bool:
    """Whether the file at ``path`` is a zip as this writer sealed it (``SEAL``): every byte
    the digest at its end covers is as written. False for anything else, unreadable too."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size < _SEALED:
                return False
            handle.seek(size - _SEALED)
            tail = handle.read(_SEALED)
            if not tail.startswith(SEAL):
                return False
            handle.seek(0)
            return _sha256_of(handle, size - 64).hexdigest().encode() == tail[len(SEAL) :]
    except OSError:
        return False


def _sha256_of(handle: IO[bytes], size: int) -> hashlib._Hash:
    """The sha256 of the next ``size`` bytes of ``handle`` (fewer where it ends sooner)."""
    digest = hashlib.sha256()
    while size > 0:
        block = handle.read(min(size, 1 << 20))
        if not block:
            break
        digest.update(block)
        size -= len(block)
    return digest


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


def _counter(
    count: Callable[[int, int], None] | None, *, base: int, total: int
) -> Callable[[int], None] | None:
    """``count`` for one zip of several: bytes of this one, plus those before it."""
    if count is None:
        return None
    return lambda done: count(base + done, total)


def _write_one(
    ordered: list[Entry], output: Path, temporary: Path, timestamp: int, comment: bytes, *,
    previous: Path | None, count: Callable[[int], None] | None = None,
) -> ArchiveStats:  # fmt: skip
    """One zip, sealed: its comment ends with the sha256 of every byte before the digest."""
    with temporary.open("w+b") as handle:
        unsealed = comment + SEAL + b"0" * 64
        unzipped = _write_zip(ordered, handle, timestamp, unsealed, previous=previous, count=count)
        size = handle.tell()
        handle.seek(0)
        digest = _sha256_of(handle, size - 64)
        sealed = digest.hexdigest().encode()
        handle.seek(size - 64)
        handle.write(sealed)
        digest.update(sealed)  # now the whole file's
        handle.flush()
        os.fsync(handle.fileno())
    return ArchiveStats(
        path=output,
        sha256=digest.hexdigest(),
        zipped_size=size,
        unzipped_size=unzipped,
        files=len(ordered),
        distributions=sum(1 for entry in ordered if _METADATA.match(entry.name)),
    )


def _write_zip(
    entries: list[Entry],
    handle: IO[bytes],
    timestamp: int,
    comment: bytes,
    *,
    previous: Path | None = None,
    count: Callable[[int], None] | None = None,
) -> int:
    """Write the zip: each entry's deflated bytes copied from the wheel that shipped it where
    they inflate to exactly its bytes, else taken from ``previous`` (the zip this one
    replaces) where the entry did not change, else deflated here, several in parallel (zlib
    releases the GIL). The bytes deflated here are what ``zipfile`` writes itself (a test holds
    the two to that)."""
    date_time = time.gmtime(timestamp)[:6]
    unzipped = 0
    reuse = _Previous.open(previous)
    try:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.comment = comment
            for entry, deflated in _deflated(entries, reuse):
                info = zipfile.ZipInfo(entry.name, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = _UNIX
                mode = _EXECUTABLE_MODE if entry.executable else _FILE_MODE
                info.external_attr = (stat.S_IFREG | mode) << 16
                _add_deflated(archive, handle, info, size=entry.size, deflated=deflated)
                unzipped += entry.size
                if count is not None:
                    count(unzipped)
    finally:
        if reuse is not None:
            reuse.close()
    return unzipped


class _Deflated(NamedTuple):
    """An entry's CRC and deflated bytes, and whether those are the wheel's that shipped it."""

    crc: int
    data: bytes
    from_wheel: bool = False


def _add_deflated(
    archive: zipfile.ZipFile, handle: IO[bytes], info: zipfile.ZipInfo, *, size: int,
    deflated: _Deflated,
) -> None:  # fmt: skip
    """Add an entry whose data is already deflated, as ``ZipFile.open(info, "w")`` writes it
    to a seekable file: the local header with the final sizes and CRC, then the data."""
    info.flag_bits = 0
    info.file_size = size
    info.compress_size = len(deflated.data)
    info.CRC = deflated.crc
    info.extra = _FROM_WHEEL if deflated.from_wheel else b""
    info.header_offset = handle.tell()
    handle.write(info.FileHeader(zip64=size * 1.05 > zipfile.ZIP64_LIMIT))
    handle.write(deflated.data)
    archive.filelist.append(info)
    archive.NameToInfo[info.filename] = info
    archive.start_dir = handle.tell()


#: Deflated bytes done and waiting for the entries before them to be written, at most (peak
#: memory). A large entry at the head does not stop the others' deflating.
_WAITING = 32 << 20
#: Entries submitted ahead of the one to be written next, at most.
_AHEAD = 1024


def _deflated(
    entries: list[Entry], previous: _Previous | None
) -> Iterator[tuple[Entry, _Deflated]]:
    """Each entry with its deflated bytes, in order; several made at once."""
    waiting = _Waiting()

    def deflate(entry: Entry) -> _Deflated:
        deflated = _deflate(entry, previous)
        waiting.add(len(deflated.data))
        return deflated

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pending: deque[tuple[Entry, Future[_Deflated]]] = deque()
        for entry in entries:
            copied = previous.verbatim(entry) if entry.verbatim and previous else None
            if copied is not None:  # a copy needs no worker (a patch copies most entries)
                done: Future[_Deflated] = Future()
                done.set_result(copied)
                waiting.add(len(copied.data))
                pending.append((entry, done))
            else:
                pending.append((entry, pool.submit(deflate, entry)))
            while pending and (
                pending[0][1].done() or waiting.bytes > _WAITING or len(pending) > _AHEAD
            ):
                yield _written(pending.popleft(), waiting)
        while pending:
            yield _written(pending.popleft(), waiting)


class _Waiting:
    """Deflated bytes done and not yet written (added by the workers, taken by the writer)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.bytes += size


def _written(head: tuple[Entry, Future[_Deflated]], waiting: _Waiting) -> tuple[Entry, _Deflated]:
    entry, future = head
    deflated = future.result()
    waiting.add(-len(deflated.data))
    return entry, deflated


#: How much of a file is read at a time.
_CHUNK = 1 << 20


#: Entries up to this size are read whole when the zip being replaced may hold them: one
#: read serves the CRC, the comparison with its bytes there and, if need be, deflating.
_WHOLE = 8 << 20


def _deflate(entry: Entry, previous: _Previous | None) -> _Deflated:
    """The entry's CRC and deflated bytes: the wheel's that shipped it where they inflate to
    exactly its bytes, else reused from ``previous`` where they are the same entry's, else
    deflated here, a chunk at a time (memory: the deflated bytes)."""
    data = _read_whole(entry) if entry.size <= _WHOLE else None
    if entry.shipped is not None:
        copied = _from_wheel(entry, entry.shipped, data)
        if copied is not None:
            return copied
    if previous is None:
        return _Deflated(*_compress_file(entry, data))
    if data is not None:
        crc = zlib.crc32(data)
        reused = previous.deflated(entry, crc, data)
        return (
            _Deflated(crc, reused)
            if reused is not None
            else _Deflated(*_compress_file(entry, data))
        )
    crc = _crc(entry)
    reused = previous.deflated(entry, crc)
    if reused is not None:
        return _Deflated(crc, reused)
    again, deflated = _compress_file(entry)
    if again != crc:
        raise OutputError(f"{entry.name} changed while it was packaged.")
    return _Deflated(crc, deflated)


def _from_wheel(entry: Entry, shipped: Shipped, data: bytes | None) -> _Deflated | None:
    """The deflated bytes of the wheel member ``shipped`` names, if they inflate to exactly
    the entry's bytes (``data`` when the caller read them): the wheel is read again, not
    trusted (it may have changed since it was unpacked, or the file since)."""
    # No larger than deflating the file could make it: a kept tree's record is not trusted to
    # say how much to read.
    if shipped.compressed > shipped.size + shipped.size // 8 + 1024:
        return None
    try:
        descriptor = os.open(shipped.wheel, os.O_RDONLY)
    except OSError:
        return None
    try:
        deflated = _member_data(descriptor, shipped.header_offset, shipped.compressed)
    finally:
        os.close(descriptor)
    if deflated is None:
        return None
    crc = _inflated_crc(entry, deflated, data)
    return None if crc is None else _Deflated(crc, deflated, from_wheel=True)


def _member_data(descriptor: int, header_offset: int, compressed: int) -> bytes | None:
    """A zip member's data as stored, read after its local header at ``header_offset``; None
    when that header is not one, the data is not deflated or is encrypted, or is short."""
    try:
        header = os.pread(descriptor, 30, header_offset)
        if len(header) != 30 or header[:4] != _LOCAL_HEADER:
            return None
        flags, method = struct.unpack("<HH", header[6:10])
        if method != zipfile.ZIP_DEFLATED or flags & 0x1:
            return None
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        deflated = os.pread(descriptor, compressed, header_offset + 30 + name_length + extra_length)
    except OSError:
        return None
    return deflated if len(deflated) == compressed else None


def _inflated_crc(entry: Entry, deflated: bytes, data: bytes | None) -> int | None:
    """The CRC of the entry's bytes, if ``deflated`` inflates to exactly them and ends there
    (nothing after the stream, nothing beyond the entry's size: a bomb inflates no further);
    else None. ``data``: the entry's bytes when the caller read them, else read a chunk at a
    time."""
    inflater = zlib.decompressobj(-15)
    try:
        if data is not None:
            same, crc = inflater.decompress(deflated, entry.size + 1) == data, zlib.crc32(data)
        else:
            same, crc = _inflates_to(entry, inflater, deflated)
    except zlib.error:
        return None
    ended = inflater.eof and not inflater.unused_data and not inflater.unconsumed_tail
    return crc if same and ended else None


def _inflates_to(entry: Entry, inflater: zlib._Decompress, deflated: bytes) -> tuple[bool, int]:
    """Whether ``deflated`` inflates to the entry's bytes (compared a chunk at a time), and
    their CRC."""
    crc, size, rest = 0, 0, deflated
    with entry.open() as source:
        while not inflater.eof:
            piece = inflater.decompress(rest, _CHUNK)
            rest = inflater.unconsumed_tail
            if not piece:
                break  # the input ran out before the stream's end
            size += len(piece)
            if size > entry.size or source.read(len(piece)) != piece:
                return False, 0
            crc = zlib.crc32(piece, crc)
        return size == entry.size and not source.read(1), crc


def _read_whole(entry: Entry) -> bytes:
    with entry.open() as source:
        data = source.read(entry.size + 1)
    if len(data) != entry.size:
        raise OutputError(f"{entry.name} changed while it was packaged ({len(data)} bytes).")
    return data


def _compress_file(entry: Entry, data: bytes | None = None) -> tuple[int, bytes]:
    """The entry's CRC and deflated bytes: from ``data`` when they were read already, else
    read a chunk at a time."""
    if data is not None:
        return zlib.crc32(data), _compress(data)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    deflated = bytearray()
    crc, size = 0, 0
    with entry.open() as source:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            deflated += compressor.compress(chunk)
    deflated += compressor.flush()
    if size != entry.size:
        raise OutputError(f"{entry.name} changed while it was packaged ({size} bytes).")
    return crc, bytes(deflated)


def _crc(entry: Entry) -> int:
    crc, size = 0, 0
    with entry.open() as source:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    if size != entry.size:
        raise OutputError(f"{entry.name} changed while it was packaged ({size} bytes).")
    return crc


def _compress(data: bytes) -> bytes:
    """What zipfile's writer makes of ``data`` (ZIP_DEFLATED, zlib's default level)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


class _Previous:
    """The zip an output replaces, as a source of deflated bytes: an entry's are reused when
    the new entry has the same name, size and CRC and they inflate to exactly its bytes, and
    only once this zlib was seen to deflate as that zip's writer did (one entry compared)."""

    def __init__(self, path: Path, archive: zipfile.ZipFile) -> None:
        self._archive = archive
        self._descriptor = os.open(path, os.O_RDONLY)
        self._infos = {info.filename: info for info in archive.infolist()}
        self._lock = threading.Lock()
        self._same_zlib: bool | None = None

    @classmethod
    def open(cls, path: Path | None) -> _Previous | None:
        if path is None or not path.is_file():  # not a FIFO or device: nothing to read there
            return None
        try:
            return cls(path, zipfile.ZipFile(path))
        except (OSError, zipfile.BadZipFile):
            return None

    def close(self) -> None:
        os.close(self._descriptor)
        self._archive.close()

    def verbatim(self, entry: Entry) -> _Deflated | None:
        """The CRC and deflated bytes of the entry of ``entry``'s name, as stored (and
        whether a wheel deflated them). Not inflated again: the caller vouches for this zip
        (``patch``: its stamp saw it as this plugin wrote it, as the no-op shortcut does)."""
        info = self._infos.get(entry.name)
        if info is None or info.file_size != entry.size:
            return None
        deflated = self._raw(info)
        if deflated is None:
            return None
        return _Deflated(info.CRC, deflated, from_wheel=info.extra == _FROM_WHEEL)

    def _raw(self, info: zipfile.ZipInfo) -> bytes | None:
        """An entry's deflated bytes as stored (None: not deflated, encrypted, or unreadable)."""
        if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x9:
            return None
        return _member_data(self._descriptor, info.header_offset, info.compress_size)

    def deflated(self, entry: Entry, crc: int, data: bytes | None = None) -> bytes | None:
        """The entry's deflated bytes in this zip, if they inflate to exactly its bytes
        (``data`` when the caller has them, else read again from the entry)."""
        info = self._infos.get(entry.name)
        if info is None or info.file_size != entry.size or crc != info.CRC:
            return None
        if info.extra == _FROM_WHEEL:
            return None  # a wheel's deflated bytes: this build deflates such an entry itself
        deflated = self._raw(info)
        if deflated is None or _inflated_crc(entry, deflated, data) != crc:
            return None
        return deflated if self._deflates_alike(entry, data, deflated) else None

    def _deflates_alike(self, entry: Entry, data: bytes | None, deflated: bytes) -> bool:
        """Whether this zlib deflates as the previous zip's writer did: decided on the first
        reusable entry that tells (4 KiB or more that deflate to under 90 %; small or random
        data deflate alike at every level), deflated again and compared. Until then nothing
        is reused, so a reuse build is the build from scratch."""
        with self._lock:
            if self._same_zlib is None:
                size = entry.size
                telling = 4096 <= size <= _WAITING and len(deflated) * 10 < size * 9
                if not telling:
                    return False
                whole = data if data is not None else _read_whole(entry)
                self._same_zlib = _compress(whole) == deflated
            return self._same_zlib


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


def files_sha256(paths: Sequence[Path]) -> list[str]:
    """``file_sha256`` of each path, in order, several at once (hashlib and reads release the
    GIL): a tree of 100 MB is read at the disk's pace, not one core's."""
    if len(paths) < 2:
        return [file_sha256(path) for path in paths]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(file_sha256, paths))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
