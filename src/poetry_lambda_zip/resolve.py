"""poetry.lock -> the exact, hashed requirement set for one Lambda target (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Literal

from packaging.utils import InvalidSdistFilename
from packaging.utils import InvalidWheelFilename
from packaging.utils import NormalizedName
from packaging.utils import canonicalize_name
from packaging.utils import parse_sdist_filename
from packaging.utils import parse_wheel_filename

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import LockError
from poetry_lambda_zip.errors import ResolveError
from poetry_lambda_zip.redact import redact

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence

    from packaging.tags import Tag
    from poetry.core.constraints.version import VersionConstraint
    from poetry.core.packages.dependency import Dependency
    from poetry.core.packages.package import Package
    from poetry.core.packages.package import PackageFile
    from poetry.core.packages.project_package import ProjectPackage
    from poetry.packages.locker import Locker

    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "Artifact",
    "Excluded",
    "GroupSelection",
    "Origin",
    "Requirement",
    "RequirementSet",
    "check_lock",
    "choose_artifact",
    "resolve",
    "select_extras",
    "select_groups",
]

MAIN_GROUP = canonicalize_name("main")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class GroupSelection:
    """--with/--without/--only as the user gave them (names as typed)."""

    with_: tuple[str, ...] = ()
    without: tuple[str, ...] = ()
    only: tuple[str, ...] = ()


ArtifactKind = Literal["wheel", "sdist", "directory", "git"]
OriginType = Literal["index", "file", "url", "directory", "git"]


@dataclass(frozen=True)
class Artifact:
    """What gets installed for one distribution: a locked file, or a source tree to build."""

    kind: ArtifactKind
    #: The wheel or sdist file name; None for a directory or git checkout.
    filename: str | None = None
    #: sha256 from the lock; None where the lock cannot hash the artifact (directory, git).
    sha256: str | None = None
    #: For an sdist: how many wheels the lock has for other targets (0: none published).
    other_wheels: int = 0

    @property
    def built_in_image(self) -> bool:
        return self.kind != "wheel"


@dataclass(frozen=True)
class Origin:
    """Where the artifact comes from, exactly as poetry.lock records it."""

    type: OriginType
    #: Index URL (None: the default index, PyPI), file path, archive URL, directory or git URL.
    url: str | None = None
    #: The ``[[tool.poetry.source]]`` name, for index packages from a configured source.
    source_name: str | None = None
    #: The locked git commit.
    reference: str | None = None
    subdirectory: str | None = None

    def location(self) -> str:
        """The URL or path, for origins that have one (all but the default index)."""
        if self.url is None:
            raise ResolveError(f"poetry.lock names no URL or path for this {self.type} source.")
        return self.url

    def describe(self) -> str:
        """Where it comes from, for people: credentials in the URL are left out."""
        url = None if self.url is None else redact(self.url)
        if self.type == "index":
            return f"source {self.source_name} ({url})" if self.source_name else "PyPI"
        if self.type == "git":
            where = f" subdirectory {self.subdirectory}" if self.subdirectory else ""
            return f"git {url} at {self.reference}{where}"
        return f"{self.type} {url}"


@dataclass(frozen=True)
class Requirement:
    """A distribution that goes into the package, pinned to one locked artifact."""

    name: NormalizedName
    version: str
    artifact: Artifact
    origin: Origin = Origin("index")

    @property
    def locked_file(self) -> tuple[str, str]:
        """The locked file's name and sha256 (every wheel and sdist has both)."""
        filename, sha256 = self.artifact.filename, self.artifact.sha256
        if filename is None or sha256 is None:
            raise ResolveError(f"{self.name} {self.version}: poetry.lock pins no file for it.")
        return filename, sha256

    def describe(self) -> str:
        """The plan's line for this distribution."""
        artifact, origin = self.artifact, self.origin
        if artifact.kind == "directory":
            return f"build from path {origin.url} (no hash: a directory has none in the lock)"
        if artifact.kind == "git":
            return f"build from {origin.describe()} (no hash: the locked commit pins it)"
        what = "wheel" if artifact.kind == "wheel" else "build from sdist"
        return f"{what} {artifact.filename} ({origin.describe()}; sha256 checked)"


