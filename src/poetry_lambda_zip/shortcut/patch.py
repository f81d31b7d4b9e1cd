"""The edit shortcut: after an edit of the project's own files, and of nothing else the last
build read, the function zip is patched without loading the project.

A full build records with its stamp (``stamps``) which files of the project's directory the
zip's project part came from: each member of the project's wheel (matched to the one file of
the project whose path ends with the member's name and whose contents are the member's) and
each include file, with the state the listing saw. A later run whose inputs all read as the
stamp's but for the state of some of those files (the same files, the same modes, the zip as it
was left) replaces their entries in the zip, compiles their bytecode here in a fresh interpreter
(as the full build did: ``Finished.here``), writes the project's RECORD again, and fingerprints
the result as the full path does (from the wheel's members and the include files' contents).
It writes what the full path writes, byte for byte (tests hold it to that). Anything else
takes the full path: a new or removed file, a changed pyproject.toml, lock, README or setting,
excludes (RECORD then lists files the zip does not hold), a layer-only build, bytecode the image
compiled.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from pathlib import PurePosixPath
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip import locations
from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import ArchiveStats
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.contents import bytecode_source
from poetry_lambda_zip.contents import normalize_installed
from poetry_lambda_zip.contents import record_paths
from poetry_lambda_zip.entries import Entry
from poetry_lambda_zip.entries import executable
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.fingerprint import FunctionZip
from poetry_lambda_zip.fingerprint import comment
from poetry_lambda_zip.shortcut.stamps import outputs_now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.fingerprint import WheelMember
    from poetry_lambda_zip.request import BuildRequest
    from poetry_lambda_zip.shortcut.stamps import Stamp
    from poetry_lambda_zip.shortcut.stamps import Stamps

__all__ = [
    "EditRecord",
    "PatchJob",
    "Patched",
    "Prepared",
    "ProjectParts",
    "patch_job",
    "prepare",
    "record_edits",
    "write",
]

_DIST_INFO = re.compile(r"^([^/]+\.dist-info)/")


@dataclass(frozen=True)
class ProjectParts:
    """What a function zip took from the project (``zip``), with where its include files are
    here (in the order of ``zip.includes``): enough to trace and patch it after an edit."""

    zip: FunctionZip
    include_paths: tuple[Path, ...]

    def fingerprint(self) -> str:
        return self.zip.fingerprint()


@dataclass(frozen=True)
class Source:
    """A file of the project that one entry of the zip is a copy of."""

    #: Its path below the project's directory, and its state when the build read it
    #: (``stamps``: size, mtime, ctime, mode, inode).
    path: str
    state: tuple[int, ...]
    #: Its name in the zip, and where it came from: "wheel" (a member) or "include".
    name: str
    kind: str


@dataclass(frozen=True)
class EditRecord:
    """The part of a stamp the edit shortcut reads."""

    #: The stamp's input digest over everything but the ``sources``.
    rest: str
    sources: tuple[Source, ...]
    zip: FunctionZip

    def fingerprint(self) -> str:
        return self.zip.fingerprint()

    def to_json(self) -> dict[str, Any]:
        return {
            "rest": self.rest,
            "sources": [[s.path, list(s.state), s.name, s.kind] for s in self.sources],
            "zip": self.zip.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> EditRecord | None:
        """The record ``data`` holds, or None for anything else (none, damage)."""
        if not isinstance(data, dict):
            return None
        try:
            sources = tuple(
                Source(str(path), tuple(int(n) for n in state), str(name), str(kind))
                for path, state, name, kind in data["sources"]
            )
            record = cls(str(data["rest"]), sources, FunctionZip.from_json(data["zip"]))
        except (KeyError, TypeError, ValueError):
            return None
        if any(
            not _safe(s.path) or not _safe(s.name) or s.kind not in ("wheel", "include")
            for s in sources
        ):
            return None
        return record


def record_edits(
    parts: ProjectParts, project_dir: Path, listed: Sequence[tuple[str, Sequence[int]]]
) -> tuple[Source, ...] | None:
    """The project's files the zip's project part came from, with their states as ``listed``
    (the stamp's listing of the project's directory); None when one of its entries cannot be
    traced to exactly one such file (the edit shortcut then never applies)."""
    states = {name.replace(os.sep, "/"): tuple(state) for name, state in listed}
    by_ending: dict[str, list[str]] = {}
    for name in states:
        by_ending.setdefault(PurePosixPath(name).name, []).append(name)
    sources = []
    for member, sha256, _ in parts.zip.wheel or ():
        if _DIST_INFO.match(member):
            continue  # written by poetry-core from pyproject.toml, the readme, licenses: inputs
        if member.split("/", 1)[0].endswith(".data"):
            return None  # installed elsewhere than its name says (scripts, headers, data)
        candidates = [
            name
            for name in by_ending.get(PurePosixPath(member).name, [])
            if (name == member or name.endswith(f"/{member}"))
            and file_sha256(project_dir / name) == sha256
        ]
        if len(candidates) != 1:
            return None
        sources.append(Source(candidates[0], states[candidates[0]], member, "wheel"))
    inside = project_dir.resolve()
    for (name, _), path in zip(parts.zip.includes, parts.include_paths):
        resolved = path.resolve()
        if not resolved.is_relative_to(inside):
            return None
        relative = resolved.relative_to(inside).as_posix()
        if relative not in states:
            return None
        sources.append(Source(relative, states[relative], name, "include"))
    return tuple(sources)


@dataclass(frozen=True)
class PatchJob:
    """One function's zip to patch: the edited sources, and what its next stamp records."""

    request: BuildRequest
    stamp: Stamp
    record: EditRecord
    changed: tuple[Source, ...]
    #: The stamp's input digest as the inputs read now (for the next stamp).
    inputs: str


