"""The target's wheels installed on this machine, for every builder, with pypa/installer and
every check it makes: each wheel must be the distribution the lock pins, match its RECORD and
stay inside the tree; files land where ``pip install --target`` puts them; the declared sizes
are checked against Lambda's limit before anything is unpacked."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import posixpath
import shutil
import threading
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from typing import BinaryIO
from typing import NamedTuple
from typing import cast

import installer
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.exceptions import InvalidWheelSource
from installer.records import Hash
from installer.records import RecordEntry
from installer.sources import WheelFile
from installer.utils import copyfileobj_with_hashing
from installer.utils import parse_metadata_file
from packaging.utils import canonicalize_name
from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion
from packaging.version import Version

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import too_large
from poetry_lambda_zip.entries import EXECUTABLE_MODE
from poetry_lambda_zip.entries import FILE_MODE
from poetry_lambda_zip.entries import Known
from poetry_lambda_zip.entries import Shipped
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import LambdaZipError
from poetry_lambda_zip.fit import BYTECODE_PER_SOURCE
from poetry_lambda_zip.fit import Part
from poetry_lambda_zip.fit import SizeEstimate
from poetry_lambda_zip.fit import size_plan
from poetry_lambda_zip.tree_steps import LAMBDA_PYTHON
from poetry_lambda_zip.tree_steps import merge_trees

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Iterator
    from collections.abc import Sequence

    from installer.scripts import ScriptSection
    from installer.sources import WheelContentElement
    from installer.utils import Scheme
    from packaging.utils import NormalizedName

    from poetry_lambda_zip.fit import FitOptions
    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "UNPACK_BOUND",
    "PinnedWheel",
    "Unpacked",
    "add_project_files",
    "check_wheel_sizes",
    "estimate_sizes",
    "install_wheels",
]

#: Where ``pip install --target`` puts each scheme of a wheel, below the target;
#: ``{python}`` is the runtime's X.Y, ``{name}`` the distribution's canonical name.
_PLACES = {
    "purelib": "",
    "platlib": "",
    "data": "",
    "scripts": "bin",
    "headers": "include/site/python{python}/{name}",
}
# pypa/installer skips a wheel's own __pycache__ files with a RuntimeWarning (numpy's wheels
# ship one); pip skips them silently, and so do we: the bytecode is compiled for the target.
warnings.filterwarnings("ignore", message=r"Skip installing .*__pycache__", category=RuntimeWarning)

#: What to do when the wheels' declared sizes are over even the bound on unpacking.
_SIZE_FIX = (
    "Leave out distributions the runtime provides (--exclude-package), or ship a container"
    " image instead."
)
#: However much pruning would remove afterwards, no set is unpacked whose members declare more
#: than this: unpacking is bounded by the declared sizes (no member yields more than it
#: declares), and the declared sizes by this.
UNPACK_BOUND = 4 * UNZIPPED_LIMIT


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel file and the distribution it must hold: the lock's name and version for a
    dependency (a fetched file's name proves nothing), the project's for its own wheel."""

    path: Path
    name: NormalizedName
    version: str
    #: Built here from the project by poetry-core, not fetched.
    built_here: bool = False

    @classmethod
    def of_requirement(cls, requirement: Requirement, path: Path) -> PinnedWheel:
        return cls(path, requirement.name, requirement.version)

    @classmethod
    def of_project(cls, path: Path) -> PinnedWheel:
        """The project's wheel, just built: its file name is poetry-core's, not an index's."""
        name, version, _, _ = parse_wheel_filename(path.name)
        return cls(path, name, str(version), built_here=True)

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.path.name})"


class Unpacked(NamedTuple):
    """What unpacking learned of the tree's files, by path in it: where a fetched wheel holds
    each one deflated, and each one's sha256."""

    shipped: dict[str, Shipped]
    known: dict[str, Known]