@dataclass(frozen=True)
class Excluded:
    """A locked distribution that does not go into the package, and why."""

    name: NormalizedName
    version: str
    reason: str


@dataclass(frozen=True)
class RequirementSet:
    groups: frozenset[NormalizedName]
    extras: frozenset[NormalizedName]
    requirements: tuple[Requirement, ...]
    excluded: tuple[Excluded, ...]
    warnings: tuple[str, ...] = ()

    @property
    def built_from_source(self) -> tuple[Requirement, ...]:
        return tuple(r for r in self.requirements if r.artifact.built_in_image)


def select_groups(project: ProjectPackage, selection: GroupSelection) -> frozenset[NormalizedName]:
    """The active dependency groups; by default only ``main`` (dev groups never ship)."""
    problems: list[str] = []
    for option, names in (
        ("--with", selection.with_),
        ("--without", selection.without),
        ("--only", selection.only),
    ):
        problems += [
            f"Group {name!r} (from {option}) is not defined in pyproject.toml."
            for name in names
            if not project.has_dependency_group(name)
        ]
    if problems:
        known = ", ".join(sorted(project.dependency_group_names(include_optional=True)))
        raise ConfigError("\n".join(problems), f"Known groups: {known or 'none'}.")
    if selection.only:
        return frozenset(canonicalize_name(n) for n in selection.only)
    groups = {MAIN_GROUP} | {canonicalize_name(n) for n in selection.with_}
    return frozenset(groups - {canonicalize_name(n) for n in selection.without})


def select_extras(
    project: ProjectPackage, extras: Sequence[str], all_extras: bool
) -> frozenset[NormalizedName]:
    known = {canonicalize_name(name) for name in project.extras}
    if all_extras:
        return frozenset(known)
    requested = {canonicalize_name(extra) for extra in extras}
    unknown = sorted(requested - known)
    if unknown:
        raise ConfigError(
            f"Extra(s) not defined by the project: {', '.join(unknown)}.",
            f"Defined extras: {', '.join(sorted(known)) or 'none'}.",
        )
    return frozenset(requested)


def check_lock(locker: Locker) -> None:
    """Fail unless poetry.lock exists, is readable by this Poetry and matches pyproject.toml."""
    if not locker.is_locked():
        raise LockError(
            f"No lock file at {locker.lock}.", "Run `poetry lock` and commit poetry.lock."
        )
    try:
        fresh = locker.is_fresh()
        locker.lock_data  # noqa: B018 - reading it validates the lock format
    except (RuntimeError, KeyError, ValueError) as e:
        raise LockError(f"poetry.lock cannot be read: {e}", "Run `poetry lock`.") from e
    if not fresh:
        raise LockError(
            "poetry.lock is out of date: pyproject.toml changed since it was locked"
            " (its content-hash no longer matches).",
            "Run `poetry lock` and commit poetry.lock.",
        )


