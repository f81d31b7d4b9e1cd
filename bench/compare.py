"""Build one fixture with this plugin and, in the same run, with what users pick instead.

    python bench/compare.py --peers VENV [--runs 3] [--fixture binary-wheel] [--image IMAGE]
                            [--big] [--data-science]

The floor is ``poetry --version`` (Poetry's own start-up, which no plugin command can beat);
each of this plugin's rows is also shown as "+X s over the floor", measured in the same run.

This plugin (docker and local builders) is measured cold (a fresh Poetry cache directory: no
downloads, no kept trees; the image's pip-cache volume is used as found, which matters only for
sdists, and only the volumes this run created are removed at the end), warm (``--force``:
everything downloaded and reinstalled), code-changed (one line added to the project's code,
caches warm) and no-op (nothing changed). The peers, run by the scripts in ``bench/peers/``
with the same image, index settings and CA bundle:

- a hand-written script: ``poetry export`` + ``docker run IMAGE pip install --target`` (project
  bind-mounted, no cache, as such scripts are usually written) + ``zip -r``;
- poetry-plugin-lambda-build in Docker mode (``poetry build-lambda``), cold then rebuilds;
- ``poetry export`` + ``uv pip install --target --python-platform`` + ``zip -r``, cold (empty
  cache) then warm; and the bare minimum: the locked ``name==version`` pins (no export, no
  project code, no hashes) through ``uv pip install --no-deps --target`` + ``zip -r``.

``VENV`` holds the peers (not dependencies of this project): ``python -m venv VENV &&
VENV/bin/pip install poetry poetry-plugin-export poetry-plugin-lambda-build uv``. Every row is
the median of ``--runs`` runs (cold rows: one run). "warm" is a fresh checkout with every cache
kept (no zip yet); "warm --force" downloads and reinstalls everything. Peak memory is
the largest resident set of the Poetry process that builds (shown for this plugin only).
``--big`` adds the memory check on a generated 250 MB package (a path dependency holding 240 MiB
of random bytes). ``--data-science`` adds a generated numpy + pandas project (about 150 MB
unzipped), locked here (through a temporary simple-API source, removed again), built cold by
this plugin (docker builder, with bytecode and with ``--no-compile``) and by the uv pins
pipeline, with this plugin's peak memory. This plugin's modules are compiled first, as an
installed plugin's are.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import poetry_lambda_zip
from poetry_lambda_zip.builders.docker import OWNER_LABEL
from poetry_lambda_zip.builders.docker import OWNER_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPTS = ROOT / "bench" / "peers"
STAND_IN = "poetry-lambda-zip/stand-in:python3.11-x86_64"
PROJECT_FILE = "src/fast_api_handler/__init__.py"


@dataclass
class Row:
    tool: str
    scenario: str
    seconds: list[float]
    zip_path: Path | None
    peak_kb: int
    #: Zipped and unzipped MB, read when the row is made (later runs rewrite the same file).
    sizes: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.zip_path is not None and self.zip_path.exists():
            self.sizes = (self.zip_path.stat().st_size / 1e6, unzipped_mb(self.zip_path))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run(command: list[str], cwd: Path, environment: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of the process, and its output's last line."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{text[-3000:]}")
    lines = text.strip().splitlines()
    return seconds, usage.ru_maxrss, lines[-1] if lines else ""


class Ours:
    """``poetry lambda-zip`` with one builder, on its own copy of the fixture and caches."""

    def __init__(self, builder: str, fixture: str, image: str, work: Path) -> None:
        self.builder = builder
        self.project = work / f"ours-{builder}" / fixture
        shutil.copytree(ROOT / "fixtures" / fixture, self.project)
        self.output = work / f"ours-{builder}.zip"
        self.environment = {
            **os.environ,
            "POETRY_CACHE_DIR": str(work / f"cache-{builder}"),
            OWNER_VARIABLE: OWNER,
        }
        poetry = str(Path(sys.executable).with_name("poetry"))
        self.command = [poetry, "lambda-zip", "-C", str(self.project), "--runtime", "python3.11",
                        "--builder", builder, "--image", image, "-o", str(self.output)]  # fmt: skip
        self.changes = 0

    def build(self, *extra: str) -> tuple[float, int]:
        seconds, peak, _ = run([*self.command, *extra], self.project, self.environment)
        return seconds, peak

    def remove_output(self) -> None:
        """A fresh checkout: no zip yet, every cache kept (a CI job with a restored cache)."""
        self.output.unlink()

    def change_code(self) -> None:
        self.changes += 1
        with (self.project / PROJECT_FILE).open("a") as handle:
            handle.write(f"# bench change {self.changes}\n")


def measure_ours(ours: Ours, runs: int, *, no_compile_row: bool = False) -> list[Row]:
    label = f"poetry lambda-zip ({ours.builder})"
    rows = []
    cold, peak = ours.build()
    rows.append(Row(label, "cold", [cold], ours.output, peak))
    for scenario, prepare, extra in (
        ("warm", ours.remove_output, ()),
        ("warm --force", None, ("--force",)),
        ("code changed", ours.change_code, ()),
        ("no-op", None, ()),
        *([("warm --force, no .pyc", None, ("--force", "--no-compile"))] if no_compile_row else []),
    ):
        times, peaks = [], []
        for _ in range(runs):
            if prepare is not None:
                prepare()
            seconds, peak = ours.build(*extra)
            times.append(seconds)
            peaks.append(peak)
        rows.append(Row(label, scenario, times, ours.output, max(peaks)))
    return rows


def measure_peer(
    label: str, script: str, project: Path, environment: dict[str, str], *, runs: int, rerun: str
) -> list[Row]:
    command = ["bash", str(PEER_SCRIPTS / script), str(project)]
    if script == PINS_SCRIPT:
        run([*command, "--prepare"], project, environment)  # the pins file: not timed
    seconds, _, last = run(command, project, environment)
    rows = [Row(label, "cold", [seconds], Path(last), 0)]
    times = [run(command, project, environment)[0] for _ in range(runs)]
    rows.append(Row(label, rerun, times, Path(last), 0))
    return rows


FLOOR = "poetry --version"
UV_PINS = "uv pip --target (pins only) + zip"
PINS_SCRIPT = "uv_pins_only.sh"

#: Every container and volume this run creates carries this owner (the engine may be shared).
OWNER = f"bench-{uuid.uuid4().hex[:12]}"


def remove_our_volumes() -> None:
    """The volumes this run created, and no other."""
    listed = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={OWNER_LABEL}={OWNER}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if listed:
        subprocess.run(["docker", "volume", "rm", *listed], check=False, capture_output=True)


def big_package(work: Path, image: str) -> list[Row]:
    """A project whose dependency is a 240 MiB wheel of random bytes: a ~252 MB package."""
    project = work / "big"
    project.mkdir()
    wheel = project / "big_blob-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for number in range(240):
            archive.writestr(f"big_blob/part{number:03}.bin", os.urandom(1 << 20))
        archive.writestr("big_blob/__init__.py", "")
        archive.writestr("big_blob-1.0.dist-info/METADATA", "Metadata-Version: 2.1\n"
                         "Name: big-blob\nVersion: 1.0\n")  # fmt: skip
        archive.writestr("big_blob-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        archive.writestr("big_blob-1.0.dist-info/RECORD", "")
    (project / "app.py").write_text("import big_blob\n")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "big"\nversion = "1.0"\nrequires-python = ">=3.11,<3.12"\n'
        "[tool.poetry]\npackage-mode = false\n[tool.poetry.dependencies]\n"
        'big-blob = {path = "big_blob-1.0-py3-none-any.whl"}\n'
        '[tool.poetry-lambda-zip]\ninclude = ["app.py"]\n'
    )
    poetry = str(Path(sys.executable).with_name("poetry"))
    environment = {**os.environ, "POETRY_CACHE_DIR": str(work / "cache-big"), OWNER_VARIABLE: OWNER}
    run([poetry, "-C", str(project), "lock"], project, environment)
    rows = []
    for builder in ("local", "docker"):
        output = work / f"big-{builder}.zip"
        seconds, peak, _ = run(
            [poetry, "lambda-zip", "-C", str(project), "--runtime", "python3.11", "--builder",
             builder, "--image", image, "-o", str(output)],
            project, environment,
        )  # fmt: skip
        rows.append(
            Row(f"poetry lambda-zip ({builder})", "250 MB package", [seconds], output, peak)
        )
    return rows


def unzipped_mb(path: Path) -> float:
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist()) / 1e6


def print_table(rows: list[Row], runs: int, fixture: str) -> None:
    print(f"fixtures/{fixture}, python3.11 x86_64; median of {runs} runs (cold: one run)")
    floor = next((row.median for row in rows if row.tool == FLOOR), None)
    print(
        f"{'tool':<38} {'scenario':<26} {'median':>8} {'over floor':>10} {'zip MB':>7}"
        f" {'unzipped':>9} {'peak MB':>8}"
    )
    for row in rows:
        size, unzipped = row.sizes
        peak = f"{row.peak_kb / 1024:.0f}" if row.peak_kb else "-"
        over = "-"
        if floor is not None and row.tool.startswith("poetry lambda-zip"):
            over = f"+{row.median - floor:.2f}s"
        print(f"{row.tool:<38} {row.scenario:<26} {row.median:>7.2f}s {over:>10} {size:>7.1f}"
              f" {unzipped:>9.1f} {peak:>8}")  # fmt: skip


def print_ratios(rows: list[Row]) -> None:
    by = {(row.tool, row.scenario): row.median for row in rows}
    docker, local = "poetry lambda-zip (docker)", "poetry lambda-zip (local)"
    build_lambda, uv = "poetry-plugin-lambda-build (docker)", "export + uv pip --target + zip"
    hand = "export + docker run pip --target + zip"
    print("ratios:")
    uv_pins = UV_PINS
    for ours, peer, scenario_ours, scenario_peer in (
        (docker, uv_pins, "cold", "cold"),
        (docker, uv_pins, "numpy+pandas cold", "numpy+pandas cold"),
        (docker, uv_pins, "numpy+pandas cold, no .pyc", "numpy+pandas cold"),
        (docker, build_lambda, "cold", "cold"),
        (docker, hand, "cold", "cold"),
        (docker, build_lambda, "no-op", "rebuild"),
        (local, uv, "warm", "warm"),
        (local, uv, "cold", "cold"),
        (local, uv_pins, "warm", "warm"),
        (local, uv_pins, "warm --force, no .pyc", "warm"),
    ):
        if (ours, scenario_ours) in by and (peer, scenario_peer) in by:
            ratio = by[ours, scenario_ours] / by[peer, scenario_peer]
            print(f"  {ours} {scenario_ours} / {peer} {scenario_peer}: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=Path, required=True, help="venv holding the peers")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fixture", default="binary-wheel")
    parser.add_argument("--image", default=STAND_IN)
    parser.add_argument("--big", action="store_true", help="also build a 250 MB package")
    parser.add_argument(
        "--data-science", action="store_true", help="also build numpy + pandas, cold"
    )
    arguments = parser.parse_args()
    compile_plugin()
    with tempfile.TemporaryDirectory(prefix="lambda-zip-bench-") as tmp:
        try:
            rows = compare(Path(tmp), arguments)
        finally:
            remove_our_volumes()
        print_table(rows, arguments.runs, arguments.fixture)
        print_ratios(rows)


def compile_plugin() -> None:
    """This plugin's bytecode, as an installed wheel has it: run from a checkout with
    PYTHONDONTWRITEBYTECODE set (as on these machines), every build would otherwise compile
    all of its modules first (about 0.08 s)."""
    compileall.compile_dir(Path(poetry_lambda_zip.__file__).parent, quiet=1)


def measure_floor(runs: int) -> Row:
    """``poetry --version``: Poetry's start-up, the least any ``poetry`` command takes."""
    poetry = str(Path(sys.executable).with_name("poetry"))
    times = [run([poetry, "--version"], ROOT, dict(os.environ))[0] for _ in range(max(runs, 5))]
    return Row(FLOOR, "floor", times, None, 0)


