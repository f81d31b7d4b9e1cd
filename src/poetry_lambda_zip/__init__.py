"""Build AWS Lambda .zip deployment packages from Poetry projects."""

from __future__ import annotations

from importlib import metadata

try:
    #: The one place the version is written is pyproject.toml; this reads it back.
    __version__ = metadata.version("poetry-lambda-zip")
except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"
