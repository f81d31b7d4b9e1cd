#!/usr/bin/env python3
"""Long seeded runs of the differential check (tests/differential.py): after each random edit,
the build a user runs must write what a --force build of a copy writes, byte for byte, and exit
the same. Prints each step, and the seed and step of the first difference (exit 1).

    .venv/bin/python scripts/differential.py --steps 300                  # a random seed
    .venv/bin/python scripts/differential.py --seed 42 --scenario fleet --builder docker \\
        --image poetry-lambda-zip/stand-in:python3.11-x86_64

Each run works in a directory of its own (kept with --keep), with Poetry's cache there too (so
stamps and kept trees start empty; downloads are fetched once per run)."""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.differential import SCENARIOS  # noqa: E402
from tests.differential import Difference  # noqa: E402
from tests.differential import Runner  # noqa: E402
from tests.differential import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="default: a random one (printed)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--scenario", choices=SCENARIOS, default="single")
    parser.add_argument("--builder", choices=("local", "docker"), default="local")
    parser.add_argument("--image", help="the build image (docker builder)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    arguments = parser.parse_args()
    seed = arguments.seed if arguments.seed is not None else random.randrange(1 << 32)
    if arguments.builder == "docker" and not arguments.image:
        parser.error("--builder docker needs --image (e.g. the stand-in image)")
    if arguments.scenario == "path-dependency" and arguments.builder != "docker":
        parser.error("path dependencies are built in the image: --builder docker")
    work = Path(tempfile.mkdtemp(prefix="lambda-zip-differential-"))
    cache = work / "cache"
    os.environ["POETRY_CACHE_DIR"] = str(cache)
    print(
        f"seed {seed}: {arguments.steps} steps of {arguments.scenario} with --builder"
        f" {arguments.builder} in {work}",
        flush=True,
    )
    started = time.monotonic()
    runner = Runner(arguments.builder, arguments.image, cache=cache)
    try:
        steps = run(
            work / "work",
            arguments.scenario,
            runner,
            seed,
            arguments.steps,
            log=lambda line: print(line, flush=True),
        )
    except Difference as difference:
        print(f"\nDIFFERENCE at step {difference.step.number}: {difference}", flush=True)
        print(f"Again: {' '.join(sys.argv[:1])} --seed {seed} --steps {difference.step.number}"
              f" --scenario {arguments.scenario} --builder {arguments.builder}"
              + (f" --image {arguments.image}" if arguments.image else ""))  # fmt: skip
        return 1
    finally:
        if not arguments.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    taken: dict[str, int] = {}
    for step in steps:
        taken[step.shortcut] = taken.get(step.shortcut, 0) + 1
    print(
        f"\nseed {seed}: {len(steps) - 1} steps, no difference, {time.monotonic() - started:.0f} s;"
        f" builds: {', '.join(f'{k} {v}' for k, v in sorted(taken.items()))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
