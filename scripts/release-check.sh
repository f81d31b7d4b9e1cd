#!/usr/bin/env bash
# Build the sdist and wheel as a release would (python -m build, in a clean copy of the tracked
# files) and check them: twine's metadata check, the wheel holds the package and no tests or
# fixtures, its metadata names the Poetry plugin entry point, and the version is pyproject's.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | tar --null -T - -cf - | tar -C "$work" -xf -
echo "python -m build (sdist and wheel) ..." >&2
"$python" -m build --outdir "$work/dist" "$work" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
"$python" -m twine check --strict "$work"/dist/*
"$python" - "$work/dist" <<'PY'
import sys, tomllib, zipfile
from pathlib import Path

dist = Path(sys.argv[1])
(wheel,) = dist.glob("*.whl")
(sdist,) = dist.glob("*.tar.gz")
version = tomllib.loads(Path("pyproject.toml").read_text())["project"]["version"]
names = zipfile.ZipFile(wheel).namelist()
problems = []
if not wheel.name.startswith(f"poetry_lambda_zip-{version}-"):
    problems.append(f"{wheel.name} is not version {version}")
if "poetry_lambda_zip/plugin.py" not in names or "poetry_lambda_zip/builders/_inside.py" not in names:
    problems.append("the wheel lacks the package")
stray = [n for n in names if n.startswith(("tests/", "fixtures/", "bench/", "scripts/", "examples/"))]
if stray:
    problems.append(f"the wheel holds {stray[:5]}")
info = f"poetry_lambda_zip-{version}.dist-info"
entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
lines = [line.replace(" ", "") for line in entry_points.splitlines()]
if "[poetry.application.plugin]" not in lines or "lambda-zip=poetry_lambda_zip.plugin:LambdaZipPlugin" not in lines:
    problems.append(f"entry_points.txt does not name the plugin:\n{entry_points}")
metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
if "Requires-Dist: pytest" in metadata or "Provides-Extra: test" in metadata:
    problems.append("the metadata names the test tools")
if problems:
    sys.exit("release check failed:\n  " + "\n  ".join(problems))
print(f"release check: {wheel.name} ({len(names)} files) and {sdist.name} are fine")
PY
