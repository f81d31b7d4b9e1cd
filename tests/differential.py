"""The differential check of every shortcut: seeded random edits of a project, and after each
one the build a user runs (stamps, patches, kept trees, reused deflated bytes and bytecode all
allowed) against a ``--force`` build of a copy of the same files in another place. The zips
must be the same bytes and the exit codes the same.

Used by ``tests/test_differential.py`` (fixed seeds, few steps, in CI) and by
``scripts/differential.py`` (long seeded runs that print the seed and step of a difference).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import tomlkit

from tests.docker_helpers import Build

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
#: Its dependencies (attrs, python-dateutil, six) are what the generated projects declare.
LOCK_FULL = FIXTURES / "functions-package" / "poetry.lock"
DEPENDENCIES_FULL = ["attrs (>=23.1)", "python-dateutil (>=2.9,<3)"]
#: The other lock a "lock change" switches to (python-dateutil and six alone).
LOCK_SMALL = FIXTURES / "pure-python" / "poetry.lock"
DEPENDENCIES_SMALL = ["python-dateutil (>=2.9,<3)"]
#: The shape of every scenario's files: only what a scenario writes is compared.
SCENARIOS = ("single", "fleet", "path-dependency")


@dataclass
class Step:
    number: int
    kind: str
    detail: str
    status: int
    forced_status: int
    shortcut: str


@dataclass
class Difference(Exception):
    """A step after which the user's build and the --force build disagree."""

    seed: int
    scenario: str
    builder: str
    step: Step
    what: str
    history: list[Step] = field(default_factory=list)

    def __str__(self) -> str:
        steps = "\n".join(
            f"  {s.number:3d} {s.kind:<22} {s.detail}  -> {s.status}/{s.forced_status} {s.shortcut}"
            for s in self.history
        )
        return (
            f"seed {self.seed}, {self.scenario} with --builder {self.builder}, step"
            f" {self.step.number} ({self.step.kind}: {self.step.detail}): {self.what}\n"
            f"steps so far:\n{steps}"
        )


class Workspace:
    """The user's copy of a scenario (``user/``) and the copy built with --force (``forced/``),
    each with the project in ``app/`` and, for path dependencies, ``libs/``."""

    def __init__(self, root: Path, scenario: str, rng: random.Random) -> None:
        self.root = root
        self.scenario = scenario
        self.rng = rng
        self.user = root / "user"
        self.forced = root / "forced"
        self.app = self.user / "app"
        self.environment: dict[str, str] = {}
        #: Earlier outputs kept aside, to put one back in place of a newer one.
        self.kept: list[tuple[str, bytes]] = []
        #: The names of the outputs the user's last build reported.
        self.reported: set[str] = set()
        #: What the next step puts back first (an edit that breaks every build alike).
        self.undo: list[Callable[[], object]] = []
        _SCENARIO_WRITERS[scenario](self)

    # -- helpers for edits
    def files(self, pattern: str, base: Path | None = None) -> list[Path]:
        base = base or self.app
        return sorted(p for p in base.glob(pattern) if p.is_file() and not p.is_symlink())

    def pick(self, candidates: list[Path]) -> Path | None:
        return self.rng.choice(candidates) if candidates else None

    def pyproject(self) -> tomlkit.TOMLDocument:
        return tomlkit.parse((self.app / "pyproject.toml").read_text())

    def write_pyproject(self, document: tomlkit.TOMLDocument) -> None:
        (self.app / "pyproject.toml").write_text(tomlkit.dumps(document))

    def config(self, document: tomlkit.TOMLDocument) -> dict[str, object]:
        tool = document.setdefault("tool", tomlkit.table())
        return tool.setdefault("poetry-lambda-zip", tomlkit.table())  # type: ignore[no-any-return]

    def outputs(self, base: Path) -> list[Path]:
        dist = base / "app" / "dist"
        return sorted(dist.glob("*.zip")) if dist.is_dir() else []

    def current(self) -> list[Path]:
        """The user's outputs the last build reported (not zips of earlier settings)."""
        return [path for path in self.outputs(self.user) if path.name in self.reported]

    def mirror(self) -> None:
        """``forced/`` becomes a copy of ``user/``'s files, but for the user's outputs."""
        for name in ("app", "libs"):
            source, copy = self.user / name, self.forced / name
            dist = copy / "dist"
            kept = None
            if name == "app" and dist.is_dir():
                kept = self.root / "forced-dist"
                shutil.move(dist, kept)
            if copy.exists():
                shutil.rmtree(copy)
            if source.exists():
                shutil.copytree(
                    source, copy, symlinks=True, ignore=shutil.ignore_patterns("dist")
                    if name == "app" else None,
                )  # fmt: skip
            if kept is not None:
                shutil.move(kept, dist)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _handler_module(name: str, number: int = 0) -> str:
    return (
        "import json\n\nfrom dateutil import parser\n\n\n"
        f"def handler(event, context):\n    return {{'from': {name!r}, 'n': {number},"
        " 'year': parser.parse('2024-05-06').year}\n"
    )


