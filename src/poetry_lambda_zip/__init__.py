"""Build AWS Lambda .zip deployment packages from Poetry projects."""

from __future__ import annotations

__version__ = "0.1.0"
