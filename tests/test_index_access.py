from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.index_access import network_settings

if TYPE_CHECKING:
    from pathlib import Path

PEM_A = b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
PEM_B = b"-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"


def test_environment_bundles_and_source_certificates_are_combined_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(PEM_A)
    b.write_bytes(PEM_B)
    settings = network_settings(
        {"REQUESTS_CA_BUNDLE": str(a), "SSL_CERT_FILE": str(a)}, source_certificates=[b]
    )
    assert settings.ca_bundle == PEM_A + PEM_B


def test_explicit_bundle_replaces_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(PEM_A)
    b.write_bytes(PEM_B)
    settings = network_settings({"PIP_CERT": str(a)}, ca_bundle=b)
    assert settings.ca_bundle == PEM_B


def test_missing_bundles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        network_settings({}, ca_bundle=tmp_path / "nope.pem")
    settings = network_settings({"SSL_CERT_FILE": str(tmp_path / "gone.pem")})
    assert settings.ca_bundle is None
    assert "SSL_CERT_FILE" in settings.warnings[0]


def test_proxies_in_either_case_pass_through() -> None:
    settings = network_settings(
        {"https_proxy": "http://proxy:3128", "NO_PROXY": "localhost", "HOME": "/root"}
    )
    assert settings.proxies == {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost"}