def _project(workspace: Workspace, config: str, dependencies: list[str]) -> None:
    app = workspace.app
    listed = ",\n".join(f'    "{d}"' for d in dependencies)
    _write(
        app / "pyproject.toml",
        f'[project]\nname = "diffapp"\nversion = "0.1.0"\ndescription = "differential"\n'
        f'readme = "README.md"\nrequires-python = ">=3.9"\ndependencies = [\n{listed},\n]\n\n'
        '[tool.poetry]\npackages = [{ include = "diffapp", from = "src" }]\n\n'
        '[build-system]\nrequires = ["poetry-core>=2.0,<3"]\n'
        'build-backend = "poetry.core.masonry.api"\n\n' + config,
    )
    _write(app / "README.md", "# diffapp\n")
    _write(app / "src" / "diffapp" / "__init__.py", '"""diffapp"""\n')
    _write(app / "src" / "diffapp" / "handler.py", _handler_module("handler"))
    _write(app / "src" / "diffapp" / "util.py", "def double(x):\n    return 2 * x\n")
    _write(app / "src" / "diffapp" / "models.py", "SIZES = (1, 2, 3)\n")
    _write(app / "src" / "diffapp" / "text" / "__init__.py", "")
    _write(app / "src" / "diffapp" / "text" / "format.py", "def shout(s):\n    return s.upper()\n")
    _write(app / "src" / "diffapp" / "data" / "table.json", '{"rows": [1, 2, 3]}\n')
    _write(app / "extra" / "config.json", '{"stage": "dev"}\n')
    _write(app / "node_modules" / "cfg" / "settings.json", '{"retries": 3}\n')
    _write(app / ".aws-sam" / "build" / "template.yaml", "Resources: {}\n")


def _single(workspace: Workspace) -> None:
    _project(
        workspace,
        '[tool.poetry-lambda-zip]\nhandler = "diffapp.handler.handler"\n'
        'include = ["extra/*.json"]\n',
        DEPENDENCIES_FULL,
    )
    shutil.copy(LOCK_FULL, workspace.app / "poetry.lock")


def _fleet(workspace: Workspace) -> None:
    _project(
        workspace,
        '[tool.poetry-lambda-zip]\nlayout = "split"\n\n'
        "[tool.poetry-lambda-zip.functions.orders]\n"
        'handler = "diffapp.handler.handler"\ninclude = ["extra/*.json"]\n\n'
        "[tool.poetry-lambda-zip.functions.s3_event]\n"
        'handler = "diffapp.util.double"\ninclude = ["extra/*.json"]\n\n'
        "[tool.poetry-lambda-zip.functions.cron]\n"
        'handler = "cron.handler"\nroot = false\n'
        'include = [{ include = "*.py", from = "jobs/cron" }]\n',
        DEPENDENCIES_FULL,
    )
    _write(workspace.app / "jobs" / "cron" / "cron.py", _handler_module("cron"))
    shutil.copy(LOCK_FULL, workspace.app / "poetry.lock")


