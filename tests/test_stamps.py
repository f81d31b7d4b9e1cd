"""The no-op shortcut: a run whose inputs all read as the last build left them is up to date
without loading the project; anything else takes the full path, which decides from contents."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest
from poetry.config import config as poetry_config
from poetry.factory import Factory

from poetry_lambda_zip import locations
from poetry_lambda_zip import pipeline
from poetry_lambda_zip.builders import builder_unchanged
from poetry_lambda_zip.builders import docker as docker_builder
from poetry_lambda_zip.builders.docker import OWNER_LABEL
from poetry_lambda_zip.command import LambdaZipCommand
from poetry_lambda_zip.shortcut import stamps as stamps_module
from tests.docker_helpers import Build
from tests.docker_helpers import owner
from tests.docker_helpers import owner_filter

if TYPE_CHECKING:
    from collections.abc import Callable

    import docker

    from poetry_lambda_zip.results import Outcome

ARGS = "--runtime python3.11 --builder local"
#: The shortcut's phase line; the full path says "resolve" first instead.
SHORTCUT = "nothing read by the last build changed since"


def shortcut_taken(build: Build) -> bool:
    assert build.status == 0, build.error
    assert "Up to date" in build.output or "Built" in build.output
    return SHORTCUT in build.output


@pytest.fixture
def built(project: Callable[[str], Path], stamps_here: Path) -> Path:
    """pure-python, built once (its stamp written)."""
    path = project("pure-python")
    first = Build(path, ARGS)
    assert first.status == 0, first.error
    assert not shortcut_taken(first)
    assert len(list(stamps_here.glob("*.json"))) == 1
    return path


def test_a_no_op_is_decided_without_loading_the_project(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_loaded(self: LambdaZipCommand) -> None:
        raise AssertionError("the project was loaded")

    with monkeypatch.context() as patched:
        patched.setattr(LambdaZipCommand, "_project_poetry", not_loaded)
        again = Build(built, ARGS)
        assert shortcut_taken(again)
    first_sha = Build(built, f"{ARGS} --force").sha256
    assert again.output.count("Up to date") == 1
    assert f"sha256 {first_sha}" in again.output  # what the zip holds, as the full path says


@pytest.mark.parametrize(
    "change",
    [
        "touch pyproject.toml (same bytes)",
        "add a file to the project",
        "touch poetry.lock",
        "touch the zip",
        "set a Poetry variable",
        "damage the stamp",
    ],
)
def test_any_change_to_what_a_build_reads_takes_the_full_path(
    built: Path, stamps_here: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    pyproject = built / "pyproject.toml"
    if change == "touch pyproject.toml (same bytes)":
        pyproject.write_bytes(pyproject.read_bytes())
    elif change == "add a file to the project":
        (built / "notes.txt").write_text("a new file\n")
    elif change == "touch poetry.lock":
        os.utime(built / "poetry.lock", (2_000_000_000, 2_000_000_000))
    elif change == "touch the zip":
        (zip_path,) = (built / "dist").glob("*.zip")
        os.utime(zip_path, (2_000_000_000, 2_000_000_000))
    elif change == "set a Poetry variable":
        monkeypatch.setenv("POETRY_REQUESTS_TIMEOUT", "77")
    else:
        (stamp,) = stamps_here.glob("*.json")
        stamp.write_text(stamp.read_text()[:40])
    full = Build(built, ARGS)
    assert not shortcut_taken(full)
    assert "resolve " in full.output  # the full path (a touched project file: see test_patch)
    assert "Up to date" in full.output  # the contents did not change: the full path says so
    assert shortcut_taken(Build(built, ARGS))  # and wrote the stamp again


def test_an_edit_is_built_and_the_next_run_is_a_no_op_again(built: Path) -> None:
    handler = built / "src" / "hello_pure" / "handler.py"
    handler.write_text(handler.read_text() + "\n# edited\n")
    edited = Build(built, ARGS)  # patched (test_patch)
    assert not shortcut_taken(edited)
    assert "Built" in edited.output
    assert shortcut_taken(Build(built, ARGS))
    (built / "pyproject.toml").write_text((built / "pyproject.toml").read_text() + "\n")
    rebuilt = Build(built, ARGS)  # the full path this time
    assert "resolve " in rebuilt.output
    assert shortcut_taken(Build(built, ARGS))


def test_no_stamp_when_an_input_changes_while_the_build_runs(
    project: Callable[[str], Path], stamps_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project("pure-python")
    handler = path / "src" / "hello_pure" / "handler.py"
    build_groups = pipeline._run_groups

    def edited_meanwhile(groups: Any, context: Any) -> list[Outcome]:
        outcomes = build_groups(groups, context)
        handler.write_text(handler.read_text() + "\n# edited while it was packaged\n")
        return outcomes

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "_run_groups", edited_meanwhile)
        assert Build(path, ARGS).status == 0
    assert not list(stamps_here.glob("*.json"))
    rebuilt = Build(path, ARGS)
    assert not shortcut_taken(rebuilt)
    assert "Built" in rebuilt.output  # the edit is in the zip now


@pytest.mark.parametrize("option", ["--force", "--no-cache", "--json"])
def test_force_no_cache_and_json_take_the_full_path(built: Path, option: str) -> None:
    result = Build(built, f"{ARGS} {option}")
    assert result.status == 0, result.error
    assert SHORTCUT not in result.output
    if option == "--json":
        document = json.loads(result.output)
        assert document["up_to_date"] is True
        assert document["runtime"] == "python3.11"  # the full result, from the plan


def test_a_symlinked_directory_in_the_project_means_no_shortcut(
    project: Callable[[str], Path], stamps_here: Path, tmp_path: Path
) -> None:
    path = project("pure-python")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (path / "linked").symlink_to(elsewhere)
    assert Build(path, ARGS).status == 0
    assert not list(stamps_here.glob("*.json"))  # what is behind the link cannot be vouched for
    assert not shortcut_taken(Build(path, ARGS))


def test_the_builder_must_be_the_same_one(monkeypatch: pytest.MonkeyPatch) -> None:
    image = "stand-in:python3.11"
    monkeypatch.setattr(docker_builder, "image_id", lambda name: "sha256:aaa")
    assert builder_unchanged("docker sha256:aaa", image, "auto")
    assert not builder_unchanged("docker sha256:bbb", image, "docker")  # the tag moved
    assert not builder_unchanged("docker sha256:aaa", None, "docker")
    monkeypatch.setattr(docker_builder, "image_id", lambda name: None)  # no engine, no image
    assert not builder_unchanged("docker sha256:aaa", image, "docker")
    # "auto" chose the local builder for lack of an engine: an engine now means docker.
    monkeypatch.setattr(docker_builder, "engine_answers", lambda: True)
    assert not builder_unchanged("local 3.11.9", None, "auto")
    assert builder_unchanged("local 3.11.9", None, "local")
    assert builder_unchanged("wheels only", None, "auto")  # the same bytes from any builder
    monkeypatch.setattr(docker_builder, "engine_answers", lambda: False)
    assert builder_unchanged("local 3.11.9", None, "auto")


def test_a_cache_directory_inside_the_project_is_not_an_input(
    project: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI jobs often keep Poetry's cache in the project (to cache it): the stamps and kept
    trees written there must not count as a change to the project."""
    path = project("pure-python")
    monkeypatch.chdir(path)
    kept = Path(".cache/pypoetry")
    monkeypatch.setattr(locations, "stamps", lambda project_dir: kept / "lambda-zip-stamps")
    monkeypatch.setattr(locations, "trees", lambda project_dir: kept / "lambda-zip-trees")
    assert not shortcut_taken(Build(path, ARGS))
    assert list((path / ".cache" / "pypoetry" / "lambda-zip-stamps").glob("*.json"))
    assert shortcut_taken(Build(path, ARGS))


