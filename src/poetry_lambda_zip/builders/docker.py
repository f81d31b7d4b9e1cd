"""The Docker builder: install inside a Lambda image through the engine's API, tar streams only.

The only module that imports ``docker``. Inputs go in with ``put_archive`` and the installed
tree comes out with ``get_archive``, so nothing depends on the engine seeing this machine's
files (CI job containers sharing docker.sock, remote ``DOCKER_HOST``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tarfile
import time
import uuid
import zipfile
from collections import deque
from importlib import resources
from pathlib import Path
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from typing import Any

import docker
from docker.errors import APIError
from docker.errors import DockerException
from docker.errors import ImageNotFound
from docker.errors import NotFound
from requests.exceptions import RequestException

from poetry_lambda_zip.builders.bytecode_here import BytecodeVerdicts
from poetry_lambda_zip.builders.bytecode_here import bytecode_only
from poetry_lambda_zip.builders.bytecode_here import finish_here
from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.entries import entries_from_tar
from poetry_lambda_zip.entries import executable
from poetry_lambda_zip.entries import write_tree
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import DockerUnavailableError
from poetry_lambda_zip.errors import ImageError
from poetry_lambda_zip.never_read import never_read
from poetry_lambda_zip.tree_steps import CONFLICT
from poetry_lambda_zip.tree_steps import EXIT_MARK
from poetry_lambda_zip.tree_steps import LAMBDA_PYTHON
from poetry_lambda_zip.tree_steps import PYTHON_MISMATCH
from poetry_lambda_zip.tree_steps import REPORT_MARK
from poetry_lambda_zip.tree_steps import TARGET
from poetry_lambda_zip.tree_steps import WORK

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator
    from collections.abc import Sequence

    from docker.models.containers import Container
    from docker.models.images import Image

    from poetry_lambda_zip.builders.contract import DockerSettings
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.builders.contract import VerifyJob
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "CONTAINER_LABEL",
    "OWNER_LABEL",
    "OWNER_VARIABLE",
    "DockerBuilder",
    "engine_answers",
    "engine_location",
    "verify_in_image",
]

CONTAINER_LABEL = "io.github.poetry-lambda-zip.build"
#: Its value (e.g. a CI job's id) goes into OWNER_LABEL on every container and volume the
#: builder creates, so a cleanup step can find exactly its own on a shared engine.
OWNER_VARIABLE = "POETRY_LAMBDA_ZIP_OWNER"
OWNER_LABEL = "io.github.poetry-lambda-zip.owner"
_VERIFIED = "lambda-zip: verify "
_VERIFY_SCRIPT = f"""
import importlib, json, sys, time, traceback
# Lambda's order: the function, the layers, then the runtime's own (the AWS SDK for Python).
sys.path[:0] = ["/var/task", "/opt/python", "/var/runtime"]
module, _, function = sys.argv[1].rpartition(".")
module = module.replace("/", ".")  # SAM's dir/module.function, as Lambda's runtime reads it
started = time.perf_counter()
try:
    getattr(importlib.import_module(module), function)
except BaseException:
    print({_VERIFIED!r} + json.dumps({{"ok": False, "traceback": traceback.format_exc()}}))
    sys.exit(1)
print({_VERIFIED!r} + json.dumps({{"ok": True, "seconds": time.perf_counter() - started}}))
"""
_TAIL_LINES = 40
_DOCKER_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
_NETWORK_MODES = ("host", "bridge", "none")
_CACHE = "/tmp/lambda-zip-cache"
#: The top directory of the tar get_archive returns for the finished tree.
_RESULT = PurePosixPath(TARGET).name


def engine_location(environ: dict[str, str] | None = None) -> str:
    """Where the docker SDK looks for the engine, for error messages."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get("DOCKER_HOST"):
        return f"DOCKER_HOST={environ['DOCKER_HOST']}"
    return "unix:///var/run/docker.sock (DOCKER_HOST is not set)"


def engine_answers() -> bool:
    """Whether a Docker engine answers where the SDK looks (for --builder auto)."""
    try:
        with contextlib.closing(docker.from_env(timeout=10)) as client:
            client.ping()
    except DockerException:
        return False
    return True


def image_id(name: str) -> str | None:
    """The id of the image ``name`` on the engine; None without an engine or such an image."""
    try:
        with contextlib.closing(docker.from_env(timeout=10)) as client:
            return str(client.images.get(name).id)
    except DockerException:
        return None