def _path_dependency(workspace: Workspace) -> None:
    """fixtures/monorepo: a service with path dependencies on two sibling libraries."""
    source = FIXTURES / "monorepo"
    shutil.copytree(source / "services" / "api", workspace.app)
    shutil.copytree(source / "libs", workspace.user / "libs")
    document = workspace.pyproject()
    # The service sits at app/, its libraries at ../libs/ (the lock names them so).
    text = (workspace.app / "poetry.lock").read_text().replace("../../libs/", "../libs/")
    (workspace.app / "poetry.lock").write_text(text)
    text = tomlkit.dumps(document).replace("../../libs/", "../libs/")
    (workspace.app / "pyproject.toml").write_text(text)
    _fresh_content_hash(workspace.app)
    document = workspace.pyproject()
    config = workspace.config(document)
    config["handler"] = "orders_api.handler.handler"
    workspace.write_pyproject(document)


def _fresh_content_hash(app: Path) -> None:
    from poetry.factory import Factory

    poetry = Factory().create_poetry(app)
    lock = tomlkit.parse((app / "poetry.lock").read_text())
    lock["metadata"]["content-hash"] = poetry.locker._get_content_hash()
    (app / "poetry.lock").write_text(tomlkit.dumps(lock))


_SCENARIO_WRITERS: dict[str, Callable[[Workspace], None]] = {
    "single": _single,
    "fleet": _fleet,
    "path-dependency": _path_dependency,
}


# -- the kinds of edits: each changes the user's copy (and returns what it did), or returns
# None where it does not apply to the workspace as it is.
EDITS: dict[str, Callable[[Workspace], str | None]] = {}


def edit(
    name: str,
) -> Callable[[Callable[[Workspace], str | None]], Callable[[Workspace], str | None]]:
    def register(function: Callable[[Workspace], str | None]) -> Callable[[Workspace], str | None]:
        EDITS[name] = function
        return function

    return register


def _append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def _package_sources(w: Workspace) -> list[Path]:
    return w.files("src/**/*.py")


@edit("edit package module")
def _edit_module(w: Workspace) -> str | None:
    path = w.pick(_package_sources(w))
    if path is None:
        return None
    _append(path, f"\n\ndef added_{w.rng.randrange(10**6)}():\n    return {w.rng.random()!r}\n")
    return str(path.relative_to(w.app))


@edit("add package module")
def _add_module(w: Workspace) -> str | None:
    packages = sorted({p.parent for p in _package_sources(w)})
    if not packages:
        return None
    path = w.rng.choice(packages) / f"mod_{w.rng.randrange(10**6)}.py"
    path.write_text(f"VALUE = {w.rng.randrange(100)}\n")
    return str(path.relative_to(w.app))


def _removable(w: Workspace) -> list[Path]:
    """Modules no handler and no link names (their loss would fail every later build alike)."""
    linked = {p.resolve() for p in w.app.glob("src/**/*") if p.is_symlink()}
    return [
        p
        for p in _package_sources(w)
        if p.name not in ("__init__.py", "handler.py", "util.py")
        and "handler" not in p.read_text()
        and p.resolve() not in linked
    ]


@edit("delete package module")
def _delete_module(w: Workspace) -> str | None:
    path = w.pick(_removable(w))
    if path is None:
        return None
    path.unlink()
    return str(path.relative_to(w.app))


@edit("rename package module")
def _rename_module(w: Workspace) -> str | None:
    path = w.pick(_removable(w))
    if path is None:
        return None
    target = path.with_name(f"renamed_{w.rng.randrange(10**6)}.py")
    path.rename(target)
    return f"{path.relative_to(w.app)} -> {target.name}"


