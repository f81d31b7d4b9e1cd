"""The local builder against `uv pip install --target --python-platform` + `zip -r`.

    python bench/local_vs_uv.py [--uv PATH] [--runs 5] [--fixture binary-wheel]

Both start cold (empty caches) once, then run warm (caches kept) --runs times. Both install the
same locked distributions for python3.11 x86_64 (the list comes from our own --dry-run --json;
uv gets --python-platform x86_64-manylinux_2_17, the newest it offers at or below glibc 2.26);
uv gets them as name==version pins with --no-deps, as a hand-written pipeline would. Prints
medians and the ratio. uv is a peer tool, not a dependency: install it into any venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path, environment: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command, check=False, cwd=cwd, env=environment, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uv", default=shutil.which("uv") or "uv")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fixture", default="binary-wheel")
    arguments = parser.parse_args()
    poetry = str(Path(sys.executable).with_name("poetry"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = work / arguments.fixture
        shutil.copytree(ROOT / "fixtures" / arguments.fixture, project)
        plan = json.loads(
            subprocess.run(
                [poetry, "lambda-zip", "-C", str(project), "--runtime", "python3.11",
                 "--dry-run", "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        pins = "".join(f"{d['name']}=={d['version']}\n" for d in plan["distributions"])
        (work / "requirements.txt").write_text(pins)

        ours_env = {**os.environ, "POETRY_CACHE_DIR": str(work / "poetry-cache")}
        ours = [poetry, "lambda-zip", "-C", str(project), "--runtime", "python3.11",
                "--builder", "local", "--no-compile", "-o", str(work / "ours.zip")]  # fmt: skip
        uv_env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache")}
        uv_script = (
            f"rm -rf target uv.zip && {arguments.uv} pip install --quiet --no-deps --target target"
            " --python-platform x86_64-manylinux_2_17 --python-version 3.11 --only-binary :all:"
            " -r requirements.txt && cd target && zip -qr -X ../uv.zip ."
        )
        uv = ["bash", "-c", uv_script]
        rows = []
        pipelines = (
            ("poetry lambda-zip --builder local", ours, ours_env),
            ("uv pip install --target + zip -r", uv, uv_env),
        )
        for label, command, environment in pipelines:
            cold = timed(command, work, environment)
            warm_runs = [timed(command, work, environment) for _ in range(arguments.runs)]
            rows.append((label, cold, statistics.median(warm_runs)))
        sizes = {name: (work / name).stat().st_size for name in ("ours.zip", "uv.zip")}
    print(f"fixtures/{arguments.fixture}: {len(plan['distributions'])} locked distributions,"
          f" python3.11 x86_64, no bytecode; warm = median of {arguments.runs}")  # fmt: skip
    print(f"{'pipeline':<36} {'cold':>8} {'warm':>8}")
    for label, cold, warm in rows:
        print(f"{label:<36} {cold:>7.2f}s {warm:>7.2f}s")
    print(
        f"ratio ours/uv: cold {rows[0][1] / rows[1][1]:.2f}x, warm {rows[0][2] / rows[1][2]:.2f}x"
    )
    print(
        f"zip sizes: ours {sizes['ours.zip'] / 1e6:.2f} MB, uv+zip {sizes['uv.zip'] / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