def resolve(
    locker: Locker,
    project: ProjectPackage,
    target: LambdaTarget,
    groups: frozenset[NormalizedName],
    extras: frozenset[NormalizedName],
    *,
    exclude_packages: frozenset[NormalizedName] = frozenset(),
) -> RequirementSet:
    """Every locked distribution the target needs, each pinned to the artifact it will use.

    ``exclude_packages`` (e.g. boto3, which the runtime provides) are left out together with
    the distributions that only they needed."""
    if not project.python_constraint.allows_any(_runtime_constraint(target)):
        raise ConfigError(
            f"The project requires Python {project.python_versions}, which {target.runtime}"
            f" (Python {target.python_version_text}) does not satisfy.",
            "Choose a runtime within requires-python, or omit --runtime to pick the newest one.",
        )
    check_lock(locker)
    environment = target.marker_environment()
    if locker.is_locked_groups_and_markers():
        selected, excluded = _select_by_lock_markers(locker, groups, extras, environment)
    else:
        selected, excluded = _select_by_walking(locker, project, groups, extras, environment)
    warnings: list[str] = []
    if exclude_packages:
        names = {package.name for package in selected}
        warnings += [
            f"--exclude-package {name}: not in the requirement set for this target."
            for name in sorted(exclude_packages - names)
        ]
        kept, _ = _select_by_walking(
            locker, project, groups, extras, environment, stop_at=exclude_packages
        )
        kept_names = {package.name for package in kept}
        reason_needed = f"only needed by {_names(exclude_packages & names)}"
        for package in selected:
            if package.name in exclude_packages:
                excluded.append(_excluded(package, "--exclude-package (the runtime provides it)"))
            elif package.name not in kept_names:
                excluded.append(_excluded(package, reason_needed))
        selected = [package for package in selected if package.name in kept_names]
        excluded.sort(key=lambda e: e.name)

    tag_ranks = {tag: rank for rank, tag in enumerate(target.supported_tags())}
    requirements: list[Requirement] = []
    problems: list[str] = []
    untrusted: list[str] = []
    for package in selected:
        try:
            requirements.append(_requirement(package, tag_ranks))
        except ResolveError as e:
            problems.append(e.message)
        except LockError as e:
            untrusted.append(e.message)
    if untrusted:
        raise LockError(
            "poetry.lock has file entries that cannot be used safely:\n"
            + "\n".join(f"  - {p}" for p in untrusted),
            "Nothing was downloaded. Regenerate poetry.lock (`poetry lock`) and review where"
            " these entries came from before building.",
        )
    if problems:
        raise ResolveError(
            "Some locked packages cannot be installed for "
            f"{target.runtime} {target.arch}:\n" + "\n".join(f"  - {p}" for p in problems),
            "Check the package versions in poetry.lock, or choose another runtime/arch.",
        )
    return RequirementSet(
        groups=groups,
        extras=extras,
        requirements=tuple(requirements),
        excluded=tuple(excluded),
        warnings=tuple(warnings),
    )


def _select_by_lock_markers(
    locker: Locker,
    groups: frozenset[NormalizedName],
    extras: frozenset[NormalizedName],
    environment: Mapping[str, str],
) -> tuple[list[Package], list[Excluded]]:
    """Lock format 2.1: each package records its groups and, per group, the marker under
    which the project needs it (transitively). Evaluate those for the target."""
    try:
        locked = locker.locked_packages()
    except RuntimeError as e:
        raise LockError(f"poetry.lock cannot be read: {e}", "Run `poetry lock`.") from e
    context: dict[str, object] = {**environment, "extra": set(extras)}
    selected: list[Package] = []
    excluded: list[Excluded] = []
    for package, info in sorted(locked.items(), key=lambda item: item[0].name):
        active = groups & info.groups
        if not active:
            excluded.append(_excluded(package, f"only in group(s) {_names(info.groups)}"))
            continue
        marker = info.get_marker(active)
        if marker.validate(context):
            selected.append(package)
        else:
            excluded.append(_excluded(package, _marker_reason(str(marker), extras)))
    return selected, excluded


