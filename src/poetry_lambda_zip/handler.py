"""Where Lambda's Python runtime finds a handler, checked against the names in the package
(pure): ``pkg.mod.func`` or SAM's ``dir/mod.func`` must name a module that is there."""

from __future__ import annotations

import difflib
import posixpath
import re
import unicodedata
from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["check_handler", "handler_module"]

#: A module file: source, sourceless bytecode, or an extension module (``x.so``,
#: ``x.cpython-312-x86_64-linux-gnu.so``, ``x.abi3.so``).
_MODULE_FILE = re.compile(r"^(?P<stem>[^/.]+)(\.py|\.pyc|(\.[\w-]+)?\.so)$")


def handler_module(handler: str) -> tuple[str, str]:
    """The module and the function a handler names, as Lambda's runtime reads it: the last
    dot separates the function, and a slash is a package separator."""
    module, _, function = handler.rpartition(".")
    return module.replace("/", "."), function


def check_handler(handler: str, names: Iterable[str]) -> None:
    """Raise ConfigError unless the module of ``handler`` is among ``names`` (the package's
    file names, as they are on sys.path): a ``.py`` or ``.pyc`` file, an extension module, a
    package, or a directory (a namespace package)."""
    module, function = handler_module(handler)
    modules = _modules(names)
    if module in modules:
        return
    closest = _closest(module, modules)
    path = module.replace(".", "/")
    hint = f" The closest module there is {closest}." if closest else ""
    if closest is not None and unicodedata.normalize("NFC", closest) == unicodedata.normalize(
        "NFC", module
    ):
        hint = (
            f" The package has {closest!a}, the same name in another Unicode normalisation"
            f" than the handler's {module!a} (macOS writes file names decomposed, NFD);"
            " Python's import does not match the two. Rename the file in composed form (NFC)."
        )
    raise ConfigError(
        f"The handler {handler} names the module {module}, which is not in the package: no"
        f" {path}.py, {path}/__init__.py, extension module or directory {path}/.{hint}",
        f"Set handler to {closest or 'MODULE'}.{function}, or include the"
        " module (include, and its from/to for where it lands in the zip); the handler is"
        " the module's path in the zip, without the directory it has in the project.",
    )


def _modules(names: Iterable[str]) -> set[str]:
    """Every importable module and package the names hold, dotted."""
    modules: set[str] = set()
    for name in names:
        directory, file = posixpath.split(name)
        parts = directory.split("/") if directory else []
        if "__pycache__" in parts:
            continue
        for depth in range(1, len(parts) + 1):
            modules.add(".".join(parts[:depth]))  # a package, or a namespace package
        match = _MODULE_FILE.match(file)
        if match is not None and match["stem"] != "__init__":
            modules.add(".".join([*parts, match["stem"]]))
    return modules


def _closest(module: str, modules: set[str]) -> str | None:
    """The module a mistaken handler most likely meant: one with the same last name (a
    directory too many or too few), else the most similar name."""
    last = module.rpartition(".")[2]
    same = sorted((m for m in modules if m.rpartition(".")[2] == last), key=len)
    if same:
        return same[0]
    close = difflib.get_close_matches(module, sorted(modules), n=1, cutoff=0.6)
    return close[0] if close else None