def install_wheels(
    wheels: Sequence[PinnedWheel],
    target: Path,
    python_version: str,
    fit: FitOptions | None = None,
) -> Unpacked:
    """Install wheels into one tree, where ``pip install --target`` puts their files, with
    every check pypa/installer makes: each must be the distribution it is pinned to, match its
    RECORD and stay inside ``target``; a path two of them install must hold the same bytes.
    Nothing is written when their declared sizes, less what ``fit``'s pruning would remove and
    plus the bytecode compiling would add, already exceed Lambda's limit. Each member
    is checked against RECORD as it is unpacked (read once): a wheel that fails a check stops
    the build, and its tree (in the build's scratch directory) is never packaged.

    Wheels that may install into the same top-level directory are unpacked one after another,
    in order; the others at the same time (one per core). Returns where a fetched wheel holds
    each file it installed deflated (for the zip to copy those bytes rather than deflate the
    file again, ``archive``) and the sha256 each was checked to have (nothing hashes it
    again while it stays as written)."""
    listings = [_listing(wheel) for wheel in wheels]
    _check_declared_size(list(zip(wheels, listings)), python_version, fit)
    target.mkdir(parents=True, exist_ok=True)
    tree = _Tree(target, python_version)

    def install(chain: list[int]) -> tuple[int, LambdaZipError] | None:
        """The wheels of one chain, in order; the first failure, by the wheel's number."""
        for number in chain:
            try:
                _install_wheel(wheels[number], number, tree)
            except _Stopped:
                return None
            except LambdaZipError as e:
                tree.failed(number)
                return number, e
        return None

    chains = _chains(wheels, listings, python_version)
    workers = min(len(chains), os.cpu_count() or 1)
    if workers <= 1:
        failures = [install(chain) for chain in chains]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = [pool.submit(install, chain) for chain in chains]
            try:
                failures = [future.result() for future in pending]
            except BaseException:  # interrupted: every wheel stops at its next file
                tree.failed(-1)
                raise
    failed = sorted((f for f in failures if f is not None), key=lambda failure: failure[0])
    if failed:  # the first wheel that fails, as one after another finds it (``_chains``)
        raise failed[0][1]
    return Unpacked(tree.shipped, tree.known)