@edit("edit package data")
def _edit_data(w: Workspace) -> str | None:
    path = w.pick(w.files("src/**/*.json"))
    if path is None:
        return None
    path.write_text(json.dumps({"rows": w.rng.sample(range(100), 3)}) + "\n")
    return str(path.relative_to(w.app))


def _include_files(w: Workspace) -> list[Path]:
    return w.files("extra/*.json") + w.files("jobs/**/*.py") + w.files("node_modules/cfg/*.json")


@edit("edit include file")
def _edit_include(w: Workspace) -> str | None:
    path = w.pick(_include_files(w))
    if path is None:
        return None
    if path.suffix == ".py":
        _append(path, f"\nEXTRA = {w.rng.randrange(10**6)}\n")
    else:
        path.write_text(json.dumps({"value": w.rng.randrange(10**6)}) + "\n")
    return str(path.relative_to(w.app))


@edit("add include file")
def _add_include(w: Workspace) -> str | None:
    directory = w.rng.choice([w.app / "extra", w.app / "node_modules" / "cfg"])
    path = directory / f"new_{w.rng.randrange(10**6)}.json"
    _write(path, "{}\n")
    return str(path.relative_to(w.app))


@edit("delete include file")
def _delete_include(w: Workspace) -> str | None:
    path = w.pick([p for p in _include_files(w) if p.suffix == ".json"])
    if path is None:
        return None
    path.unlink()
    return str(path.relative_to(w.app))


@edit("rename include file")
def _rename_include(w: Workspace) -> str | None:
    path = w.pick([p for p in _include_files(w) if p.suffix == ".json"])
    if path is None:
        return None
    target = path.with_name(f"moved_{w.rng.randrange(10**6)}.json")
    path.rename(target)
    return f"{path.relative_to(w.app)} -> {target.name}"


@edit("edit in never-read directory")
def _edit_pruned(w: Workspace) -> str | None:
    """Directories no listing reads (``never_read``): what lies there under a package or an
    include that names it is read all the same."""
    place = w.rng.choice(
        [w.app / ".aws-sam" / "build", w.app / "node_modules" / "cfg", w.app / "cdk.out"]
        + [p.parent / "node_modules" for p in w.files("src/*/__init__.py")]
    )
    path = place / w.rng.choice(["settings.json", "asset.py", "x.txt"])
    created = not place.exists()
    _write(path, f"{w.rng.randrange(10**6)}\n")
    if created and place.name == "node_modules":  # in a package: no stamp while it is there,
        w.undo.append(lambda: shutil.rmtree(place))  # so it goes before the next edit
    return str(path.relative_to(w.app))


@edit("chmod executable")
def _chmod(w: Workspace) -> str | None:
    path = w.pick(_package_sources(w) + _include_files(w))
    if path is None:
        return None
    mode = path.stat().st_mode
    path.chmod(mode ^ 0o111)
    return f"{path.relative_to(w.app)} {oct(mode & 0o777)} -> {oct((mode ^ 0o111) & 0o777)}"


@edit("symlink in package")
def _symlink(w: Workspace) -> str | None:
    target = w.pick([p for p in _package_sources(w) if p.name != "__init__.py"])
    if target is None:
        return None
    link = target.with_name(f"link_{w.rng.randrange(10**6)}.py")
    link.symlink_to(target.name)
    return f"{link.relative_to(w.app)} -> {target.name}"


@edit("retarget or drop symlink")
def _retarget(w: Workspace) -> str | None:
    links = sorted(p for p in w.app.glob("src/**/*") if p.is_symlink())
    if not links:
        return None
    link = w.rng.choice(links)
    others = [p for p in _package_sources(w) if p.parent == link.parent and p.name != link.name]
    link.unlink()
    if others and w.rng.random() < 0.5:
        link.symlink_to(w.rng.choice(others).name)
        return f"{link.relative_to(w.app)} retargeted"
    return f"{link.relative_to(w.app)} removed"


