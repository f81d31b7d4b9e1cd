"""The build container's entry script, run with the image's Python: check it, pip-install what
the job lists (sdists, path and git dependencies), merge it with the tree the host unpacked, then
slim and precompile with ``tree_steps`` (shipped next to it).

Kept free of third-party imports and compatible with every Lambda Python (3.9+).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from poetry_lambda_zip import tree_steps
else:  # run in the container, where tree_steps.py lies next to this script
    import tree_steps

WORK, TARGET = tree_steps.WORK, tree_steps.TARGET


def main() -> int:
    """Build, say how it ended, then wait for the host to collect the result.

    The container runs with auto-remove: it disappears when this process ends, whether the
    host collected the result (and killed it), or went away (the wait times out).
    """
    code = _build()
    print(f"{tree_steps.EXIT_MARK}{code}", flush=True)
    deadline = time.monotonic() + tree_steps.COLLECT_TIMEOUT
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
        return tree_steps.PYTHON_MISMATCH

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
    if job["trees"]:
        target = f"{TARGET}.trees"
        command = [
            *pip,
            "--target",
            target,
            *[os.path.join(WORK, t) for t in job["trees"]],
        ]
        if job["default_index"]:
            command += ["--index-url", job["default_index"]]
        print("lambda-zip: building path and git dependencies", flush=True)
        code = subprocess.call(command, env=environment)
        if code:
            return code
        targets.append(target)
    conflict = tree_steps.merge_trees(targets, TARGET)
    if conflict:
        print(f"lambda-zip: conflict {conflict} is installed twice, differently", flush=True)
        return tree_steps.CONFLICT
    strip = shutil.which("strip")
    report = tree_steps.finish_tree(TARGET, job["slim"], strip, job["compile_prefix"])
    print(tree_steps.REPORT_MARK + json.dumps(report), flush=True)
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
        handle.write(tree_steps.join_pem(parts))
    return combined


if __name__ == "__main__":
    sys.exit(main())
