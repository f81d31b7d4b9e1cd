"""Zips in dist/ that this plugin wrote for a function the functions table no longer has (it
was removed or renamed): named, never deleted, since whatever deploys ``dist/*.zip`` would
deploy them too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poetry_lambda_zip import locations
from poetry_lambda_zip.contents import Layout
from poetry_lambda_zip.contents import layer_output
from poetry_lambda_zip.fingerprint import carries_fingerprint

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from poetry_lambda_zip.request import BuildRequest

__all__ = ["left_over_outputs", "table_outputs"]


def table_outputs(request: BuildRequest) -> tuple[Path, ...]:
    """Every output a function of the table may have: its zip and, for the layer and split
    layouts, its layer (a split function whose layer another one shares names it all the
    same: that function's layer is no stranger's)."""
    default = locations.dist(request.project_dir) / f"{request.function}.zip"
    output = request.output or default
    if request.layout is Layout.LAYER and request.output is None:
        return (layer_output(output),)
    if request.layout is Layout.SPLIT:
        return output, layer_output(output)
    return (output,)


def left_over_outputs(table: Sequence[BuildRequest]) -> list[Path]:
    """The zips directly in dist/ that end with this plugin's fingerprint comment and are no
    output of any function of ``table`` (every function of it, built this time or not).

    What is found there is only read (the last bytes of each regular file) and named: a file
    that merely looks like one of ours costs a warning, never a deletion or a rebuild."""
    if not table or table[0].function is None:
        return []
    directory = locations.dist(table[0].project_dir)
    try:
        candidates = sorted(directory.glob("*.zip"))
    except OSError:
        return []
    known = {path.resolve() for request in table for path in table_outputs(request)}
    return [
        path
        for path in candidates
        if path.resolve() not in known and not path.is_symlink() and carries_fingerprint(path)
    ]
