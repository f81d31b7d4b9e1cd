"""Progress as a function of several sees it: its name before every line (``Prefixed``), or
the lines of a fleet as the console shows them (``Fleet``), and a group building beside an
interrupted one that stops at its next line (``Stoppable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Protocol
from typing import runtime_checkable

from poetry_lambda_zip.errors import BuildInterrupted

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.request import BuildRequest

__all__ = ["Fleet", "Prefixed", "Stoppable", "shown_for", "shown_for_functions"]


@runtime_checkable
class Fleet(Protocol):
    """A progress that shows the lines of several functions itself (the console: what a group
    of functions shares once, each function's own steps as detail)."""

    def for_functions(self, functions: Sequence[str]) -> Progress:
        """Where the lines of ``functions`` go: one function's own, or what they share."""
        ...


def shown_for(request: BuildRequest, progress: Progress) -> Progress:
    """Where a function's lines go: prefixed with its name when it is one of a table's."""
    if request.function is None:
        return progress
    return shown_for_functions([request.function], progress)


def shown_for_functions(functions: Sequence[str], progress: Progress) -> Progress:
    """Where the lines of one function, or of what several share, go: to a ``Fleet`` as it
    shows them, else prefixed with their names."""
    if isinstance(progress, Fleet):
        return progress.for_functions(functions)
    return Prefixed(progress, ",".join(functions))


class Prefixed:
    """Progress of one function among several: its name before every line."""

    def __init__(self, progress: Progress, function: str) -> None:
        self._progress = progress
        self._function = function

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self._progress.phase(f"{self._function} {name}", seconds, detail)

    def info(self, message: str) -> None:
        self._progress.info(f"{self._function}: {message.lstrip()}")

    def warning(self, message: str) -> None:
        self._progress.warning(f"{self._function}: {message}")

    def installer_output(self, line: str) -> None:
        self._progress.installer_output(f"{self._function}: {line}")

    def count(self, name: str, done: int, total: int) -> None:
        self._progress.count(f"{self._function} {name}", done, total)


class Stoppable:
    """Progress of a group that stops at its next step once ``stop`` is set (the build was
    interrupted in another thread): every line it would print raises BuildInterrupted there,
    and its containers and files are cleaned up on the way out."""

    def __init__(self, progress: Progress, stop: threading.Event) -> None:
        self._progress = progress
        self._stop = stop

    def check(self) -> None:
        if self._stop.is_set():
            raise BuildInterrupted("Stopped: another part of the build was interrupted.")

    def phase(self, name: str, seconds: float, detail: str) -> None:
        self.check()
        self._progress.phase(name, seconds, detail)

    def info(self, message: str) -> None:
        self.check()
        self._progress.info(message)

    def warning(self, message: str) -> None:
        self.check()
        self._progress.warning(message)

    def installer_output(self, line: str) -> None:
        self.check()
        self._progress.installer_output(line)

    def count(self, name: str, done: int, total: int) -> None:
        self.check()
        self._progress.count(name, done, total)
