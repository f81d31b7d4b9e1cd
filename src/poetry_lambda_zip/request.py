"""The frozen BuildRequest: command-line options over ``[tool.poetry-lambda-zip]`` (and, for a
function of its ``functions`` table, over that function's table), validated."""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from poetry_lambda_zip.contents import Layout
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.resolve import GroupSelection
from poetry_lambda_zip.target import ARCHITECTURES
from poetry_lambda_zip.target import RUNTIMES

if TYPE_CHECKING:
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = [
    "BUILDERS",
    "CONFIG_KEYS",
    "CONFIG_TABLE",
    "FUNCTION_KEYS",
    "LAYOUTS",
    "BuildRequest",
    "Include",
    "function_requests",
]

CONFIG_TABLE = "poetry-lambda-zip"
#: Every key of [tool.poetry-lambda-zip]; each is also a command-line option of the same name.
CONFIG_KEYS: dict[str, type] = {
    "runtime": str,
    "arch": str,
    "image": str,
    "output": str,
    "with": list,
    "without": list,
    "only": list,
    "extras": list,
    "all-extras": bool,
    "include": list,
    "root": bool,
    "ca-bundle": str,
    "network": str,
    "layout": str,
    "exclude": list,
    "exclude-package": list,
    "compile": bool,
    "slim": bool,
    "handler": str,
    "verify": bool,
    "sbom": bool,
    "builder": str,
}
#: The keys a [tool.poetry-lambda-zip.functions.NAME] table may set; the others (the image, the
#: builder, the network, --verify) are the same for every function of a project.
FUNCTION_KEYS = (
    "handler", "include", "root", "with", "without", "only", "extras", "all-extras", "layout",
    "output", "runtime", "arch", "exclude", "exclude-package", "compile", "slim",
)  # fmt: skip
#: The table of functions, each a table of FUNCTION_KEYS; the top-level keys are its defaults.
FUNCTIONS_KEY = "functions"
BUILDERS = ("auto", "docker", "local")
LAYOUTS = tuple(layout.value for layout in Layout)
#: A Lambda function's name (its API's FunctionName, unqualified): also the default output's.
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
#: module.function, package.module.function, or SAM's dir/module.function.
_HANDLER = re.compile(r"^[A-Za-z_]\w*(/[A-Za-z_]\w*)*(\.[A-Za-z_]\w*)+$")
_INCLUDE_TABLE_KEYS = {"include", "from", "to"}


@dataclass(frozen=True)
class Include:
    """An include entry: the files matching ``pattern`` below the project's directory
    ``base``, each in the zip at ``prefix`` + its path below ``base`` (like the ``from`` of
    Poetry's ``packages``). With no base, paths in the zip are paths in the project."""

    pattern: str
    base: str = ""
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Include:
        """``GLOB``, ``FROM:GLOB`` or ``FROM:GLOB:TO`` (the command line's form)."""
        parts = text.split(":")
        if len(parts) == 1:
            return cls(text)
        if len(parts) in (2, 3) and all(parts[:2]):
            return cls(parts[1], parts[0], parts[2] if len(parts) == 3 else "")
        raise ValueError(f"include {text!r} is not GLOB, FROM:GLOB or FROM:GLOB:TO.")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Include:
        """``{ include = GLOB, from = DIR, to = PREFIX }`` (pyproject's form)."""
        unknown = set(table) - _INCLUDE_TABLE_KEYS
        values = {key: table.get(key, "") for key in _INCLUDE_TABLE_KEYS}
        if unknown or not values["include"] or not all(isinstance(v, str) for v in values.values()):
            raise ValueError(
                f"include entry {dict(table)!r} is not a string or a table"
                ' { include = "GLOB", from = "DIR", to = "PREFIX" } (from and to optional).'
            )
        return cls(str(values["include"]), str(values["from"]), str(values["to"]))

    def __str__(self) -> str:
        if not self.base:
            return self.pattern
        return ":".join([self.base, self.pattern] + ([self.prefix] if self.prefix else []))


