"""Runs inside the build container with the image's Python: check it, pip-install what the job
lists (sdists, path and git dependencies, the project), merge it with the wheels the host
unpacked, then slim and precompile.

Kept free of third-party imports and compatible with every Lambda Python (3.9+). The tree
steps (``slim_tree``, ``compile_tree``, ``merge_trees``) are also what the local builder runs.
"""

import filecmp
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from typing import Optional

WORK = "/tmp/lambda-zip"
TARGET = os.path.join(WORK, "target")
PYTHON_MISMATCH = 86
CONFLICT = 87
EXIT_MARK = "lambda-zip: exit "
#: How long a finished build waits for the host to fetch its result before it goes away.
COLLECT_TIMEOUT = 300


def main() -> int:
    """Build, say how it ended, then wait for the host to collect the result.

    The container runs with auto-remove: it disappears when this process ends, whether the
    host collected the result (and killed it), or went away (the wait times out).
    """
    code = _build()
    print(f"{EXIT_MARK}{code}", flush=True)
    deadline = time.monotonic() + COLLECT_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.1)
    return code


def _build() -> int:
    with open(os.path.join(WORK, "job.json"), encoding="utf-8") as handle:
        job = json.load(handle)
    # Proxy URLs and index credentials may be secrets: nothing of them stays on disk.
    os.remove(os.path.join(WORK, "job.json"))

    found = "{}.{}".format(*sys.version_info[:2])
    if found != job["python"]:
        print(f"lambda-zip: python-mismatch {found} {sys.executable}", flush=True)
        return PYTHON_MISMATCH

    environment = dict(os.environ)
    environment.update(job["proxies"])
    if job["cache_dir"]:
        environment["PIP_CACHE_DIR"] = job["cache_dir"]
    else:
        environment["PIP_NO_CACHE_DIR"] = "1"
    if job["ca_bundle"]:
        # Through the environment, so that the pip building an sdist's build dependencies
        # (a subprocess that gets none of our options) trusts the same certificates.
        environment["PIP_CERT"] = _combined_ca_bundle(os.path.join(WORK, job["ca_bundle"]))
    netrc = os.path.join(WORK, "netrc")
    if job["netrc"]:
        with open(os.open(netrc, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(job["netrc"])
        environment["NETRC"] = netrc
    try:
        return _install(job, environment)
    finally:
        # Requirement files may name URLs with credentials in them.
        secrets = [netrc] + [os.path.join(WORK, i["requirements"]) for i in job["installs"]]
        for path in secrets:
            if os.path.exists(path):
                os.remove(path)


def _install(job: dict[str, Any], environment: dict[str, str]) -> int:
    pip = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--use-pep517",
        "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
        "--progress-bar", "off",
    ]  # fmt: skip
    # Wheels unpacked by the host come first; pip adds what it builds or installs.
    targets = [os.path.join(WORK, job["unpacked"])] if job["unpacked"] else []
    for number, install in enumerate(job["installs"]):
        target = f"{TARGET}.{number}"
        command = [*pip, "--require-hashes", "--target", target]
        command += ["--requirement", os.path.join(WORK, install["requirements"])]
        if install["index_url"]:
            command += ["--index-url", install["index_url"]]
        print(f"lambda-zip: installing from {install['label']}", flush=True)
        code = subprocess.call(command, env=environment)
        if code:
            return code
        targets.append(target)
    if job["includes"]:
        targets.append(os.path.join(WORK, "include"))
    if job["trees"]:
        target = f"{TARGET}.trees"
        command = [*pip, "--target", target, *[os.path.join(WORK, t) for t in job["trees"]]]
        if job["default_index"]:
            command += ["--index-url", job["default_index"]]
        print("lambda-zip: building path and git dependencies", flush=True)
        code = subprocess.call(command, env=environment)
        if code:
            return code
        targets.append(target)
    conflict = merge_trees(targets, TARGET)
    if conflict:
        print(f"lambda-zip: conflict {conflict} is installed twice, differently", flush=True)
        return CONFLICT
    report: dict[str, Any] = {}
    if job["slim"]:
        report["slim"] = slim_tree(TARGET, strip=shutil.which("strip"))
    if job["compile"]:
        report["compile"] = compile_tree(TARGET, job["compile"], job["includes"])
    print("lambda-zip: report " + json.dumps(report), flush=True)
    return 0


def slim_tree(target: str, strip: Optional[str]) -> dict[str, int]:
    """Remove what never runs on Lambda; never a dist-info directory (importlib.metadata).
    ``strip`` is the strip program for the target's libraries, if there is one."""
    removed = saved = stripped = 0
    for directory, subdirectories, files in os.walk(target, topdown=True):
        relative = os.path.relpath(directory, target)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        for name in list(subdirectories):
            doomed = name == "__pycache__" or (name in ("tests", "test") and depth >= 1)
            if doomed and not relative.endswith(".dist-info"):
                path = os.path.join(directory, name)
                for root, _, names in os.walk(path):
                    for file in names:
                        saved += os.lstat(os.path.join(root, file)).st_size
                        removed += 1
                shutil.rmtree(path)
                subdirectories.remove(name)
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".pyi"):
                saved += os.lstat(path).st_size
                removed += 1
                os.remove(path)
            elif strip and re.search(r"\.so(\.|$)", name) and not os.path.islink(path):
                before = os.path.getsize(path)
                if subprocess.call([strip, "--strip-debug", path]) == 0:
                    saved += before - os.path.getsize(path)
                    stripped += 1
    return {"files_removed": removed, "bytes_saved": saved, "libraries_stripped": stripped,
            "strip_available": int(bool(strip))}  # fmt: skip


