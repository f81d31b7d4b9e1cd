"""``--sbom``: a CycloneDX 1.6 JSON document beside each zip, listing what that zip ships.

What is listed is read from the zip itself (every ``*.dist-info/METADATA`` in it, which no
exclude removes), so the document describes the zip written or kept, whichever way the build
went; the lock adds what the zip cannot say (the locked file's sha256, where it came from).
The document is written by cyclonedx-python-lib (the ``sbom`` extra) and is reproducible like
the zip: its timestamp is the zip's (``SOURCE_DATE_EPOCH``), its serial number a digest of the
rest of it, and it names no path of this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as Requires
from packaging.utils import NormalizedName
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version

from poetry_lambda_zip import __version__
from poetry_lambda_zip.archive import temporary_next_to
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fingerprint import relative_url

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Mapping
    from pathlib import Path

    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component
    from cyclonedx.model.license import License
    from packageurl import PackageURL
    from poetry.core.packages.project_package import ProjectPackage

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "SBOM_SUFFIX",
    "ShippedDistribution",
    "direct_dependencies",
    "require_library",
    "sbom_document",
    "sbom_path",
    "shipped_distributions",
    "write_sbom",
]

#: ``out/app.zip`` -> ``out/app.zip.cdx.json``: beside its zip, named after all of it (two
#: outputs never share a document), with the extension CycloneDX recommends.
SBOM_SUFFIX = ".cdx.json"
#: Our properties' namespace (CycloneDX's property taxonomy leaves a tool's own to it).
_PROPERTY = "poetry-lambda-zip"
#: A distribution's metadata at the zip root, or below a layer's python/.
_METADATA = re.compile(r"^(?:python/)?([^/]+)\.dist-info/METADATA$")
#: A METADATA larger than this is not read (a zip is untrusted input).
_LARGEST_METADATA = 32 * 1024 * 1024
#: A ``License`` field longer than this, or of several lines, is a license's text, not its
#: name: the classifiers then say it.
_LONGEST_LICENSE_NAME = 100
_INSTALL_HINT = (
    "Install the plugin with its sbom extra: `poetry self add 'poetry-lambda-zip[sbom]'`"
    " (or pip install 'poetry-lambda-zip[sbom]' where Poetry runs), or leave out --sbom."
)


def sbom_path(output: Path) -> Path:
    """Where the document of the zip ``output`` goes."""
    return output.with_name(output.name + SBOM_SUFFIX)


def require_library() -> None:
    """cyclonedx-python-lib is there (checked before anything is built)."""
    try:
        import cyclonedx.output.json  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"--sbom needs cyclonedx-python-lib, which is not installed here ({e}).",
            _INSTALL_HINT,
        ) from e


@dataclass(frozen=True)
class ShippedDistribution:
    """One ``*.dist-info`` in a zip: its name and version, and what its METADATA says."""

    name: str
    version: str
    licenses: tuple[str, ...]
    license_expression: str | None
    classifiers: tuple[str, ...]
    requires: tuple[str, ...]
    extras: tuple[str, ...]

    @property
    def key(self) -> NormalizedName:
        return canonicalize_name(self.name)


def shipped_distributions(path: Path) -> list[ShippedDistribution]:
    """Every distribution whose metadata the zip at ``path`` holds, by canonical name."""
    found: dict[NormalizedName, ShippedDistribution] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda info: info.filename):
                if not _METADATA.match(info.filename) or info.file_size > _LARGEST_METADATA:
                    continue
                shipped = _parse_metadata(archive.read(info))
                if shipped is not None:
                    found.setdefault(shipped.key, shipped)
    except (OSError, zipfile.BadZipFile) as e:
        raise OutputError(
            f"Cannot read {path} for its SBOM: {e}.", "Run again with --force to rebuild it."
        ) from e
    return [found[key] for key in sorted(found)]


def _parse_metadata(data: bytes) -> ShippedDistribution | None:
    raw, unparsed = parse_email(data)
    name, version = raw.get("name"), raw.get("version")
    if not name or not version:
        return None
    expression = raw.get("license_expression") or unparsed.get("license-expression")
    if isinstance(expression, list):  # an older packaging leaves it unparsed
        expression = expression[0] if expression else None
    license_field = (raw.get("license") or "").strip()
    return ShippedDistribution(
        name=name,
        version=version,
        licenses=(license_field,) if license_field else (),
        license_expression=expression.strip() if expression else None,
        classifiers=tuple(raw.get("classifiers") or ()),
        requires=tuple(raw.get("requires_dist") or ()),
        extras=tuple(raw.get("provides_extra") or ()),
    )


def direct_dependencies(
    project: ProjectPackage, groups: Iterable[NormalizedName]
) -> frozenset[NormalizedName]:
    """The distributions the project names itself, in the groups the build installs."""
    return frozenset(
        canonicalize_name(dependency.name)
        for group in groups
        if project.has_dependency_group(group)
        for dependency in project.dependency_group(group).dependencies
    )


def sbom_document(
    decided: BuildPlan,
    kind: str,
    archive: ArchiveStats,
    shipped: Iterable[ShippedDistribution],
    direct: frozenset[NormalizedName],
) -> str:
    """The CycloneDX 1.6 JSON document of the zip ``archive`` (a ``kind`` of ``decided``'s
    layout) that ships ``shipped``; ``direct``: what the project itself depends on."""
    from cyclonedx.output.json import JsonV1Dot6

    bom = _bom(decided, kind, archive, list(shipped), direct)
    # The serial number is the digest of everything else: the same zip, the same document.
    unnumbered = JsonV1Dot6(bom).output_as_string(indent=2)
    digest = hashlib.sha256(unnumbered.encode()).hexdigest()
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, f"{_PROPERTY}:sbom:{digest}")
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def _bom(
    decided: BuildPlan,
    kind: str,
    archive: ArchiveStats,
    shipped: list[ShippedDistribution],
    direct: frozenset[NormalizedName],
) -> Bom:
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.bom import BomMetaData
    from cyclonedx.model.component import Component
    from cyclonedx.model.component import ComponentType

    project_key = canonicalize_name(decided.project_name)
    own = next((d for d in shipped if d.key == project_key), None)
    project = Component(
        type=ComponentType.APPLICATION,
        name=decided.project_name,
        version=decided.project_version,
        bom_ref=f"project:{project_key}",
        licenses=_licenses(own) if own is not None else (),
        properties=[
            Property(name=f"{_PROPERTY}:zip", value=archive.path.name),
            Property(name=f"{_PROPERTY}:zip:kind", value=kind),
            Property(name=f"{_PROPERTY}:zip:sha256", value=archive.sha256),
            Property(name=f"{_PROPERTY}:runtime", value=decided.target.runtime),
            Property(name=f"{_PROPERTY}:arch", value=decided.target.arch),
        ],
    )
    tool = Component(type=ComponentType.APPLICATION, name="poetry-lambda-zip", version=__version__)
    metadata = BomMetaData(
        component=project,
        timestamp=datetime.fromtimestamp(decided.timestamp, tz=timezone.utc),
    )
    metadata.tools.components.add(tool)
    locked = {requirement.name: requirement for requirement in decided.requirements.requirements}
    components = {
        d.key: _component(d, locked.get(d.key), decided.project_dir)
        for d in shipped
        if d.key != project_key
    }
    bom = Bom(
        components=components.values(),
        metadata=metadata,
        serial_number=uuid.UUID(int=0),
    )
    _register_dependencies(
        bom,
        project=project,
        components=components,
        shipped=shipped,
        direct=direct,
        decided=decided,
    )
    return bom


def _component(
    shipped: ShippedDistribution, locked: Requirement | None, project_dir: Path
) -> Component:
    """A shipped distribution; with the lock's facts when the lock pins this version."""
    from cyclonedx.model import ExternalReference
    from cyclonedx.model import ExternalReferenceType
    from cyclonedx.model import HashAlgorithm
    from cyclonedx.model import HashType
    from cyclonedx.model import Property
    from cyclonedx.model import XsUri
    from cyclonedx.model.component import Component
    from cyclonedx.model.component import ComponentType

    if locked is not None and not _same_version(locked.version, shipped.version):
        locked = None
    purl = _purl(shipped, locked)
    hashes, references, properties = [], [], []
    if locked is not None:
        artifact, origin = locked.artifact, locked.origin
        if artifact.sha256 is not None:
            hashes.append(HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256))
        if artifact.filename is not None:
            properties.append(Property(name=f"{_PROPERTY}:locked-file", value=artifact.filename))
        properties.append(Property(name=f"{_PROPERTY}:source", value=origin.type))
        if origin.source_name:
            properties.append(Property(name=f"{_PROPERTY}:source:name", value=origin.source_name))
        where = relative_url(origin.type, origin.url, project_dir)
        if origin.type == "git" and where is not None:
            vcs = _without_credentials(where)
            references.append(
                ExternalReference(
                    type=ExternalReferenceType.VCS, url=XsUri(vcs), comment=origin.reference
                )
            )
            if origin.reference:
                properties.append(Property(name=f"{_PROPERTY}:git:commit", value=origin.reference))
            if origin.subdirectory:
                properties.append(
                    Property(name=f"{_PROPERTY}:git:subdirectory", value=origin.subdirectory)
                )
        elif origin.type == "url" and where is not None:
            references.append(
                ExternalReference(
                    type=ExternalReferenceType.DISTRIBUTION,
                    url=XsUri(_without_credentials(where)),
                    hashes=hashes,
                )
            )
        elif origin.type in ("file", "directory") and where is not None:
            properties.append(Property(name=f"{_PROPERTY}:path", value=where))
    return Component(
        type=ComponentType.LIBRARY,
        name=shipped.name,
        version=shipped.version,
        purl=purl,
        bom_ref=str(purl) if purl is not None else f"{shipped.key}@{shipped.version}",
        hashes=hashes,
        licenses=_licenses(shipped),
        external_references=references,
        properties=properties,
    )


