"""Which installed file goes into which zip: ownership by RECORD, excludes, and the function,
layer and split layouts (pure)."""

from __future__ import annotations

import base64
import configparser
import csv
import enum
import fnmatch
import hashlib
import io
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from poetry_lambda_zip.errors import ConflictError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.entries import Entry

__all__ = [
    "LAYER_PREFIX",
    "Layout",
    "apply_excludes",
    "bytecode_source",
    "distribution_sizes",
    "layer_output",
    "merge_entries",
    "normalize_installed",
    "outputs_for_layout",
    "owners",
    "record_paths",
]


class Layout(str, enum.Enum):
    """Which zips a build writes: one function zip, one layer zip (dependencies under
    python/), or both (the project's files in the function zip, the rest in the layer)."""

    FUNCTION = "function"
    LAYER = "layer"
    SPLIT = "split"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The zips written, in order: "function" and/or "layer"."""
        return ("function", "layer") if self is Layout.SPLIT else (self.value,)

    @property
    def ships_project(self) -> bool:
        """Whether the project's own files go into a zip (not into a layer alone)."""
        return self is not Layout.LAYER


#: Lambda adds /opt/python of each layer to sys.path; a layer zip unpacks into /opt.
LAYER_PREFIX = "python/"
_RECORD = re.compile(r"^([^/]+)\.dist-info/RECORD$")
_PYC = re.compile(r"^(.*?)__pycache__/([^/.]+)\.[^/]+\.pyc$")
_INSTALLER_FILES = ("INSTALLER", "REQUESTED", "direct_url.json")


def record_paths(record: Entry) -> list[str]:
    """The paths a RECORD lists, relative to the package root; scripts recorded outside the
    target (``../../bin/x``, as pip --target writes them) become ``bin/x``."""
    paths = []
    with record.open() as handle:
        text = handle.read().decode("utf-8")
    for row in csv.reader(io.StringIO(text, newline="")):
        if row:
            path = posixpath.normpath(row[0])
            if path.startswith("../"):
                path = f"bin/{posixpath.basename(path)}"
            paths.append(path)
    return paths


def merge_entries(parts: Iterable[Sequence[Entry]]) -> list[Entry]:
    """Several installed trees as one (the dependencies and the project's own files). A path
    two trees both hold is kept once if the contents agree (a shared namespace package's file),
    refused otherwise."""
    merged: dict[str, Entry] = {}
    for part in parts:
        for entry in part:
            earlier = merged.setdefault(entry.name, entry)
            if earlier is not entry and _content(earlier) != _content(entry):
                raise ConflictError(
                    entry.name,
                    "a dependency and by the project",
                    "Rename the project's module, or leave the dependency out with"
                    " --exclude-package.",
                )
    return list(merged.values())


def _content(entry: Entry) -> bytes:
    with entry.open() as handle:
        return handle.read()


def owners(entries: Iterable[Entry]) -> dict[str, str]:
    """Path in the package -> canonical name of the distribution whose RECORD lists it.

    Bytecode compiled after installing (``x/__pycache__/y.cpython-312.pyc``) belongs to the
    owner of its source.
    """
    by_name = {entry.name: entry for entry in entries}
    owner: dict[str, str] = {}
    for name, entry in by_name.items():
        match = _RECORD.match(name)
        if match:
            distribution = canonicalize_name(match.group(1).rsplit("-", 1)[0])
            owner.update(dict.fromkeys(record_paths(entry), distribution))
    for name in by_name:
        source = bytecode_source(name)
        if source is not None and name not in owner and source in owner:
            owner[name] = owner[source]
    return owner


def bytecode_source(name: str) -> str | None:
    """The module a ``.pyc`` in a ``__pycache__`` directory was compiled from (``x/y.py`` for
    ``x/__pycache__/y.cpython-312.pyc``); None for any other name."""
    pyc = _PYC.match(name)
    return None if pyc is None else f"{pyc.group(1)}{pyc.group(2)}.py"


