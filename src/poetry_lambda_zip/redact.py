"""Credentials written into URLs (``https://user:password@host/``) never reach what we print."""

from __future__ import annotations

import re

__all__ = ["redact"]

#: The userinfo part of any URL in a text: ``scheme://user:password@`` (or a bare token@).
_USERINFO = re.compile(r"(?<=://)[^/@\s'\"<>]+@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it removed (Poetry writes a source URL's
    ``user:password@`` into poetry.lock; proxy URLs carry them too)."""
    return _USERINFO.sub("", text)
