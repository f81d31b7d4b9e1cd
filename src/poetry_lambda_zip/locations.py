"""Every place on disk the plugin uses: Poetry's cache directory, and what this plugin keeps there
(kept dependency trees, bytecode verdicts, stamps, locks); the default output directory; the
build's scratch directory in the temporary directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = [
    "BY_HASH",
    "DIST",
    "SCRATCH_PREFIX",
    "bytecode_verdicts",
    "cache_directory",
    "dist",
    "locks",
    "scratch_root",
    "stamps",
    "trees",
]

#: Downloads indexed by their sha256, beside Poetry's artifact cache (``fetch``).
BY_HASH = "lambda-zip-by-hash"
#: The default outputs' directory, below the project's.
DIST = "dist"
#: A build's scratch directory in the temporary directory: PREFIX + stale.owner_tag() + ".…".
SCRATCH_PREFIX = "lambda-zip-"


def cache_directory(project_dir: Path) -> Path | None:
    """Poetry's cache directory for the project, settled by Poetry's own config as its
    Factory settles it (its config files, then the project's poetry.toml, with POETRY_*
    variables over both), without loading the project; None when a config file cannot be
    read (the build says why when Poetry loads it). The one derivation of it: a loaded
    project's ``config.artifacts_cache_directory`` lies below the same directory."""
    from poetry.config.config import Config
    from poetry.toml.file import TOMLFile

    try:
        config = Config.create()
        local = TOMLFile(project_dir / "poetry.toml")
        if local.exists():
            config.merge(local.read())  # as Poetry's Factory does (merged again there)
        return Path(config.get("cache-dir")).expanduser()
    except Exception:  # Poetry says what is wrong with its config when it loads the project
        return None


def trees(project_dir: Path) -> Path | None:
    """The kept dependency trees (``tree_cache``); None without a cache directory."""
    cache = cache_directory(project_dir)
    return None if cache is None else cache / "lambda-zip-trees"


def bytecode_verdicts(project_dir: Path) -> Path | None:
    """Which images compile as this machine's Python does (``builders.bytecode_here``),
    beside the kept trees."""
    kept = trees(project_dir)
    return None if kept is None else kept / "bytecode-here.json"


def stamps(project_dir: Path) -> Path | None:
    """The no-op and edit shortcut's stamps (``shortcut``); None: no shortcut."""
    cache = cache_directory(project_dir)
    return None if cache is None else cache / "lambda-zip-stamps"


def locks(project_dir: Path) -> Path | None:
    """One build of a project at a time (``one_at_a_time``); None: unlocked."""
    cache = cache_directory(project_dir)
    return None if cache is None else cache / "lambda-zip-locks"


def dist(project_dir: Path) -> Path:
    """Where the default outputs lie."""
    return project_dir / DIST


def scratch_root() -> Path:
    """Where the builds' scratch directories are made (TMPDIR)."""
    return Path(tempfile.gettempdir())
