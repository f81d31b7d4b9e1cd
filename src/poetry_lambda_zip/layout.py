"""Which installed file goes into which zip: ownership by RECORD, excludes, and the function,
layer and split layouts (pure)."""

from __future__ import annotations

import csv
import fnmatch
import io
import posixpath
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.archive import Entry

__all__ = [
    "LAYER_PREFIX",
    "apply_excludes",
    "distribution_sizes",
    "layer_output",
    "outputs_for_layout",
    "owners",
]

#: Lambda adds /opt/python of each layer to sys.path; a layer zip unpacks into /opt.
LAYER_PREFIX = "python/"
_RECORD = re.compile(r"^([^/]+)\.dist-info/RECORD$")
_PYC = re.compile(r"^(.*?)__pycache__/([^/.]+)\.[^/]+\.pyc$")


def owners(entries: Iterable[Entry]) -> dict[str, str]:
    """Path in the package -> canonical name of the distribution whose RECORD lists it.

    Bytecode compiled after installing (``x/__pycache__/y.cpython-312.pyc``) belongs to the
    owner of its source; scripts recorded outside the target (``../../bin/x``) to ``bin/x``.
    """
    by_name = {entry.name: entry for entry in entries}
    owner: dict[str, str] = {}
    for name, entry in by_name.items():
        match = _RECORD.match(name)
        if not match:
            continue
        distribution = canonicalize_name(match.group(1).rsplit("-", 1)[0])
        with entry.open() as handle:
            rows = csv.reader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
            for row in rows:
                if not row:
                    continue
                path = posixpath.normpath(row[0])
                if path.startswith("../"):
                    path = f"bin/{posixpath.basename(path)}"
                owner[path] = distribution
    for name in by_name:
        pyc = _PYC.match(name)
        if pyc and name not in owner:
            source = f"{pyc.group(1)}{pyc.group(2)}.py"
            if source in owner:
                owner[name] = owner[source]
    return owner


def distribution_sizes(entries: Sequence[Entry]) -> dict[str, int]:
    """Unzipped bytes per distribution, over the files it owns."""
    owner = owners(entries)
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
    layout: str,
    output: Path,
    entries: Sequence[Entry],
    project_files: set[str],
) -> list[tuple[Path, list[Entry]]]:
    """The zips to write: (path, entries). ``project_files`` are the project's own (its
    distribution's files and the includes); everything else is a dependency.

    function: everything at the root; layer: dependencies under python/; split: the layer,
    plus a function zip holding only the project's files.
    """
    if layout == "function":
        return [(output, list(entries))]
    dependencies = [
        replace(entry, name=LAYER_PREFIX + entry.name)
        for entry in entries
        if entry.name not in project_files
    ]
    if layout == "layer":
        return [(output, dependencies)]
    project = [entry for entry in entries if entry.name in project_files]
    return [(output, project), (layer_output(output), dependencies)]
