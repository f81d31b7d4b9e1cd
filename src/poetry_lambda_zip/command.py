"""``poetry lambda-zip [FUNCTION...]``: options -> BuildRequests -> ``build_functions()`` ->
exit code."""

from __future__ import annotations

import atexit
import difflib
import functools
import gc
import json
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from cleo.exceptions import CleoNoSuchOptionError
from cleo.formatters.formatter import Formatter
from cleo.helpers import argument
from cleo.helpers import option
from cleo.io.outputs.output import Type as OutputType
from cleo.ui.progress_bar import ProgressBar
from poetry.console.commands.command import Command
from poetry.core.pyproject.exceptions import PyProjectError
from poetry.core.pyproject.toml import PyProjectTOML
from poetry.factory import Factory

from poetry_lambda_zip.errors import BuildInterrupted
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import LambdaZipError
from poetry_lambda_zip.leftovers import left_over_outputs
from poetry_lambda_zip.pipeline import build_functions
from poetry_lambda_zip.pipeline import plan_functions
from poetry_lambda_zip.progress import Prefixed
from poetry_lambda_zip.redact import redact
from poetry_lambda_zip.render import failure_json
from poetry_lambda_zip.render import fleet_table
from poetry_lambda_zip.render import outcomes_json
from poetry_lambda_zip.render import plan_json
from poetry_lambda_zip.render import plan_lines
from poetry_lambda_zip.render import result_json
from poetry_lambda_zip.render import size_text
from poetry_lambda_zip.request import CONFIG_KEYS
from poetry_lambda_zip.request import CONFIG_TABLE
from poetry_lambda_zip.request import function_requests
from poetry_lambda_zip.target import ARCHITECTURES
from poetry_lambda_zip.target import RUNTIMES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cleo.io.inputs.argument import Argument
    from cleo.io.inputs.option import Option
    from cleo.io.io import IO
    from poetry.poetry import Poetry

    from poetry_lambda_zip.archive import ArchiveStats
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.plan import BuildPlan
    from poetry_lambda_zip.request import BuildRequest
    from poetry_lambda_zip.results import Outcome

__all__ = ["LambdaZipCommand"]


#: A warning's characters shown at most.
_LONGEST_WARNING = 2000


class ConsoleProgress:
    """Phase lines on stdout (stderr when stdout carries JSON), warnings on stderr, pip's
    output only with -v. Credentials in URLs are removed from every line."""

    def __init__(self, io: IO, *, stdout_is_data: bool = False, fleet: bool = False) -> None:
        self._io = io
        #: Several functions are built: each one's own steps are detail (``for_functions``).
        self._fleet = fleet
        self._write = io.write_error_line if stdout_is_data else io.write_line
        # Bars only for a person at a terminal: not in CI logs, not around --json.
        self._bars = (
            not stdout_is_data
            and io.error_output.is_decorated()
            and not os.environ.get("CI")
            and io.input.is_interactive()
        )
        self._bar: ProgressBar | None = None
        self._bar_name = ""
        self._lock = threading.Lock()

    def count(self, name: str, done: int, total: int) -> None:
        if not self._bars or total <= 0:
            return
        with self._lock:
            if self._bar is None or self._bar_name != name:
                self._clear()
                self._bar = ProgressBar(
                    self._io.error_output, max=total, min_seconds_between_redraws=0.1
                )
                self._bar.set_format(f" {name:<8} [%bar%] %percent:3s%%")
                self._bar_name = name
                self._bar.start()
            self._bar.set_progress(min(done, total))
            if done >= total:
                self._clear()

    def _clear(self) -> None:
        if self._bar is not None:
            self._bar.clear()
            self._bar = None

    def phase(self, name: str, seconds: float, detail: str) -> None:
        with self._lock:
            self._clear()
        self._line(f"<info>{name:<8}</info> {seconds:7.2f}s  {_shown(detail)}")

    def info(self, message: str) -> None:
        self._line(_shown(message))

    def _line(self, text: str) -> None:
        """A progress line; a reader that went away (``| head``) does not stop the build."""
        try:
            self._write(text)
        except BrokenPipeError:
            stdout_gone()

    def warning(self, message: str) -> None:
        if len(message) > _LONGEST_WARNING:  # a cause that lists thousands of files
            cut = len(message) - _LONGEST_WARNING
            message = f"{message[:_LONGEST_WARNING]}… ({cut:,} more characters)"
        self._io.write_error_line(f"<fg=yellow>Warning: {_shown(message)}</>")

    def installer_output(self, line: str) -> None:
        if self._io.is_verbose():
            self._line(f"<fg=default>  | {_shown(line)}</>")

    def for_functions(self, functions: Sequence[str]) -> Progress:
        """The lines of one function of a fleet (shown with -v, named) or of what several
        share (shown once, with how many they are); a lone function's as they are, named."""
        if not self._fleet:
            return Prefixed(self, ",".join(functions))
        return _FleetLines(self, functions, detail=len(functions) == 1 and not self.verbose)

    @property
    def verbose(self) -> bool:
        return self._io.is_verbose()