@dataclass
class _Tree:
    """The tree the wheels are installed into, shared by the threads that unpack them:
    ``written`` (installed path -> wheel), ``shipped`` (-> where the wheel holds it) and
    ``known`` (-> its sha256) each get a path from one of them only (``_chains``). Once a
    wheel failed, the wheels after it stop at their next file (one before it may still fail
    first)."""

    root: Path
    python_version: str
    written: dict[str, PinnedWheel] = field(default_factory=dict)
    shipped: dict[str, Shipped] = field(default_factory=dict)
    known: dict[str, Known] = field(default_factory=dict)
    #: The number of the first wheel that failed so far.
    first_failed: float = float("inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, number: int) -> None:
        with self._lock:
            self.first_failed = min(self.first_failed, number)


class _Stopped(Exception):
    """A wheel before this one failed (or the build was interrupted): it stops unpacking."""


def _listing(wheel: PinnedWheel) -> list[zipfile.ZipInfo]:
    """A wheel's members, as its zip directory declares them."""
    try:
        with zipfile.ZipFile(wheel.path) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise _wheel_error(wheel, e) from e


def _chains(
    wheels: Sequence[PinnedWheel], listings: Sequence[list[zipfile.ZipInfo]], python_version: str
) -> list[list[int]]:
    """The wheels (by number) in chains that install into no common top-level name: only
    wheels of one chain can clash (a namespace package's shared ``__init__.py``, a file where
    another needs a directory), and those are unpacked in order, as one after another would.
    Largest chain first."""
    owner: dict[str, int] = {}
    parent = list(range(len(wheels)))

    def root(number: int) -> int:
        while parent[number] != number:
            number = parent[number]
        return number

    for number, (wheel, listing) in enumerate(zip(wheels, listings)):
        for top in _top_levels(wheel, listing, python_version):
            if top in owner:
                first, second = root(owner[top]), root(number)
                parent[max(first, second)] = min(first, second)
            else:
                owner[top] = number
    chains: dict[int, list[int]] = {}
    for number in range(len(wheels)):
        chains.setdefault(root(number), []).append(number)
    sizes = [sum(info.file_size for info in listing) for listing in listings]
    return sorted(chains.values(), key=lambda chain: -sum(sizes[number] for number in chain))


def _top_levels(
    wheel: PinnedWheel, listing: list[zipfile.ZipInfo], python_version: str
) -> set[str]:
    """Every top-level name a wheel's members may install at, over-counted: a ``.data``
    directory's member counts both where its scheme puts it and as it is named."""
    places = {
        scheme: place.format(python=python_version, name=wheel.name)
        for scheme, place in _PLACES.items()
    }
    tops = set()
    for info in listing:
        parts = posixpath.normpath(info.filename).split("/")
        tops.add(parts[0])
        if len(parts) > 2 and parts[0].endswith(".data"):
            installed = posixpath.join(places.get(parts[1], parts[1]), *parts[2:])
            tops.add(posixpath.normpath(installed).split("/")[0])
    return tops


def check_wheel_sizes(
    wheels: Sequence[PinnedWheel], python_version: str, fit: FitOptions | None = None
) -> None:
    """``install_wheels``'s size check alone: from the wheels' zip directories, nothing read."""
    _check_declared_size([(wheel, _listing(wheel)) for wheel in wheels], python_version, fit)


def estimate_sizes(
    wheels: Sequence[PinnedWheel], python_version: str, fit: FitOptions, missing: int
) -> SizeEstimate:
    """The dependencies' size as ``fit`` would ship them, from the wheels' zip directories
    (``--dry-run``); ``missing``: distributions without a wheel here, not counted."""
    listings = [(wheel, _listing(wheel)) for wheel in wheels]
    plan = size_plan(_parts(listings, python_version), fit, bytecode_built=False)
    declared = sum(info.file_size for _, listing in listings for info in listing)
    deflated = sum(info.compress_size for _, listing in listings for info in listing)
    zipped = int(plan.total * deflated / declared) if declared else 0
    return SizeEstimate(plan, zipped, len(wheels), missing)


def _parts(
    listings: Sequence[tuple[PinnedWheel, list[zipfile.ZipInfo]]], python_version: str
) -> list[Part]:
    return [
        Part(wheel.name, path, info.file_size)
        for wheel, listing in listings
        for info in listing
        if (path := _installed_path(wheel, info.filename, python_version)) is not None
    ]


def _check_declared_size(
    listings: Sequence[tuple[PinnedWheel, list[zipfile.ZipInfo]]],
    python_version: str,
    fit: FitOptions | None,
) -> None:
    """Refuse wheels whose files would come to more than Lambda allows unzipped, from the
    sizes their zip directories declare (no member is read): a small wheel may unpack to
    gigabytes. With ``fit``, what its excludes and slimming would remove is left out and the
    bytecode compiling adds is estimated in; never is more than ``UNPACK_BOUND`` unpacked.
    Unpacking never yields more than a member declares, so nothing larger gets written."""
    sizes = [(wheel, sum(info.file_size for info in listing)) for wheel, listing in listings]
    total = sum(size for _, size in sizes)
    by_name = {wheel.path.name: size for wheel, size in sizes}
    bound = UNPACK_BOUND if fit is not None else UNZIPPED_LIMIT
    if total > bound:
        what = "Nothing was unpacked: the wheels declare"
        if fit is not None:
            what = (
                f"Nothing was unpacked (at most {UNPACK_BOUND:,} bytes are, whatever pruning"
                " would remove later): the wheels declare"
            )
        raise too_large(what, total, by_name, _SIZE_FIX)
    if fit is None:
        return
    infos = (info for _, listing in listings for info in listing)
    sources = sum(info.file_size for info in infos if info.filename.endswith(".py"))
    if total + (sources * BYTECODE_PER_SOURCE if fit.compile else 0) <= UNZIPPED_LIMIT:
        return  # fits before pruning, with its bytecode: nothing more to estimate
    plan = size_plan(_parts(listings, python_version), fit, bytecode_built=False)
    if plan.certainly_over(fit.slim):
        raise plan.error("Nothing was unpacked: the wheels would unpack to about", by_name)


def _installed_path(wheel: PinnedWheel, member: str, python_version: str) -> str | None:
    """Where a wheel's member lands in the tree (``_PLACES``); None for what is never
    installed (directories, the wheel's own bytecode)."""
    parts = posixpath.normpath(member).split("/")
    if member.endswith("/") or "__pycache__" in parts:
        return None
    if len(parts) > 2 and parts[0].endswith(".data"):
        place = _PLACES.get(parts[1], parts[1]).format(python=python_version, name=wheel.name)
        return posixpath.normpath(posixpath.join(place, *parts[2:]))
    return "/".join(parts)


def add_project_files(
    wheel: Path | None, includes: Sequence[tuple[str, Path]], target: Path, python_version: str
) -> None:
    """Install the project's own wheel and copy its include files into ``target`` (which may
    hold the unpacked dependencies already); a file both install must be the same."""
    install_wheels([PinnedWheel.of_project(wheel)] if wheel else [], target, python_version)
    if includes:
        staged = target.parent / "include"
        for name, path in includes:
            try:
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staged / name)
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                raise ConfigError(
                    f"The include file {path} is at {name} in the zip, a name of"
                    f" {len(os.fsencode(name)):,} bytes: below the build's scratch directory"
                    f" ({staged}) that is longer than this system allows.",
                    "Shorten the file's path (or its prefix, to), or point TMPDIR at a shorter"
                    " directory.",
                ) from e
        conflict = merge_trees([str(staged)], str(target))
        if conflict:
            raise ConflictError(
                conflict,
                "the project's wheel and an include file",
                "Drop the file from include, or rename it.",
            )


