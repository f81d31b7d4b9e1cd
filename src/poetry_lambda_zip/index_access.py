"""What it takes to reach an index: the CA bundles and proxy settings of a corporate network, and
the credentials Poetry has for each source (config, keyring, ``POETRY_HTTP_BASIC_<SOURCE>_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.tree_steps import join_pem

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence

    from poetry.poetry import Poetry

    from poetry_lambda_zip.resolve import Requirement

__all__ = [
    "CA_BUNDLE_VARIABLES",
    "PROXY_VARIABLES",
    "Credential",
    "NetworkSettings",
    "credentials_for",
    "index_credentials",
    "network_settings",
]

#: Where users and their tools name a CA bundle, in the order we read them.
CA_BUNDLE_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class NetworkSettings:
    """CA certificates to trust in addition to the image's, and proxy settings.

    Both reach the container as files (never as its environment, which ``docker inspect``
    shows): a proxy URL may carry a password.
    """

    ca_bundle: bytes | None = None
    proxies: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def network_settings(
    environ: Mapping[str, str],
    ca_bundle: Path | None = None,
    source_certificates: Iterable[Path] = (),
) -> NetworkSettings:
    """Collect CA bundles (``--ca-bundle``, else the environment, plus Poetry's per-source
    ``certificates.<source>.cert``) and ``HTTP(S)_PROXY``/``NO_PROXY`` (either case)."""
    warnings: list[str] = []
    named: list[tuple[str, Path]] = []
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise ConfigError(
                f"The CA bundle {ca_bundle} does not exist.", "Pass an existing PEM file."
            )
        named.append(("--ca-bundle", ca_bundle))
    else:
        for variable in CA_BUNDLE_VARIABLES:
            value = environ.get(variable, "").strip()
            if not value:
                continue
            path = Path(value)
            if path.is_file():
                named.append((variable, path))
            else:
                warnings.append(f"{variable}={value} is not a file; it is not forwarded.")
    named += [("Poetry source certificate", path) for path in source_certificates]

    bundles: list[bytes] = []
    seen: set[Path] = set()
    for origin, path in named:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            bundles.append(resolved.read_bytes())
        except OSError as e:
            raise ConfigError(
                f"Cannot read the CA bundle {path} ({origin}): {e.strerror}.",
                "Make it readable or point the setting elsewhere.",
            ) from e

    proxies: dict[str, str] = {}
    for variable in PROXY_VARIABLES:
        proxy = environ.get(variable) or environ.get(variable.lower())
        if proxy:
            proxies[variable] = proxy
    return NetworkSettings(
        ca_bundle=join_pem(bundles) if bundles else None,
        proxies=proxies,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Credential:
    host: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credential(host={self.host!r}, username={self.username!r}, password=***)"


def index_credentials(poetry: Poetry, requirements: Sequence[Requirement]) -> list[Credential]:
    """Basic-auth credentials Poetry has for the indexes the requirements come from."""
    wanted = {r.origin.source_name for r in requirements if r.origin.source_name}
    credentials: dict[str, Credential] = {}
    for repository in poetry.pool.all_repositories:
        if repository.name not in wanted:
            continue
        session = getattr(repository, "session", None)
        url = getattr(repository, "url", None)
        if session is None or url is None:
            continue
        found = session.get_credentials_for_url(url)
        host = urlsplit(url).hostname
        if found.username and host:
            credentials[host] = Credential(host, found.username, found.password or "")
    return [credentials[host] for host in sorted(credentials)]


def credentials_for(
    built: Sequence[Requirement], default_index: str | None, credentials: Sequence[Credential]
) -> tuple[Credential, ...]:
    """Only the credentials a build needs: for the indexes ``built`` comes from and the one
    their build dependencies come from (``default_index``); none when nothing is built."""
    if not built:
        return ()
    urls = [r.origin.url for r in built if r.origin.type == "index" and r.origin.url]
    hosts = {urlsplit(url).hostname for url in [*urls, default_index] if url}
    return tuple(c for c in credentials if c.host in hosts)
