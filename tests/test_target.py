from __future__ import annotations

import pytest
from packaging.tags import Tag
from poetry.core.constraints.version import parse_constraint
from poetry.core.version.markers import parse_marker

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.target import LambdaTarget
from poetry_lambda_zip.target import newest_runtime_for


def test_arm64_is_aarch64_to_markers_wheels_and_docker() -> None:
    target = LambdaTarget("python3.12", "arm64")
    assert target.marker_environment()["platform_machine"] == "aarch64"
    assert target.docker_platform == "linux/arm64"
    assert target.platforms()[0] == "manylinux_2_34_aarch64"
    assert target.default_image == "public.ecr.aws/sam/build-python3.12:latest-arm64"


@pytest.mark.parametrize(
    ("runtime", "newest", "too_new"),
    [
        ("python3.11", "manylinux_2_26_x86_64", "manylinux_2_28_x86_64"),
        ("python3.12", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64"),
    ],
)
def test_glibc_of_the_runtime_caps_manylinux(runtime: str, newest: str, too_new: str) -> None:
    platforms = LambdaTarget(runtime, "x86_64").platforms()
    assert platforms[0] == newest
    assert too_new not in platforms
    assert "manylinux2014_x86_64" in platforms


def test_tags_rank_the_runtimes_own_abi_before_abi3_and_pure_python() -> None:
    tags = LambdaTarget("python3.12", "x86_64").supported_tags()
    own = tags.index(Tag("cp312", "cp312", "manylinux_2_17_x86_64"))
    abi3 = tags.index(Tag("cp312", "abi3", "manylinux_2_17_x86_64"))
    pure = tags.index(Tag("py3", "none", "any"))
    assert own < abi3 < pure
    assert Tag("cp311", "cp311", "manylinux_2_17_x86_64") not in tags
    assert Tag("cp312", "cp312", "manylinux_2_17_aarch64") not in tags


def test_marker_environment_is_the_target_whatever_the_host() -> None:
    environment = LambdaTarget("python3.10", "x86_64").marker_environment()
    assert parse_marker('python_version < "3.11"').validate(environment)
    assert not parse_marker('sys_platform == "win32"').validate(environment)
    assert not parse_marker('platform_system == "Darwin"').validate(environment)
    assert parse_marker('"5" in platform_release').validate(environment)


def test_unknown_runtime_and_arch_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        LambdaTarget("python2.7", "ppc64le")
    assert "python2.7" in caught.value.message
    assert "ppc64le" in caught.value.message


@pytest.mark.parametrize(
    ("requires_python", "runtime"),
    [
        (">=3.9", "python3.14"),
        (">=3.9,<3.13", "python3.12"),
        ("~3.10", "python3.10"),
        ("^3.11.4", "python3.14"),
        (">=3.11.4,<3.12", "python3.11"),
        ("<3.9", None),
    ],
)
def test_newest_runtime_allowed_by_requires_python(
    requires_python: str, runtime: str | None
) -> None:
    assert newest_runtime_for(parse_constraint(requires_python)) == runtime
