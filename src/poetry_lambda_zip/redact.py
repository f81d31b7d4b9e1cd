"""Credentials never reach what we print: not in URLs (``https://user:password@host/``), not in
a bare ``user:password@host`` (Poetry's own debug lines name a session's netloc so), not as the
value of a variable that holds a secret (``POETRY_HTTP_BASIC_*_PASSWORD``, tokens)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["redact"]

#: The userinfo part of any URL in a text: ``scheme://user:password@`` (or a bare token@).
_USERINFO = re.compile(r"(?<=://)[^/@\s'\"<>]+@")
#: ``user:password@host`` without a scheme (a netloc): a name, a colon, a secret, an @ and a
#: host. Not ``git@github.com:org/repo`` (no colon before the @), not an e-mail address.
_NETLOC_USERINFO = re.compile(r"(?<![\w.%+-])[\w.%+~-]+:[^/@\s'\"<>]+@(?=[\w\[])")
#: Variables whose values are secrets, by the words their names hold (not those that name a
#: file holding one).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY", re.IGNORECASE)
_NAMES_A_FILE = re.compile(r"_(FILE|PATH|DIR)$", re.IGNORECASE)
#: Shorter values are not masked (they would mask ordinary words).
_SHORTEST_SECRET = 6
_MASK = "****"


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with the credentials of every URL and netloc in it removed, and the value of
    every secret variable of ``environ`` (default: this process's) masked."""
    text = _NETLOC_USERINFO.sub("", _USERINFO.sub("", text))
    environment = os.environ if environ is None else environ
    for name, value in environment.items():
        if (
            len(value) >= _SHORTEST_SECRET
            and value in text
            and _SECRET_NAME.search(name)
            and not _NAMES_A_FILE.search(name)
        ):
            text = text.replace(value, _MASK)
    return text
