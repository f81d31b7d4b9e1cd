"""Deflate, and the reuse of deflated bytes: a dependency's file keeps the bytes its wheel
holds for it, an unchanged entry those of the zip it replaces (each checked to inflate to
exactly the entry), the rest deflated here in parallel within a memory bound."""

from __future__ import annotations

import os
import struct
import threading
import zipfile
import zlib
from collections import deque
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from typing import NamedTuple

from poetry_lambda_zip.errors import OutputError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from poetry_lambda_zip.entries import Entry
    from poetry_lambda_zip.entries import Shipped

__all__ = ["FROM_WHEEL", "Deflated", "Previous", "deflated"]


#: The extra field (an ID of no registered format, no data) of an entry whose deflated bytes
#: are the wheel's that shipped the file, not this zlib's: a later build reuses only its own.
FROM_WHEEL = struct.pack("<HH", 0x6C77, 0)


#: The signature a zip member's local header starts with.
_LOCAL_HEADER = b"PK\x03\x04"


class Deflated(NamedTuple):
    """An entry's CRC and deflated bytes, and whether those are the wheel's that shipped it."""

    crc: int
    data: bytes
    from_wheel: bool = False


#: Deflated bytes done and waiting for the entries before them to be written, at most (peak
#: memory). A large entry at the head does not stop the others' deflating.
_WAITING = 32 << 20


#: Entries submitted ahead of the one to be written next, at most.
_AHEAD = 1024


def deflated(entries: list[Entry], previous: Previous | None) -> Iterator[tuple[Entry, Deflated]]:
    """Each entry with its deflated bytes, in order; several made at once."""
    waiting = _Waiting()

    def deflate(entry: Entry) -> Deflated:
        deflated = _deflate(entry, previous)
        waiting.add(len(deflated.data))
        return deflated

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pending: deque[tuple[Entry, Future[Deflated]]] = deque()
        for entry in entries:
            copied = previous.verbatim(entry) if entry.verbatim and previous else None
            if copied is not None:  # a copy needs no worker (a patch copies most entries)
                done: Future[Deflated] = Future()
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


def _written(head: tuple[Entry, Future[Deflated]], waiting: _Waiting) -> tuple[Entry, Deflated]:
    entry, future = head
    deflated = future.result()
    waiting.add(-len(deflated.data))
    return entry, deflated


#: How much of a file is read at a time.
_CHUNK = 1 << 20


#: Entries up to this size are read whole when the zip being replaced may hold them: one
#: read serves the CRC, the comparison with its bytes there and, if need be, deflating.
_WHOLE = 8 << 20


def _deflate(entry: Entry, previous: Previous | None) -> Deflated:
    """The entry's CRC and deflated bytes: the wheel's that shipped it where they inflate to
    exactly its bytes, else reused from ``previous`` where they are the same entry's, else
    deflated here, a chunk at a time (memory: the deflated bytes)."""
    data = _read_whole(entry) if entry.size <= _WHOLE else None
    if entry.shipped is not None:
        copied = _from_wheel(entry, entry.shipped, data)
        if copied is not None:
            return copied
    if previous is None:
        return Deflated(*_compress_file(entry, data))
    if data is not None:
        crc = zlib.crc32(data)
        reused = previous.deflated(entry, crc, data)
        return (
            Deflated(crc, reused) if reused is not None else Deflated(*_compress_file(entry, data))
        )
    crc = _crc(entry)
    reused = previous.deflated(entry, crc)
    if reused is not None:
        return Deflated(crc, reused)
    again, deflated = _compress_file(entry)
    if again != crc:
        raise OutputError(f"{entry.name} changed while it was packaged.")
    return Deflated(crc, deflated)


def _from_wheel(entry: Entry, shipped: Shipped, data: bytes | None) -> Deflated | None:
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
    return None if crc is None else Deflated(crc, deflated, from_wheel=True)


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


class Previous:
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
    def open(cls, path: Path | None) -> Previous | None:
        if path is None or not path.is_file():  # not a FIFO or device: nothing to read there
            return None
        try:
            return cls(path, zipfile.ZipFile(path))
        except (OSError, zipfile.BadZipFile):
            return None

    def close(self) -> None:
        os.close(self._descriptor)
        self._archive.close()

    def verbatim(self, entry: Entry) -> Deflated | None:
        """The CRC and deflated bytes of the entry of ``entry``'s name, as stored (and
        whether a wheel deflated them). Not inflated again: the caller vouches for this zip
        (``patch``: its stamp saw it as this plugin wrote it, as the no-op shortcut does)."""
        info = self._infos.get(entry.name)
        if info is None or info.file_size != entry.size:
            return None
        deflated = self._raw(info)
        if deflated is None:
            return None
        return Deflated(info.CRC, deflated, from_wheel=info.extra == FROM_WHEEL)

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
        if info.extra == FROM_WHEEL:
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
