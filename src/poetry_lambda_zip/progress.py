"""Progress as a function of several sees it: its name before every line (``Prefixed``), and a
group building beside an interrupted one that stops at its next line (``Stoppable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poetry_lambda_zip.errors import BuildInterrupted

if TYPE_CHECKING:
    import threading

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.request import BuildRequest

__all__ = ["Prefixed", "Stoppable", "shown_for"]


def shown_for(request: BuildRequest, progress: Progress) -> Progress:
    """Where a function's lines go: prefixed with its name when it is one of a table's."""
    return progress if request.function is None else Prefixed(progress, request.function)


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
