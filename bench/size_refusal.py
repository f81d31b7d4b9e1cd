"""How long the size check before unpacking takes to refuse a set that cannot fit, plan included.

    python bench/size_refusal.py [--members 40000] [--rounds 7]

Generates wheels shaped like a data stack (numpy, pandas, pyarrow, botocore: tens of thousands
of members, .py sources, tests directories, shared libraries, 300 MB declared in all; their
members hold nothing, only the zip directory declares the sizes), then times
``check_wheel_sizes`` refusing them (reading the zip directories, the estimate, the plan of
every option), and prints the median and the spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poetry_lambda_zip.errors import OutputError  # noqa: E402
from poetry_lambda_zip.fit import FitOptions  # noqa: E402
from poetry_lambda_zip.target import LambdaTarget  # noqa: E402
from poetry_lambda_zip.wheels import PinnedWheel  # noqa: E402
from poetry_lambda_zip.wheels import check_wheel_sizes  # noqa: E402
from tests.test_wheels import make_wheel  # noqa: E402


def wheel(directory: Path, name: str, members: int, declared: int) -> PinnedWheel:
    """A wheel of ``members`` members (a third .py, a tenth in tests, a few .so) declaring
    ``declared`` bytes in all."""
    names = []
    for number in range(members):
        folder = f"{name}/tests" if number % 10 == 0 else f"{name}/sub{number % 50}"
        suffix = ".py" if number % 3 == 0 else (".so" if number % 97 == 0 else ".dat")
        names.append(f"{folder}/m{number}{suffix}")
    path = make_wheel(directory, name, "1.0", dict.fromkeys(names, b""))
    with zipfile.ZipFile(path) as archive:
        data = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in data.items():
            archive.writestr(member, content)
        for member in names:
            archive.getinfo(member).file_size = declared // members
    return PinnedWheel(path, name, "1.0")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        share = arguments.members // 4
        wheels = [
            wheel(directory, "numpyish", share, 40_000_000),
            wheel(directory, "pandasish", share, 70_000_000),
            wheel(directory, "pyarrowish", share, 170_000_000),
            wheel(directory, "botocore", share, 20_000_000),
        ]
        fit = FitOptions(LambdaTarget("python3.11", "x86_64"))
        seconds = []
        message = ""
        for _ in range(arguments.rounds):
            started = time.perf_counter()
            try:
                check_wheel_sizes(wheels, "3.11", fit)
            except OutputError as e:
                message = str(e)
            else:
                raise SystemExit("the set was not refused")
            seconds.append(time.perf_counter() - started)
    print(message)
    print(
        f"\nrefused {arguments.members:,} members in {arguments.rounds} rounds: median"
        f" {statistics.median(seconds) * 1000:.0f} ms, min {min(seconds) * 1000:.0f} ms,"
        f" max {max(seconds) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
