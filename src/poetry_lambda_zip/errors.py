"""The exception root of poetry-lambda-zip; every error carries the fix to print."""

from __future__ import annotations

__all__ = [
    "BuildFailedError",
    "BuildInterrupted",
    "ConfigError",
    "ConflictError",
    "DockerUnavailableError",
    "ImageError",
    "LambdaZipError",
    "LockError",
    "OutputError",
    "ResolveError",
]


class LambdaZipError(Exception):
    """Root of every error this plugin reports to the user.

    ``message`` says what went wrong, ``fix`` what to do about it. The command shows both in one
    place; nothing else prints errors.
    """

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n{self.fix}"
        return self.message


class ConfigError(LambdaZipError):
    """An option, a combination of options or a [tool.poetry-lambda-zip] value is invalid."""

    exit_code = 2


class LockError(LambdaZipError):
    """poetry.lock is missing, stale or unreadable."""

    exit_code = 3


class ResolveError(LambdaZipError):
    """The locked packages cannot be turned into a requirement set for the target."""

    exit_code = 3


class DockerUnavailableError(LambdaZipError):
    """No Docker engine answers where we looked."""

    exit_code = 4


class ImageError(LambdaZipError):
    """The build image is missing, cannot be pulled, or does not match the target."""

    exit_code = 4


class BuildFailedError(LambdaZipError):
    """Installing the requirement set inside the build container failed."""

    exit_code = 5


class ConflictError(BuildFailedError):
    """Two installed files want one path in the package, with different contents: the one
    place this is said, wherever it is found (unpacking here, merging trees, the image)."""

    def __init__(self, path: str, holders: str, fix: str, how: str = "differently") -> None:
        super().__init__(
            f"Two files want the same place in the zip: {path} is installed by {holders}, {how}.",
            fix,
        )


class OutputError(LambdaZipError):
    """The package cannot be written where it was asked for."""

    exit_code = 6


class BuildInterrupted(LambdaZipError):
    """SIGTERM or Ctrl-C stopped the build; everything it started was cleaned up."""

    exit_code = 130
