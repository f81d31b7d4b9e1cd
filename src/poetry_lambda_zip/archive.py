"""The deterministic, atomic zip writer: sorted entries, fixed times, normalized modes, each zip
sealed with the sha256 of its bytes and moved into place only once all are written; what
SOURCE_DATE_EPOCH and Lambda's size limit allow."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING

from poetry_lambda_zip.deflate import FROM_WHEEL
from poetry_lambda_zip.deflate import Deflated
from poetry_lambda_zip.deflate import Previous
from poetry_lambda_zip.deflate import deflated as deflated_entries
from poetry_lambda_zip.entries import external_attr
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.stale import owner_tag
from poetry_lambda_zip.stale import remove_stale

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence

    from poetry_lambda_zip.entries import Entry

__all__ = [
    "DEFAULT_EPOCH",
    "LATEST_EPOCH",
    "SEAL",
    "UNZIPPED_LIMIT",
    "ArchiveStats",
    "existing_stats",
    "forget_seals",
    "refuse_directory",
    "remove_stale_temporaries",
    "sealed_sha256",
    "timestamp_from_environment",
    "too_large",
    "write_zips_atomically",
    "zip_intact",
]

#: 1980-01-01T00:00:00Z, the earliest time a zip entry can carry.
DEFAULT_EPOCH = 315532800
#: 2107-12-31T23:59:58Z, the latest (DOS date and time, two-second steps).
LATEST_EPOCH = 4354819198
#: Lambda refuses a function whose code and layers unzip to more than this many bytes.
UNZIPPED_LIMIT = 262_144_000
_UNIX = 3
#: A distribution's metadata at the zip root, or below a layer's python/.
_METADATA = re.compile(r"^(python/)?[^/]+\.dist-info/METADATA$")
#: The end of every zip this writer writes (of its comment, after what it was given): the
#: sha256 of every byte before the digest itself. A zip changed after it was written (``zip
#: -g``, an editor, a partial copy) no longer matches it (``zip_intact``).
SEAL = b" zip sha256:"
_SEALED = len(SEAL) + 64


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


def too_large(
    what: str, total: int, sizes: Mapping[str, int], fix: str, plan: str = ""
) -> OutputError:
    """Lambda's size limit, said one way wherever it is met: what comes to how many bytes, the
    limit, and the ten largest parts (``sizes``: bytes by name), then the ``plan`` (``fit``)."""
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:10]
    table = "\n".join(f"  {size / 1e6:8.1f} MB  {name}" for name, size in largest)
    return OutputError(
        f"{what} {total:,} bytes; Lambda allows at most {UNZIPPED_LIMIT:,} unzipped for a"
        f" function and its layers ({total - UNZIPPED_LIMIT:,} over). The largest:\n{table}"
        + (f"\n{plan}" if plan else ""),
        fix,
    )


def refuse_directory(output: Path) -> None:
    """An output path must name a file (checked in the plan, and again before writing)."""
    if output.is_dir():
        raise OutputError(f"The output path {output} is a directory.", "Pass a file name to -o.")


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
            temporary = temporary_next_to(output)
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
        sha256=sealed_sha256(path) or file_sha256(path),
        zipped_size=path.stat().st_size,
        unzipped_size=sum(info.file_size for info in infos),
        files=len(infos),
        distributions=sum(1 for info in infos if _METADATA.match(info.filename)),
    )


def zip_intact(path: Path) -> bool:
    """Whether the file at ``path`` is a zip as this writer sealed it (``SEAL``): every byte
    the digest at its end covers is as written. False for anything else, unreadable too."""
    return sealed_sha256(path) is not None


def sealed_sha256(path: Path) -> str | None:
    """The whole file's sha256 when it is a zip as this writer sealed it, else None. Read
    once per state of the file (size, mtime, ctime, inode: a write changes the ctime, a
    rename the inode) until ``forget_seals``: a layer shared by many functions, or checked by
    the stamps and again by the patch, is hashed once a run."""
    try:
        info = path.stat()
    except OSError:
        return None
    state = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)
    return _sealed_sha256(os.path.abspath(path), state)


def forget_seals() -> None:
    """Check every zip again (each run starts so: a file system's ctime may tick coarsely)."""
    _sealed_sha256.cache_clear()


@functools.lru_cache(maxsize=256)
def _sealed_sha256(path: str, state: tuple[int, ...]) -> str | None:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size != state[0] or size < _SEALED:
                return None
            handle.seek(size - _SEALED)
            tail = handle.read(_SEALED)
            if not tail.startswith(SEAL):
                return None
            handle.seek(0)
            digest = _sha256_of(handle, size - 64)
            if digest.hexdigest().encode() != tail[len(SEAL) :]:
                return None
            digest.update(tail[len(SEAL) :])
            return digest.hexdigest()
    except OSError:
        return None


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


def temporary_next_to(output: Path) -> Path:
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
    reuse = Previous.open(previous)
    try:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.comment = comment
            for entry, deflated in deflated_entries(entries, reuse):
                info = zipfile.ZipInfo(entry.name, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = _UNIX
                info.external_attr = external_attr(entry.executable)
                _add_deflated(archive, handle, info, size=entry.size, deflated=deflated)
                unzipped += entry.size
                if count is not None:
                    count(unzipped)
    finally:
        if reuse is not None:
            reuse.close()
    return unzipped


def _add_deflated(
    archive: zipfile.ZipFile, handle: IO[bytes], info: zipfile.ZipInfo, *, size: int,
    deflated: Deflated,
) -> None:  # fmt: skip
    """Add an entry whose data is already deflated, as ``ZipFile.open(info, "w")`` writes it
    to a seekable file: the local header with the final sizes and CRC, then the data."""
    info.flag_bits = 0
    info.file_size = size
    info.compress_size = len(deflated.data)
    info.CRC = deflated.crc
    info.extra = FROM_WHEEL if deflated.from_wheel else b""
    info.header_offset = handle.tell()
    handle.write(info.FileHeader(zip64=size * 1.05 > zipfile.ZIP64_LIMIT))
    handle.write(deflated.data)
    archive.filelist.append(info)
    archive.NameToInfo[info.filename] = info
    archive.start_dir = handle.tell()


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
