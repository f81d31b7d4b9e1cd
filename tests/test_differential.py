"""Every shortcut against the long way: after each seeded random edit, the build a user runs
(stamps, patches, kept trees, reused deflated bytes, bytecode compiled here) writes the same
bytes and exits the same as a --force build of a copy. Fixed seeds and a bounded number of
steps here; ``scripts/differential.py`` runs long seeded sequences."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.differential import EDITS
from tests.differential import TWO_AT_ONCE
from tests.differential import Runner
from tests.differential import run

if TYPE_CHECKING:
    from pathlib import Path

#: Steps per run in CI (the whole file stays under two minutes): the one-function run tries
#: every kind of edit that applies to it (rounds of all kinds in a shuffled order); the fleet
#: and docker runs are shorter (a fleet builds three functions, a docker build starts
#: containers, and a path dependency is built in one at each change).
STEPS = {("local", "single"): 36, ("local", "fleet"): 20, ("docker", "single"): 6,
         ("docker", "fleet"): 6, ("docker", "path-dependency"): 3}  # fmt: skip


@pytest.mark.parametrize(("scenario", "seed"), [("single", 2201), ("fleet", 2202)])
def test_the_local_builder_shortcuts_write_what_force_writes(
    tmp_path: Path, stamps_here: Path, scenario: str, seed: int
) -> None:
    count = STEPS["local", scenario]
    steps = run(tmp_path / "work", scenario, Runner("local", cache=stamps_here.parent), seed, count)
    assert len(steps) == count + 1
    if scenario == "single":
        # Every kind of edit that applies here was tried (the local builder builds no path
        # dependency; a project without a functions table has none to change) ...
        tried = {step.kind for step in steps[1:]}
        assert tried == {*EDITS, TWO_AT_ONCE} - {"path dependency", "functions table"}
    # ... and the shortcuts were taken, not only the full path: a run that never took one
    # proves nothing of them. (A fleet's edit is patched only where no other function's
    # files changed, which random edits of a shared package hardly leave.)
    taken = {step.shortcut for step in steps}
    assert ({"stamp", "patched"} if scenario == "single" else {"stamp"}) <= taken, taken


@pytest.mark.docker
@pytest.mark.usefixtures("verdicts_here")  # bytecode compiled here once the image agrees
@pytest.mark.parametrize(
    ("scenario", "seed"), [("single", 2211), ("fleet", 2212), ("path-dependency", 2213)]
)
def test_the_docker_builder_shortcuts_write_what_force_writes(
    tmp_path: Path,
    stamps_here: Path,
    stand_in_image: str,
    scenario: str,
    seed: int,
) -> None:
    count = STEPS["docker", scenario]
    runner = Runner("docker", stand_in_image, cache=stamps_here.parent)
    steps = run(tmp_path / "work", scenario, runner, seed, count)
    assert len(steps) == count + 1
    if scenario == "path-dependency":
        assert "path dependency" in {step.kind for step in steps}