@edit("same size, mtime put back")
def _same_size(w: Workspace) -> str | None:
    path = w.pick(_package_sources(w) + _include_files(w))
    if path is None or path.stat().st_size == 0:
        return None
    info = path.stat()
    data = bytearray(path.read_bytes())
    index = w.rng.randrange(len(data))
    data[index] = ord("#") if data[index] != ord("#") else ord(" ")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    return str(path.relative_to(w.app))


@edit("editor save (rename over)")
def _editor_save(w: Workspace) -> str | None:
    path = w.pick(_package_sources(w) + _include_files(w))
    if path is None:
        return None
    temporary = path.with_name(f".{path.name}.swp")
    temporary.write_bytes(path.read_bytes() + b"\n# saved\n")
    shutil.copymode(path, temporary)
    temporary.replace(path)
    return str(path.relative_to(w.app))


@edit("touch")
def _touch(w: Workspace) -> str | None:
    path = w.pick(_package_sources(w) + _include_files(w) + [w.app / "pyproject.toml"])
    if path is None:
        return None
    os.utime(path)
    return str(path.relative_to(w.app))


@edit("pyproject version")
def _version(w: Workspace) -> str | None:
    document = w.pyproject()
    version = f"0.{w.rng.randrange(1, 50)}.{w.rng.randrange(10)}"
    document["project"]["version"] = version
    w.write_pyproject(document)
    return version


@edit("readme")
def _readme(w: Workspace) -> str | None:
    readme = w.app / "README.md"
    _append(readme, f"\nline {w.rng.randrange(10**6)}\n")
    return "README.md"


def _target(w: Workspace, document: tomlkit.TOMLDocument) -> dict[str, object]:
    """The table an edit of settings goes to: a function's, or the top-level one."""
    config = w.config(document)
    functions = config.get("functions")
    if isinstance(functions, dict) and functions and w.rng.random() < 0.6:
        return functions[w.rng.choice(sorted(functions))]  # type: ignore[no-any-return]
    return config


@edit("include setting")
def _include_setting(w: Workspace) -> str | None:
    document = w.pyproject()
    table = _target(w, document)
    include = list(table.get("include", []))  # type: ignore[call-overload]
    choices = ["extra/*.json", "node_modules/cfg/*.json", "extra/**/*", "cdk.out/*.txt"]
    pattern = w.rng.choice(choices)
    if pattern in include and len(include) > 1:
        include.remove(pattern)
        what = f"- {pattern}"
    else:
        include.append(pattern)
        what = f"+ {pattern}"
    table["include"] = include
    pyproject = w.app / "pyproject.toml"
    before = pyproject.read_text()
    w.write_pyproject(document)
    if pattern.startswith(("node_modules/", "cdk.out/")):  # no stamp while an include names
        w.undo.append(lambda: pyproject.write_text(before))  # one: gone before the next edit
    return what


@edit("packages setting")
def _packages(w: Workspace) -> str | None:
    document = w.pyproject()
    poetry = document["tool"]["poetry"]
    packages = poetry["packages"]
    extra = {"include": "helpers", "from": "src"}
    helpers = w.app / "src" / "helpers"
    if len(packages) > 1:
        poetry["packages"] = [packages[0]]
        what = "- helpers"
    else:
        _write(helpers / "__init__.py", f"HELP = {w.rng.randrange(100)}\n")
        packages.append(extra)
        what = "+ helpers"
    w.write_pyproject(document)
    return what


@edit("plugin settings")
def _plugin_settings(w: Workspace) -> str | None:
    document = w.pyproject()
    table = _target(w, document)
    key = w.rng.choice(["compile", "slim", "exclude"])
    if key == "exclude":
        if "exclude" in table:
            del table["exclude"]
            what = "- exclude"
        else:
            table["exclude"] = ["**/data/*.json"]
            what = "+ exclude"
    else:
        value = not bool(table.get(key, key == "compile"))
        table[key] = value
        what = f"{key} = {value}"
    w.write_pyproject(document)
    return what


