"""Downloads on this machine, each fault provoked for real against a server on 127.0.0.1: a lock
whose names or hashes would steer files out of the cache, damaged cached files, --force,
unwritable and full caches, a server that stalls, SIGTERM and Ctrl-C during a download."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import tomlkit
from poetry.core.pyproject.toml import PyProjectTOML
from poetry.packages.locker import Locker

from tests.conftest import mount_tmpfs
from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Iterator

POETRY = str(Path(sys.executable).with_name("poetry"))
USER = "fetcher"
PASSWORD = "dl-s3cret-pw"
#: Files bigger than the tmpfs of the "full" test, and not compressible.
WHEEL_SIZE = 200_000
#: The partial downloads and link updates of a run: ``.NAME.PID.part``.
PARTIAL = "*.part"


class Server:
    """Serves ``files`` over HTTP on 127.0.0.1; ``mode`` "stall" answers with headers and a
    little of the body, then sends nothing more; "silent" accepts and never answers; "slow"
    sends the body in pieces."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode = "serve"
        #: A mode of its own for some files, and the pause between the pieces of "slow".
        self.modes: dict[str, str] = {}
        self.pause = 0.02
        self.requests: list[str] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append(name)
                server.arrived.set()
                mode = server.modes.get(name, server.mode)
                if mode == "silent":
                    server.release.wait()
                    return
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "stall":
                    self.wfile.write(data[:1000])
                    self.wfile.flush()
                    server.release.wait()
                    return
                if mode == "slow":  # in pieces: downloads of one file overlap
                    for start in range(0, len(data), 20_000):
                        self.wfile.write(data[start : start + 20_000])
                        self.wfile.flush()
                        time.sleep(server.pause)
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def poetry_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Poetry's cache of this test alone (its artifacts and our index of them by sha256)."""
    directory = tmp_path / "poetry-cache"
    directory.mkdir()
    monkeypatch.setenv("POETRY_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def make_wheel(directory: Path, name: str, size: int = WHEEL_SIZE) -> Path:
    """A pure wheel NAME 1.0 holding a module and ``size`` random (incompressible) bytes."""
    module = name.replace("-", "_")
    info = f"{module}-1.0.dist-info"
    files = {
        f"{module}/__init__.py": f"NAME = {name!r}\n".encode(),
        f"{module}/blob.bin": random.Random(name).randbytes(size),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={_urlsafe_digest(data)},{len(data)}\n" for path, data in files.items()
    )
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = directory / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), data)
    return path


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url_project(
    path: Path, server: Server, names: list[str], lock_files: dict[str, list[dict[str, str]]]
) -> Path:
    """A project depending on each of ``names`` by URL on ``server`` (their wheels served
    there), locked with ``lock_files`` where given, else with the served wheels' names and
    hashes. Locked as Poetry would: content-hash from Poetry's Locker."""
    (path / "src" / "fetch_demo").mkdir(parents=True)
    (path / "src" / "fetch_demo" / "__init__.py").write_text("")
    wheels = path / "served"
    wheels.mkdir()
    urls = {}
    for name in names:
        wheel = make_wheel(wheels, name)
        server.files[wheel.name] = wheel.read_bytes()
        urls[name] = (server.url(wheel.name), wheel)
    dependencies = ", ".join(f'"{name} @ {url}"' for name, (url, _) in urls.items())
    (path / "pyproject.toml").write_text(
        f"""[project]
name = "fetch-demo"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [{dependencies}]

[tool.poetry]
packages = [{{ include = "fetch_demo", from = "src" }}]

[build-system]
requires = ["poetry-core>=2.0,<3"]
build-backend = "poetry.core.masonry.api"
"""
    )
    packages = tomlkit.aot()
    for name, (url, wheel) in urls.items():
        files = tomlkit.array()
        for entry in lock_files.get(
            name, [{"file": wheel.name, "hash": f"sha256:{sha256(wheel)}"}]
        ):
            table = tomlkit.inline_table()
            table.update(entry)
            files.append(table)
        package = tomlkit.table()
        package.update(
            {"name": name, "version": "1.0", "description": "", "optional": False,
             "python-versions": "*", "groups": ["main"], "files": files,
             "source": {"type": "url", "url": url}}
        )  # fmt: skip
        packages.append(package)
    lock = tomlkit.document()
    lock["package"] = packages
    lock["metadata"] = {"lock-version": "2.1", "python-versions": ">=3.11", "content-hash": ""}
    lock_path = path / "poetry.lock"
    data = PyProjectTOML(path / "pyproject.toml").data
    content_hash = Locker(lock_path, data)._get_content_hash(with_dependency_groups=True)
    lock["metadata"]["content-hash"] = content_hash
    lock_path.write_text(tomlkit.dumps(lock))
    return path