def test_a_project_with_too_many_files_is_built_the_full_way(
    project: Callable[[str], Path], stamps_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing a huge directory would cost what the shortcut saves: past the limit there is
    no stamp, and the build is the full path's."""
    monkeypatch.setattr(stamps_module, "_MAX_FILES", 3)
    path = project("pure-python")
    assert not shortcut_taken(Build(path, ARGS))
    assert not list(stamps_here.glob("*.json"))
    assert not shortcut_taken(Build(path, ARGS))


@pytest.mark.docker
def test_a_moved_image_tag_takes_the_full_path(
    project: Callable[[str], Path],
    stamps_here: Path,
    docker_client: docker.DockerClient,
    stand_in_image: str,
) -> None:
    """The image's id is asked of the engine again on every no-op: a tag that names another
    image now is a change (the image decides the bytecode)."""
    tag = f"poetry-lambda-zip-tests/stamps:{owner()}"  # this test's own tag
    other = None
    docker_client.images.get(stand_in_image).tag(tag)
    try:
        path = project("pure-python")
        arguments = f"--runtime python3.11 --builder docker --image {tag}"
        assert not shortcut_taken(Build(path, arguments))
        assert shortcut_taken(Build(path, arguments))
        dockerfile = f"FROM {stand_in_image}\nLABEL {OWNER_LABEL}={owner()}\n"
        other, _ = docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True
        )
        moved = Build(path, arguments)
        assert not shortcut_taken(moved)
        assert "Built" in moved.output
        assert shortcut_taken(Build(path, arguments))
    finally:
        docker_client.images.remove(tag)  # the image built here (only this tag names it)
        # The pip-cache volume the build made for that image (named by its id), this test's.
        for volume in docker_client.volumes.list(filters={"label": owner_filter()}):
            if other is not None and volume.name.endswith(str(other.id)[7:19]):
                volume.remove()


def test_stamps_live_in_the_cache_directory_poetry_settles(
    project: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found before Poetry loads the project, as Poetry's Factory settles it: the project's
    poetry.toml over Poetry's config, POETRY_CACHE_DIR over both."""
    monkeypatch.setattr(poetry_config, "_default_config", None)  # a fresh global config
    monkeypatch.delenv("POETRY_CACHE_DIR", raising=False)
    path = project("pure-python")
    (path / "poetry.toml").write_text(f'cache-dir = "{tmp_path / "local-cache"}"\n')
    loaded = Factory().create_poetry(path).config.artifacts_cache_directory.parent
    assert locations.cache_directory(path) == loaded == tmp_path / "local-cache"
    monkeypatch.setenv("POETRY_CACHE_DIR", str(tmp_path / "from-environment"))
    assert locations.cache_directory(path) == tmp_path / "from-environment"
