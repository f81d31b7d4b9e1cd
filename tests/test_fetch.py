"""Fetching on this machine: what a failed download says, and what an interrupted one leaves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from requests.exceptions import ReadTimeout

from poetry_lambda_zip.fetch import _Cancelled
from poetry_lambda_zip.fetch import _Run
from poetry_lambda_zip.fetch import _unreachable

if TYPE_CHECKING:
    from pathlib import Path


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


def test_poetrys_retry_message_keeps_its_cause_and_loses_the_urls_password() -> None:
    url = "http://fetcher:dl-pass@127.0.0.1:9/six-1.17.0-py2.py3-none-any.whl"
    try:
        try:
            raise ReadTimeout("HTTPConnectionPool(host='127.0.0.1', port=9): Read timed out.")
        except ReadTimeout:
            # What Poetry's Authenticator raises after its last attempt (it names the netloc).
            raise RuntimeError("All attempts to connect to fetcher:dl-pass@127.0.0.1:9 failed.")  # noqa: B904
    except RuntimeError as e:
        error = _unreachable(f"Downloading six from {url}", e, url)
    assert error.message == (
        "Downloading six from http://127.0.0.1:9/six-1.17.0-py2.py3-none-any.whl failed: All"
        " attempts to connect to 127.0.0.1:9 failed. (HTTPConnectionPool(host='127.0.0.1',"
        " port=9): Read timed out.)"
    )
    assert error.fix is not None
    assert "POETRY_REQUESTS_TIMEOUT" in error.fix


def test_a_cancelled_run_removes_its_partial_files_and_creates_nothing_more(
    tmp_path: Path,
) -> None:
    run = _Run()
    partial = tmp_path / "cache" / ".six.whl.123.part"
    handle = run.create(partial)
    handle.write(b"half a wheel")
    run.cancel()  # what the main thread does when interrupted, while this thread still writes
    assert not partial.exists()
    handle.write(b"the other half")  # the thread, when its read returns: nothing reappears
    handle.close()
    with pytest.raises(_Cancelled):
        run.publish(partial, tmp_path / "cache" / "six.whl")
    with pytest.raises(_Cancelled):
        run.create(tmp_path / "scratch" / ".six.whl.123.part")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache"]