def local_build(path: Path, output: str, *options: str) -> Build:
    return Build(path, " ".join(["--runtime python3.11 --builder local -o", output, *options]))


def cached_wheels(cache: Path) -> list[Path]:
    return sorted((cache / "artifacts").rglob("*.whl"), key=lambda path: path.name)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Directories a test mounted a tmpfs on, unmounted afterwards."""
    mounted: list[Path] = []
    yield mounted
    for directory in reversed(mounted):
        if os.path.ismount(directory):
            subprocess.run(["umount", str(directory)], check=True)


# ---- the lock's names and hashes are input, not trusted -----------------------------------


@pytest.mark.usefixtures("poetry_cache")
def test_lock_names_and_hashes_that_would_leave_the_cache_are_refused_before_any_download(
    tmp_path: Path, server: Server
) -> None:
    victim = tmp_path / "victim.whl"
    victim.write_bytes(b"keep me")
    escape = "../" * 12 + str(victim).lstrip("/")
    path = url_project(
        tmp_path / "project",
        server,
        ["tiny-a", "tiny-b"],
        {
            "tiny-a": [{"file": escape, "hash": f"sha256:{'a' * 64}"}],
            "tiny-b": [
                {"file": "tiny_b-1.0-py3-none-any.whl", "hash": "sha256:../../../../etc/passwd"}
            ],
        },
    )
    result = local_build(path, "out.zip")
    assert result.status == 3, result.error
    assert "poetry.lock has file entries that cannot be used safely" in result.error
    assert f"tiny-a 1.0: {escape!r} is a path, not a file name" in result.error
    assert "tiny-b 1.0: 'tiny_b-1.0-py3-none-any.whl' has sha256 '../../../../etc/passwd'" in (
        result.error
    )
    assert "poetry lock" in result.error
    assert server.requests == []
    assert victim.read_bytes() == b"keep me"
    assert not (path / "out.zip").exists()


# ---- cached downloads are checked whenever they are reused ---------------------------------


@pytest.mark.parametrize("found_through", ["index by sha256", "Poetry's artifact cache"])
def test_a_damaged_cached_download_is_discarded_with_a_warning_and_fetched_again(
    tmp_path: Path, server: Server, poetry_cache: Path, tree_cache: Path, found_through: str
) -> None:
    path = url_project(tmp_path / "project", server, ["tiny-a", "tiny-b"], {})
    first = local_build(path, "first.zip")
    assert first.status == 0, first.error
    assert first.warnings == []
    wheels = cached_wheels(poetry_cache)
    assert [wheel.name for wheel in wheels] == [
        "tiny_a-1.0-py3-none-any.whl",
        "tiny_b-1.0-py3-none-any.whl",
    ]
    good = wheels[0].read_bytes()
    wheels[0].write_bytes(good[:1000] + b"\0" + good[1001:])  # one byte flipped on disk
    if found_through == "Poetry's artifact cache":
        shutil.rmtree(poetry_cache / "lambda-zip-by-hash")
    shutil.rmtree(tree_cache)  # else the kept tree is reused and nothing is fetched
    server.requests.clear()

    second = local_build(path, "second.zip")
    assert second.status == 0, second.error
    (warning,) = second.warnings
    assert f"The cached download {wheels[0]} of tiny-a 1.0 has sha256" in warning
    assert "damaged after it was downloaded" in warning
    assert "Discarded; downloading it again." in warning
    assert server.requests == ["tiny_a-1.0-py3-none-any.whl"]
    assert wheels[0].read_bytes() == good
    assert (path / "second.zip").read_bytes() == (path / "first.zip").read_bytes()


def test_force_downloads_again_and_refreshes_the_cache(
    tmp_path: Path, server: Server, poetry_cache: Path
) -> None:
    path = url_project(tmp_path / "project", server, ["tiny-a"], {})
    first = local_build(path, "first.zip")
    assert first.status == 0, first.error
    (wheel,) = cached_wheels(poetry_cache)
    good = wheel.read_bytes()
    wheel.write_bytes(b"damaged")
    server.requests.clear()

    forced = local_build(path, "first.zip", "--force")
    assert forced.status == 0, forced.error
    assert forced.warnings == []  # the cached copy was not even read
    assert server.requests == ["tiny_a-1.0-py3-none-any.whl"]
    assert wheel.read_bytes() == good
    assert not list(poetry_cache.rglob(PARTIAL))


def two_sets(tmp_path: Path, server: Server, functions: dict[str, list[str]]) -> Path:
    """A project of tiny-a and tiny-b, with a function per entry of ``functions`` leaving out
    the distributions it names: functions of different requirement sets, built at once."""
    path = url_project(tmp_path / "project", server, ["tiny-a", "tiny-b"], {})
    with (path / "pyproject.toml").open("a") as pyproject:
        for name, left_out in functions.items():
            pyproject.write(
                f'\n[tool.poetry-lambda-zip.functions.{name}]\nhandler = "fetch_demo.x"\n'
                f"exclude-package = {json.dumps(left_out)}\n"
            )
    (path / "src" / "fetch_demo" / "__init__.py").write_text(
        "def x(event, context):\n    return 1\n"
    )
    return path


def test_two_requirement_sets_downloading_one_wheel_at_once_both_keep_it(
    tmp_path: Path, server: Server, poetry_cache: Path
) -> None:
    """Two functions whose requirement sets differ are built at once; each downloads the
    wheel they share into Poetry's cache, neither into the other's partial file."""
    path = two_sets(tmp_path, server, {"both": [], "one": ["tiny-b"]})
    server.mode = "slow"
    for _ in range(2):  # the second with --force: both download again, into the cache
        built = Build(path, "--runtime python3.11 --builder local --force")
        assert built.status == 0, built.error
        assert built.warnings == []
        assert server.requests.count("tiny_a-1.0-py3-none-any.whl") == 2
        server.requests.clear()
    wheels = {wheel.name: wheel for wheel in cached_wheels(poetry_cache)}
    assert sha256(wheels["tiny_a-1.0-py3-none-any.whl"]) == sha256(
        path / "served" / "tiny_a-1.0-py3-none-any.whl"
    )
    assert not list(poetry_cache.rglob(PARTIAL))


def test_a_fresh_download_that_does_not_match_is_blamed_on_the_index_and_not_kept(
    tmp_path: Path, server: Server, poetry_cache: Path
) -> None:
    path = url_project(tmp_path / "project", server, ["tiny-a"], {})
    server.files["tiny_a-1.0-py3-none-any.whl"] += b"tampered"
    result = local_build(path, "out.zip")
    assert result.status == 5
    assert "tiny_a-1.0-py3-none-any.whl (tiny-a 1.0) does not match poetry.lock" in result.error
    assert "If the index legitimately changed the file" in result.error
    assert cached_wheels(poetry_cache) == []
    assert not list(poetry_cache.rglob(PARTIAL))
    assert not (path / "out.zip").exists()


# ---- a cache that cannot be written costs one warning, not the build -----------------------


def test_a_warm_build_from_a_read_only_download_cache_needs_no_write(
    tmp_path: Path, server: Server, poetry_cache: Path, tree_cache: Path, mounts: list[Path]
) -> None:
    mount_tmpfs(poetry_cache, "size=16m")
    mounts.append(poetry_cache)
    path = url_project(tmp_path / "project", server, ["tiny-a", "tiny-b"], {})
    first = local_build(path, "first.zip")
    assert first.status == 0, first.error
    subprocess.run(["mount", "-o", "remount,ro", str(poetry_cache)], check=True)
    shutil.rmtree(tree_cache)
    server.requests.clear()

    second = local_build(path, "second.zip")
    assert second.status == 0, second.error
    assert second.warnings == []
    assert server.requests == []
    assert (path / "second.zip").read_bytes() == (path / "first.zip").read_bytes()


@pytest.mark.parametrize("cache", ["read-only", "full"])
def test_a_download_cache_that_cannot_be_written_costs_one_warning(
    tmp_path: Path, server: Server, poetry_cache: Path, mounts: list[Path], cache: str
) -> None:
    # Read-only: nothing can be created. Full: the first wheel's first bytes fill it.
    mount_tmpfs(poetry_cache, "ro" if cache == "read-only" else f"size={WHEEL_SIZE // 2}")
    mounts.append(poetry_cache)
    path = url_project(tmp_path / "project", server, ["tiny-a", "tiny-b", "tiny-c"], {})
    reference = local_build(path, "reference.zip", "--no-cache")
    assert reference.status == 0, reference.error

    result = local_build(path, "out.zip")
    assert result.status == 0, result.error
    (warning,) = result.warnings
    assert f"Poetry's download cache cannot be written ({poetry_cache}" in warning
    reason = "Read-only file system" if cache == "read-only" else "No space left on device"
    assert reason in warning
    assert "downloading into the build's temporary directory" in warning
    assert (path / "out.zip").read_bytes() == (path / "reference.zip").read_bytes()
    assert not list(poetry_cache.rglob(PARTIAL))


# ---- stalled downloads, SIGTERM and Ctrl-C -------------------------------------------------


def start_build(
    path: Path, poetry_cache: Path, scratch: Path, *options: str, **environment: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [POETRY, "lambda-zip", "-C", str(path), "--runtime", "python3.11", "--builder", "local",
         *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "POETRY_CACHE_DIR": str(poetry_cache), "TMPDIR": str(scratch),
             **environment},
    )  # fmt: skip


INTERRUPTIONS = [
    pytest.param((stall, signum), id=f"{stall}-{signum.name}")
    for stall in ("silent", "stall")
    for signum in (signal.SIGTERM, signal.SIGINT)
]


@pytest.mark.parametrize("case", INTERRUPTIONS)
def test_a_signal_ends_a_stalled_download_at_once_leaving_nothing(
    tmp_path: Path,
    server: Server,
    poetry_cache: Path,
    private_tmp: Path,
    case: tuple[str, signal.Signals],
) -> None:
    stall, signum = case
    path = url_project(tmp_path / "project", server, ["tiny-a"], {})
    server.mode = stall
    with start_build(path, poetry_cache, private_tmp) as process:
        try:
            assert server.arrived.wait(60), process.communicate()
            assert list(poetry_cache.rglob(PARTIAL)), "the download did not start"
            process.send_signal(signum)
            started = time.monotonic()
            _, error = process.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            process.kill()  # only if it outlived the test
    assert process.returncode == 130, error
    assert f"The build was interrupted ({signum.name})" in error
    assert "Traceback" not in error
    assert took < 2, f"it took {took:.1f}s to stop"
    assert list(private_tmp.iterdir()) == []
    assert not list(poetry_cache.rglob(PARTIAL))
    assert cached_wheels(poetry_cache) == []
    assert not (path / "dist").exists()


@pytest.mark.parametrize("presses", [1, 10])
def test_a_signal_stops_the_other_requirement_sets_before_they_replace_a_zip(
    tmp_path: Path, server: Server, poetry_cache: Path, private_tmp: Path, presses: int
) -> None:
    """Ctrl-C while two requirement sets build: the one in the foreground stops at once, the
    other at its next step; neither replaces the zips of the last good build. Pressed again
    (people do), the cleanup the first press started is not broken off."""
    path = two_sets(tmp_path, server, {"first": ["tiny-b"], "second": ["tiny-a"]})
    module = path / "src" / "fetch_demo" / "__init__.py"
    with start_build(path, poetry_cache, private_tmp) as process:
        _, error = process.communicate(timeout=120)
    assert process.returncode == 0, error
    good = {name: (path / "dist" / name).read_bytes() for name in ("first.zip", "second.zip")}

    module.write_text("def x(event, context):\n    return 2\n")  # both zips would change
    server.requests.clear()
    server.arrived.clear()
    server.modes = {"tiny_a-1.0-py3-none-any.whl": "stall", "tiny_b-1.0-py3-none-any.whl": "slow"}
    server.pause = 0.1  # tiny-b takes about a second: the signal comes while it downloads
    with start_build(path, poetry_cache, private_tmp, "--force") as process:
        try:
            deadline = time.monotonic() + 60
            while len(set(server.requests)) < 2:
                assert time.monotonic() < deadline, process.communicate()
                time.sleep(0.01)
            started = time.monotonic()
            for _ in range(presses):
                process.send_signal(signal.SIGINT)
                time.sleep(0.01)
            _, error = process.communicate(timeout=30)
            took = time.monotonic() - started
        finally:
            process.kill()
    assert process.returncode == 130, error
    assert "The build was interrupted (SIGINT)" in error
    assert "Traceback" not in error
    assert took < 3, f"it took {took:.1f}s to stop"
    assert {name: (path / "dist" / name).read_bytes() for name in good} == good
    assert list(private_tmp.iterdir()) == []
    assert not list((path / "dist").glob(".*"))


@pytest.mark.parametrize("stall", ["stall", "silent"])
def test_a_stalled_download_fails_after_poetrys_timeout_naming_the_url_without_password(
    tmp_path: Path, server: Server, poetry_cache: Path, private_tmp: Path, stall: str
) -> None:
    path = url_project(tmp_path / "project", server, ["tiny-a"], {})
    server.mode = stall
    started = time.monotonic()
    with start_build(path, poetry_cache, private_tmp, POETRY_REQUESTS_TIMEOUT="1") as process:
        try:
            output, error = process.communicate(timeout=120)
        finally:
            process.kill()  # only if it outlived the test
    took = time.monotonic() - started
    assert process.returncode == 5, error
    url = f"http://127.0.0.1:{server.port}/tiny_a-1.0-py3-none-any.whl"
    assert f"Downloading tiny_a-1.0-py3-none-any.whl from {url} failed" in error
    assert "Read timed out" in error
    assert "The server sent nothing for 1 s (POETRY_REQUESTS_TIMEOUT)" in error
    assert PASSWORD not in output + error
    # Poetry retries a request that gets no answer (6 attempts) but not a stalled body.
    assert took < (30 if stall == "silent" else 10)
    assert list(private_tmp.iterdir()) == []
    assert not list(poetry_cache.rglob(PARTIAL))
    assert cached_wheels(poetry_cache) == []