def _install_wheel(wheel: PinnedWheel, number: int, tree: _Tree) -> None:
    """Check one wheel (the ``number``th) against its pin and RECORD's names, then install it
    into ``tree`` with pypa/installer, each member checked against RECORD as it is read."""
    destination = _TreeDestination(tree, wheel, number)
    try:
        with zipfile.ZipFile(wheel.path) as archive:
            _check_members(archive, wheel)
            _check_identity(archive, wheel)
            source = _CheckedWheel(archive)
            # Every member named in RECORD, with a hash and size; the contents are checked
            # against them as they are installed (one read of each member, not two).
            source.validate_record(validate_contents=False)
            installer.install(source, destination, additional_metadata={})
    except LambdaZipError:
        raise
    except (
        InstallerError,
        ValueError,
        KeyError,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as e:
        # Reading the wheel failed (writing raises its own errors, in _TreeDestination).
        raise _wheel_error(wheel, e) from e


class _CheckedWheel(WheelFile):
    """A wheel whose members are checked against RECORD (hash and size) while they are read:
    the end of each member's stream (read to its end or not) raises the validation error
    ``validate_record`` would have raised."""

    def get_contents(self) -> Iterator[WheelContentElement]:
        # The members WheelFile yields, in the same order (it skips the directories alone).
        members = (info for info in self._zipfile.infolist() if info.filename[-1:] != "/")
        for (record, stream, is_executable), member in zip(super().get_contents(), members):
            path, hash_, size = record
            entry = RecordEntry.from_elements(path, hash_, size)
            checked = _CheckedStream(
                stream, entry, self._zipfile.filename, self.validation_error, member
            )
            yield record, cast("BinaryIO", checked), is_executable
            checked.finish()


class _CheckedStream:
    """``stream``, hashed as it is read; ``finish`` reads what is left and compares."""

    def __init__(
        self,
        stream: BinaryIO,
        entry: RecordEntry,
        wheel: str | None,
        error: Callable[[list[str]], Exception],
        member: zipfile.ZipInfo,
    ) -> None:
        #: The wheel's member being read.
        self.member = member
        self._stream = stream
        self._entry = entry
        self._wheel = wheel
        self._error = error
        self._digest = hashlib.new(entry.hash_.name) if entry.hash_ is not None else None
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        return self._counted(self._stream.read(size))

    def readline(self, size: int = -1) -> bytes:
        return self._counted(self._stream.readline(size))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Back to the start only (installer rewinds a script to fix its shebang): the
        hashing starts over with it."""
        if (offset, whence) != (0, os.SEEK_SET):
            raise OSError(f"{self._entry.path}: only a seek back to the start is supported")
        self._digest = hashlib.new(self._entry.hash_.name) if self._entry.hash_ else None
        self._size = 0
        return self._stream.seek(0)

    def _counted(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._digest is not None:
            self._digest.update(data)
        return data

    def copy_to(self, sink: BinaryIO) -> tuple[str, int]:
        """Copy the rest to ``sink``: the sha256 of the member (RECORD's encoding) and its
        size, hashed once where RECORD's hash is a sha256 (checked by ``finish``)."""
        if self._entry.hash_ is None or self._entry.hash_.name != "sha256":
            return copyfileobj_with_hashing(cast("BinaryIO", self), sink, "sha256")
        while chunk := self.read(1 << 20):
            sink.write(chunk)
        return self._found() or "", self._size

    def _found(self) -> str | None:
        """The hash of what was read, encoded as RECORD has it."""
        if self._digest is None:
            return None
        return base64.urlsafe_b64encode(self._digest.digest()).decode("ascii").rstrip("=")

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        entry = self._entry
        found = self._found()
        wrong_hash = entry.hash_ is not None and found != entry.hash_.value
        if wrong_hash or (entry.size is not None and self._size != entry.size):
            raise self._error(
                [f"In {self._wheel}, hash / size of {entry.path} didn't match RECORD"]
            )


def _check_members(archive: zipfile.ZipFile, wheel: PinnedWheel) -> None:
    for member in archive.namelist():
        path = PurePosixPath(member)
        if path.is_absolute() or ".." in path.parts:
            raise _wheel_error(wheel, f"its member {member!r} would land outside the package")


def _check_identity(archive: zipfile.ZipFile, wheel: PinnedWheel) -> None:
    """The wheel's .dist-info directory and METADATA name the pinned distribution: pip's check
    that a wheel is the requirement it was fetched for."""
    tops = {member.split("/", 1)[0] for member in archive.namelist()}
    dist_infos = sorted(top for top in tops if top.endswith(".dist-info"))
    if len(dist_infos) != 1:
        found = ": " + ", ".join(dist_infos) if dist_infos else ""
        raise _wheel_error(wheel, f"it holds {len(dist_infos)} .dist-info directories{found}")
    (dist_info,) = dist_infos
    name, _, version = dist_info[: -len(".dist-info")].rpartition("-")
    metadata = parse_metadata_file(archive.read(f"{dist_info}/METADATA").decode("utf-8"))
    claims = [(name, version), (metadata["Name"] or "", metadata["Version"] or "")]
    if not all(_is_pinned(wheel, *claim) for claim in claims):
        raise _wheel_error(
            wheel,
            f"it holds {dist_info} (METADATA: {metadata['Name']} {metadata['Version']}),"
            f" not {wheel.name} {wheel.version}",
        )


def _is_pinned(wheel: PinnedWheel, name: str, version: str) -> bool:
    try:
        return canonicalize_name(name) == wheel.name and Version(version) == Version(wheel.version)
    except InvalidVersion:
        return False


class _TreeDestination(SchemeDictionaryDestination):
    """One wheel's files where ``pip install --target`` puts them, files mode 644 or 755.

    ``written`` (installed path -> wheel) is shared by the wheels of one tree: a path another
    wheel installed already is accepted only with the same bytes (a namespace package's shared
    ``__init__.py``), as merging trees does. No console-script launchers are written: Lambda
    never runs them, and ``normalize_installed`` would drop them.
    """

    def __init__(self, tree: _Tree, wheel: PinnedWheel, number: int) -> None:
        """The tree's ``shipped`` is told where the wheel holds each file (unless the wheel
        was built here); once a wheel before it failed, the next file raises ``_Stopped``."""
        self._places = {
            scheme: place.format(python=tree.python_version, name=wheel.name)
            for scheme, place in _PLACES.items()
        }
        super().__init__(
            scheme_dict={scheme: str(tree.root / place) for scheme, place in self._places.items()},
            interpreter=LAMBDA_PYTHON,
            script_kind="posix",
        )
        self._root = tree.root
        self._wheel = wheel
        self._written = tree.written
        self._shipped = None if wheel.built_here else tree.shipped
        self._tree = tree
        self._number = number
        self._launchers: set[int] = set()

    def write_script(
        self, name: str, module: str, attr: str, section: ScriptSection
    ) -> RecordEntry:
        launcher = RecordEntry(name, None, None)
        self._launchers.add(id(launcher))
        return launcher

    def finalize_installation(
        self,
        scheme: Scheme,
        record_file_path: str,
        records: Iterable[tuple[Scheme, RecordEntry]],
    ) -> None:
        kept = [(kind, record) for kind, record in records if id(record) not in self._launchers]
        super().finalize_installation(scheme, record_file_path, kept)

    def write_to_fs(
        self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        if self._number > self._tree.first_failed:
            raise _Stopped
        installed = posixpath.normpath(posixpath.join(self._places[scheme], path))
        if installed in (".", "..") or installed.startswith(("/", "../")):
            raise _wheel_error(self._wheel, f"its file {path!r} would land outside the package")
        file = self._root.joinpath(installed)
        try:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as e:
                raise self._clash(*self._file_above(installed), "a directory") from e
            try:
                with file.open("xb") as sink:
                    if isinstance(stream, _CheckedStream):
                        digest, size = stream.copy_to(sink)
                    else:
                        digest, size = copyfileobj_with_hashing(stream, sink, "sha256")
            except FileExistsError:
                return self._same_as_installed(installed, path, stream)
            file.chmod(EXECUTABLE_MODE if is_executable else FILE_MODE)
            info = file.stat()  # after chmod, which changes its ctime
        except OSError as e:
            raise BuildFailedError(
                f"Unpacking {self._wheel} failed writing {file}: {e.strerror or e}.",
                "Check free space and permissions of the temporary directory (TMPDIR).",
            ) from e
        self._written[installed] = self._wheel
        self._tree.known[installed] = Known.of(_hex(digest), info)
        if self._shipped is not None and isinstance(stream, _CheckedStream):
            member = stream.member
            self._shipped[installed] = Shipped(
                self._wheel.path, member.header_offset, member.compress_size, member.file_size
            )
        return RecordEntry(path, Hash("sha256", digest), size)

    def _same_as_installed(self, installed: str, path: str, stream: BinaryIO) -> RecordEntry:
        file = self._root.joinpath(installed)
        if file.is_dir():
            prefix = f"{installed}/"
            below = (owner for name, owner in self._written.items() if name.startswith(prefix))
            raise self._clash(installed, next(below, None), "a file")
        digest, size = _digest(stream)
        with file.open("rb") as handle:
            if _digest(handle) != (digest, size):
                raise self._clash(installed, self._written.get(installed), "")
        return RecordEntry(path, Hash("sha256", digest), size)

    def _file_above(self, installed: str) -> tuple[str, PinnedWheel | None]:
        """The file standing where ``installed`` needs a directory, and who installed it."""
        for parent in PurePosixPath(installed).parents:
            if self._root.joinpath(parent).is_file():
                return parent.as_posix(), self._written.get(parent.as_posix())
        return installed, None

    def _clash(self, path: str, earlier: PinnedWheel | None, wanted: str) -> BuildFailedError:
        """This wheel needs ``path`` to be ``wanted`` ("a file", "a directory") where
        ``earlier`` made it the other kind, or ("") holds other bytes at it."""
        other = {"a file": "a directory", "a directory": "a file"}.get(wanted, "")
        if earlier is self._wheel:
            twice = "both as a file and as a directory" if wanted else "twice, differently"
            return _wheel_error(self._wheel, f"it installs {path} {twice}")
        if earlier is None:
            return BuildFailedError(
                f"{self._wheel} installs {path}, which {self._root} already holds"
                f" {f'as {other}' if wanted else 'with other contents'}.",
                "Rename the project's module, or leave the distribution that installs it too"
                " out with --exclude-package.",
            )
        return ConflictError(
            path,
            f"{earlier} and {self._wheel}",
            f"Leave one of them out with --exclude-package ({earlier.name} or"
            f" {self._wheel.name}), or lock versions of them that agree.",
            how=f"the first as {other}, the second as {wanted}" if wanted else "differently",
        )


def _hex(record_hash: str) -> str:
    """A RECORD hash value (urlsafe base64, unpadded) as hex."""
    return base64.urlsafe_b64decode(record_hash + "=" * (-len(record_hash) % 4)).hex()


def _digest(stream: BinaryIO) -> tuple[str, int]:
    with open(os.devnull, "wb") as sink:
        return copyfileobj_with_hashing(stream, sink, "sha256")


def _wheel_error(wheel: PinnedWheel, problem: str | BaseException) -> BuildFailedError:
    """What to say about a wheel that is not what it should be, and what to do."""
    detail = (problem if isinstance(problem, str) else _describe(problem, wheel)).rstrip(".")
    if wheel.built_here:
        fix = (
            "poetry-core built this wheel from the project: check its packages and includes"
            " (`poetry build -f wheel` builds the same wheel), or report it."
        )
    else:
        fix = (
            "The file is damaged or not what the lock promised: delete it"
            f" ({wheel.path}) so the next build fetches it again; if that fails the same way,"
            f" run `poetry lock` to lock another file, or report it to {wheel.name}'s authors."
        )
    return BuildFailedError(
        f"The wheel {wheel.path.name} for {wheel.name} {wheel.version} cannot be installed:"
        f" {detail}.",
        fix,
    )


def _describe(error: BaseException, wheel: PinnedWheel) -> str:
    issues = getattr(error, "issues", None)
    if isinstance(issues, list):
        if isinstance(error.__cause__, UnicodeDecodeError):
            return "its RECORD is not UTF-8 text"
        where = f"In {wheel.path}, "
        listed = "".join(f"\n  - {str(issue).removeprefix(where)}" for issue in issues)
        return f"it does not match its RECORD:{listed}"
    if isinstance(error, UnicodeDecodeError):
        return "its metadata is not UTF-8 text"
    if isinstance(error, (zipfile.BadZipFile, zlib.error, EOFError)):
        return f"it is damaged ({error or type(error).__name__})"
    if isinstance(error, KeyError):
        return f"it is incomplete ({error.args[0] if error.args else error})"
    if isinstance(error, OSError):
        return f"it cannot be read ({error.strerror or error})"
    if isinstance(error, InvalidWheelSource) and len(error.args) == 2:
        return str(error.args[1])  # (source, message)
    return str(error) or type(error).__name__
