"""Lambda runtime x architecture: Python version, marker environment, wheel tags, build image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.tags import Tag
from packaging.tags import compatible_tags
from packaging.tags import cpython_tags

from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from poetry.core.constraints.version import VersionConstraint

__all__ = ["ARCHITECTURES", "RUNTIMES", "RUNTIME_PROVIDED", "LambdaTarget", "newest_runtime_for"]

#: Lambda's Python runtimes, oldest first.
RUNTIMES = (
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
)
ARCHITECTURES = ("x86_64", "arm64")

# The AWS SDK for Python and what it needs, as Lambda's Python runtimes have them in /var/runtime
# (on the runtime's sys.path, after /var/task and /opt/python): AWS's Lambda Developer Guide,
# "Building Lambda functions with Python", says every Python runtime includes the SDK for Python
# (Boto3), and its "Runtime-included SDK versions" section how to print the versions (they change
# with runtime updates and differ by Region, so only the names are kept). The dependencies are
# the SDK's own requirements: boto3 needs botocore, jmespath and s3transfer; botocore needs
# jmespath, python-dateutil and urllib3; python-dateutil needs six.
_AWS_SDK = ("boto3", "botocore", "jmespath", "python-dateutil", "s3transfer", "six", "urllib3")
#: What each runtime already provides (canonical distribution names): the one place this is kept.
RUNTIME_PROVIDED: dict[str, tuple[str, ...]] = {runtime: _AWS_SDK for runtime in RUNTIMES}

# python3.9-3.11 run on Amazon Linux 2 (glibc 2.26), python3.12 and later on Amazon Linux 2023
# (glibc 2.34). The glibc decides the newest manylinux tag a wheel may carry.
_AL2023_FROM = (3, 12)
_GLIBC_AL2 = (2, 26)
_GLIBC_AL2023 = (2, 34)
# The oldest glibc a PEP 600 tag can name; older wheels use the legacy aliases below.
_MANYLINUX_FLOOR = 17
# Lambda reports a Firecracker kernel; markers comparing platform_release need a realistic value.
_PLATFORM_RELEASE = "5.10.0"


@dataclass(frozen=True)
class LambdaTarget:
    """One Lambda runtime on one architecture, e.g. python3.12 on arm64."""

    runtime: str
    arch: str

    def __post_init__(self) -> None:
        problems = []
        if self.runtime not in RUNTIMES:
            problems.append(
                f"Unknown runtime {self.runtime!r}; Lambda's Python runtimes are "
                f"{', '.join(RUNTIMES)}."
            )
        if self.arch not in ARCHITECTURES:
            problems.append(
                f"Unknown architecture {self.arch!r}; Lambda offers {' and '.join(ARCHITECTURES)}."
            )
        if problems:
            raise ConfigError("\n".join(problems), "Pass one of those values.")

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.runtime.removeprefix("python").split(".")
        return int(major), int(minor)

    @property
    def python_version_text(self) -> str:
        return "{}.{}".format(*self.python_version)

    @property
    def machine(self) -> str:
        """``platform.machine()`` on the target: Lambda's arm64 is aarch64 to Linux and wheels."""
        return "aarch64" if self.arch == "arm64" else "x86_64"

    @property
    def docker_platform(self) -> str:
        return "linux/arm64" if self.arch == "arm64" else "linux/amd64"

    @property
    def glibc(self) -> tuple[int, int]:
        return _GLIBC_AL2023 if self.python_version >= _AL2023_FROM else _GLIBC_AL2

    @property
    def default_image(self) -> str:
        """AWS's build image (the runtime image plus compilers) for this runtime and arch."""
        return f"public.ecr.aws/sam/build-{self.runtime}:latest-{self.arch}"

    @property
    def provided(self) -> tuple[str, ...]:
        """The distributions the runtime already has on its ``sys.path`` (``RUNTIME_PROVIDED``)."""
        return RUNTIME_PROVIDED[self.runtime]

    @property
    def description(self) -> str:
        glibc = "{}.{}".format(*self.glibc)
        return f"{self.runtime} on {self.arch} (CPython {self.python_version_text}, glibc {glibc})"

    def marker_environment(self) -> dict[str, str]:
        """Every PEP 508 marker variable as the Lambda runtime reports it.

        All keys are given: packaging fills missing ones from the host, and poetry-core treats
        missing ones as satisfied, and neither is what the target would say.
        """
        version = self.python_version_text
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{version}.0",
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": _PLATFORM_RELEASE,
            "platform_system": "Linux",
            "platform_version": "#1 SMP",
            "python_full_version": f"{version}.0",
            "python_version": version,
            "sys_platform": "linux",
        }

    def platforms(self) -> list[str]:
        """Platform tags the runtime's pip accepts, most specific first."""
        arch = self.machine
        glibc_major, glibc_minor = self.glibc
        platforms = [
            f"manylinux_{glibc_major}_{minor}_{arch}"
            for minor in range(glibc_minor, _MANYLINUX_FLOOR - 1, -1)
        ]
        platforms.append(f"manylinux2014_{arch}")
        if arch == "x86_64":
            platforms += [
                "manylinux_2_12_x86_64",
                "manylinux2010_x86_64",
                "manylinux_2_5_x86_64",
                "manylinux1_x86_64",
            ]
        platforms.append(f"linux_{arch}")
        return platforms

    def supported_tags(self) -> list[Tag]:
        """Wheel tags the target accepts, best first (the order pip ranks them in)."""
        version = self.python_version
        platforms = self.platforms()
        abi = "cp{}{}".format(*version)
        return [
            *cpython_tags(version, abis=[abi], platforms=platforms),
            *compatible_tags(version, interpreter=abi, platforms=platforms),
        ]


def newest_runtime_for(python_constraint: VersionConstraint) -> str | None:
    """The newest Lambda runtime whose Python the project's ``requires-python`` allows."""
    from poetry.core.constraints.version import parse_constraint

    for runtime in reversed(RUNTIMES):
        version = runtime.removeprefix("python")
        if python_constraint.allows_any(parse_constraint(f"~{version}")):
            return runtime
    return None
