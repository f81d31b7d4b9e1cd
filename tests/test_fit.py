"""Lambda's unzipped limit before unpacking: the estimate honours every way to shrink the set,
and a refusal is a plan (the runtime's own distributions, --slim, --no-compile, the option line
that fits, or how far over it stays). The wheels are generated here, their members declaring
sizes they do not hold (nothing is read to check them)."""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.fit import FitOptions
from poetry_lambda_zip.fit import Part
from poetry_lambda_zip.fit import size_plan
from poetry_lambda_zip.target import RUNTIME_PROVIDED
from poetry_lambda_zip.target import LambdaTarget
from poetry_lambda_zip.wheels import UNPACK_BOUND
from poetry_lambda_zip.wheels import check_wheel_sizes
from poetry_lambda_zip.wheels import install_wheels
from tests.docker_helpers import Build
from tests.test_wheels import make_wheel
from tests.test_wheels import pinned

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from poetry_lambda_zip.wheels import PinnedWheel

TARGET = LambdaTarget("python3.11", "x86_64")
MB = 1_000_000


def declaring(directory: Path, name: str, sizes: dict[str, int]) -> PinnedWheel:
    """A small real wheel whose zip directory declares ``sizes`` for its members (they hold
    nothing)."""
    wheel = make_wheel(directory, name, "1.0", dict.fromkeys(sizes, b""))
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        for member, size in sizes.items():
            archive.getinfo(member).file_size = size
    return pinned(wheel, name, "1.0")


def refusal(
    wheels: list[PinnedWheel], monkeypatch: pytest.MonkeyPatch, **options: bool
) -> OutputError:
    def no_member_is_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("a member was read")

    fit = FitOptions(TARGET, **options)  # type: ignore[arg-type]
    with monkeypatch.context() as patched:
        patched.setattr(zipfile.ZipFile, "open", no_member_is_read)
        with pytest.raises(OutputError) as caught:
            check_wheel_sizes(wheels, "3.11", fit)
    print(caught.value)  # the message as the command shows it (pytest -s)
    return caught.value


def fix_options(error: OutputError) -> list[str]:
    """The options the fix says to add."""
    assert error.fix is not None
    assert error.fix.startswith("This fits, at about ")
    return error.fix.split(": add ", 1)[1].rstrip(".").replace("--", "\0--").split("\0")[1:]


def test_the_runtime_provides_the_aws_sdk_for_python_on_every_runtime() -> None:
    sdk = ("boto3", "botocore", "jmespath", "python-dateutil", "s3transfer", "six", "urllib3")
    for runtime in RUNTIME_PROVIDED:
        assert LambdaTarget(runtime, "arm64").provided == sdk


def test_a_set_just_over_fits_with_the_runtimes_sdk_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = [
        declaring(tmp_path, "numpyish", {"numpyish/_core.so": 250 * MB}),
        declaring(tmp_path, "botocore", {"botocore/data/endpoints.json": 12 * MB}),
        declaring(tmp_path, "boto3", {"boto3/data/resources.json": 600_000}),
    ]
    error = refusal(wheels, monkeypatch)
    assert error.exit_code == 6
    assert (
        "  - --exclude-package boto3 --exclude-package botocore saves 12.6 MB: the python3.11"
        " runtime already provides boto3 (0.6 MB), botocore (12.0 MB)"
    ) in error.message
    assert [o.strip() for o in fix_options(error)] == [
        "--exclude-package boto3",
        "--exclude-package botocore",
    ]
    # The option line it gives passes the check.
    check_wheel_sizes(wheels[:1], "3.11", FitOptions(TARGET))


def test_a_set_that_fits_only_slimmed_is_refused_plain_and_passes_with_slim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = [
        declaring(
            tmp_path,
            "pandasish",
            {"pandasish/data.bin": 240 * MB, "pandasish/tests/data.bin": 30 * MB},
        )
    ]
    error = refusal(wheels, monkeypatch)
    assert "  - --slim saves 30.0 MB: tests inside packages and .pyi stubs" in error.message
    assert fix_options(error) == ["--slim"]
    check_wheel_sizes(wheels, "3.11", FitOptions(TARGET, slim=True))


def test_a_set_that_fits_only_without_bytecode_says_the_bytecode_is_estimated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = [
        declaring(tmp_path, "codeish", {"codeish/data.bin": 200 * MB, "codeish/big.py": 40 * MB})
    ]
    # 240 MB without bytecode: the wheels alone fit, the estimated bytecode does not.
    error = refusal(wheels, monkeypatch)
    assert (
        f"That is an estimate: it counts {40 * MB:,} bytes of bytecode from the sources' sizes"
        in error.message
    )
    assert (
        "  - --no-compile saves 40.0 MB: the bytecode (estimated from the sources)" in error.message
    )
    assert fix_options(error) == ["--no-compile"]
    check_wheel_sizes(wheels, "3.11", FitOptions(TARGET, compile=False))


