"""Runs inside the build container with the image's Python: check it, then pip-install the job.

Kept free of third-party imports and compatible with every Lambda Python (3.9+).
"""

import json
import os
import subprocess
import sys

WORK = "/tmp/lambda-zip"
PYTHON_MISMATCH = 86


def main() -> int:
    with open(os.path.join(WORK, "job.json"), encoding="utf-8") as handle:
        job = json.load(handle)
    # The proxy URLs may carry passwords: nothing of the job stays on disk once read.
    os.remove(os.path.join(WORK, "job.json"))

    found = "{}.{}".format(*sys.version_info[:2])
    if found != job["python"]:
        print(f"lambda-zip: python-mismatch {found} {sys.executable}", flush=True)
        return PYTHON_MISMATCH

    command = [
        sys.executable, "-m", "pip", "install",
        "--no-deps", "--require-hashes", "--no-compile", "--use-pep517",
        "--target", os.path.join(WORK, "target"),
        "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
        "--progress-bar", "off", "--requirement", os.path.join(WORK, "requirements.txt"),
    ]  # fmt: skip
    for url in job["index_urls"]:
        command += ["--extra-index-url", url]
    environment = dict(os.environ)
    environment.update(job["proxies"])
    if job["ca_bundle"]:
        # Through the environment, so that the pip building an sdist's build dependencies
        # (a subprocess that gets none of our options) trusts the same certificates.
        environment["PIP_CERT"] = _combined_ca_bundle(os.path.join(WORK, job["ca_bundle"]))
    return subprocess.call(command, env=environment)


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
