"""Build every fixture (and the layouts and options that shape a zip) and record each zip's
entries: name, CRC-32, size, mode and time. Run it before and after a change that must not
change any output, then compare the two files.

    python scripts/fixture_entries.py before.json        # on the old commit
    python scripts/fixture_entries.py after.json         # on the new one
    python scripts/fixture_entries.py --compare before.json after.json

Needs a Docker engine and the stand-in image (scripts/docker-engine.sh). The private-index and
git-dependency fixtures need servers and a repository their tests set up; they are left out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "poetry-lambda-zip/stand-in:python3.11-x86_64"
POETRY = str(Path(sys.executable).with_name("poetry"))
#: (fixture, extra options): every fixture with defaults, plus the options that shape the zip.
CASES = [
    ("pure-python", ""),
    ("pure-python", "--layout split"),
    ("pure-python", "--layout layer"),
    ("pure-python", "--no-compile"),
    ("pure-python", "--builder local"),
    ("binary-wheel", ""),
    ("binary-wheel", "--slim"),
    ("binary-wheel", "--arch arm64 --builder local"),
    ("markers", ""),
    ("sdist-only", ""),
    ("non-package", ""),
    ("poetry1-lock", ""),
    ("local-files", ""),
    ("monorepo/services/api", ""),
    ("sam-codeuri", ""),
    ("handler-next-to-pyproject", ""),
    ("cdk-root", ""),
    ("no-root", "--no-root"),
    ("poetry11-lock", ""),
    ("functions-dirs", "updater"),
    ("functions-package", "s3_event"),
]


def entries(zip_path: Path) -> list[list[object]]:
    with zipfile.ZipFile(zip_path) as archive:
        return [
            [info.filename, info.CRC, info.file_size, info.external_attr, list(info.date_time)]
            for info in archive.infolist()
        ]


def record(destination: Path) -> None:
    found: dict[str, object] = {}
    # Always the same place (the entries hold no path of it; the comment is not recorded).
    scratch = Path(tempfile.gettempdir()) / "poetry-lambda-zip-fixture-entries"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for number, (fixture, options) in enumerate(CASES):
            case = scratch / str(number)
            top = fixture.split("/")[0]
            shutil.copytree(ROOT / "fixtures" / top, case / top)
            copy = case / fixture
            output = case / "out" / "function.zip"
            command = [
                *(POETRY, "lambda-zip", "-C", str(copy), "--runtime", "python3.11"),
                *("--image", IMAGE, "-o", str(output), "--force", *options.split()),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{fixture} {options}: exit {done.returncode}\n{done.stderr}")
            names = sorted(output.parent.glob("*.zip"))
            found[f"{fixture} {options}".strip()] = {path.name: entries(path) for path in names}
            print(f"{fixture} {options}: {', '.join(p.name for p in names)}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    destination.write_text(json.dumps(found, indent=1, sort_keys=True))


def compare(before: Path, after: Path) -> int:
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    differ = sorted(case for case in old.keys() | new.keys() if old.get(case) != new.get(case))
    for case in sorted(old):
        count = sum(len(zip_entries) for zip_entries in old[case].values())
        print(f"{'DIFFERS' if case in differ else 'same   '}  {case}: {count} entries")
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    record(Path(sys.argv[1]))
