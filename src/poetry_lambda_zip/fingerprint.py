"""The content fingerprint that decides whether a rebuild is needed (pure but for file reads).

It covers everything that decides the bytes of the zip(s): the selected locked artifacts, the
options, the target, the builder and image identity, the project's own files (through its
reproducible wheel), include files, path-dependency trees, SOURCE_DATE_EPOCH and this plugin's
version. Contents are hashed, never mtimes: touching a file changes nothing. Credentials and
network settings are not part of it; they do not change the result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip import __version__
from poetry_lambda_zip.archive import SEAL
from poetry_lambda_zip.archive import zip_intact
from poetry_lambda_zip.builders.contract import steps_digest
from poetry_lambda_zip.entries import executable
from poetry_lambda_zip.entries import file_sha256
from poetry_lambda_zip.never_read import never_read

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence

    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "COMMENT_LENGTH",
    "COMMENT_PREFIX",
    "FunctionZip",
    "Recorded",
    "WheelMember",
    "carries_fingerprint",
    "comment",
    "ends_with_fingerprint",
    "fingerprint",
    "read_recorded",
    "tree_key",
    "wheel_members",
]

COMMENT_PREFIX = "poetry-lambda-zip fingerprint sha256:"
_SEALED = re.escape(SEAL.decode()) + "[0-9a-f]{64}"
#: The fingerprint, which builder wrote the zip (``by docker``; older zips name none), and the
#: writer's seal (``archive.SEAL``; older zips have none).
_COMMENT = re.compile(
    re.escape(COMMENT_PREFIX) + rf"([0-9a-f]{{64}})(?: by ([a-z][a-z-]{{0,30}}))?({_SEALED})?"
)
_COMMENT_AT_END = re.compile(
    (
        re.escape(COMMENT_PREFIX) + rf"[0-9a-f]{{64}}(?: by [a-z][a-z-]{{0,30}})?(?:{_SEALED})?\Z"
    ).encode()
)
#: The longest comment this plugin writes.
COMMENT_LENGTH = len(COMMENT_PREFIX) + 64 + len(" by ") + 31 + len(SEAL) + 64
_WHEEL_RECORD = re.compile(r"^[^/]+\.dist-info/RECORD$")
#: How a kept tree and the zips made from it are laid out, beyond the files: 2 = the fetched
#: wheels' deflated bytes are copied into the zip (``archive.Shipped``), and kept with the tree.
_FORMAT = 2


def tree_key(
    requirements: Sequence[Requirement],
    steps: Steps,
    builder_identity: str,
    project_dir: Path | None = None,
) -> str:
    """A sha256 over everything that decides the installed tree of the requirements (and the
    steps that finish it) alone: what an earlier build's dependencies are reused by. The
    project's wheel and include files are not part of it, nor are zip options (applied later).
    A path or file dependency is named by its place relative to the project (``project_dir``),
    as the lock names it: the key, and the fingerprints over it, do not depend on where the
    checkout lies."""
    document = {
        "plugin": __version__,
        "format": _FORMAT,
        "steps": steps_digest(),
        "builder": builder_identity,
        "target": [steps.target.runtime, steps.target.arch],
        "requirements": [
            [
                r.name,
                r.version,
                r.artifact.kind,
                r.artifact.filename,
                r.artifact.sha256,
                r.origin.type,
                relative_url(r.origin.type, r.origin.url, project_dir),
                r.origin.reference,
                r.origin.subdirectory,
            ]
            for r in requirements
        ],
        "trees": [[tree.name, str(tree.relative), _tree_hash(tree.path)] for tree in steps.trees],
        "compile": steps.compile_prefix,
        "slim": steps.slim,
    }
    return _digest(document)


def relative_url(kind: str, url: str | None, project_dir: Path | None) -> str | None:
    if url is None or project_dir is None or kind not in ("directory", "file"):
        return url
    return Path(os.path.relpath(url, project_dir)).as_posix()


#: A wheel member as what decides the installed file: its name, its contents' sha256 and its
#: executable bit.
WheelMember = tuple[str, str, bool]


def wheel_members(wheel: Path) -> tuple[WheelMember, ...]:
    """What decides the tree the project's ``wheel`` installs: every member but RECORD (the
    installer writes that anew), sorted. Not the wheel file's own hash: an edit of the
    project's files is then fingerprinted from those files alone (``patch``)."""
    members = []
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or _WHEEL_RECORD.match(info.filename):
                continue
            digest = hashlib.sha256()
            with archive.open(info) as member:
                for block in iter(lambda: member.read(1 << 20), b""):
                    digest.update(block)
            members.append((info.filename, digest.hexdigest(), executable(info)))
    return tuple(sorted(members))