@edit("functions table")
def _functions(w: Workspace) -> str | None:
    document = w.pyproject()
    config = w.config(document)
    functions = config.get("functions")
    if not isinstance(functions, dict):
        return None
    names = sorted(functions)
    action = w.rng.choice(["add", "remove", "rename", "handler"])
    if action == "add" or len(names) == 1:
        name = f"fn_{w.rng.randrange(1000)}"
        functions[name] = {"handler": "diffapp.handler.handler", "include": ["extra/*.json"]}
        what = f"+ {name}"
    elif action == "remove":
        name = w.rng.choice(names)
        del functions[name]
        what = f"- {name}"
    elif action == "rename":
        name = w.rng.choice(names)
        new = f"{name}_v{w.rng.randrange(100)}"
        functions[new] = functions.pop(name)
        what = f"{name} -> {new}"
    else:
        name = w.rng.choice(names)
        table = functions[name]
        # A function without the package (root = false) keeps the handler of its include.
        handlers = ["diffapp.handler.handler", "diffapp.util.double"]
        table["handler"] = (
            table["handler"] if table.get("root") is False else w.rng.choice(handlers)
        )
        what = f"{name}.handler = {table['handler']}"
    w.write_pyproject(document)
    return what


@edit("SOURCE_DATE_EPOCH")
def _epoch(w: Workspace) -> str | None:
    choice = w.rng.choice([None, "1700000000", "315532800", "1800000000"])
    if choice is None:
        w.environment.pop("SOURCE_DATE_EPOCH", None)
    else:
        w.environment["SOURCE_DATE_EPOCH"] = choice
    return str(choice)


@edit("lock switched")
def _lock(w: Workspace) -> str | None:
    if w.scenario == "path-dependency":
        return None
    document = w.pyproject()
    small = len(document["project"]["dependencies"]) == 1
    lock, dependencies = (
        (LOCK_FULL, DEPENDENCIES_FULL) if small else (LOCK_SMALL, DEPENDENCIES_SMALL)
    )
    document["project"]["dependencies"] = dependencies
    w.write_pyproject(document)
    shutil.copy(lock, w.app / "poetry.lock")
    return lock.parent.name


@edit("lock stale")
def _lock_stale(w: Workspace) -> str | None:
    """A dependency added without `poetry lock`: both builds refuse alike; put back before
    the next edit."""
    pyproject = w.app / "pyproject.toml"
    before = pyproject.read_text()
    document = w.pyproject()
    document["project"]["dependencies"].append("idna (>=3)")
    w.write_pyproject(document)
    w.undo.append(lambda: pyproject.write_text(before))
    return "+ idna"


@edit("lock rewritten alike")
def _lock_same(w: Workspace) -> str | None:
    lock = w.app / "poetry.lock"
    lock.write_bytes(lock.read_bytes())
    return "poetry.lock"


@edit("output deleted")
def _output_deleted(w: Workspace) -> str | None:
    path = w.pick(w.current())
    if path is None:
        return None
    w.kept.append((path.name, path.read_bytes()))
    path.unlink()
    return path.name


@edit("output replaced")
def _output_replaced(w: Workspace) -> str | None:
    """An output replaced by another zip this plugin wrote: an earlier one of its own, or
    another function's."""
    outputs = w.current()
    path = w.pick(outputs)
    if path is None:
        return None
    earlier = [data for name, data in w.kept if name == path.name]
    others = [p for p in outputs if p != path]
    w.kept.append((path.name, path.read_bytes()))
    if earlier and (not others or w.rng.random() < 0.5):
        path.write_bytes(w.rng.choice(earlier))
        return f"{path.name} <- an earlier one"
    if not others:
        return None
    source = w.rng.choice(others)
    shutil.copyfile(source, path)
    return f"{path.name} <- {source.name}"