def compare(work: Path, arguments: argparse.Namespace) -> list[Row]:
    """Every row: the floor, ours with both builders, then the peers (and the big package)."""
    rows = [measure_floor(arguments.runs)]
    rows += measure_ours(Ours("docker", arguments.fixture, arguments.image, work), arguments.runs)
    rows += measure_ours(
        Ours("local", arguments.fixture, arguments.image, work),
        arguments.runs,
        no_compile_row=True,
    )
    environment = {
        **os.environ,
        "PEERS_VENV": str(arguments.peers.resolve()),
        "LAMBDA_IMAGE": arguments.image,
        "OUT_DIR": str(work / "peers-out"),
        "PEERS_WORK": str(work / "peers"),
        "UV_CACHE_DIR": str(work / "uv-cache"),
        "POETRY": str(Path(sys.executable).with_name("poetry")),
    }
    for label, script, rerun in (
        ("export + docker run pip --target + zip", "hand_written.sh", "rebuild"),
        ("poetry-plugin-lambda-build (docker)", "lambda_build.sh", "rebuild"),
        ("export + uv pip --target + zip", "uv_pipeline.sh", "warm"),
        (UV_PINS, PINS_SCRIPT, "warm"),
    ):
        project = work / "peers-projects" / script / arguments.fixture
        shutil.copytree(ROOT / "fixtures" / arguments.fixture, project)
        rows += measure_peer(label, script, project, environment, runs=arguments.runs, rerun=rerun)
    if arguments.big:
        rows += big_package(work, arguments.image)
    if arguments.data_science:
        rows += data_science(work, arguments.image, environment)
    return rows