def patch_job(
    request: BuildRequest, stamp: Stamp, stamps: Stamps, outputs: Sequence[str]
) -> PatchJob | None:
    """The patch that brings ``request``'s zip up to date, if only its project's own files
    changed since ``stamp`` (and the zip is as that build left it); else None."""
    record = EditRecord.from_json(stamp.edit)
    if record is None or not record.sources or not _asked_for(request, stamp.paths[0]):
        return None
    if outputs_now(stamp.paths) != stamp.outputs:
        return None
    root = request.project_dir
    aside = frozenset(os.path.abspath(root / source.path) for source in record.sources)
    if stamps.inputs(request, stamp.roots, outputs, aside, whole=stamp.whole) != record.rest:
        return None
    listed = {name.replace(os.sep, "/"): tuple(state) for name, state in stamps.listed(root)}
    changed = []
    for source in record.sources:
        state = listed.get(source.path)
        if not state or state[3] != source.state[3]:
            return None  # gone, or its mode changed (the zip keeps a file's executable bit)
        if state != source.state:
            changed.append(replace(source, state=state))
    inputs = stamps.inputs(request, stamp.roots, outputs, whole=stamp.whole)
    if inputs is None:
        return None
    return PatchJob(request, stamp, record, tuple(changed), inputs)


@dataclass(frozen=True)
class Prepared:
    """A patch ready to be written: the function zip's entries (None: the files were touched,
    not changed, and the zip stays as it is), its fingerprint, and the record for the next
    stamp."""

    job: PatchJob
    entries: list[Entry] | None
    fingerprint: str
    record: EditRecord


@dataclass(frozen=True)
class Patched:
    """A patch done: every output's stats (the function zip first), the outputs written, and
    the record for the next stamp."""

    archives: tuple[ArchiveStats, ...]
    written: tuple[Path, ...]
    record: EditRecord


def prepare(job: PatchJob) -> Prepared | None:
    """The patched zip's entries: the edited files', their bytecode (compiled here) and the
    project's RECORD replaced, every other entry to be copied. None when the result would be
    over Lambda's limit (the full path then says so, with the largest distributions)."""
    record, stamp = job.record, job.stamp
    root = job.request.project_dir
    contents = {source.path: (root / source.path).read_bytes() for source in job.changed}
    hashes = {source.name: _sha256(contents[source.path]) for source in job.changed}
    made = record.zip
    wheel = None if made.wheel is None else tuple(
        (name, hashes.get(name, sha256) if _kind(job, name) == "wheel" else sha256, executable)
        for name, sha256, executable in made.wheel
    )  # fmt: skip
    includes = tuple(
        (name, hashes[name] if _kind(job, name) == "include" else sha256)
        for name, sha256 in made.includes
    )
    record = replace(
        record,
        sources=tuple(_now(source, job.changed) for source in record.sources),
        zip=replace(made, wheel=wheel, includes=includes),
    )
    value = record.fingerprint()
    if stamp.first_fingerprint == value:  # touched, not changed: nothing to write
        return Prepared(job, None, value, record)
    entries = _patched_entries(stamp.paths[0], job, contents)
    layers = sum(stats.unzipped_size for stats in stamp.stats[1:])
    if sum(entry.size for entry in entries) + layers > UNZIPPED_LIMIT:
        return None
    return Prepared(job, entries, value, record)