def _purl(shipped: ShippedDistribution, locked: Requirement | None) -> PackageURL | None:
    """``pkg:pypi/NAME@VERSION`` (NAME normalised as the purl spec and PEP 503 say) for what
    comes from a package index, with ``repository_url`` for an index other than PyPI; none for
    a path, a git checkout or an archive URL (no index knows them by that name)."""
    from packageurl import PackageURL

    qualifiers: dict[str, str] = {}
    if locked is not None:
        origin = locked.origin
        if origin.type != "index":
            return None
        if origin.url is not None:
            qualifiers["repository_url"] = _without_credentials(origin.url)
    return PackageURL(
        type="pypi", name=shipped.key, version=shipped.version, qualifiers=qualifiers or None
    )


def _same_version(locked: str, shipped: str) -> bool:
    try:
        return Version(locked) == Version(shipped)
    except InvalidVersion:
        return locked == shipped


def _licenses(shipped: ShippedDistribution) -> list[License]:
    """What the metadata declares: ``License-Expression`` (PEP 639) where given, else the
    ``License`` field when it names a license (an SPDX id or expression, or a short name),
    else the ``License ::`` classifiers."""
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model.license import LicenseAcknowledgement

    factory = LicenseFactory()
    declared = LicenseAcknowledgement.DECLARED
    if shipped.license_expression:
        return [
            factory.make_from_string(shipped.license_expression, license_acknowledgement=declared)
        ]
    names = [
        name
        for name in shipped.licenses
        if "\n" not in name and len(name) <= _LONGEST_LICENSE_NAME and name.upper() != "UNKNOWN"
    ]
    if names:
        return [factory.make_from_string(names[0], license_acknowledgement=declared)]
    classified = [
        c.split("::")[-1].strip()
        for c in shipped.classifiers
        if c.startswith("License ::") and c.count("::") >= 2
    ]
    return [
        factory.make_with_name(name, acknowledgement=declared) for name in dict.fromkeys(classified)
    ]