class DockerBuilder:
    """Runs pip (for what must be built), slimming and precompiling in a container started
    from the settings' image."""

    name = "docker"

    def __init__(
        self, settings: DockerSettings, connect: Callable[[], docker.DockerClient] = docker.from_env
    ) -> None:
        self._settings = settings
        self._connect = connect
        self._verdicts = BytecodeVerdicts(settings.bytecode_verdicts)

    def finish(self, tree: Path, steps: Steps, workdir: Path, progress: Progress) -> Finished:
        prefix = steps.compile_prefix
        with contextlib.closing(_client(self._connect)) as client:
            started = time.monotonic()
            image = _image(client, self._settings.image, steps.target, progress)
            shown = f"{self._settings.image} ({image.short_id})"
            progress.phase("image", time.monotonic() - started, shown)
            # Bytecode alone (and slimming without stripping) needs no container where this
            # machine's Python is known to compile as the image does.
            here = bytecode_only(steps, tree) and self._verdicts.can_compile(steps.target)
            verdict, probe = (
                self._verdicts.claim(image.id, tree) if here and prefix else (None, False)
            )
            if verdict:
                where = "here (its bytecode is the image's, byte for byte)"
                return Finished(tree, finish_here(tree, steps), where, here=True)
            try:
                report = self._run(client, image, tree, steps, workdir=workdir, progress=progress)
                finished = Finished(
                    workdir / "finished", report, f"in the {steps.target.runtime} image"
                )
                if probe and prefix is not None:
                    self._verdicts.compare(image.id, tree, finished.directory, prefix)
            finally:
                if probe:
                    self._verdicts.release(image.id)
        return finished

    def _run(
        self,
        client: docker.DockerClient,
        image: Image,
        tree: Path,
        steps: Steps,
        *,
        workdir: Path,
        progress: Progress,
    ) -> TreeReport:
        """Run the steps in a container; the finished tree lands in ``workdir/finished``."""
        image_name = self._settings.image

        build_id = uuid.uuid4().hex[:12]
        name = f"poetry-lambda-zip-{build_id}"
        try:
            # Created inside the try: an interrupt that lands while the engine creates it still
            # removes it (by its name) below.
            container = self._create(client, steps.target, image, name, build_id)
            small, files = _job_files(steps, self._settings)
            container.put_archive("/tmp", small)
            with _inputs(steps, files, tree, workdir / "inputs.tar").open("rb") as inputs:
                container.put_archive("/tmp", inputs)
            container.start()
            tail, report, exit_code = _follow(container, progress)
            _check_exit(client, exit_code, tail, image_name, steps.target)
            result = workdir / "result.tar"
            stream, _ = container.get_archive(TARGET)
            with result.open("wb") as handle:
                for chunk in stream:
                    handle.write(chunk)
        except APIError as e:
            raise BuildFailedError(
                f"The Docker engine failed during the build: {e.explanation or e}",
                "Check `docker info`; if the engine restarted, run the build again.",
            ) from e
        except (DockerException, RequestException) as e:
            raise DockerUnavailableError(
                f"Lost the Docker engine at {engine_location()} during the build: {e}",
                "Check that the engine is running (`docker info`), then build again. The build"
                " container removes itself when the engine is back.",
            ) from e
        finally:
            _remove(client, name, progress)
        with tarfile.open(result) as archive:
            write_tree(entries_from_tar(archive, _RESULT), workdir / "finished")
        return report

    def identity(self, steps: Steps, progress: Progress) -> str:
        with contextlib.closing(_client(self._connect)) as client:
            image = _image(client, self._settings.image, steps.target, progress)
        return f"docker {image.id}"

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        return None  # the image's Python is the runtime's (checked when the container starts)

    def _create(
        self,
        client: docker.DockerClient,
        target: LambdaTarget,
        image: Image,
        name: str,
        build_id: str,
    ) -> Container:
        settings = self._settings
        network: dict[str, Any] = {}
        if settings.cache:
            # Downloads and wheels built from sdists, kept per runtime, arch and image so that
            # nothing built for one is ever installed for another.
            volume = f"poetry-lambda-zip-cache-{target.runtime}-{target.arch}-"
            volume += image.id.removeprefix("sha256:")[:12]
            _cache_volume(client, volume)
            network["volumes"] = {volume: {"bind": _CACHE, "mode": "rw"}}
        if settings.network in _NETWORK_MODES:
            network["network_mode"] = settings.network
        elif settings.network:
            network["network"] = settings.network
        try:
            return client.containers.create(
                settings.image,
                entrypoint=[LAMBDA_PYTHON],
                command=[f"{WORK}/inside.py"],
                name=name,
                labels={CONTAINER_LABEL: build_id, **_owner_labels()},
                platform=target.docker_platform,
                environment={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
                working_dir="/tmp",
                # Gone as soon as its process ends: after we collect the result, or on its
                # own if this process or the engine connection dies first.
                auto_remove=True,
                **network,
            )
        except APIError as e:
            raise ImageError(
                f"Cannot create a container from {settings.image}: {e.explanation or e}",
                "Check that the image is a Lambda Python image for the target architecture.",
            ) from e


def _check_exit(
    client: docker.DockerClient,
    exit_code: int | None,
    tail: deque[str],
    image: str,
    target: LambdaTarget,
) -> None:
    """Turn how the entry script ended into the error that explains it."""
    if exit_code is None:
        client.ping()  # the engine itself gone: DockerUnavailableError in the caller
        raise BuildFailedError(
            "The build container ended without a result. Its last lines:\n"
            + "\n".join(f"  {line}" for line in tail),
            "Check `docker info` and the engine's free space, then build again.",
        )
    if exit_code == PYTHON_MISMATCH:
        found = next((t.split()[2] for t in tail if "python-mismatch" in t), "another")
        raise ImageError(
            f"The image {image} has Python {found} at {LAMBDA_PYTHON}, but"
            f" {target.runtime} needs Python {target.python_version_text}.",
            "Pass an --image built for that runtime, or the --runtime the image has.",
        )
    if exit_code == CONFLICT:
        found = next((t.split()[2] for t in tail if "lambda-zip: conflict" in t), "?")
        raise ConflictError(
            found, "two dependencies", "Leave one of them out with --exclude-package."
        )
    if exit_code != 0:
        output = "\n".join(f"  {line}" for line in tail)
        raise BuildFailedError(
            f"pip failed inside {image} (exit code {exit_code}). Its last lines:\n{output}",
            "Run again with -v for the installer's full output.",
        )


def verify_in_image(
    check: VerifyJob,
    settings: DockerSettings,
    progress: Progress,
    connect: Callable[[], docker.DockerClient] = docker.from_env,
) -> float:
    """Import the handler from the zips in a container of the image, as Lambda would: from a
    read-only /var/task (and /opt), as nobody. Returns the import time."""
    with contextlib.closing(_client(connect)) as client:
        return _verify(client, check, settings.image, progress)


def _verify(client: docker.DockerClient, check: VerifyJob, image: str, progress: Progress) -> float:
    started = time.monotonic()
    build_id = uuid.uuid4().hex[:12]
    name = f"poetry-lambda-zip-verify-{build_id}"
    try:
        container = client.containers.create(
            image,
            entrypoint=[LAMBDA_PYTHON],
            command=["-c", _VERIFY_SCRIPT, check.handler],
            name=name,
            labels={CONTAINER_LABEL: build_id, **_owner_labels()},
            platform=check.target.docker_platform,
            # Lambda's /var/task is read-only: as nobody, nothing below it is writable,
            # so Python cannot write bytecode it did not find in the zip.
            user="65534:65534",
            working_dir="/var/task",
        )
    except APIError as e:
        _remove(client, name, progress)
        raise ImageError(f"Cannot create a container from {image}: {e}") from e
    except BaseException:
        _remove(client, name, progress)  # interrupted while the engine created it
        raise
    try:
        if check.function_zip is not None:
            container.put_archive("/var/task", _read_only_tar(check.function_zip))
        if check.layer_zip is not None:
            container.put_archive("/opt", _read_only_tar(check.layer_zip))
        container.start()
        tail, _, _ = _follow(container, progress)
        container.wait()
    except APIError as e:
        raise BuildFailedError(f"The Docker engine failed while verifying: {e}") from e
    finally:
        _remove(client, name, progress)
    outcome: dict[str, Any] = next(
        (json.loads(line.removeprefix(_VERIFIED)) for line in tail if line.startswith(_VERIFIED)),
        {"ok": False, "traceback": "\n".join(tail)},
    )
    if not outcome["ok"]:
        raise BuildFailedError(
            f"The handler {check.handler} does not import from the package:\n"
            f"{outcome['traceback']}",
            "The zip was written; fix the handler setting or the code, then build again.",
        )
    seconds = float(outcome["seconds"])
    progress.phase(
        "verify",
        time.monotonic() - started,
        f"{check.handler} imports in {seconds * 1000:.0f} ms from a read-only /var/task",
    )
    return seconds


def _client(connect: Callable[[], docker.DockerClient]) -> docker.DockerClient:
    try:
        client = connect()
        client.ping()
    except DockerException as e:
        raise DockerUnavailableError(
            f"No Docker engine answers at {engine_location()}: {e}",
            "Start Docker, or point DOCKER_HOST at a running engine.",
        ) from e
    return client


def _image(
    client: docker.DockerClient, name: str, target: LambdaTarget, progress: Progress
) -> Image:
    wanted = _DOCKER_ARCH[target.arch]
    try:
        image = client.images.get(name)
    except ImageNotFound:
        progress.info(f"Pulling {name} for {target.docker_platform} ...")
        try:
            image = client.images.pull(name, platform=target.docker_platform)
        except DockerException as e:
            reason = getattr(e, "explanation", None) or e
            raise ImageError(
                f"The image {name} is not on the engine and cannot be pulled: {reason}",
                "Check the registry is reachable (docker login if it needs it), or pass"
                " --image with an image present on this engine.",
            ) from e
    except APIError as e:
        raise ImageError(f"Cannot inspect the image {name}: {e}") from e
    found = image.attrs.get("Architecture", "")
    if found != wanted:
        raise ImageError(
            f"The image {name} is for linux/{found}, but {target.arch} needs"
            f" {target.docker_platform}.",
            f"Pull the {target.docker_platform} variant or pass an --image for it.",
        )
    return image


def _owner_labels() -> dict[str, str]:
    owner = os.environ.get(OWNER_VARIABLE, "").strip()
    return {OWNER_LABEL: owner} if owner else {}


def _cache_volume(client: docker.DockerClient, name: str) -> None:
    """Create the download-cache volume, with the owner label, unless it exists (one that
    exists keeps its labels: it serves every build for its runtime, arch and image)."""
    try:
        try:
            client.volumes.get(name)
        except NotFound:
            try:
                client.volumes.create(name, labels=_owner_labels())
            except APIError:
                # Docker returns an existing volume here, other engines refuse it: a concurrent
                # build may have created it since. Still missing: the engine's error stands.
                client.volumes.get(name)
    except APIError as e:
        raise BuildFailedError(
            f"Cannot create the download-cache volume {name}: {e.explanation or e}",
            "Check `docker info` and the engine's free space, or build with --no-cache"
            " (no volume).",
        ) from e


def _job_files(steps: Steps, settings: DockerSettings) -> tuple[bytes, dict[str, Path]]:
    """The small files of the job as an in-memory tar: the script, the job (proxy URLs, index
    credentials), the requirement files (URLs may carry credentials) and the CA bundle. Kept
    off this machine's disk: a killed build leaves no secret behind. Also returns the local
    files (file dependencies) the requirement files name."""
    installs, files = _installs(steps.build)
    network = steps.network
    config: dict[str, Any] = {
        "python": steps.target.python_version_text,
        "installs": installs,
        "trees": [f"src/{tree.relative}" for tree in steps.trees],
        "unpacked": "unpacked",
        "default_index": settings.default_index,
        "cache_dir": _CACHE if settings.cache else None,
        "slim": steps.slim,
        "compile_prefix": steps.compile_prefix,
        "ca_bundle": "ca.pem" if network and network.ca_bundle else None,
        "proxies": dict(network.proxies) if network else {},
        "netrc": "".join(
            f"machine {c.host} login {c.username} password {c.password}\n"
            for c in steps.credentials
        )
        or None,
    }
    data: dict[str, bytes] = {
        "inside.py": resources.files("poetry_lambda_zip.builders")
        .joinpath("_inside.py")
        .read_bytes(),
        "tree_steps.py": resources.files("poetry_lambda_zip")
        .joinpath("tree_steps.py")
        .read_bytes(),
        "job.json": json.dumps(config, sort_keys=True).encode(),
    }
    if network and network.ca_bundle:
        data["ca.pem"] = network.ca_bundle
    for install in installs:
        data[install["requirements"]] = install.pop("lines").encode()

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(_tar_info("lambda-zip", tarfile.DIRTYPE, 0o700, 0))
        for name, content in data.items():
            info = _tar_info(f"lambda-zip/{name}", tarfile.REGTYPE, 0o600, len(content))
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue(), files


def _inputs(steps: Steps, files: dict[str, Path], tree: Path, destination: Path) -> Path:
    """Write the tar of the job's large inputs (no secrets): local file dependencies, source
    trees and the tree unpacked on this machine. Returns its path."""
    with tarfile.open(destination, mode="w") as archive:
        for name, path in files.items():
            archive.add(path, f"lambda-zip/files/{name}", filter=_owned_by_root)
        for source in steps.trees:
            prefix = f"lambda-zip/src/{source.relative}"
            archive.add(source.path, prefix, filter=functools.partial(_source_filter, prefix))
        archive.add(tree, "lambda-zip/unpacked", filter=_owned_by_root)
    return destination


def _installs(build: Sequence[Requirement]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """One hashed pip install per index, as the lock says where each package comes from.

    Returns the installs (label, index URL, requirements file name and lines) and the local
    files (file dependencies) to send along, by their name in the container.
    """
    groups: dict[str | None, list[str]] = {None: []}
    labels: dict[str | None, str] = {None: "PyPI, local files and URLs"}
    files: dict[str, Path] = {}
    for requirement in build:
        artifact, origin = requirement.artifact, requirement.origin
        if artifact.sha256 is None:
            continue  # directories and git checkouts: built from the steps' trees
        pin = f"--hash=sha256:{artifact.sha256}"
        if origin.type == "file" and origin.url and artifact.filename:
            files[artifact.filename] = Path(origin.url)
            groups[None].append(f"{WORK}/files/{artifact.filename} {pin}")
        elif origin.type == "url" and origin.url:
            groups[None].append(f"{requirement.name} @ {origin.url} {pin}")
        else:
            groups.setdefault(origin.url, []).append(
                f"{requirement.name}=={requirement.version} {pin}"
            )
            if origin.url:
                labels[origin.url] = origin.describe()
    installs = [
        {
            "label": labels[url],
            "index_url": url,
            "requirements": f"requirements-{number}.txt",
            "lines": "".join(f"{line}\n" for line in lines),
        }
        for number, (url, lines) in enumerate(groups.items())
        if lines
    ]
    return installs, files


def _tar_info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    return _owned_by_root(info)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _source_filter(prefix: str, info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """A source tree's file as sent, but what no build reads (below the tree, as its key)."""
    if never_read(PurePosixPath(info.name).relative_to(prefix).parts):
        return None
    return _owned_by_root(info)


def _read_only_tar(zip_path: Path) -> bytes:
    """The zip's files as a tar for put_archive: root-owned, not writable by anyone else."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(zip_path) as source, tarfile.open(fileobj=buffer, mode="w") as tar:
        directories: set[str] = set()
        for info in source.infolist():
            parts = PurePosixPath(info.filename).parts
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_tar_info(directory, tarfile.DIRTYPE, 0o755, 0))
            if info.is_dir():
                continue
            mode = 0o555 if executable(info) else 0o444  # read-only, as on Lambda
            member = _tar_info(info.filename, tarfile.REGTYPE, mode, info.file_size)
            with source.open(info) as handle:
                tar.addfile(member, handle)
    return buffer.getvalue()


def _follow(container: Container, progress: Progress) -> tuple[deque[str], TreeReport, int | None]:
    """Relay the container's output line by line until the script says how it ended; keep
    the tail for error messages, the closing report and the exit code (None if the output
    ended without one)."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    report = TreeReport()
    stream = container.logs(stream=True, follow=True)
    try:
        for line in _lines(stream):
            if line.startswith(EXIT_MARK):
                return tail, report, int(line.removeprefix(EXIT_MARK))
            if line.startswith(REPORT_MARK):
                report = _report(line.removeprefix(REPORT_MARK))
                continue
            tail.append(line)
            progress.installer_output(line)
    finally:
        stream.close()
        # The SDK shuts the socket down but leaves the response holding it open.
        response = getattr(stream, "_response", None)
        if response is not None:
            response.close()
    return tail, report, None


def _report(text: str) -> TreeReport:
    try:
        return TreeReport.from_json(json.loads(text))
    except ValueError as e:
        raise BuildFailedError(f"The build container reported nonsense: {e}") from e


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _remove(client: docker.DockerClient, name: str, progress: Progress) -> None:
    """Remove the container ``name`` if it is there (by name: an interrupted create may not
    have told us its id)."""
    try:
        client.api.remove_container(name, force=True)
    except (NotFound, RequestException):
        pass  # never created, already gone, or the engine is: it auto-removes it when back
    except APIError as e:
        if e.status_code != 409:  # 409: the engine is already removing it (auto-remove)
            progress.warning(
                f"Could not remove the build container {name}: {e.explanation}."
                f" Remove it with: docker rm -f {name}"
            )
    except DockerException as e:
        # The engine went away mid-build: say what is left; the build's own error comes next.
        progress.warning(
            f"Could not remove the build container {name}: {e}. Remove it with: docker rm -f {name}"
        )
