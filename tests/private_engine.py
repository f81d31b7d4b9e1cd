"""A Docker engine of the tests' own, so that a test may reach an engine over TCP or stop one
mid-build without touching the shared engine, its containers or the host's network.

The private dockerd has its own socket, data root and exec root (so its own containerd), and
runs in a network namespace of its own: with ``--bridge=none`` dockerd deletes the interface
``docker0``, which in the host's namespace is the shared engine's bridge. A relay process joins
the two namespaces: the engine's TCP port is reached through a port on the host's loopback, and
an HTTP CONNECT proxy on the same port in both namespaces lets build containers
(``--network host``: the private namespace) reach the index.

``python -m tests.private_engine NAMESPACE FORWARD_PORT ENGINE_PORT PROXY_PORT`` runs the relay.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

__all__ = ["PrivateEngine", "private_engine"]

ROOT = Path(__file__).resolve().parent.parent
#: Inside its own namespace dockerd may do as it likes with bridges, iptables and forwarding;
#: these keep it from trying. Build containers use --network host (the private namespace).
_NETWORKING = ["--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
               "--bridge=none"]  # fmt: skip
_ENGINE_PORT = 2375  # in the private namespace, where nothing else listens
_CLONE_NEWNET = 0x40000000


class PrivateEngine:
    """One private dockerd. ``unix`` and ``tcp`` are its addresses (for DOCKER_HOST),
    ``proxy`` an HTTPS proxy for the host and its build containers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.namespace = directory / "net"
        self.socket = directory / "docker.sock"
        self.unix = f"unix://{self.socket}"
        self.tcp = f"tcp://127.0.0.1:{_free_port()}"
        self.proxy = f"http://127.0.0.1:{_free_port()}"
        self.log = directory / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.relay: subprocess.Popen[str] | None = None
        self.image = ""
        self.started_seconds = 0.0
        self.loaded_seconds = 0.0

    def start(self) -> None:
        """Start dockerd in the private namespace (made on the first start; dockerd starts
        and supervises a containerd under its exec root) and wait until it answers."""
        from tests.conftest import unavailable

        started = time.monotonic()
        if not self.namespace.exists():
            self.namespace.touch()
            # A namespace kept by a bind mount on the file: a restarted engine joins it again.
            subprocess.run(
                ["unshare", f"--net={self.namespace}", "ip", "link", "set", "lo", "up"],
                check=True,
            )
            self._start_relay()
        config = self.directory / "daemon.json"  # not the host's /etc/docker/daemon.json
        config.write_text("{}\n")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["nsenter", f"--net={self.namespace}", "--",
                 "dockerd", "-H", self.unix, "-H", f"tcp://127.0.0.1:{_ENGINE_PORT}",
                 "--config-file", str(config),
                 "--data-root", str(self.directory / "data"),
                 "--exec-root", str(self.directory / "exec"),
                 "--pidfile", str(self.directory / "dockerd.pid"),
                 # Stopping it stops its containers: no need to wait 15 s for them.
                 "--shutdown-timeout", "2", *_NETWORKING],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                unavailable(f"a private dockerd did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        self.started_seconds = time.monotonic() - started

    def answers(self) -> bool:
        # The SDK leaks its socket when it cannot connect: connect by hand first.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        try:
            with contextlib.closing(self.client(timeout=5)) as client:
                client.ping()
        except (DockerException, RequestException):
            return False
        return True

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.unix, timeout=timeout)

    def load(self, image_tar: Path) -> None:
        """``docker load`` the image (as ``docker save`` wrote it, tagged) into this engine;
        ``image`` is then its tag."""
        started = time.monotonic()
        with contextlib.closing(self.client(timeout=300)) as client, image_tar.open("rb") as data:
            (image,) = client.images.load(data)
        self.image = str(image.tags[0])
        self.loaded_seconds = time.monotonic() - started

    def stop_daemon(self, timeout: float = 30) -> None:
        """End dockerd by its pid: SIGTERM, then SIGKILL if it has not exited in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def remove(self) -> None:
        """Stop everything this engine started, unmount what it mounted (the namespace too),
        delete its files."""
        self.stop_daemon()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.kill()
            self.relay.communicate()
        self._end_strays()
        for mount_point in _mounts_under(self.directory):
            if subprocess.run(["umount", mount_point], check=False).returncode:
                subprocess.run(["umount", "-l", mount_point], check=False)
        assert not _mounts_under(self.directory), _mounts_under(self.directory)
        shutil.rmtree(self.directory)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _start_relay(self) -> None:
        from tests.conftest import unavailable

        ports = [address.rpartition(":")[2] for address in (self.tcp, self.proxy)]
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "tests.private_engine", str(self.namespace), ports[0],
             str(_ENGINE_PORT), ports[1]],
            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.relay.stdout is not None
        if self.relay.stdout.readline().strip() != "ready":
            unavailable(f"the relay into the private engine's namespace failed: {self.relay}")

    def _end_strays(self) -> None:
        """A dockerd that had to be killed leaves its containerd, shims and containers: each
        names this engine's directory on its command line, or is a container in its runc root."""
        runc_root = self.directory / "exec" / "runtime-runc" / "moby"
        if runc_root.is_dir() and shutil.which("runc"):
            for state in runc_root.iterdir():
                subprocess.run(
                    ["runc", "--root", str(runc_root), "delete", "--force", state.name],
                    check=False,
                    capture_output=True,
                )
        strays = _processes_naming(self.directory)
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in strays):
            assert time.monotonic() < deadline, f"processes of the private engine remain: {strays}"
            time.sleep(0.1)