DATA_SCIENCE = """[project]
name = "ds-handler"
version = "1.0"
requires-python = ">=3.11,<3.12"
# Versions with manylinux2014 wheels: python3.9-3.11 run on Amazon Linux 2 (glibc 2.26).
dependencies = ["numpy (>=2.0,<2.3)", "pandas (>=2.2,<2.3)"]

[tool.poetry]
package-mode = false

[tool.poetry-lambda-zip]
include = ["handler.py"]
"""


def data_science(work: Path, image: str, environment: dict[str, str]) -> list[Row]:
    """numpy + pandas, cold: this plugin (docker builder, bytecode) and the uv pins pipeline."""
    rows = []
    for label in ("ours", "uv"):
        project = work / f"data-science-{label}" / "ds-handler"
        project.mkdir(parents=True)
        (project / "pyproject.toml").write_text(DATA_SCIENCE)
        (project / "handler.py").write_text("import pandas\n\ndef handler(event, context):\n"
                                            "    return pandas.__version__\n")  # fmt: skip
        if label == "ours":
            relock = [sys.executable, str(ROOT / "scripts" / "relock_fixture.py"), str(project)]
            run(relock, project, dict(os.environ))
            lock = (project / "poetry.lock").read_text()
        else:
            (project / "poetry.lock").write_text(lock)
    ours = work / "data-science-ours" / "ds-handler"
    poetry = str(Path(sys.executable).with_name("poetry"))
    # Cold twice, each with a cache of its own: with bytecode (the default), and without
    # (--no-compile: the same work as the uv pipeline, which compiles nothing).
    for scenario, extra in (
        ("numpy+pandas cold", []),
        ("numpy+pandas cold, no .pyc", ["--no-compile"]),
    ):
        cache = work / f"cache-data-science{len(extra)}"
        ours_environment = {**os.environ, OWNER_VARIABLE: OWNER, "POETRY_CACHE_DIR": str(cache)}
        output = work / f"data-science{len(extra)}.zip"
        seconds, peak, _ = run(
            [poetry, "lambda-zip", "-C", str(ours), "--runtime", "python3.11", "--builder",
             "docker", "--image", image, "-o", str(output), *extra],
            ours, ours_environment,
        )  # fmt: skip
        rows.append(Row("poetry lambda-zip (docker)", scenario, [seconds], output, peak))
    uv = work / "data-science-uv" / "ds-handler"
    uv_environment = {**environment, "UV_CACHE_DIR": str(work / "uv-cache-data-science")}
    command = ["bash", str(PEER_SCRIPTS / PINS_SCRIPT), str(uv)]
    run([*command, "--prepare"], uv, uv_environment)  # the pins file: not timed
    seconds, _, last = run(command, uv, uv_environment)
    rows.append(Row(UV_PINS, "numpy+pandas cold", [seconds], Path(last), 0))
    return rows


if __name__ == "__main__":
    main()