def _register_dependencies(
    bom: Bom,
    *,
    project: Component,
    components: Mapping[NormalizedName, Component],
    shipped: list[ShippedDistribution],
    direct: frozenset[NormalizedName],
    decided: BuildPlan,
) -> None:
    """The graph within this zip: each distribution's ``Requires-Dist`` that holds on the
    target (for any of its extras) and ships here; the project's own dependencies, and what
    nothing here requires (what an excluded distribution needed), hang from the project."""
    environment = decided.target.marker_environment()
    needed: set[NormalizedName] = set()
    for distribution in shipped:
        if distribution.key not in components:
            continue
        wanted = sorted(_required(distribution, environment) & components.keys())
        needed.update(wanted)
        bom.register_dependency(components[distribution.key], [components[n] for n in wanted])
    tops = sorted(key for key in components if key in direct or key not in needed)
    if tops:
        bom.register_dependency(project, [components[key] for key in tops])


def _required(
    distribution: ShippedDistribution, environment: Mapping[str, str]
) -> set[NormalizedName]:
    names: set[NormalizedName] = set()
    for line in distribution.requires:
        try:
            requirement = Requires(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({**environment, "extra": extra}) for extra in ("", *distribution.extras)
        ):
            names.add(canonicalize_name(requirement.name))
    return names


def _without_credentials(url: str) -> str:
    """A URL as the document may name it: no ``user:password@``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def write_sbom(
    decided: BuildPlan, kind: str, archive: ArchiveStats, direct: frozenset[NormalizedName]
) -> Path:
    """The document of ``archive``, beside it; an unchanged document is left as it is."""
    document = sbom_document(decided, kind, archive, shipped_distributions(archive.path), direct)
    target = sbom_path(archive.path)
    data = document.encode()
    with contextlib.suppress(OSError):
        if target.is_file() and target.read_bytes() == data:
            return target
    temporary = temporary_next_to(target)
    try:
        temporary.write_bytes(data)
        temporary.chmod(0o644)
        os.replace(temporary, target)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise OutputError(
            f"Cannot write the SBOM {target}: {e.strerror or e}.",
            "Check the directory's permissions and free space.",
        ) from e
    return target
