"""The project's own code: its wheel, built by poetry-core, and extra files named by ``include``."""

from __future__ import annotations

from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry.core.poetry import Poetry

__all__ = ["build_project_wheel", "collect_includes"]

_NEVER_INCLUDED = ("__pycache__", ".git", ".venv")


def build_project_wheel(poetry: Poetry, directory: Path) -> Path | None:
    """Build the project with poetry-core into ``directory``; None with ``package-mode = false``."""
    if not poetry.is_package_mode:
        return None
    from poetry.core.masonry.builders.wheel import WheelBuilder

    if poetry.package.build_script:
        raise ConfigError(
            f"The project runs a build script ({poetry.package.build_script}), which would"
            " compile for this machine, not for Lambda.",
            "Package the compiled part as a separate dependency, or build the wheel yourself.",
        )
    try:
        filename = WheelBuilder.make_in(poetry, directory)
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"poetry-core could not build the project's wheel: {e}",
            "Run `poetry build -f wheel` to see the problem in full.",
        ) from e
    return directory / filename


def collect_includes(root: Path, patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files matched by ``include`` globs (relative to the project), and a warning per pattern
    that matched nothing. Patterns and symlinks that leave the project are refused."""
    root = root.resolve()
    files: dict[Path, None] = {}
    warnings: list[str] = []
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if not pattern or pure.is_absolute() or ".." in pure.parts:
            raise ConfigError(
                f"The include pattern {pattern!r} points outside the project.",
                "Use a glob relative to the directory holding pyproject.toml.",
            )
        matched = False
        for match in sorted(root.glob(pattern)):
            for path in _files_below(match):
                files[_inside(root, path, pattern)] = None
                matched = True
        if not matched:
            warnings.append(f"The include pattern {pattern!r} matches no file.")
    return sorted(files), warnings


def _files_below(path: Path) -> list[Path]:
    if any(part in _NEVER_INCLUDED for part in path.parts):
        return []
    if path.is_dir():
        return [
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part in _NEVER_INCLUDED for part in p.parts)
        ]
    return [path] if path.is_file() else []


def _inside(root: Path, path: Path, pattern: str) -> Path:
    """``path`` as a file under ``root``; a symlink is followed only while it stays inside."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(
            f"{path.relative_to(root)} (matched by include {pattern!r}) is a link to"
            f" {resolved}, outside the project.",
            "Copy the file into the project or drop it from include.",
        )
    # Keep the name the user sees in the project, not the link's target name.
    return root / path.relative_to(root)
