"""Whether a set of files fits Lambda's unzipped limit once pruned and compiled as asked, and
when it does not, the plan that says what to cut: one home for the estimate both size checks
make (the wheels' declared sizes before unpacking, the package's files after building)."""

from __future__ import annotations

import fnmatch
import itertools
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import NamedTuple

from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.archive import too_large
from poetry_lambda_zip.tree_steps import SHARED_LIBRARY
from poetry_lambda_zip.tree_steps import TEST_DIRECTORIES

if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence

    from poetry_lambda_zip.errors import OutputError
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "BYTECODE_PER_SOURCE",
    "ZIPPED_DIRECT_UPLOAD_LIMIT",
    "FitOptions",
    "Part",
    "SizeEstimate",
    "SizePlan",
    "size_plan",
]

#: Bytes of unchecked-hash bytecode per byte of source, to estimate what compiling adds before
#: anything is compiled. CPython 3.11's .pyc of the 37 distributions above 100 kB of source in
#: this project's own virtualenv came to 0.55x-1.87x their sources (1.22x over all of them);
#: the estimate takes 1.0x, and says it is one.
BYTECODE_PER_SOURCE = 1.0
#: A zip above this must go through S3 (Lambda's direct upload limit).
ZIPPED_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
#: A container image may hold 10 GB: the way out when no option brings a set under the limit.
_IMAGE_ROUTE = (
    "ship a container image instead (Lambda takes images of up to 10 GB), or move data the"
    " handler reads to S3 or EFS"
)


@dataclass(frozen=True)
class FitOptions:
    """What the build will do to the set: the --exclude globs every function sharing the tree
    has, --slim, and whether bytecode is compiled (for ``target``'s Python)."""

    target: LambdaTarget
    excludes: tuple[str, ...] = ()
    slim: bool = False
    compile: bool = True


@dataclass(frozen=True)
class Part:
    """One file of the set: the distribution owning it (None: no distribution, an include
    file), its path in the tree, its size."""

    owner: str | None
    path: str
    size: int


def _directories(path: str) -> list[str]:
    return path.split("/")[:-1]


def _slimmed(path: str) -> bool:
    """Whether ``--slim`` removes the file (``tree_steps.slim_tree``'s rule, by its path)."""
    directories = _directories(path)
    for depth, name in enumerate(directories):
        parent = directories[depth - 1] if depth else ""
        if parent.endswith(".dist-info"):
            return False
        if name in TEST_DIRECTORIES and depth >= 1:
            return True
    return path.endswith(".pyi")


def _compiled(path: str) -> bool:
    """Whether compiling adds bytecode for the file (``tree_steps.compile_tree``'s rule)."""
    return path.endswith(".py") and not any(
        name in TEST_DIRECTORIES for name in _directories(path)[1:]
    )


def _bytecode_path(path: str, cache_tag: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, "__pycache__", f"{name[:-3]}.{cache_tag}.pyc")


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    """``contents.apply_excludes``'s rule: any glob matches, dist-info files always stay."""
    return ".dist-info/" not in path and any(fnmatch.fnmatchcase(path, p) for p in patterns)


@dataclass(frozen=True)
class _Totals:
    """The set's bytes with some options: in all, by owner, and the bytecode's share."""

    total: int
    by_owner: dict[str, int]
    bytecode: int