@edit("output edited")
def _output_edited(w: Workspace) -> str | None:
    """``zip -g`` as the classic recipe does: an entry added, the comment kept."""
    path = w.pick(w.current())
    if path is None:
        return None
    w.kept.append((path.name, path.read_bytes()))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("extra.py", "ADDED = True\n")
    return path.name


@edit("output truncated")
def _output_truncated(w: Workspace) -> str | None:
    path = w.pick(w.current())
    if path is None:
        return None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-200:])
    return path.name


@edit("path dependency")
def _path_dependency_edit(w: Workspace) -> str | None:
    libs = w.user / "libs"
    if not libs.is_dir():
        return None
    sources = w.files("**/*.py", libs)
    action = w.rng.choice(["edit", "add", "delete", "chmod"])
    if action == "add" or not sources:
        package = w.rng.choice(sorted({p.parent for p in sources} or {libs}))
        path = package / f"lib_{w.rng.randrange(10**6)}.py"
        path.write_text("LIB = 1\n")
    else:
        path = w.rng.choice(sources)
        if action == "edit":
            _append(path, f"\nLIB_{w.rng.randrange(10**6)} = 1\n")
        elif action == "delete" and path.name != "__init__.py":
            path.unlink()
        else:
            action = "chmod"
            path.chmod(path.stat().st_mode ^ 0o100)
    return f"{action} {path.relative_to(w.user)}"


#: Not an edit of the files: two builds of the user's copy at once (``run`` does it).
TWO_AT_ONCE = "two processes at once"


@dataclass
class Runner:
    """How a scenario is built: the builder and its arguments."""

    builder: str
    image: str | None = None
    #: Poetry's cache directory for builds in processes of their own (two at once): the one
    #: the in-process builds use.
    cache: Path | None = None

    @property
    def arguments(self) -> str:
        image = f" --image {self.image}" if self.image else ""
        return f"--runtime python3.11 --builder {self.builder}{image}"


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _build(path: Path, arguments: str, environment: dict[str, str]) -> Build:
    with _environment(environment):
        return Build(path, arguments)


def _two_at_once(path: Path, runner: Runner, environment: dict[str, str]) -> list[int]:
    """Two ``poetry lambda-zip`` processes on the project at once."""
    poetry = Path(sys.executable).with_name("poetry")
    command = [str(poetry), "lambda-zip", "-C", str(path), *runner.arguments.split()]
    env = {**os.environ, **environment}
    if runner.cache is not None:
        env["POETRY_CACHE_DIR"] = str(runner.cache)
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    codes = []
    for process in processes:
        output, _ = process.communicate(timeout=600)
        if process.returncode:
            sys.stderr.write(output.decode(errors="replace"))
        codes.append(process.returncode)
    return codes


def _shortcut(build: Build) -> str:
    """How the build went: settled by the stamps, patched, built (some outputs perhaps up to
    date by their fingerprint), up to date by the fingerprints alone, or failed."""
    if "patching the zip" in build.output:
        return "patched"
    if "nothing read by the last build changed" in build.output:
        return "stamp"
    if build.status != 0:
        return "failed"
    return "built" if "built" in _reported(build).values() else "fingerprint"


