"""Runs inside the build container with the image's Python: check it, then pip-install the job.

Kept free of third-party imports and compatible with every Lambda Python (3.9+).
"""

import filecmp
import json
import os
import shutil
import subprocess
import sys
from typing import Any

WORK = "/tmp/lambda-zip"
TARGET = os.path.join(WORK, "target")
PYTHON_MISMATCH = 86
CONFLICT = 87


def main() -> int:
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
        if os.path.exists(netrc):
            os.remove(netrc)


def _install(job: dict[str, Any], environment: dict[str, str]) -> int:
    pip = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--use-pep517",
        "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
        "--progress-bar", "off",
    ]  # fmt: skip
    targets = []
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
    return _merge(targets)


def _merge(targets: list[str]) -> int:
    """One tree from the per-source installs (pip --target skips directories that exist)."""
    os.makedirs(TARGET)
    for source in targets:
        for directory, _, files in os.walk(source):
            destination = os.path.join(TARGET, os.path.relpath(directory, source))
            os.makedirs(destination, exist_ok=True)
            for name in files:
                origin, final = os.path.join(directory, name), os.path.join(destination, name)
                if os.path.lexists(final) and not filecmp.cmp(origin, final, shallow=False):
                    relative = os.path.relpath(final, TARGET)
                    print(f"lambda-zip: conflict {relative} is installed twice, differently")
                    return CONFLICT
                shutil.copy2(origin, final, follow_symlinks=False)
    return 0


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