def compile_tree(target: str, settings: dict[str, Any], includes: list[str]) -> dict[str, int]:
    """PEP 552 unchecked-hash .pyc for this interpreter: valid whatever the mtimes after unzip,
    identical across builds. Tracebacks name the path the file has on Lambda."""
    project_files = set(includes) | _project_files(target, settings["project"])
    jobs = []
    for directory, subdirectories, files in os.walk(target):
        subdirectories.sort()
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, target).replace(os.sep, "/")
            prefix = settings["project_prefix" if relative in project_files else "prefix"]
            jobs.append((source, f"{prefix}/{relative}"))
    with ProcessPoolExecutor() as pool:
        results = list(pool.map(_compile_one, jobs, chunksize=64))
    return {"compiled": results.count(True), "failed": results.count(False)}


def _compile_one(job: tuple[str, str]) -> bool:
    source, shown = job
    try:
        py_compile.compile(
            source,
            cfile=importlib.util.cache_from_source(source),
            dfile=shown,
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except (py_compile.PyCompileError, SyntaxError, UnicodeDecodeError, ValueError):
        return False  # e.g. Python 2 test data shipped in a wheel: pip skips these too
    return True


def _project_files(target: str, project: str) -> set[str]:
    """Files of the project's own distribution, from its RECORD."""
    if not project:
        return set()
    wanted = re.sub(r"[-_.]+", "-", project).lower()
    for name in os.listdir(target):
        if name.endswith(".dist-info"):
            distribution = name[: -len(".dist-info")].rsplit("-", 1)[0]
            if re.sub(r"[-_.]+", "-", distribution).lower() == wanted:
                with open(os.path.join(target, name, "RECORD"), encoding="utf-8") as handle:
                    return {line.split(",", 1)[0] for line in handle if line.strip()}
    return set()


def merge_trees(sources: list[str], target: str) -> Optional[str]:
    """Copy the trees into one (pip --target skips directories that exist); return the first
    path two trees hold with different content, or None. The first tree is moved, not copied,
    when there is no target yet."""
    if sources and not os.path.exists(target):
        os.rename(sources[0], target)
        sources = sources[1:]
    os.makedirs(target, exist_ok=True)
    for source in sources:
        for directory, _, files in os.walk(source):
            destination = os.path.join(target, os.path.relpath(directory, source))
            os.makedirs(destination, exist_ok=True)
            for name in files:
                origin, final = os.path.join(directory, name), os.path.join(destination, name)
                if os.path.lexists(final) and not filecmp.cmp(origin, final, shallow=False):
                    return os.path.relpath(final, target)
                shutil.copy2(origin, final, follow_symlinks=False)
    return None


def _combined_ca_bundle(extra: str) -> str:
    """The certificates pip trusts by default plus the user's: ``--cert`` replaces, not adds."""
    combined = os.path.join(WORK, "combined-ca.pem")
    parts = []
    try:
        from pip._vendor import certifi

        with open(certifi.where(), "rb") as handle:
            parts.append(handle.read())
    except (ImportError, OSError):
        pass
    with open(extra, "rb") as handle:
        parts.append(handle.read())
    with open(combined, "wb") as handle:
        handle.write(b"\n".join(parts))
    return combined


if __name__ == "__main__":
    sys.exit(main())