def run(
    root: Path,
    scenario: str,
    runner: Runner,
    seed: int,
    steps: int,
    *,
    kinds: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Step]:
    """``steps`` seeded random edits of ``scenario`` in ``root``, each followed by the user's
    build and a --force build of a copy; raises ``Difference`` at the first disagreement."""
    rng = random.Random(seed)
    workspace = Workspace(root, scenario, rng)
    names = sorted(kinds or [*EDITS, TWO_AT_ONCE])
    history: list[Step] = []
    # Rounds of every kind in a shuffled order: each kind is tried once a round, and one that
    # does not apply yet (nothing to delete, no link to retarget) once more at its end.
    order: list[str] = []
    deferred: list[str] = []
    retrying = False
    for number in range(steps + 1):
        kind, detail = "first build", ""
        while workspace.undo:
            workspace.undo.pop()()
        while number:
            if not order:
                retrying = bool(deferred)
                order = deferred or rng.sample(names, len(names))
                deferred = []
            kind = order.pop()
            result = "" if kind == TWO_AT_ONCE else EDITS[kind](workspace)
            if result is not None:
                detail = result
                break
            if not retrying:
                deferred.insert(0, kind)
        workspace.mirror()
        started = time.monotonic()
        if kind == TWO_AT_ONCE:
            codes = _two_at_once(workspace.app, runner, workspace.environment)
            status, shortcut = max(codes), f"two: {codes}"
            output = ""
            workspace.reported = set()
        else:
            built = _build(workspace.app, runner.arguments, workspace.environment)
            status, shortcut, output = built.status, _shortcut(built), built.output + built.error
            workspace.reported = _written_by(built)
        forced = _build(
            workspace.forced / "app", f"{runner.arguments} --force", workspace.environment
        )
        step = Step(number, kind, detail, status, forced.status, shortcut)
        history.append(step)
        if log is not None:
            log(
                f"{number:4d} {kind:<28} {detail[:60]:<60} {status}/{forced.status}"
                f" {shortcut:<12} {time.monotonic() - started:5.1f}s"
            )
        what = _compare(workspace, status, forced, output)
        if what is not None:
            raise Difference(seed, scenario, runner.builder, step, what, history)
    return history


def _compare(workspace: Workspace, status: int, forced: Build, output: str) -> str | None:
    if status != forced.status:
        return (
            f"exit {status} but --force exits {forced.status}\nuser:\n{output[-3000:]}\n"
            f"--force:\n{(forced.output + forced.error)[-3000:]}"
        )
    if status != 0:
        return None
    mine = {p.name: p for p in workspace.outputs(workspace.user)}
    theirs = {p.name: p for p in workspace.outputs(workspace.forced)}
    for name, path in sorted(theirs.items()):
        if name not in _written_by(forced):
            continue
        if name not in mine:
            return f"{name} is missing"
        if mine[name].read_bytes() != path.read_bytes():
            return f"{name} differs from the --force build's\n{_entries_differ(mine[name], path)}"
    return None


def _written_by(build: Build) -> set[str]:
    """The names of the outputs a build reported (built or up to date)."""
    return set(_reported(build))


def _reported(build: Build) -> dict[str, str]:
    """Each output a build reported, by name: built or up to date (a lone build's lines, or
    the rows of a functions table's table)."""
    states = {}
    for line in build.output.splitlines():
        for marker, state in (("Built ", "built"), ("Up to date ", "up to date")):
            if marker in line:
                states[Path(line.split(marker, 1)[1].split()[0]).name] = state
        row = line.split()
        zips = [word for word in row if word.endswith(".zip")]
        state = row[row.index(zips[0]) + 5] if zips and len(row) > row.index(zips[0]) + 5 else ""
        if state.startswith(("built", "up")):
            states[Path(zips[0]).name] = "built" if state.startswith("built") else "up to date"
    return states


def _entries_differ(mine: Path, theirs: Path) -> str:
    def entries(path: Path) -> dict[str, bytes]:
        try:
            with zipfile.ZipFile(path) as archive:
                return {
                    i.filename: archive.read(i) + repr(i.external_attr).encode()
                    for i in archive.infolist()
                }
        except zipfile.BadZipFile as e:
            return {"<bad zip>": str(e).encode()}

    a, b = entries(mine), entries(theirs)
    lines = [f"  only in the user's: {sorted(set(a) - set(b))[:10]}"]
    lines.append(f"  only in --force's: {sorted(set(b) - set(a))[:10]}")
    lines.append(f"  different: {sorted(n for n in set(a) & set(b) if a[n] != b[n])[:10]}")
    return "\n".join(lines)