def _select_by_walking(
    locker: Locker,
    project: ProjectPackage,
    groups: frozenset[NormalizedName],
    extras: frozenset[NormalizedName],
    environment: Mapping[str, str],
    *,
    stop_at: frozenset[NormalizedName] = frozenset(),
) -> tuple[list[Package], list[Excluded]]:
    """Walk the dependency graph from the project's active groups, evaluating each edge's
    marker for the target with the extras requested of the package it leaves; ``stop_at``
    names packages the walk does not enter.

    This is how a lock of format 2.0 (Poetry 1.x, no groups or markers per package) is read,
    and how --exclude-package finds what only the excluded packages needed."""
    try:
        locked_packages = locker.locked_repository().packages
    except RuntimeError as e:
        raise LockError(f"poetry.lock cannot be read: {e}", "Run `poetry lock`.") from e
    by_name: dict[NormalizedName, list[Package]] = {}
    for package in locked_packages:
        by_name.setdefault(package.name, []).append(package)

    root = project.with_dependency_groups(list(groups), only=True)
    queue: list[Dependency] = [
        dependency
        for dependency in root.all_requires
        if _wanted(dependency, root.extras, extras, environment)
    ]
    chosen: dict[NormalizedName, tuple[Package, frozenset[NormalizedName]]] = {}
    while queue:
        dependency = queue.pop()
        if dependency.name in stop_at:
            continue
        package = _locked_for(dependency, by_name.get(dependency.name, []))
        known_extras = chosen[package.name][1] if package.name in chosen else None
        wanted_extras = frozenset(canonicalize_name(e) for e in dependency.extras)
        if known_extras is not None and wanted_extras <= known_extras:
            continue
        package_extras = (known_extras or frozenset()) | wanted_extras
        chosen[package.name] = (package, package_extras)
        queue += [
            requirement
            for requirement in package.requires
            if _wanted(requirement, package.extras, package_extras, environment)
        ]
    selected = sorted((package for package, _ in chosen.values()), key=lambda p: p.name)
    excluded = [
        _excluded(package, "not needed for this target, groups and extras")
        for package in sorted(locked_packages, key=lambda p: p.name)
        if package.name not in chosen
    ]
    return selected, excluded


def _wanted(
    dependency: Dependency,
    extras_table: Mapping[NormalizedName, Sequence[Dependency]],
    active_extras: frozenset[NormalizedName],
    environment: Mapping[str, str],
) -> bool:
    if dependency.is_optional() and not any(
        dependency.name == candidate.name
        for extra in active_extras
        for candidate in extras_table.get(extra, ())
    ):
        return False
    return dependency.marker.validate({**environment, "extra": set(active_extras)})


def _locked_for(dependency: Dependency, candidates: Sequence[Package]) -> Package:
    for package in candidates:
        if dependency.constraint.allows(package.version):
            return package
    raise LockError(
        f"{dependency.to_pep_508()} is required but poetry.lock has no matching version"
        f" ({', '.join(p.version.text for p in candidates) or 'none'}).",
        "Run `poetry lock` to bring the lock file up to date.",
    )


def choose_artifact(files: Iterable[PackageFile], tag_ranks: Mapping[Tag, int]) -> Artifact | None:
    """The best-ranked wheel for the target, else the sdist, else None.

    Raises LockError naming every entry that is not safe to use (see ``_hashed_files``); entries
    whose names are neither a wheel's nor an sdist's (an old ``.exe``, an ``.egg``) are skipped.
    """
    best: tuple[int, str, str] | None = None
    sdist: tuple[str, str] | None = None
    wheels = 0
    for filename, value in _hashed_files(files):
        try:
            _, _, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            try:
                parse_sdist_filename(filename)
            except InvalidSdistFilename:
                continue
            sdist = min(sdist or (filename, value), (filename, value))
            continue
        wheels += 1
        ranks = [tag_ranks[tag] for tag in tags if tag in tag_ranks]
        if ranks:
            best = min(best or (min(ranks), filename, value), (min(ranks), filename, value))
    if best is not None:
        return Artifact("wheel", filename=best[1], sha256=best[2])
    if sdist is not None:
        return Artifact("sdist", filename=sdist[0], sha256=sdist[1], other_wheels=wheels)
    return None