@dataclass(frozen=True)
class SizePlan:
    """A set against Lambda's limit with the options as given, and what each option the user
    has not used yet would save (estimated where the bytes do not exist yet)."""

    total: int
    #: The bytecode's share of ``total``, and whether it is estimated from the sources.
    bytecode: int
    estimated: bool
    runtime: str
    #: Bytes of the distributions in the set that the runtime already provides.
    provided: dict[str, int]
    #: What --slim would remove (None: it is on already); shared libraries it may strip.
    slim_saves: int | None
    strippable: int
    #: The options to add that bring the estimate under the limit, and that estimate (None:
    #: nothing does, and ``remainder`` is how far over it stays with all of them).
    fits_with: tuple[str, ...] | None
    fitting_total: int
    remainder: int

    @property
    def over(self) -> bool:
        return self.total > UNZIPPED_LIMIT

    def certainly_over(self, slim: bool) -> bool:
        """Over even if stripping the shared libraries (which only slimming does, and which no
        estimate can size) removed all of their bytes: only then is it refused unbuilt."""
        return self.total - (self.strippable if slim else 0) > UNZIPPED_LIMIT

    def error(self, what: str, sizes: Mapping[str, int]) -> OutputError:
        """The refusal: the total, the largest parts, what would shrink it, and the option line
        that fits (or how far over it stays, and the container image)."""
        lines = []
        if self.estimated and self.bytecode:
            lines.append(
                f"That is an estimate: it counts {self.bytecode:,} bytes of bytecode from the"
                f" sources' sizes ({BYTECODE_PER_SOURCE:g} byte per byte), nothing is compiled"
                " yet."
            )
        lines.append("What would shrink it:")
        if self.provided:
            names = ", ".join(f"{name} ({_mb(size)})" for name, size in self.provided.items())
            flags = " ".join(f"--exclude-package {name}" for name in self.provided)
            lines.append(
                f"  - {flags} saves {_mb(sum(self.provided.values()))}: the {self.runtime} runtime"
                f" already provides {names} (its versions may be older than the lock's)"
            )
        if self.slim_saves is not None and (self.slim_saves or self.strippable):
            strip = (
                f"; stripping {_mb(self.strippable)} of shared libraries may save more"
                if self.strippable
                else ""
            )
            lines.append(
                f"  - --slim saves {_mb(self.slim_saves)}: tests inside packages and .pyi"
                f" stubs{strip}"
            )
        if self.bytecode:
            kind = "estimated from the sources" if self.estimated else "as compiled"
            lines.append(f"  - --no-compile saves {_mb(self.bytecode)}: the bytecode ({kind})")
        if lines[-1] == "What would shrink it:":
            lines.append("  - no option of this plugin: nothing in the set is prunable")
        if self.fits_with is not None:
            fix = (
                f"This fits, at about {self.fitting_total:,} bytes: add {' '.join(self.fits_with)}."
            )
        else:
            nothing = lines[-1].startswith("  - no option")
            stays = "It stays" if nothing else "Even with all of these it stays"
            fix = f"{stays} {self.remainder:,} bytes over the limit: {_IMAGE_ROUTE}."
        return too_large(what, self.total, sizes, fix, "\n".join(lines))


class _Sized(NamedTuple):
    """One part as the options treat it: its owner, size, whether --slim removes it, whether
    it is bytecode built already, and the bytecode compiling would add for it."""

    owner: str | None
    size: int
    slimmed: bool
    bytecode: bool
    adds: int


class _Set:
    """The parts with what the build does to them (decided once per part), totalled for any
    choice of options."""

    def __init__(
        self, files: Sequence[Part], options: FitOptions, bytecode_built: bool, extra: int
    ) -> None:
        self.options = options
        self.extra = extra
        excludes = options.excludes
        cache_tag = "cpython-{}{}".format(*options.target.python_version)
        self.sized: list[_Sized] = []
        for part in files:
            if not bytecode_built and excludes and _excluded(part.path, excludes):
                continue
            adds = 0
            if (
                not bytecode_built
                and _compiled(part.path)
                and not (excludes and _excluded(_bytecode_path(part.path, cache_tag), excludes))
            ):
                adds = int(part.size * BYTECODE_PER_SOURCE)
            is_bytecode = bytecode_built and part.path.endswith(".pyc")
            self.sized.append(_Sized(part.owner, part.size, _slimmed(part.path), is_bytecode, adds))

    def totals(self, drop: frozenset[str], slim: bool, compile_: bool) -> _Totals:
        by_owner: dict[str, int] = {}
        total, bytecode = self.extra, 0
        for owner, declared, slimmed, is_bytecode, adds in self.sized:
            if (slim and slimmed) or (drop and owner in drop):
                continue
            size = declared
            if is_bytecode:
                if not compile_:
                    continue
                bytecode += size
            elif compile_ and adds:
                bytecode += adds
                size += adds
            total += size
            if owner is not None:
                by_owner[owner] = by_owner.get(owner, 0) + size
        return _Totals(total, by_owner, bytecode)