@dataclass(frozen=True)
class BuildRequest:
    """What to build, decided before anything runs."""

    project_dir: Path
    runtime: str | None = None
    arch: str = "x86_64"
    image: str | None = None
    output: Path | None = None
    groups: GroupSelection = field(default_factory=GroupSelection)
    extras: tuple[str, ...] = ()
    all_extras: bool = False
    include: tuple[Include, ...] = ()
    #: Build and ship the project's own package (False: --no-root, dependencies and includes).
    root: bool = True
    #: The function of [tool.poetry-lambda-zip.functions] this builds; None without a table.
    function: str | None = None
    ca_bundle: Path | None = None
    #: Docker network of the build container, e.g. "host" to reach an index on loopback.
    docker_network: str | None = None
    layout: Layout = Layout.FUNCTION
    #: Globs pruned from what is installed (matched against paths in the package).
    exclude: tuple[str, ...] = ()
    #: Distributions the runtime provides (e.g. boto3): left out with what only they need.
    exclude_packages: tuple[str, ...] = ()
    compile: bool = True
    slim: bool = False
    #: "package.module.function", imported by --verify.
    handler: str | None = None
    verify: bool = False
    #: Write a CycloneDX SBOM beside each output (``sbom``).
    sbom: bool = False
    #: auto: Docker when an engine answers, else local when every package has a wheel.
    builder: str = "auto"
    #: Rebuild even when the outputs carry this build's fingerprint.
    force: bool = False
    #: Reuse downloads across builds.
    cache: bool = True
    #: Problems that do not stop the build (e.g. an unknown config key).
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_settings(
        cls,
        project_dir: Path,
        options: Mapping[str, Any],
        config: Mapping[str, Any],
        function: str | None = None,
    ) -> BuildRequest:
        """Merge command-line ``options`` (relative paths from the working directory) over
        ``config`` (relative paths from the project); report every problem at once."""
        problems: list[str] = []
        where = f"[tool.{CONFIG_TABLE}]"
        if function is not None:
            where = f"[tool.{CONFIG_TABLE}.{FUNCTIONS_KEY}.{function}]"
        warnings = [
            _unknown_key(key)
            for key in sorted(config)
            if key not in CONFIG_KEYS and key != FUNCTIONS_KEY
        ]
        merged: dict[str, Any] = {}
        for key, kind in CONFIG_KEYS.items():
            given = options.get(key)
            if given is not None:
                merged[key] = Path(given).resolve() if key in ("output", "ca-bundle") else given
            elif key in config:
                value: Any = config[key]
                if not _has_type(value, kind, key):
                    expected = {str: "a string", list: "a list of strings", bool: "true or false"}
                    problems.append(f"{where} {key} must be {expected[kind]}, not {value!r}.")
                    continue
                value = _plain(value)
                merged[key] = (project_dir / value) if key in ("output", "ca-bundle") else value

        problems += _choice_problems(merged)
        runtime = merged.get("runtime")
        arch = merged.get("arch", "x86_64")
        groups = GroupSelection(
            with_=_split(merged.get("with", ())),
            without=_split(merged.get("without", ())),
            only=_split(merged.get("only", ())),
        )
        if groups.only and (groups.with_ or groups.without):
            problems.append("--only cannot be combined with --with or --without.")
        extras = _split(merged.get("extras", ()))
        all_extras = bool(merged.get("all-extras", False))
        if extras and all_extras:
            problems.append("--extras cannot be combined with --all-extras.")
        layout = merged.get("layout", Layout.FUNCTION.value)
        includes = _includes(merged.get("include", ()), problems)
        handler = merged.get("handler")
        if handler is not None and not _HANDLER.match(handler):
            problems.append(
                f"handler {handler!r} is not of the form module.function"
                " (package.module.function, or SAM's dir/module.function)."
            )
        builder = merged.get("builder", "auto")
        verify = bool(merged.get("verify", False))
        if verify and handler is None:
            problems.append('--verify needs the handler to import: --handler or handler = "m.f".')
        if problems:
            if function is not None:
                problems = [f"{function}: {problem}" for problem in problems]
            raise ConfigError(
                "\n".join(problems),
                "Fix the options above (`poetry lambda-zip --help` lists them).",
            )
        return cls(
            project_dir=project_dir,
            runtime=runtime,
            arch=arch,
            image=merged.get("image"),
            output=merged.get("output"),
            groups=groups,
            extras=extras,
            all_extras=all_extras,
            include=tuple(includes),
            root=bool(merged.get("root", True)),
            function=function,
            ca_bundle=merged.get("ca-bundle"),
            docker_network=merged.get("network"),
            layout=Layout(layout),
            exclude=tuple(merged.get("exclude", ())),
            exclude_packages=_split(merged.get("exclude-package", ())),
            compile=bool(merged.get("compile", True)),
            slim=bool(merged.get("slim", False)),
            handler=handler,
            verify=verify,
            sbom=bool(merged.get("sbom", False)),
            builder=builder,
            force=bool(options.get("force", False)),
            cache=not options.get("no-cache", False),
            warnings=tuple(warnings),
        )


def _includes(entries: Sequence[str | dict[str, Any]], problems: list[str]) -> list[Include]:
    includes = []
    for entry in entries:
        try:
            includes.append(
                Include.from_table(entry) if isinstance(entry, dict) else Include.parse(entry)
            )
        except ValueError as e:
            problems.append(str(e))
    return includes


def _choice_problems(merged: Mapping[str, Any]) -> list[str]:
    """Settings that take one of a few values."""
    choices = {
        "runtime": ("runtime", RUNTIMES),
        "arch": ("architecture", ARCHITECTURES),
        "layout": ("layout", LAYOUTS),
        "builder": ("builder", BUILDERS),
    }
    problems = []
    for key, (label, allowed) in choices.items():
        if key not in merged or merged[key] in allowed:
            continue
        value = str(merged[key])
        nearest = [f"python{value}"] if f"python{value}" in allowed else []
        nearest = nearest or difflib.get_close_matches(value, allowed, n=1)
        hint = f" Did you mean {nearest[0]}?" if nearest else ""
        problems.append(f"Unknown {label} {value!r}; choose one of {', '.join(allowed)}.{hint}")
    return problems