def _hashed_files(files: Iterable[PackageFile]) -> list[tuple[str, str]]:
    """(file name, lowercase sha256) of each sha256-hashed entry of a locked file list.

    A lock file is input, not trusted code: the names end up in paths (the download cache, the
    build container) and the hashes in paths and pip's arguments. So every entry's name must be
    one plain path component and every sha256 64 hexadecimal digits; LockError names each entry
    that is not, all at once. Entries hashed otherwise (or not at all) are left out."""
    hashed: list[tuple[str, str]] = []
    problems: list[str] = []
    for entry in files:
        filename = entry.get("file", "")
        algorithm, _, value = entry.get("hash", "").partition(":")
        unsafe = _unsafe_file_name(filename)
        if unsafe is not None:
            problems.append(f"{filename!r} {unsafe}")
        if algorithm != "sha256":
            continue
        if not _SHA256.fullmatch(value):
            problems.append(f"{filename!r} has sha256 {value!r}, not 64 hexadecimal digits")
        elif unsafe is None:
            hashed.append((filename, value.lower()))
    if problems:
        raise LockError("; ".join(problems))
    return hashed


def _unsafe_file_name(filename: str) -> str | None:
    """Why ``filename`` is not one plain path component (None when it is). Wheel and sdist
    names start with a letter or digit; a leading dot would also collide with our partial
    downloads' names."""
    if "/" in filename or "\\" in filename:
        return "is a path, not a file name"
    if not filename or filename.startswith("."):
        return "is not a file name"
    if any(ord(character) < 32 or ord(character) == 127 for character in filename):
        return "contains control characters"
    return None


def _requirement(package: Package, tag_ranks: Mapping[Tag, int]) -> Requirement:
    label = f"{package.pretty_name} {package.pretty_version}"
    source_type = package.source_type
    name, version = package.name, package.version.text
    if source_type == "directory":
        origin = Origin("directory", url=package.source_url)
        return Requirement(name, version, Artifact("directory"), origin)
    if source_type == "git":
        origin = Origin(
            "git",
            url=package.source_url,
            reference=package.source_resolved_reference or package.source_reference,
            subdirectory=package.source_subdirectory,
        )
        return Requirement(name, version, Artifact("git"), origin)
    if source_type not in (None, "legacy", "file", "url"):
        raise ResolveError(f"{label}: {source_type} dependencies are not supported.")

    try:
        if source_type in {"file", "url"}:
            origin = Origin("file" if source_type == "file" else "url", url=package.source_url)
            artifact = _single_file(package)
        else:
            origin = Origin(
                "index",
                url=package.source_url if source_type == "legacy" else None,
                source_name=package.source_reference if source_type == "legacy" else None,
            )
            artifact = choose_artifact(package.files, tag_ranks)
    except LockError as e:
        raise LockError(f"{label}: {e.message}") from e
    if artifact is None:
        raise ResolveError(
            f"{label}: poetry.lock lists no sha256-hashed wheel for this target and no sdist"
            f" ({', '.join(f['file'] for f in package.files) or 'no files'})."
        )
    return Requirement(name, version, artifact, origin)


def _single_file(package: Package) -> Artifact | None:
    """The one locked file of a file or URL dependency: a wheel, an sdist, or another source
    archive pip builds (a repository snapshot such as ``main.zip``)."""
    hashed = _hashed_files(package.files)
    if not hashed:
        return None
    filename, value = hashed[0]
    try:
        parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        if filename.endswith(".whl"):
            raise LockError(f"{filename!r} is not a valid wheel file name ({e})") from e
        return Artifact("sdist", filename=filename, sha256=value)
    return Artifact("wheel", filename=filename, sha256=value)


def _runtime_constraint(target: LambdaTarget) -> VersionConstraint:
    from poetry.core.constraints.version import parse_constraint

    return parse_constraint(f"~{target.python_version_text}")


def _excluded(package: Package, reason: str) -> Excluded:
    return Excluded(name=package.name, version=package.version.text, reason=reason)


def _marker_reason(marker: str, extras: frozenset[NormalizedName]) -> str:
    if "extra ==" in marker and not extras:
        return f"extra not requested ({marker})"
    return f"marker false for the target ({marker})"


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
