"""Fetching on this machine: what a failed download says."""

from __future__ import annotations

from poetry_lambda_zip.fetch import _unreachable


def test_passwords_in_index_and_proxy_urls_are_not_repeated() -> None:
    error = _unreachable(
        "Listing six on https://reader:idx-pass@index.example/simple",
        OSError("ProxyError('Cannot connect to proxy http://builder:pr0xy-pass@10.0.0.1:3128')"),
    )
    assert "idx-pass" not in error.message
    assert "pr0xy-pass" not in error.message
    assert "Listing six on https://index.example/simple failed: " in error.message
    assert "http://10.0.0.1:3128" in error.message
    assert error.fix is not None
    assert "HTTPS_PROXY" in error.fix