class _FleetLines:
    """Progress of one function of a fleet, or of a group of its functions: one function's
    phases and notes only with -v (``detail``), named; a group's once, with its size.
    Warnings are always shown, with the names of the functions they concern."""

    def __init__(self, console: ConsoleProgress, functions: Sequence[str], *, detail: bool):
        self._console = console
        self._detail = detail
        self._name = functions[0] if len(functions) == 1 else None
        self._shared = f"{len(functions)} functions: "
        self._names = ",".join(functions)

    def phase(self, name: str, seconds: float, detail: str) -> None:
        if self._name is None:
            self._console.phase(name, seconds, f"{self._shared}{detail}")
        elif not self._detail:
            self._console.phase(name, seconds, f"{self._name}: {detail}")

    def info(self, message: str) -> None:
        if self._name is None:
            self._console.info(f"{self._shared}{message.lstrip()}")
        elif not self._detail:
            self._console.info(f"{self._name}: {message.lstrip()}")

    def warning(self, message: str) -> None:
        self._console.warning(f"{self._names}: {message}")

    def installer_output(self, line: str) -> None:
        self._console.installer_output(line if self._name is None else f"{self._name}: {line}")

    def count(self, name: str, done: int, total: int) -> None:
        if self._name is None:
            self._console.count(name, done, total)


def _redacting(io: IO) -> None:
    """Every line written to ``io`` passes ``redact``: ours, and Poetry's own at any verbosity
    (its logging handler writes to the same IO; with -vvv it names each session's
    ``user:password@host``). The one output point; done once per output."""
    for output in {id(o): o for o in (io.output, io.error_output)}.values():
        if getattr(output, "_redacted", False):
            continue
        write = output._write

        def redacted(message: str, new_line: bool = False, write: Any = write) -> None:
            write(redact(message), new_line=new_line)

        setattr(output, "_write", redacted)  # noqa: B010 (an instance's method, replaced)
        setattr(output, "_redacted", True)  # noqa: B010


