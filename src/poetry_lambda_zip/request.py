"""The frozen BuildRequest: command-line options over ``[tool.poetry-lambda-zip]``, validated."""

from __future__ import annotations

import difflib
import re
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

__all__ = ["BUILDERS", "CONFIG_KEYS", "CONFIG_TABLE", "LAYOUTS", "BuildRequest"]

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
    "ca-bundle": str,
    "network": str,
    "layout": str,
    "exclude": list,
    "exclude-package": list,
    "compile": bool,
    "slim": bool,
    "handler": str,
    "verify": bool,
    "builder": str,
}
BUILDERS = ("auto", "docker", "local")
LAYOUTS = tuple(layout.value for layout in Layout)
_HANDLER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


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
    include: tuple[str, ...] = ()
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
        cls, project_dir: Path, options: Mapping[str, Any], config: Mapping[str, Any]
    ) -> BuildRequest:
        """Merge command-line ``options`` (relative paths from the working directory) over
        ``config`` (relative paths from the project); report every problem at once."""
        problems: list[str] = []
        warnings = [_unknown_key(key) for key in sorted(config) if key not in CONFIG_KEYS]
        merged: dict[str, Any] = {}
        for key, kind in CONFIG_KEYS.items():
            given = options.get(key)
            if given is not None:
                merged[key] = Path(given).resolve() if key in ("output", "ca-bundle") else given
            elif key in config:
                value: Any = config[key]
                if not _has_type(value, kind):
                    expected = {str: "a string", list: "a list of strings", bool: "true or false"}
                    problems.append(
                        f"[tool.{CONFIG_TABLE}] {key} must be {expected[kind]}, not {value!r}."
                    )
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
        handler = merged.get("handler")
        if handler is not None and not _HANDLER.match(handler):
            problems.append(
                f"handler {handler!r} is not of the form module.function"
                " (or package.module.function)."
            )
        builder = merged.get("builder", "auto")
        verify = bool(merged.get("verify", False))
        if verify and handler is None:
            problems.append('--verify needs the handler to import: --handler or handler = "m.f".')
        if problems:
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
            include=tuple(merged.get("include", ())),
            ca_bundle=merged.get("ca-bundle"),
            docker_network=merged.get("network"),
            layout=Layout(layout),
            exclude=tuple(merged.get("exclude", ())),
            exclude_packages=_split(merged.get("exclude-package", ())),
            compile=bool(merged.get("compile", True)),
            slim=bool(merged.get("slim", False)),
            handler=handler,
            verify=verify,
            builder=builder,
            force=bool(options.get("force", False)),
            cache=not options.get("no-cache", False),
            warnings=tuple(warnings),
        )


def _choice_problems(merged: Mapping[str, Any]) -> list[str]:
    """Settings that take one of a few values."""
    choices = {
        "runtime": ("runtime", RUNTIMES),
        "arch": ("architecture", ARCHITECTURES),
        "layout": ("layout", LAYOUTS),
        "builder": ("builder", BUILDERS),
    }
    return [
        f"Unknown {label} {merged[key]!r}; choose one of {', '.join(allowed)}."
        for key, (label, allowed) in choices.items()
        if key in merged and merged[key] not in allowed
    ]


def _has_type(value: Any, kind: type) -> bool:
    if kind is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, kind)


def _plain(value: Any) -> Any:
    """Plain Python values: pyproject data may come as tomlkit's str/list/bool subclasses."""
    if isinstance(value, list):
        return [str(item) for item in value]
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
