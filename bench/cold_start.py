"""Cold-start import time of a handler from a read-only /var/task: precompiled vs not.

    python bench/cold_start.py [--image TAG] [--runtime python3.11] [--runs 7]

Builds fixtures/binary-wheel (pydantic + orjson) twice with `poetry lambda-zip` (default, and
--no-compile), then imports the handler in fresh containers, as an unprivileged user so that
nothing below /var/task is writable (as on Lambda), and prints the medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import time; t = time.perf_counter(); import fast_api_handler.app;"
    " print(time.perf_counter() - t)"
)


def build(project: Path, image: str, runtime: str, extra: list[str]) -> Path:
    poetry = Path(sys.executable).with_name("poetry")
    output = subprocess.run(
        [str(poetry), "lambda-zip", "-C", str(project), "--runtime", runtime, "--image", image,
         "--json", *extra],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Path(json.loads(output)["outputs"][0]["path"])


def import_seconds(zip_path: Path, image: str, runs: int, workdir: Path) -> list[float]:
    task = workdir / zip_path.stem
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task)
    times = []
    for _ in range(runs):
        result = subprocess.run(
            ["docker", "run", "--rm", "--user", "65534:65534", "-v", f"{task}:/var/task:ro",
             "-w", "/var/task", "-e", "PYTHONPATH=/var/task", "--entrypoint", "python3", image,
             "-c", PROBE],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        times.append(float(result.stdout.strip()))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="poetry-lambda-zip/stand-in:python3.11-x86_64")
    parser.add_argument("--runtime", default="python3.11")
    parser.add_argument("--runs", type=int, default=7)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        project = workdir / "binary-wheel"
        shutil.copytree(ROOT / "fixtures" / "binary-wheel", project)
        rows = []
        for label, extra in (("--no-compile", ["--no-compile", "-o", "plain.zip"]),
                             ("default (compiled)", ["-o", "compiled.zip"])):  # fmt: skip
            zip_path = build(project, arguments.image, arguments.runtime, extra)
            times = import_seconds(zip_path, arguments.image, arguments.runs, workdir)
            rows.append((label, statistics.median(times), min(times), zip_path.stat().st_size))
    print(f"fast_api_handler.app (pydantic + orjson), {arguments.runtime}, {arguments.image}")
    print(f"{'build':<20} {'median import':>14} {'min':>9} {'zip size':>10}")
    for label, median, fastest, size in rows:
        print(
            f"{label:<20} {median * 1000:>11.0f} ms {fastest * 1000:>6.0f} ms {size / 1e6:>7.2f} MB"
        )
    print(f"speed-up: {rows[0][1] / rows[1][1]:.2f}x ({arguments.runs} runs each)")


if __name__ == "__main__":
    main()