def stdout_gone() -> None:
    """Standard output's reader closed it (``poetry lambda-zip | head -1``): what is still to
    be printed goes to /dev/null, as a pipeline's output after its reader stopped does, and
    the build goes on to write its zip."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@functools.cache  # registered once
def _skip_final_collections() -> None:
    """At exit, freeze every object the process still holds (``gc.freeze``): the interpreter's
    last garbage collections then skip Poetry's and this command's objects, which were 0.3 s of
    every run on the CI machine kind, spent after the output was written. Registered once, when
    this command runs (not for Poetry's other commands); objects are still freed as the process
    ends, only cycles among them are left to it (Python never promised to finalize those)."""
    atexit.register(gc.freeze)


class LambdaZipCommand(Command):
    name = "lambda-zip"
    description = "Build an AWS Lambda .zip deployment package from poetry.lock."

    arguments: ClassVar[list[Argument]] = [
        argument(
            "function",
            f"Functions of [tool.{CONFIG_TABLE}.functions] to build (default: all).",
            optional=True,
            multiple=True,
        )
    ]
    options: ClassVar[list[Option]] = [
        option(
            "runtime",
            None,
            f"Lambda runtime, {RUNTIMES[0]} to {RUNTIMES[-1]} (default: the newest your"
            " requires-python allows).",
            flag=False,
        ),
        option(
            "arch",
            None,
            f"Lambda architecture: {' or '.join(ARCHITECTURES)} (default: x86_64).",
            flag=False,
        ),
        option(
            "image",
            None,
            "Build image for the docker builder and --verify (default: AWS's SAM build image"
            " for the runtime and architecture).",
            flag=False,
        ),
        option(
            "output", "o", "Zip path (default: dist/NAME-VERSION-RUNTIME-ARCH.zip).", flag=False
        ),
        option("with", None, "Optional dependency groups to include.", flag=False, multiple=True),
        option("without", None, "Dependency groups to leave out.", flag=False, multiple=True),
        option("only", None, "The only dependency groups to include.", flag=False, multiple=True),
        option("extras", "E", "Extras to install.", flag=False, multiple=True),
        option("all-extras", None, "Install every extra."),
        option(
            "include",
            None,
            "Project files for the zip: GLOB (paths as in the project), FROM:GLOB (the files of"
            " directory FROM at the zip root) or FROM:GLOB:TO (under TO/).",
            flag=False,
            multiple=True,
        ),
        option("no-root", None, "Do not ship the project's own package: dependencies and include."),
        option("ca-bundle", None, "PEM bundle trusted besides the image's.", flag=False),
        option("network", None, "Docker network of the build container (e.g. host).", flag=False),
        option(
            "layout", None, "function (default), layer (python/ only) or split (both).", flag=False
        ),
        option("exclude", None, "Glob of installed files to leave out.", flag=False, multiple=True),
        option(
            "exclude-package",
            None,
            "Distribution the runtime provides (e.g. boto3).",
            flag=False,
            multiple=True,
        ),
        option("no-compile", None, "Do not precompile .pyc files for the runtime."),
        option("slim", None, "Remove what never runs on Lambda (tests, .pyi, debug symbols)."),
        option("handler", None, "The handler, package.module.function (for --verify).", flag=False),
        option("verify", None, "Import the handler from a read-only /var/task after building."),
        option(
            "sbom",
            None,
            "Write a CycloneDX 1.6 SBOM (OUTPUT.zip.cdx.json) beside each zip, listing what it"
            " ships (needs the sbom extra).",
        ),
        option(
            "builder",
            None,
            "auto (default), docker or local (no container; wheels only).",
            flag=False,
        ),
        option("force", None, "Rebuild even if the output is up to date."),
        option(
            "dry-run", None, "Print the plan (target, distributions, artifacts); build nothing."
        ),
        option("json", None, "Print one JSON document on stdout; human output goes to stderr."),
    ]

    help = f"""Builds a Lambda deployment package from poetry.lock and the project's own code,
for the target runtime (default: the newest your requires-python allows) and architecture
(default: x86_64). The locked wheels are fetched, checked and unpacked on this machine; what
needs the target's toolchain (sdists, path and git dependencies, bytecode, stripping) runs in a
Lambda build image through the Docker engine (--builder docker), or is done here when nothing
needs building (--builder local; auto picks). Several functions: name them, or build all of
[tool.{CONFIG_TABLE}.functions].

Every option can also be set in <comment>[tool.{CONFIG_TABLE}]</comment> in pyproject.toml;
the command line wins. Example:

  <comment>[tool.{CONFIG_TABLE}]
  runtime = "python3.12"
  arch = "arm64"
  include = ["index.py"]</comment>
"""

    def run(self, io: IO) -> int:
        """An option this command does not have is a usage error (exit 2, as every other
        one), with the nearest option it has."""
        _skip_final_collections()
        _redacting(io)
        try:
            return super().run(io)
        except CleoNoSuchOptionError as e:
            io.write_error_line(f"<error>{Formatter.escape(str(e))}</error>")
            match = re.search(r'"-*([^"]+)"', str(e))
            names = [option.name for option in self.definition.options]
            nearest = difflib.get_close_matches(match.group(1), names, n=1) if match else []
            if nearest:
                io.write_error_line(f"Did you mean --{nearest[0]}?")
            io.write_error_line("`poetry lambda-zip --help` lists the options.")
            return ConfigError.exit_code

    def handle(self) -> int:
        # --no-cache is Poetry's own global option; it means the same here.
        names = [key for key in CONFIG_KEYS if key not in ("compile", "root")]
        options = _given_options({key: self.option(key) for key in [*names, "force", "no-cache"]})
        if self.option("no-compile"):
            options["compile"] = False
        if self.option("no-root"):
            options["root"] = False
        as_json = bool(self.option("json"))
        progress = ConsoleProgress(self.io, stdout_is_data=as_json)
        try:
            project_dir, config = self._project()
            requests = function_requests(
                project_dir, options, config, self.argument("function") or ()
            )
            progress = ConsoleProgress(self.io, stdout_is_data=as_json, fleet=len(requests) > 1)
            if self.option("dry-run"):
                plans = plan_functions(requests, self._project_poetry(), progress)
                self._show_plans(plans, as_json)
                return 0
            # Poetry loads the project only when a function's stamp shows a change.
            outcomes = build_functions(
                requests, self._project_poetry, progress, results_in_full=as_json
            )
        except LambdaZipError as e:
            self._show_error(e, as_json=as_json)
            return e.exit_code
        except OSError as e:
            # Every expected failure is a LambdaZipError; this is one we did not foresee.
            error = LambdaZipError(
                f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}",
                "Check the path, free space and permissions; run again with -vvv for the"
                " traceback, and report it if the cause is not yours.",
            )
            error.__cause__ = e
            self._show_error(error, as_json=as_json)
            return error.exit_code
        except KeyboardInterrupt:
            self.line_error(
                "<error>Interrupted.</error> The build container and temporary files were removed."
            )
            return BuildInterrupted.exit_code
        left_over = left_over_outputs([*requests, *self._whole_table(project_dir, options, config)])
        for path in left_over:
            progress.warning(
                f"{_named(path, project_dir)} was written by poetry-lambda-zip for no function"
                f" of [tool.{CONFIG_TABLE}.functions] (one removed or renamed?). It is left as it"
                " is; delete it unless it is yours, or whatever deploys dist/*.zip deploys it."
            )
        return self._show_outcomes(outcomes, as_json, project_dir, left_over)

    def _project(self) -> tuple[Path, dict[str, Any]]:
        """The project's directory and its [tool.poetry-lambda-zip] table, found as Poetry
        finds pyproject.toml, without loading the project."""
        try:
            if self._poetry is not None:  # set by whoever runs the command on its own
                found = self._poetry.pyproject_path
            elif (where := getattr(self.get_application(), "project_directory", None)) is None:
                found = self.poetry.pyproject_path.absolute()  # Poetry 2.0: as Poetry loads it
            else:
                if not where.is_absolute():
                    where = Path.cwd()  # `poetry -C relative/dir`: Poetry runs us from inside it
                found = Factory.locate(where)
            data = PyProjectTOML(found).data
        except (RuntimeError, PyProjectError) as e:
            raise _not_a_project(e) from e
        table = data.get("tool", {}).get(CONFIG_TABLE, {})
        return found.parent.absolute(), table if isinstance(table, dict) else {}

    def _whole_table(
        self, project_dir: Path, options: dict[str, Any], config: dict[str, Any]
    ) -> list[BuildRequest]:
        """Every function of the table with its own outputs, when only some were named (the
        others' zips are no strangers): ``--output`` names one function's zip alone."""
        if not self.argument("function"):
            return []
        own = {key: value for key, value in options.items() if key not in ("output", "handler")}
        try:
            return function_requests(project_dir, own, config)
        except LambdaZipError:
            return []

    def _project_poetry(self) -> Poetry:
        try:
            poetry = self.poetry
            if poetry.pyproject_path.is_absolute():
                return poetry
            # `poetry -C relative/dir` runs commands from inside relative/dir while the Poetry
            # object keeps paths relative to where poetry was started (Poetry 2.5's own
            # `build` fails the same way). Load the project again from here, absolutely.
            return Factory().create_poetry(Path.cwd(), io=self.io)
        except (RuntimeError, PyProjectError) as e:
            raise _not_a_project(e) from e

    def _show_outcomes(
        self, outcomes: list[Outcome], as_json: bool, project_dir: Path, left_over: list[Path]
    ) -> int:
        """Each function's result or error; the exit code is the worst of them. The functions
        of a table: one table of all of them, failures last with their errors."""
        functions = outcomes[0].function is not None
        if as_json:
            single = outcomes[0]
            if functions:
                document = outcomes_json(outcomes)
                document["left_over"] = [str(path.resolve()) for path in left_over]
                self._write_json(document)
            elif single.error is not None:
                self._write_json(failure_json(single.error))
            elif single.result is not None:
                self._write_json(result_json(single.result))
        try:
            if functions and not as_json:
                self._show_table(outcomes, project_dir)
                for outcome in outcomes:
                    if outcome.error is not None:
                        self._show_error(outcome.error, outcome.function)
            else:
                for outcome in outcomes:
                    self._show_outcome(outcome, as_json)
        except BrokenPipeError:  # `| head`: the rest of stdout is not read (errors go to
            stdout_gone()  # stderr, which is not the pipe that closed)
        return max((o.error.exit_code for o in outcomes if o.error is not None), default=0)

    def _show_outcome(self, outcome: Outcome, as_json: bool) -> None:
        if outcome.error is not None:
            self._show_error(outcome.error, outcome.function)
        elif outcome.result is not None and not as_json:
            result = outcome.result
            notes: dict[Path, list[str]] = {}
            for path, builder in result.replaced:
                notes.setdefault(path, []).append(
                    f"replaced the zip the {builder} builder had written there"
                )
            for path in result.altered:
                notes.setdefault(path, []).append(
                    "replaced a zip that was changed after it was written"
                )
            self._show_archives(outcome.function, result.archives, result.written, notes)
            for sbom in result.sboms:
                self.line(f"  SBOM {sbom.resolve()}")
        elif outcome.shortcut and not as_json:
            self._show_archives(outcome.function, outcome.shortcut, outcome.written, {})

    def _show_table(self, outcomes: list[Outcome], project_dir: Path) -> None:
        """One row per output, failures last; with -v each output's sha256 after it; notes
        on what a zip replaced."""
        lines, notes = fleet_table(outcomes, project_dir, hashes=self.io.is_verbose())
        for line in lines:
            self.line(_shown(line))
        for note in notes:
            self.line(_shown(note))

    def _show_error(
        self, error: LambdaZipError, function: str | None = None, *, as_json: bool = False
    ) -> None:
        """The one place errors are shown: what went wrong, the fix, a traceback with -vvv (and,
        with --json, the error's document on stdout for a run that has no other)."""
        if as_json:
            self._write_json(failure_json(error))
        if function is not None:
            self.line_error(f"<error>{function}: failed</error>")
        self.line_error(f"<error>{_shown(error.message)}</error>")
        if error.fix:
            self.line_error(_shown(error.fix))
        if self.io.is_debug():
            self.line_error(_shown("".join(traceback.format_exception(error))))

    def _show_plans(self, plans: list[BuildPlan], as_json: bool) -> None:
        if as_json:
            if plans[0].request.function is None:
                self._write_json(plan_json(plans[0]))
            else:
                self._write_json({"functions": [plan_json(decided) for decided in plans]})
            return
        for number, decided in enumerate(plans):
            lines = [redact(line) for line in plan_lines(decided)]
            self.io.write_line(([""] if number else []) + lines, type=OutputType.RAW)

    def _write_json(self, document: dict[str, Any]) -> None:
        self.io.write_line(redact(json.dumps(document, indent=2)), type=OutputType.RAW)

    def _show_archives(
        self,
        function: str | None,
        archives: Sequence[ArchiveStats],
        written: Sequence[Path],
        notes: dict[Path, list[str]],
    ) -> None:
        """Each output: built (with a note on what it replaced) or up to date, and what it
        holds."""
        prefix = f"{function}: " if function is not None else ""
        for archive in archives:
            # Absolute: with -C, Poetry runs us from the project, not from where the user is.
            path = archive.path.resolve()
            if archive.path not in written:
                self.line(f"{prefix}<info>Up to date</info> {path} (built from the same inputs;"
                          " --force rebuilds)")  # fmt: skip
            elif archive.path in notes:
                self.line(f"{prefix}Built <info>{path}</info>")
                self.line(f"  ({'; '.join(notes[archive.path])})")
            else:
                self.line(f"{prefix}Built <info>{path}</info>")
            self.line(
                f"  {_size(archive.zipped_size)} zipped, {_size(archive.unzipped_size)}"
                f" unzipped, {archive.distributions} distributions, {archive.files} files"
            )
            self.line(f"  sha256 {archive.sha256}")
            self.line(f"  code_sha256 {archive.code_sha256} (Lambda's CodeSha256)")


def _not_a_project(error: Exception) -> ConfigError:
    """Poetry's words for a missing or invalid pyproject.toml, without its traceback."""
    return ConfigError(
        f"This is not a Poetry project Poetry can load: {error}",
        "Run the command in the project's directory (or pass -C DIR); its"
        " pyproject.toml needs [project] or [tool.poetry] with a name and version.",
    )


def _given_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options the user gave; cleo reports absent ones as None, False or []."""
    return {key: value for key, value in options.items() if value not in (None, False, [])}


def _shown(text: str) -> str:
    """Text for the console: credentials in URLs removed, cleo's tags escaped."""
    return Formatter.escape(redact(text))


def _named(path: Path, project_dir: Path) -> str:
    """A file of dist/ as the user knows it, relative to the project; a name that is no
    printable text (it is anyone's) is shown quoted, escapes and all."""
    shown = str(path.relative_to(project_dir)) if path.is_relative_to(project_dir) else str(path)
    return shown if shown.isprintable() else ascii(shown)


_size = size_text
