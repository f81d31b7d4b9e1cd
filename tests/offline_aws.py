"""Run a deploy tool with AWS answered by a stand-in: ``python offline_aws.py LOG -- COMMAND``.

Meant to run inside a network namespace whose only interface is loopback (the tests start it
with ``unshare --net``), so that nothing can be reached but the HTTPS proxy this starts. The
tool gets ``HTTPS_PROXY`` and a CA (``NODE_EXTRA_CA_CERTS``)
client reads) for a certificate made here for the AWS hosts it asks for. Every request is
written to LOG as a JSON line (host, method, path, the form body's ``Action``); every answer is
what AWS gives before a first deploy: CloudFormation's "Stack with id ... does not exist".
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs

NO_STACK = (
    '<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
    "<Error><Type>Sender</Type><Code>ValidationError</Code>"
    "<Message>Stack with id {stack} does not exist</Message></Error>"
    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


def certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    names = ",".join(f"DNS:{host}" for host in hosts)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={hosts[0]}",
         "-addext", f"subjectAltName={names}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def read_request(stream: ssl.SSLSocket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += stream.recv(65536)
    return lines[0], headers, body


def serve(client: socket.socket, context: ssl.SSLContext, log: Path, lock: threading.Lock) -> None:
    with client:
        connect = client.recv(65536).decode("latin-1")
        host = connect.split()[1].rsplit(":", 1)[0]
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with context.wrap_socket(client, server_side=True) as stream:
            request_line, _headers, body = read_request(stream)
            method, path = request_line.split()[:2]
            form = parse_qs(body.decode())
            record = {
                "host": host,
                "method": method,
                "path": path,
                "action": form.get("Action", [None])[0],
                "stack": form.get("StackName", [None])[0],
            }
            with lock, log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            answer = NO_STACK.format(stack=record["stack"]).encode()
            stream.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )


def main(arguments: list[str]) -> int:
    log = Path(arguments[0])
    command = arguments[arguments.index("--") + 1 :]
    hosts = [f"cloudformation.{os.environ['AWS_REGION']}.amazonaws.com"]
    with tempfile.TemporaryDirectory() as scratch:
        key, cert = certificate(Path(scratch), hosts)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = socket.create_server(("127.0.0.1", 0))
        lock = threading.Lock()

        def accept() -> None:
            while True:
                client, _ = server.accept()
                threading.Thread(target=serve, args=(client, context, log, lock)).start()

        threading.Thread(target=accept, daemon=True).start()
        proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
        # Node reads NODE_EXTRA_CA_CERTS for every TLS connection (the proxy agent passes no CA
        # of its own to the tunnelled one).
        env = {**os.environ, "HTTPS_PROXY": proxy, "NODE_EXTRA_CA_CERTS": str(cert)}
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