def size_plan(
    parts: Iterable[Part], options: FitOptions, *, bytecode_built: bool, extra: int = 0
) -> SizePlan:
    """The set of ``parts`` as the build would ship it with ``options``, and what the options
    not used yet would save. ``bytecode_built``: the parts hold the bytecode already (after a
    build; their excludes and slimming applied too); else it is estimated from the sources.
    ``extra``: bytes outside the parts that count toward the limit (other zips)."""
    files = list(parts)
    of = _Set(files, options, bytecode_built, extra)
    estimated = options.compile and not bytecode_built
    given = of.totals(frozenset(), options.slim, options.compile)
    if given.total <= UNZIPPED_LIMIT:
        return SizePlan(given.total, given.bytecode, estimated, options.target.runtime, {},
                        None, 0, (), given.total, 0)  # fmt: skip
    provided_names = set(options.target.provided)
    provided = {
        name: size for name, size in sorted(given.by_owner.items()) if name in provided_names
    }
    moves: list[tuple[tuple[str, ...], str]] = []
    if provided:
        moves.append((tuple(f"--exclude-package {name}" for name in provided), "provided"))
    if not options.slim:
        moves.append((("--slim",), "slim"))
    if options.compile and given.bytecode:
        moves.append((("--no-compile",), "compile"))
    fits_with, fitting_total, remainder = _first_fit(of, moves, provided, given.total)
    slim_saves = None
    if not options.slim:
        slim_saves = given.total - of.totals(frozenset(), True, options.compile).total
    strippable = 0
    if not (options.slim and bytecode_built):  # once slimmed, the libraries are stripped
        strippable = sum(p.size for p in files if SHARED_LIBRARY.search(posixpath.basename(p.path)))
    return SizePlan(
        total=given.total,
        bytecode=given.bytecode,
        estimated=estimated,
        runtime=options.target.runtime,
        provided=provided,
        slim_saves=slim_saves,
        strippable=strippable,
        fits_with=fits_with,
        fitting_total=fitting_total,
        remainder=remainder,
    )


def _first_fit(
    of: _Set, moves: list[tuple[tuple[str, ...], str]], provided: Mapping[str, int], total: int
) -> tuple[tuple[str, ...] | None, int, int]:
    """The fewest moves whose estimate fits (in the order given: the runtime's distributions,
    --slim, --no-compile), its total; else None and how far over all of them leave it."""
    remainder = total - UNZIPPED_LIMIT
    options = of.options
    for count in range(1, len(moves) + 1):
        for chosen in itertools.combinations(moves, count):
            kinds = {kind for _, kind in chosen}
            tried = of.totals(
                frozenset(provided) if "provided" in kinds else frozenset(),
                options.slim or "slim" in kinds,
                options.compile and "compile" not in kinds,
            )
            if tried.total <= UNZIPPED_LIMIT:
                return tuple(flag for flags, _ in chosen for flag in flags), tried.total, 0
            remainder = tried.total - UNZIPPED_LIMIT
    return None, 0, remainder


@dataclass(frozen=True)
class SizeEstimate:
    """What ``--dry-run`` says of the dependencies' size, from the wheels an earlier build
    fetched (their declared sizes; nothing is unpacked or downloaded)."""

    plan: SizePlan
    #: The zipped size, at the wheels' own ratio of deflated to unzipped bytes.
    zipped: int
    wheels: int
    #: Distributions not counted: no wheel fetched yet, or built from source.
    missing: int

    def line(self) -> str:
        plan = self.plan
        text = (
            f"about {plan.total:,} bytes unzipped of {UNZIPPED_LIMIT:,},"
            f" about {_mb(self.zipped)} zipped (an estimate from {self.wheels} wheels'"
            f" declared sizes{', bytecode from the sources' if plan.estimated else ''})"
        )
        if self.missing:
            text += f"; {self.missing} not fetched yet or built from source, not counted"
        if plan.over:
            if plan.fits_with is not None:
                text += f"; over the limit: add {' '.join(plan.fits_with)} to fit"
            else:
                text += f"; over the limit by {plan.remainder:,} bytes with every option"
        if self.zipped > ZIPPED_DIRECT_UPLOAD_LIMIT:
            text += "; over 50 MB zipped: upload it through S3, not directly"
        return text


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