def normalize_installed(entries: Sequence[Entry]) -> list[Entry]:
    """Make the installed tree independent of the installer that wrote it.

    Drops what only describes the installation (``INSTALLER``, ``REQUESTED``,
    ``direct_url.json``) and the console-script launchers an installer generates from
    ``entry_points.txt`` (Lambda never runs them; their text is the installer's), then writes
    each ``RECORD`` again for the files that remain, sorted, with their sha256 and size.
    """
    by_name = {entry.name: entry for entry in entries}
    drop: set[str] = set()
    records: dict[str, list[str]] = {}
    for name, entry in by_name.items():
        match = _RECORD.match(name)
        if not match:
            continue
        dist_info = f"{match.group(1)}.dist-info"
        drop.update(f"{dist_info}/{installer_file}" for installer_file in _INSTALLER_FILES)
        listed = record_paths(entry)
        points = by_name.get(f"{dist_info}/entry_points.txt")
        if points is not None:
            drop.update(
                f"bin/{script}" for script in _launchers(points) if f"bin/{script}" in listed
            )
        records[name] = listed
    normalized = [entry for entry in entries if entry.name not in drop]
    present = {entry.name: entry for entry in normalized}
    wanted = sorted(
        {path for name, listed in records.items() for path in listed if path in present}
        - records.keys()
    )
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashlib drops the GIL
        row_of = dict(zip(wanted, pool.map(_record_row, (present[path] for path in wanted))))
    for record_name, listed in records.items():
        rows = [row_of[path] for path in sorted(set(listed)) if path in row_of]
        content = _record_text([*rows, (record_name, "", "")]).encode()
        present[record_name] = present[record_name].with_bytes(content)
    return [present[entry.name] for entry in normalized]


def _launchers(entry_points: Entry) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with entry_points.open() as handle:
        parser.read_string(handle.read().decode("utf-8"))
    return [
        name
        for section in ("console_scripts", "gui_scripts")
        if parser.has_section(section)
        for name in parser.options(section)
    ]


def _record_row(entry: Entry) -> tuple[str, str, str]:
    if entry.sha256 is not None:  # hashed already, while unpacked or checked
        raw = bytes.fromhex(entry.sha256)
    else:
        digest = hashlib.sha256()
        with entry.open() as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        raw = digest.digest()
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return entry.name, f"sha256={encoded}", str(entry.size)


def _record_text(rows: Iterable[tuple[str, str, str]]) -> str:
    """RECORD as CSV, the way installers write it: a path holding a comma or a quote is quoted,
    so ``importlib.metadata`` and ``record_paths`` read it back whole."""
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def distribution_sizes(
    entries: Sequence[Entry], owner: dict[str, str] | None = None
) -> dict[str, int]:
    """Unzipped bytes per distribution, over the files it owns (``owner``: from ``owners``,
    when the caller has it already)."""
    owner = owners(entries) if owner is None else owner
    sizes: dict[str, int] = {}
    for entry in entries:
        distribution = owner.get(entry.name)
        if distribution is not None:
            sizes[distribution] = sizes.get(distribution, 0) + entry.size
    return dict(sorted(sizes.items()))


def apply_excludes(
    entries: Sequence[Entry], patterns: Sequence[str]
) -> tuple[list[Entry], list[str]]:
    """Drop entries matching any glob (``*`` also crosses ``/``); dist-info files are kept so
    importlib.metadata still finds every distribution. A pattern matching nothing warns."""
    kept: list[Entry] = []
    used: set[str] = set()
    for entry in entries:
        matched = [p for p in patterns if fnmatch.fnmatchcase(entry.name, p)]
        if matched and ".dist-info/" not in entry.name:
            used.update(matched)
            continue
        kept.append(entry)
    warnings = [f"The exclude pattern {p!r} matches no file." for p in patterns if p not in used]
    return kept, warnings


def layer_output(function_output: Path) -> Path:
    """The layer zip next to a function zip: NAME-layer.zip."""
    return function_output.with_name(f"{function_output.stem}-layer{function_output.suffix}")


def outputs_for_layout(
    layout: Layout,
    outputs: Sequence[Path],
    entries: Sequence[Entry],
    project_files: set[str],
) -> list[tuple[Path, list[Entry]]]:
    """The zips to write: (path, entries), ``outputs`` in the order of ``layout.kinds``.
    ``project_files`` are the project's own (its distribution's files and the includes), and
    so is their bytecode; everything else is a dependency.

    function: everything at the root; layer: dependencies under python/; split: the function
    zip holding only the project's files, and the layer.
    """
    if layout is Layout.FUNCTION:
        return [(outputs[0], list(entries))]
    project_files = project_files | {
        entry.name for entry in entries if bytecode_source(entry.name) in project_files
    }
    dependencies = [
        replace(entry, name=LAYER_PREFIX + entry.name)
        for entry in entries
        if entry.name not in project_files
    ]
    if layout is Layout.LAYER:
        return [(outputs[0], dependencies)]
    project = [entry for entry in entries if entry.name in project_files]
    return [(outputs[0], project), (outputs[1], dependencies)]
