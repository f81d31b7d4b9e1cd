"""Bytecode compiled on this machine where it is the image's, byte for byte.

The docker builder precompiles in the image. When this machine's Python is the runtime's
version, a small tree the image compiled is compiled here as well (``tree_steps`` run by a fresh
``python -I``, as the container runs it) and compared ``.pyc`` by ``.pyc``. The verdict is kept
per image, interpreter and version of ``tree_steps``; where it was "identical", later trees for
that image compile here, without a container (a code edit then costs no container start). Where
it differed, the image keeps compiling. Only trees of up to ``PROBE_LIMIT`` modules are compared
(the project's own files); a verdict covers every later tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from importlib import resources
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders.contract import CompileReport
from poetry_lambda_zip.builders.contract import TreeReport
from poetry_lambda_zip.builders.contract import steps_digest
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.stale import write_atomically
from poetry_lambda_zip.tree_steps import finish_tree

if TYPE_CHECKING:
    from pathlib import Path

    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.target import LambdaTarget

__all__ = ["PROBE_LIMIT", "BytecodeVerdicts", "bytecode_only", "compile_here", "finish_here"]

#: The most modules a tree may hold to be compared (the comparison compiles it again here).
PROBE_LIMIT = 200


def compile_here(tree: Path, prefix: str) -> CompileReport:
    """Precompile ``tree`` with this machine's Python in a fresh interpreter, exactly as the
    container's entry script does."""
    with resources.as_file(resources.files("poetry_lambda_zip").joinpath("tree_steps.py")) as path:
        done = subprocess.run(
            [sys.executable, "-I", str(path), "compile", str(tree), prefix],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode:
        raise BuildFailedError(f"Precompiling here failed:\n{done.stderr[-2000:]}")
    compiled = TreeReport.from_json({"compile": json.loads(done.stdout)}).compile
    return compiled if compiled is not None else CompileReport()


class BytecodeVerdicts:
    """Whether this machine's Python compiles as an image does: a JSON file of verdicts by
    image id and interpreter (None: nothing kept, every tree compiles in the image)."""

    def __init__(self, record: Path | None) -> None:
        self._record = record
        #: Images compiling a tree that will be compared (a probe): a tree of the same image
        #: waits for its verdict rather than starting a container of its own.
        self._probing: set[str] = set()
        self._changed = threading.Condition()
        # The compile step's own code is part of the key: a verdict reached with another
        # version of it says nothing of this one.
        self._interpreter = f"{sys.implementation.name} {sys.version.split()[0]}"
        self._interpreter += f" {steps_digest()[:16]}"

    def can_compile(self, target: LambdaTarget) -> bool:
        """Whether this interpreter is the runtime's version at all."""
        return "{}.{}".format(*sys.version_info[:2]) == target.python_version_text

    def identical(self, image_id: str) -> bool | None:
        """The verdict for ``image_id``: None when none was reached yet."""
        verdict = self._read().get(f"{image_id} {self._interpreter}")
        return verdict if isinstance(verdict, bool) else None

    def claim(self, image_id: str, tree: Path) -> tuple[bool | None, bool]:
        """The verdict for ``image_id`` once no probe of it is in flight, and whether the
        caller is now that probe: with no verdict yet and a ``tree`` that can be compared, the
        caller compiles it in the image, compares (``compare``) and ``release``s; every other
        tree of the image waits for that verdict rather than starting a container of its own."""
        with self._changed:
            self._changed.wait_for(lambda: image_id not in self._probing)
            verdict = self.identical(image_id)
            probe = verdict is None and self._comparable(tree)
            if probe:
                self._probing.add(image_id)
        return verdict, probe

    def release(self, image_id: str) -> None:
        """The probe of ``image_id`` is over (its verdict kept, or none reached)."""
        with self._changed:
            self._probing.discard(image_id)
            self._changed.notify_all()

    def _comparable(self, tree: Path) -> bool:
        if self._record is None:
            return False
        modules = sum(1 for path in tree.rglob("*.py") if path.is_file())
        return 0 < modules <= PROBE_LIMIT

    def compare(self, image_id: str, tree: Path, compiled: Path, prefix: str) -> bool | None:
        """Compile ``tree`` here and compare it with ``compiled`` (the image's result for the
        same files); keep and return the verdict. None: the tree is too large to compare."""
        modules = sum(1 for _ in compiled.rglob("*.pyc"))
        if self._record is None or modules == 0 or modules > PROBE_LIMIT:
            return None
        compile_here(tree, prefix)
        verdict = all(
            (tree / path.relative_to(compiled)).is_file()
            and (tree / path.relative_to(compiled)).read_bytes() == path.read_bytes()
            for path in compiled.rglob("*.pyc")
        )
        verdicts = self._read()
        verdicts[f"{image_id} {self._interpreter}"] = verdict
        text = json.dumps(verdicts, sort_keys=True)
        with contextlib.suppress(OSError):  # a verdict not kept is only found again later
            write_atomically(self._record, lambda path: path.write_text(text, "utf-8"))
        return verdict

    def _read(self) -> dict[str, object]:
        if self._record is None:
            return {}
        try:
            found = json.loads(self._record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}


def bytecode_only(steps: Steps, tree: Path) -> bool:
    """Whether the steps for ``tree`` need a toolchain only for bytecode (slimming without
    stripping is the same everywhere)."""
    return steps.compile_prefix is not None and not steps.builds and not steps.strips(tree)


def finish_here(tree: Path, steps: Steps) -> TreeReport:
    """Slim and precompile ``tree`` in place with this machine's ``strip`` (for the target's
    architecture only) and Python: what the container's script does in the image. Bytecode is
    compiled by a fresh interpreter (``compile_here``), so its bytes never depend on what this
    process has loaded (Poetry, its plugins)."""
    native = os.uname().machine == steps.target.machine
    strip = shutil.which("strip") if native and steps.slim else None
    report = TreeReport.from_json(finish_tree(str(tree), steps.slim, strip, None))
    if steps.compile_prefix is None:
        return report
    return TreeReport(report.slim, compile_here(tree, steps.compile_prefix))
