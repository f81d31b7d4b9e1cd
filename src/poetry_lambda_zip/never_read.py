"""What a build never reads: one rule for the stamps' listing, the source trees sent to the
builder, their tree key, and the files an include pattern's wildcards reach.

Version control, virtual environments, tool caches and the output of deployment tools (which
may unpack the zip beside the project) are never part of a build, unless an include entry
names such a directory itself (``include = ["node_modules/cfg/*.json"]``): a name written out
is read; one a wildcard or a walk comes across is not. The project's own wheel is poetry-core's
to build: it reads its packages whole, but for ``__pycache__`` (``ALWAYS``), so a stamp can only
vouch for a project whose packages hold none of these directories (``stamps``).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ALWAYS", "NEVER_READ", "literal_parts", "named_in", "never_read"]

#: Names of directories (and ``.DS_Store`` files) no build reads where a walk or a wildcard
#: comes across them.
NEVER_READ = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".aws-sam", "cdk.out", ".terraform",
     ".serverless", ".DS_Store"}
)  # fmt: skip
#: Never read even where named: bytecode caches (poetry-core skips them too), version control
#: and the virtual environment.
ALWAYS = frozenset({"__pycache__", ".git", ".venv"})

_WILDCARDS = frozenset("*?[")


def never_read(parts: Iterable[str], named: frozenset[str] = frozenset()) -> bool:
    """Whether a path of these ``parts`` (below a project or a tree) lies in what no build
    reads; ``named``: names the include entry writes out, read there (but ``ALWAYS``)."""
    return any(part in ALWAYS or (part in NEVER_READ and part not in named) for part in parts)


def named_in(*texts: str) -> frozenset[str]:
    """The names of ``NEVER_READ`` that ``texts`` (an include entry's from, pattern and to)
    write out as a part of their own, which the entry then reads (but ``ALWAYS``)."""
    parts = {part for text in texts if text for part in PurePosixPath(text).parts}
    return frozenset(parts & NEVER_READ) - ALWAYS


def literal_parts(*paths: str) -> tuple[str, ...]:
    """The leading parts of ``paths`` joined (an include's ``from`` and pattern) written out,
    up to the first one with a wildcard: the directory an include entry reads below."""
    parts: list[str] = []
    for path in paths:
        for part in PurePosixPath(path).parts if path else ():
            if _WILDCARDS.intersection(part):
                return tuple(parts)
            parts.append(part)
    return tuple(parts)
