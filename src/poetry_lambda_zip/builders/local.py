"""The local builder: no container. It finishes the tree here, with this machine's Python (for
bytecode, when its version is the runtime's) and ``strip`` (when this machine's architecture is
the target's), and cannot build what has no wheel."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from poetry_lambda_zip.builders.bytecode_here import finish_here
from poetry_lambda_zip.builders.contract import Finished
from poetry_lambda_zip.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.target import LambdaTarget

__all__ = ["LocalBuilder", "no_wheel_error"]


class LocalBuilder:
    name = "local"

    def finish(self, tree: Path, steps: Steps, workdir: Path, progress: Progress) -> Finished:
        """Slim and precompile ``tree`` in place; anything to build cannot be done without
        the image."""
        if steps.builds:
            raise no_wheel_error(list(steps.build), steps.target.runtime)
        return Finished(tree, finish_here(tree, steps), "here", here=True)

    def identity(self, steps: Steps, progress: Progress) -> str:
        # Bytecode is compiled by this interpreter when its version is the runtime's.
        return f"local {sys.version.split()[0]}" if steps.compile_prefix else "local"

    def cannot_compile(self, target: LambdaTarget) -> str | None:
        """This interpreter compiles bytecode only for its own Python version."""
        host = "{}.{}".format(*sys.version_info[:2])
        version = target.python_version_text
        if host == version:
            return None
        return (
            f"Not precompiling: this Python is {host}, {target.runtime} needs {version}"
            f" bytecode (use --builder docker, or run Poetry with {version})."
        )


def no_wheel_error(missing: list[Requirement], runtime: str) -> ConfigError:
    """What to say when the local builder cannot do the job, and the ways out that apply."""
    lines = []
    for r in missing:
        if r.artifact.kind != "sdist":
            why = "a source tree"
        elif r.artifact.other_wheels:
            why = f"its {r.artifact.other_wheels} locked wheels are for other targets"
        else:
            why = "it publishes no wheels at all"
        lines.append(f"  - {r.name} {r.version}: {r.describe()}; {why}")
    fix = "Build with --builder docker: it builds them inside the Lambda image."
    if any(r.artifact.other_wheels for r in missing):
        fix += " Or choose a runtime or versions for which they publish wheels."
    return ConfigError(
        f"The local builder can only unpack wheels; these have none for {runtime}:\n"
        + "\n".join(lines),
        fix,
    )