def write(prepared: Prepared, progress: Progress) -> Patched:
    """Write the prepared zip in place of the function zip (the layer, if any, is kept)."""
    stamp, record = prepared.job.stamp, prepared.record
    outputs, earlier = stamp.paths, stamp.stats
    if prepared.entries is None:
        return Patched(tuple(earlier), (), record)
    written = write_zips_atomically(
        [(outputs[0], prepared.entries, comment(prepared.fingerprint, record.zip.made_by))],
        record.zip.timestamp,
        count=lambda done, total: progress.count("package", done, total),
    )
    return Patched((written[0], *earlier[1:]), (outputs[0],), record)


def _patched_entries(output: Path, job: PatchJob, contents: dict[str, bytes]) -> list[Entry]:
    """The zip's entries with the edited files', their bytecode's and the project's RECORD
    replaced (an edited file the zip does not hold, e.g. slimmed away, stays out). The others
    are copied from the zip when it is written (``Entry.verbatim``)."""
    with zipfile.ZipFile(output) as archive:
        infos = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        record = _record_name(job.record.zip.wheel)
        listed: list[str] = []
        if record in infos and any(s.kind == "wheel" and s.name in infos for s in job.changed):
            listed = record_paths(_bytes_entry(record, archive.read(record), executable=False))
        # The files the project's RECORD lists (itself too), as the zip holds them.
        project = {name: archive.read(name) for name in listed if name in infos}
    entries = {
        name: Entry(
            name,
            info.file_size,
            executable(info),
            functools.partial(_open_member, output, name),
            verbatim=True,
        )
        for name, info in infos.items()
    }
    edited = {
        source.name: contents[source.path] for source in job.changed if source.name in entries
    }
    for name, data in edited.items():
        entries[name] = _bytes_entry(name, data, entries[name].executable)
    sources = [name for name in edited if name.endswith(".py")]
    prefix = job.record.zip.compile_prefix
    if prefix is not None and sources:
        for name in [name for name in entries if bytecode_source(name) in sources]:
            del entries[name]
        for name, data in _compiled(edited, sources, prefix).items():
            entries[name] = _bytes_entry(name, data, executable=False)
    if record is not None and project:
        part = [
            _bytes_entry(name, edited.get(name, data), entries[name].executable)
            for name, data in project.items()
        ]
        (rewritten,) = [e for e in normalize_installed(part) if e.name == record]
        entries[record] = rewritten
    return list(entries.values())


def _open_member(output: Path, name: str) -> IO[bytes]:
    """One entry of the zip being replaced, read from it (only where its deflated bytes cannot
    be copied)."""
    with zipfile.ZipFile(output) as archive:
        return io.BytesIO(archive.read(name))


def _compiled(edited: dict[str, bytes], sources: Sequence[str], prefix: str) -> dict[str, bytes]:
    """The bytecode of ``sources`` (names in the zip), compiled here as the full build compiled
    the project's tree: by ``compile_here``, with the same path prefix."""
    from poetry_lambda_zip.builders.bytecode_here import compile_here

    with tempfile.TemporaryDirectory(prefix="lambda-zip-patch-") as scratch:
        tree = Path(scratch)
        for name in sources:
            path = tree.joinpath(*PurePosixPath(name).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(edited[name])
        compile_here(tree, prefix)
        return {
            path.relative_to(tree).as_posix(): path.read_bytes()
            for path in sorted(tree.rglob("*.pyc"))
        }


def _bytes_entry(name: str, data: bytes, executable: bool) -> Entry:
    return Entry(name, len(data), executable, functools.partial(io.BytesIO, data))


def _record_name(wheel: Sequence[WheelMember] | None) -> str | None:
    """The project's RECORD in the zip: in the dist-info directory its wheel's members name."""
    for name, _, _ in wheel or ():
        match = _DIST_INFO.match(name)
        if match:
            return f"{match.group(1)}/RECORD"
    return None


def _kind(job: PatchJob, name: str) -> str | None:
    return next((source.kind for source in job.changed if source.name == name), None)


def _now(source: Source, changed: Sequence[Source]) -> Source:
    return next((c for c in changed if c.path == source.path and c.name == source.name), source)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _asked_for(request: BuildRequest, output: Path) -> bool:
    """Whether ``output`` is where ``request`` writes its zip (a stamp is read, not trusted):
    its -o, or else the project's dist/, where the default names lie."""
    if request.output is not None:
        return output == request.output
    return output.parent == locations.dist(request.project_dir)


def _safe(name: str) -> bool:
    """A relative path that stays below where it is joined (a stamp is read, not trusted)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts
