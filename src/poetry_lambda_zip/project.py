"""The project's own code: its wheel, built by poetry-core, and extra files named by ``include``."""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import COMMENT_LENGTH
from poetry_lambda_zip.fingerprint import COMMENT_PREFIX
from poetry_lambda_zip.fingerprint import carries_fingerprint
from poetry_lambda_zip.fingerprint import ends_with_fingerprint

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Sequence

    from poetry.core.poetry import Poetry

    from poetry_lambda_zip.request import Include

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
        with _temporary_files_in(directory):
            filename = WheelBuilder.make_in(poetry, directory)
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"poetry-core could not build the project's wheel: {e}",
            "Run `poetry build -f wheel` to see the problem in full.",
        ) from e
    wheel = directory / filename
    _refuse_packaged_outputs(wheel)
    return wheel


@contextlib.contextmanager
def _temporary_files_in(directory: Path) -> Iterator[None]:
    """poetry-core writes the wheel to a temporary file first: let it be in the build's own
    scratch directory, which a killed build's successor removes (see ``stale``)."""
    directory.mkdir(parents=True, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def _refuse_packaged_outputs(wheel: Path) -> None:
    """A zip this plugin wrote inside the project's package would ship in the next one (and
    grow it on every build): refuse it by name."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.file_size < len(COMMENT_PREFIX) + 64:  # shorter than any comment of ours
                continue
            with archive.open(info) as member:
                tail = b""
                for block in iter(lambda: member.read(1 << 20), b""):
                    tail = (tail + block)[-COMMENT_LENGTH:]
            if ends_with_fingerprint(tail):
                raise OutputError(
                    f"{info.filename} is a package poetry-lambda-zip wrote, inside the project's"
                    " own package: poetry-core put it into the project's wheel.",
                    "Write packages outside the package's directory (the default is dist/) and"
                    " delete this one.",
                )


def collect_includes(
    root: Path, includes: Sequence[Include], outputs: Sequence[Path] = ()
) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files ``includes`` match, as (name in the zip, file here), and a warning per entry
    that matched nothing. An entry's base directory, pattern or prefix that leaves the project,
    and symlinks that do, are refused, as are two files for one name. The ``outputs`` and any
    zip this plugin wrote are never included (each build would nest the previous one)."""
    root = root.resolve()
    files: dict[str, Path] = {}
    warnings: list[str] = []
    packages = {output.resolve() for output in outputs}
    left_out: dict[str, None] = {}
    for include in includes:
        base = root.joinpath(*_relative(include.base, include, "from", empty=True))
        _relative(include.pattern, include, "include")
        prefix = PurePosixPath(*_relative(include.prefix, include, "to", empty=True))
        if not base.is_dir():
            raise ConfigError(
                f"The include entry {str(include)!r} takes files from {include.base}/, which"
                " is not a directory of the project.",
                "Name a directory relative to the one holding pyproject.toml.",
            )
        matched = False
        for match in sorted(base.glob(include.pattern)):
            for path in _files_below(match):
                matched = True
                if path.resolve() in packages or carries_fingerprint(path):
                    left_out[path.relative_to(root).as_posix()] = None
                    continue
                inside = _inside(root, path, str(include))
                name = (prefix / path.relative_to(base).as_posix()).as_posix()
                if files.setdefault(name, inside) != inside:
                    raise ConfigError(
                        f"Two include entries put different files at {name} in the zip:"
                        f" {files[name].relative_to(root)} and {inside.relative_to(root)}.",
                        "Narrow one of the patterns, or give one entry another prefix (to).",
                    )
        if not matched:
            warnings.append(f"The include pattern {str(include)!r} matches no file.")
    warnings += [
        f"Left {name} out of include: it is a package poetry-lambda-zip wrote." for name in left_out
    ]
    return sorted(files.items()), warnings


def _relative(text: str, include: Include, key: str, *, empty: bool = False) -> tuple[str, ...]:
    """The parts of a relative path of an include entry; one that leaves the project (or is
    empty where a pattern is needed) is refused."""
    pure = PurePosixPath(text)
    if (not text and not empty) or pure.is_absolute() or ".." in pure.parts:
        where = "The include pattern" if key == "include" else f"The {key} of include"
        raise ConfigError(
            f"{where} {str(include)!r} points outside the project.",
            "Use a glob relative to the directory holding pyproject.toml.",
        )
    return pure.parts


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