@contextlib.contextmanager
def private_engine(image_tar: Path) -> Iterator[PrivateEngine]:
    """A started private engine with the image of ``image_tar`` loaded; removed afterwards,
    whatever happened to it."""
    from tests.conftest import unavailable

    if os.geteuid() != 0:
        unavailable("a private Docker engine needs root")
    for tool in ("dockerd", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            unavailable(f"a private Docker engine needs {tool}")
    # In /tmp, not the test's long tmp_path: dockerd's and containerd's unix sockets live
    # below it, and a socket's path is limited to 107 bytes.
    engine = PrivateEngine(Path(tempfile.mkdtemp(prefix="plz-engine-", dir="/tmp")))
    try:
        engine.start()
        engine.load(image_tar)
        yield engine
    finally:
        engine.remove()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _mounts_under(directory: Path) -> list[str]:
    """Mount points below ``directory``, deepest first (for unmounting in order)."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        # /proc/mounts escapes spaces, tabs, newlines and backslashes as octal.
        mount_point = line.split()[1].encode().decode("unicode_escape")
        if Path(mount_point).is_relative_to(directory):
            found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def _processes_naming(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (all of them this engine's)."""
    needle = str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


# ---- the relay between the host's network namespace and the engine's -----------------------


def _enter(namespace: int) -> None:
    """Move the calling thread (only it) into the network namespace open as ``namespace``."""
    if ctypes.CDLL(None, use_errno=True).setns(namespace, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def _pipe(source: socket.socket, destination: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            destination.sendall(data)
    with contextlib.suppress(OSError):
        destination.shutdown(socket.SHUT_WR)


def _splice(one: socket.socket, other: socket.socket) -> None:
    back = threading.Thread(target=_pipe, args=(other, one), daemon=True)
    back.start()
    _pipe(one, other)
    back.join()
    one.close()
    other.close()


def _forward(client: socket.socket, namespace: int, port: int) -> None:
    _enter(namespace)
    try:
        upstream = socket.create_connection(("127.0.0.1", port))
    except OSError:
        client.close()
        return
    _splice(client, upstream)


def _connect(client: socket.socket, namespace: int) -> None:
    """Answer one HTTP CONNECT, dialling out from ``namespace``."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(4096)
        if not chunk:
            client.close()
            return
        head += chunk
    head, _, early = head.partition(b"\r\n\r\n")
    method, target, *_ = head.split(b"\r\n")[0].decode("latin-1").split()
    host, _, port = target.rpartition(":")
    if method != "CONNECT" or not port.isdigit():
        client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        client.close()
        return
    _enter(namespace)
    try:
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    except OSError:
        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        client.close()
        return
    upstream.settimeout(None)
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    if early:
        upstream.sendall(early)
    _splice(client, upstream)


def _serve(listener: socket.socket, handle: Callable[..., None], *arguments: int) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client, *arguments), daemon=True).start()


def _relay(namespace_path: str, forward_port: int, engine_port: int, proxy_port: int) -> None:
    """Forward the host's ``forward_port`` to the engine's TCP port in its namespace, and
    serve an HTTP CONNECT proxy on ``proxy_port`` in both namespaces, dialling from the host's."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    private = os.open(namespace_path, os.O_RDONLY)
    servers = [(_listen(forward_port), _forward, (private, engine_port)),
               (_listen(proxy_port), _connect, (host,))]  # fmt: skip
    _enter(private)
    servers.append((_listen(proxy_port), _connect, (host,)))
    _enter(host)
    threads = [
        threading.Thread(target=_serve, args=(listener, handle, *arguments), daemon=True)
        for listener, handle, arguments in servers
    ]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    _relay(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
