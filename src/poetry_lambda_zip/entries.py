"""The entry model: a file of the package by its name in the zip, size, executable bit and
where its bytes are (a tree here, a builder's tar, a wheel's deflated member); reading trees
and tars into entries, writing entries into a tree, and hashing files."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import OutputError

if TYPE_CHECKING:
    import tarfile
    import zipfile
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = [
    "EXECUTABLE_MODE",
    "FILE_MODE",
    "Entry",
    "Known",
    "Shipped",
    "entries_below",
    "entries_from_files",
    "entries_from_tar",
    "executable",
    "external_attr",
    "file_sha256",
    "files_below",
    "files_sha256",
    "identity_of",
    "write_tree",
]


FILE_MODE = 0o644


EXECUTABLE_MODE = 0o755


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
        path.chmod(EXECUTABLE_MODE if entry.executable else FILE_MODE)


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


def external_attr(is_executable: bool) -> int:
    """A zip entry's ``external_attr`` for a regular file: 0755 or 0644, the only modes a
    zip this plugin writes holds."""
    return (stat.S_IFREG | (EXECUTABLE_MODE if is_executable else FILE_MODE)) << 16


def executable(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member (a wheel's, a zip's) is executable: its owner's x bit."""
    return bool((info.external_attr >> 16) & 0o100)