def _has_type(value: Any, kind: type, key: str) -> bool:
    if kind is list:
        allowed = (str, dict) if key == "include" else (str,)
        return isinstance(value, list) and all(isinstance(item, allowed) for item in value)
    return isinstance(value, kind)


def _plain(value: Any) -> Any:
    """Plain Python values: pyproject data may come as tomlkit's str/list/bool/table
    subclasses."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return bool(value)
    return str(value)


def _split(values: Any) -> tuple[str, ...]:
    """``--with a,b --with c`` and ``with = ["a", "b,c"]`` both mean a, b, c."""
    return tuple(part.strip() for value in values for part in str(value).split(",") if part.strip())


def _unknown_key(key: str) -> str:
    message = f"Unknown key {key!r} in [tool.{CONFIG_TABLE}] is ignored."
    nearest = [known for known in CONFIG_KEYS if key.startswith(known) or known.startswith(key)]
    nearest = nearest or difflib.get_close_matches(key, list(CONFIG_KEYS), n=1)
    if nearest:
        message += f" Did you mean {nearest[0]!r}?"
    return message


def function_requests(
    project_dir: Path,
    options: Mapping[str, Any],
    config: Mapping[str, Any],
    names: Sequence[str] = (),
) -> list[BuildRequest]:
    """One request per function of ``[tool.poetry-lambda-zip.functions]`` (``names`` only,
    when given): each table over the top-level keys, the command line over both. Without a
    functions table, the one request of the top-level keys. Every problem at once."""
    functions = config.get(FUNCTIONS_KEY)
    defaults = {key: value for key, value in config.items() if key != FUNCTIONS_KEY}
    table = f"[tool.{CONFIG_TABLE}.{FUNCTIONS_KEY}]"
    if functions is None:
        if names:
            raise ConfigError(
                f"No function is named {', '.join(names)}: pyproject.toml has no {table}.",
                f"Build without names, or define the functions in {table}.NAME tables.",
            )
        return [BuildRequest.from_settings(project_dir, options, defaults)]
    if (
        not isinstance(functions, dict)
        or not functions
        or not all(isinstance(value, dict) for value in functions.values())
    ):
        raise ConfigError(
            f"{table} must hold one table per function, e.g."
            f' [tool.{CONFIG_TABLE}.{FUNCTIONS_KEY}.orders] with handler = "app.orders.handler".'
        )
    invalid = [_invalid_name(str(name)) for name in functions if not _FUNCTION_NAME.match(name)]
    if invalid:
        raise ConfigError(
            "\n".join(invalid),
            f"Rename the table: a Lambda function's name is 1 to 64 letters, digits, - and _"
            f" ([tool.{CONFIG_TABLE}.{FUNCTIONS_KEY}.NAME]; the default output is"
            " dist/NAME.zip).",
        )
    unknown = [name for name in names if name not in functions]
    if unknown:
        raise ConfigError(
            "\n".join(_unknown_function(name, list(functions)) for name in unknown),
            f"The functions are: {', '.join(functions)}.",
        )
    selected = list(dict.fromkeys(names)) or list(functions)
    problems: list[str] = []
    if len(selected) > 1:
        problems += [
            f"--{key} names one {what}; {len(selected)} functions are built. Name one function,"
            f" or set {key} in each {table}.NAME table."
            for key, what in (("output", "zip"), ("handler", "handler"))
            if options.get(key) is not None
        ]
    requests = []
    for name in selected:
        settings = functions[name]
        problems += [
            f"{name}: {key} cannot be set for one function; set it in [tool.{CONFIG_TABLE}]."
            for key in sorted(settings)
            if key in CONFIG_KEYS and key not in FUNCTION_KEYS
        ]
        try:
            requests.append(
                BuildRequest.from_settings(
                    project_dir, options, {**defaults, **settings}, function=name
                )
            )
        except ConfigError as e:
            problems.append(e.message)
    if problems:
        raise ConfigError(
            "\n".join(problems), "Fix the options above (`poetry lambda-zip --help` lists them)."
        )
    return requests


def _invalid_name(name: str) -> str:
    """A table key that is not a Lambda function's name, and the nearest one that is."""
    message = f"{_table_key(name)} is not a Lambda function name."
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    nearest = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-")[:64].strip("-")
    return message + (f" Did you mean {nearest!r}?" if nearest else "")


def _table_key(name: str) -> str:
    """How the function ``name`` is written as a key of the functions table."""
    key = name if _FUNCTION_NAME.match(name) else json.dumps(name, ensure_ascii=False)
    return f"[tool.{CONFIG_TABLE}.{FUNCTIONS_KEY}.{key}]"


def _unknown_function(name: str, known: list[str]) -> str:
    message = f"No function is named {name!r}."
    nearest = difflib.get_close_matches(name, known, n=1)
    return message + (f" Did you mean {nearest[0]!r}?" if nearest else "")