def fingerprint(
    dependencies_key: str,
    project_wheel: Sequence[WheelMember] | None,
    includes: Sequence[tuple[str, str]],
    options: dict[str, Any],
    timestamp: int,
) -> str:
    """A sha256 over everything that decides the output's bytes: the dependencies' key
    (``tree_key``), the project's own files (its wheel's members, ``wheel_members``, and the
    include files as name and sha256), the zip options and the timestamp."""
    document = {
        "dependencies": dependencies_key,
        "project_wheel": None if project_wheel is None else [list(m) for m in project_wheel],
        "includes": [[name, sha256] for name, sha256 in includes],
        "options": options,
        "timestamp": timestamp,
    }
    return _digest(document)


@dataclass(frozen=True)
class FunctionZip:
    """What decides a function zip's bytes beyond the dependencies' tree, and how its project
    part is made: the one home of its fingerprint, for the full path and the edit shortcut."""

    dependencies_key: str
    options: dict[str, Any]
    timestamp: int
    #: The project's wheel's members (``wheel_members``); None without a wheel.
    wheel: tuple[WheelMember, ...] | None
    #: The include files: name in the zip and sha256.
    includes: tuple[tuple[str, str], ...]
    #: The bytecode's path prefix for the project's files (None: not precompiled).
    compile_prefix: str | None
    #: The builder the zip's comment names (None where the builder does not decide its bytes).
    made_by: str | None

    def fingerprint(self) -> str:
        return fingerprint(
            self.dependencies_key, self.wheel, self.includes, self.options, self.timestamp
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dependencies_key": self.dependencies_key,
            "options": self.options,
            "timestamp": self.timestamp,
            "wheel": None if self.wheel is None else [list(m) for m in self.wheel],
            "includes": [list(i) for i in self.includes],
            "compile_prefix": self.compile_prefix,
            "made_by": self.made_by,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionZip:
        """Raises KeyError, TypeError or ValueError for anything but what ``to_json`` wrote."""
        wheel, prefix, made_by = data["wheel"], data["compile_prefix"], data["made_by"]
        return cls(
            dependencies_key=str(data["dependencies_key"]),
            options=dict(data["options"]),
            timestamp=int(data["timestamp"]),
            wheel=None if wheel is None else tuple((str(n), str(h), bool(x)) for n, h, x in wheel),
            includes=tuple((str(name), str(sha256)) for name, sha256 in data["includes"]),
            compile_prefix=None if prefix is None else str(prefix),
            made_by=None if made_by is None else str(made_by),
        )


def _digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def comment(value: str, builder: str | None = None) -> bytes:
    """The zip comment: the fingerprint ``value`` and the builder that wrote the zip."""
    return f"{COMMENT_PREFIX}{value}{f' by {builder}' if builder else ''}".encode()


@dataclass(frozen=True)
class Recorded:
    """What a zip this plugin wrote says of itself: its fingerprint, and the builder that
    wrote it where the builder decides its bytes."""

    fingerprint: str
    builder: str | None
    path: Path
    sealed: bool = True

    @functools.cached_property
    def intact(self) -> bool:
        """Whether the zip is byte for byte as it was written (``archive.zip_intact``): its
        fingerprint is only trusted then. Read once, when first asked."""
        return self.sealed and zip_intact(self.path)


def read_recorded(output: Path) -> Recorded | None:
    """The zip comment at ``output``, if it is one this plugin wrote (one read of its
    directory; the whole zip is read once ``Recorded.intact`` is asked)."""
    try:
        with zipfile.ZipFile(output) as archive:
            match = _COMMENT.fullmatch(archive.comment.decode("ascii", "replace"))
    except (OSError, zipfile.BadZipFile):
        return None
    if match is None:
        return None
    return Recorded(match.group(1), match.group(2), output, sealed=match.group(3) is not None)


def carries_fingerprint(path: Path) -> bool:
    """Whether the file ends with a fingerprint comment: a zip this plugin wrote (a zip's
    comment is its last bytes). A missing or unreadable file carries none, nor does anything
    but a regular file (a FIFO would block the read; a device has no end)."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            return ends_with_fingerprint(_tail(handle))
    except OSError:
        return False


def ends_with_fingerprint(tail: bytes) -> bool:
    """Whether ``tail`` (the last bytes of a file) is a fingerprint comment's ending."""
    return _COMMENT_AT_END.search(tail) is not None


def _tail(handle: IO[bytes]) -> bytes:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - COMMENT_LENGTH))
    return handle.read()


def _tree_hash(root: Path) -> str:
    """A source tree as it decides what is built from it: each file's name, contents and
    executable bit (which the built package keeps)."""
    digest = hashlib.sha256()
    for path in _tree_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
    return digest.hexdigest()


def _tree_files(root: Path) -> Iterable[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not never_read(path.relative_to(root).parts)
    )