def test_excludes_count_before_unpacking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = [
        declaring(tmp_path, "heavy", {"heavy/data.bin": 200 * MB, "heavy/model.bin": 100 * MB})
    ]
    refusal(wheels, monkeypatch)
    check_wheel_sizes(wheels, "3.11", FitOptions(TARGET, excludes=("heavy/model.bin",)))


def test_a_set_that_nothing_fits_names_the_remainder_and_a_container_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = [
        declaring(tmp_path, "hugeish", {"hugeish/model.bin": 280 * MB, "hugeish/a.py": 4 * MB}),
        declaring(tmp_path, "six", {"six.py": 1 * MB}),
    ]
    error = refusal(wheels, monkeypatch)
    # With six left out, slimmed and without bytecode: 280 MB of data stays.
    with zipfile.ZipFile(wheels[0].path) as archive:
        remainder = sum(info.file_size for info in archive.infolist()) - UNZIPPED_LIMIT
    assert error.fix == (
        f"Even with all of these it stays {remainder:,} bytes over the limit: ship a container"
        " image instead (Lambda takes images of up to 10 GB), or move data the handler reads to"
        " S3 or EFS."
    )


def test_declared_sizes_over_the_bound_are_refused_whatever_would_be_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = [declaring(tmp_path, "vast", {"vast/tests/blob": UNPACK_BOUND + 1})]
    error = refusal(wheels, monkeypatch, slim=True)
    assert f"Nothing was unpacked (at most {UNPACK_BOUND:,} bytes are" in error.message


def bomb(directory: Path, name: str, declared: int, actual: int) -> PinnedWheel:
    """A real wheel whose member declares ``declared`` bytes and inflates to ``actual``: the
    deflate stream of ``actual`` zero bytes, built from one repeated fully flushed block."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    flushed = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = flushed * (actual // block) + compressor.flush()
    wheel = make_wheel(directory, name, "1.0", {f"{name}/blob": b""})
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, stream if member == f"{name}/blob" else data)
        info = archive.getinfo(f"{name}/blob")
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size = declared
    return pinned(wheel, name, "1.0")


def test_a_wheel_claiming_1_kb_that_inflates_to_3_gb_is_stopped_with_nothing_large_written(
    tmp_path: Path,
) -> None:
    wheel = bomb(tmp_path / "wheels", "bomb", 1024, 3 << 30)
    assert wheel.path.stat().st_size < 4 * MB
    target = tmp_path / "target"
    with pytest.raises(BuildFailedError) as caught:
        install_wheels([wheel], target, "3.11", FitOptions(TARGET))
    print(caught.value)
    written = sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _, names in os.walk(target)
        for name in names
    )
    assert written <= 1024


def test_after_building_the_plan_counts_the_bytecode_as_compiled() -> None:
    parts = [
        Part("bigpkg", "bigpkg/data.bin", 250 * MB),
        Part("bigpkg", "bigpkg/__pycache__/m.cpython-311.pyc", 13 * MB),
        Part("bigpkg", "bigpkg/m.py", 10 * MB),
    ]
    plan = size_plan(parts, FitOptions(TARGET), bytecode_built=True)
    assert plan.total == 273 * MB
    assert not plan.estimated
    error = plan.error("The package unzips to", {"bigpkg": plan.total})
    assert "  - --no-compile saves 13.0 MB: the bytecode (as compiled)" in error.message
    assert "an estimate" not in error.message
    assert error.fix == f"This fits, at about {260 * MB:,} bytes: add --no-compile."


def test_a_dry_run_estimates_the_dependencies_size_from_the_wheels_fetched_before(
    project: Callable[[str], Path],
) -> None:
    path = project("pure-python")
    local = "--runtime python3.11 --builder local"
    built = Build(path, local)
    assert built.status == 0, built.error
    with zipfile.ZipFile(built.zip_path) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    plain = Build(path, f"{local} --dry-run")
    assert plain.status == 0, plain.error
    (line,) = [line for line in plain.output.splitlines() if line.startswith("Size     ")]
    print(line)
    assert "(an estimate from 2 wheels' declared sizes, bytecode from the sources)" in line
    estimate = int(line.split("about ", 1)[1].split(" bytes")[0].replace(",", ""))
    # The dependencies alone, bytecode estimated: close to what the build made of them.
    assert 0.5 * unzipped < estimate < 1.5 * unzipped
    bare = Build(path, f"{local} --dry-run --no-compile")
    (bare_line,) = [line for line in bare.output.splitlines() if line.startswith("Size     ")]
    assert int(bare_line.split("about ", 1)[1].split(" bytes")[0].replace(",", "")) < estimate
