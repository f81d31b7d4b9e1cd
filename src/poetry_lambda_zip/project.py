"""The project's own code: its wheel, built by poetry-core, and extra files named by ``include``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
import zipfile
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import COMMENT_LENGTH
from poetry_lambda_zip.fingerprint import COMMENT_PREFIX
from poetry_lambda_zip.fingerprint import carries_fingerprint
from poetry_lambda_zip.fingerprint import ends_with_fingerprint
from poetry_lambda_zip.never_read import literal_parts
from poetry_lambda_zip.never_read import named_in
from poetry_lambda_zip.never_read import never_read
from poetry_lambda_zip.stale import is_temporary

if TYPE_CHECKING:
    from collections.abc import Iterator
    from collections.abc import Mapping
    from collections.abc import Sequence

    from poetry.core.poetry import Poetry

    from poetry_lambda_zip.request import Include

__all__ = ["build_project_wheel", "collect_includes", "wheel_directories", "wheel_entries"]

_METADATA = re.compile(r"^[^/]+\.dist-info/METADATA$")
#: A requirement by a file URL in METADATA: its name (and version), the URL, the rest.
_FILE_URL = re.compile(r"^(Requires-Dist: [^@;\n]+?) @ file://[^\s;]*", re.MULTILINE)


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
    _without_host_paths(wheel)
    return wheel


def _without_host_paths(wheel: Path) -> None:
    """poetry-core names a path dependency in the project's METADATA by its absolute URL
    (``Requires-Dist: lib @ file:///home/me/libs/lib``): a path of this machine in the zip,
    which then differs between two checkouts of one commit. The URL is dropped (the
    dependency ships in the zip all the same); the wheel is written again, RECORD too."""
    with zipfile.ZipFile(wheel) as archive:
        infos = archive.infolist()
        metadata = next((info for info in infos if _METADATA.match(info.filename)), None)
        if metadata is None:
            return
        text = archive.read(metadata).decode("utf-8")
        portable = _FILE_URL.sub(r"\1", text)
        if portable == text:
            return
        members = [(info, archive.read(info)) for info in infos]
    data = portable.encode("utf-8")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    row = f"{metadata.filename},sha256={digest},{len(data)}"
    rewritten = wheel.with_name(f".{wheel.name}.portable")
    with zipfile.ZipFile(rewritten, "w") as archive:
        for info, content in members:
            if info.filename == metadata.filename:
                archive.writestr(info, data)
            elif info.filename.endswith(".dist-info/RECORD"):
                rows = content.decode("utf-8").splitlines()
                rows = [row if r.split(",", 1)[0] == metadata.filename else r for r in rows]
                archive.writestr(info, ("\n".join(rows) + "\n").encode("utf-8"))
            else:
                archive.writestr(info, content)
    os.replace(rewritten, wheel)


def wheel_entries(
    poetry: Poetry,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The ``packages`` and ``include`` entries poetry-core builds the wheel from. poetry-core
    2.0.0 leaves ``format`` out where pyproject.toml does (and its ``Module`` needs it): a
    package is then in both formats, an include in the sdist alone, as later versions fill in."""
    package = poetry.package
    packages = [{"format": ["sdist", "wheel"], **entry} for entry in package.packages]
    includes = [{"format": ["sdist"], **entry} for entry in package.include]
    return (
        [entry for entry in packages if "wheel" in entry["format"]],
        [entry for entry in includes if "wheel" in entry["format"]],
    )


def wheel_directories(poetry: Poetry) -> tuple[str, ...]:
    """The project's directories poetry-core reads whole for the wheel (relative, posix):
    each package's directory, each directory an include of the wheel matches, and the head
    written out of a pattern that descends (``**``). What no build reads elsewhere
    (``never_read``) is read there, but ``__pycache__``."""
    from poetry.core.masonry.utils.module import Module
    from poetry.core.masonry.utils.package_include import PackageInclude

    root = poetry.pyproject_path.parent.resolve()
    package = poetry.package
    packages, includes = wheel_entries(poetry)
    found: set[Path] = set()
    try:
        module = Module(package.name, str(root), packages=packages, includes=includes)
    except ValueError:
        return ()  # no package to build: poetry-core says so when the wheel is built
    for include in module.includes:
        if isinstance(include, PackageInclude) and include.is_package():
            found.add(include.base / include.package)
        found.update(element for element in include.elements if element.is_dir())
    for entry in [*packages, *includes]:
        pattern = str(entry.get("include", entry.get("path", "")))
        if "**" in pattern:
            found.add(root.joinpath(*literal_parts(str(entry.get("from", "")), pattern)))
    inside = sorted(
        {
            path.resolve().relative_to(root)
            for path in found
            if path.is_dir() and path.resolve().is_relative_to(root)
        }
    )
    outermost: list[Path] = []
    for path in inside:  # sorted: a directory before what lies below it
        if not outermost or not path.is_relative_to(outermost[-1]):
            outermost.append(path)
    return tuple(path.as_posix() for path in outermost)


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
    linked: dict[str, None] = {}
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
        named = named_in(include.base, include.pattern)
        for match in sorted(base.glob(include.pattern)):
            for path in _files_below(match, root, named, linked):
                matched = True
                if path.resolve() in packages or is_temporary(path.name):
                    continue  # this run's outputs, a zip being written or a killed run's
                if carries_fingerprint(path):
                    left_out[path.relative_to(root).as_posix()] = None
                    continue
                inside = _inside(root, path, str(include))
                name = (prefix / path.relative_to(base).as_posix()).as_posix()
                _check_name(name, inside.relative_to(root), include)
                if files.setdefault(name, inside) != inside:
                    raise ConfigError(
                        f"Two include entries put different files at {name} in the zip:"
                        f" {files[name].relative_to(root)} and {inside.relative_to(root)}.",
                        "Narrow one of the patterns, or give one entry another prefix (to).",
                    )
        if "**" in include.pattern:  # the links to directories the pattern's ** passed over
            top = root.joinpath(*literal_parts(include.base, include.pattern))
            for directory, names, _ in os.walk(top):
                for name in names:
                    found = Path(directory, name)
                    if found.is_symlink() and not never_read(found.relative_to(root).parts, named):
                        linked[found.relative_to(root).as_posix()] = None
                names[:] = [n for n in names if not never_read((n,), named)]
        if not matched:
            warnings.append(f"The include pattern {str(include)!r} matches no file.")
    warnings += [
        f"Left {name} out of include: it is a package poetry-lambda-zip wrote." for name in left_out
    ]
    warnings += [
        f"Left {name} out of include: it is a link to a directory, which is not followed."
        " Include the directory it leads to (its from/to can put it where the link is)."
        for name in linked
    ]
    return sorted(files.items()), warnings


def _check_name(name: str, path: Path, include: Include) -> None:
    """A name a zip can hold and every system unpack: UTF-8 (zip's flag for names), with no
    backslash (a directory separator once unpacked on Windows)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise ConfigError(
            f"The file {shown} (matched by include {str(include)!r}) has a name that is not"
            " UTF-8, which a zip's names must be.",
            "Rename the file (e.g. `convmv -f latin1 -t utf-8 --notest FILE`), or narrow the"
            " include pattern to leave it out.",
        ) from None
    if "\\" in name:
        raise ConfigError(
            f"The file {path} (matched by include {str(include)!r}) has a backslash in its"
            " name: unzipped on Windows, it would be a directory and a file.",
            "Rename the file, or narrow the include pattern to leave it out.",
        )


def _relative(text: str, include: Include, key: str, *, empty: bool = False) -> tuple[str, ...]:
    """The parts of a relative path of an include entry; one that leaves the project (or is
    empty where a pattern is needed) is refused."""
    where = "The include pattern" if key == "include" else f"The {key} of include"
    if not text and not empty:
        raise ConfigError(
            f"{where} is empty: it names no file.",
            'Give a glob relative to the directory holding pyproject.toml, e.g. "*.py".',
        )
    # a/../b stays inside: judged as written out; a pattern's own ".." is never that.
    pure = PurePosixPath(posixpath.normpath(text) if key != "include" and text else text)
    if pure.is_absolute() or ".." in pure.parts:
        raise ConfigError(
            f"{where} {str(include)!r} points outside the project.",
            "Use a glob relative to the directory holding pyproject.toml.",
        )
    return () if pure == PurePosixPath(".") else pure.parts


def _files_below(
    path: Path, root: Path, named: frozenset[str], linked: dict[str, None]
) -> list[Path]:
    """The files of ``path`` (a file, or a directory's files) but what no build reads
    (``never_read``) and the entry does not name. A link to a directory is not followed,
    wherever it is met (a pattern's ``**`` does not follow one either): it goes to
    ``linked``, to be named (a link to a file is followed)."""

    def read(found: Path) -> bool:
        return not never_read(found.relative_to(root).parts, named)

    if not read(path):
        return []
    if path.is_symlink() and path.is_dir():
        linked[path.relative_to(root).as_posix()] = None
        return []
    if path.is_dir():
        files = []
        for found in sorted(path.rglob("*")):
            if found.is_symlink() and found.is_dir() and read(found):
                linked[found.relative_to(root).as_posix()] = None
            elif found.is_file() and read(found):
                files.append(found)
        return files
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
