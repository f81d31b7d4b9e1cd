from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import tomlkit
from poetry.factory import Factory

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import LockError
from poetry_lambda_zip.resolve import GroupSelection
from poetry_lambda_zip.resolve import Requirement
from poetry_lambda_zip.resolve import RequirementSet
from poetry_lambda_zip.resolve import choose_artifact
from poetry_lambda_zip.resolve import resolve
from poetry_lambda_zip.resolve import select_extras
from poetry_lambda_zip.resolve import select_groups
from poetry_lambda_zip.target import LambdaTarget
from tests.conftest import FIXTURES

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from poetry.core.packages.package import PackageFile


def requirement_set(
    runtime: str,
    arch: str = "x86_64",
    groups: GroupSelection | None = None,
    extras: tuple[str, ...] = (),
    fixture: Path = FIXTURES / "markers",
) -> RequirementSet:
    poetry = Factory().create_poetry(fixture)
    return resolve(
        poetry.locker,
        poetry.package,
        LambdaTarget(runtime, arch),
        select_groups(poetry.package, groups or GroupSelection()),
        select_extras(poetry.package, extras, all_extras=False),
    )


def names(requirements: RequirementSet) -> set[str]:
    return {r.name for r in requirements.requirements}


def test_python_version_marker_is_evaluated_for_the_runtime() -> None:
    assert names(requirement_set("python3.10")) == {"six", "tomli"}
    assert names(requirement_set("python3.12")) == {"six"}


def test_platform_machine_marker_follows_the_architecture() -> None:
    assert "typing-extensions" in names(requirement_set("python3.12", "arm64"))
    assert "typing-extensions" not in names(requirement_set("python3.12", "x86_64"))


def test_win32_only_and_dev_group_never_reach_the_zip_and_say_why() -> None:
    excluded: dict[str, str] = {e.name: e.reason for e in requirement_set("python3.12").excluded}
    assert "marker false" in excluded["pywin32"]
    assert "win32" in excluded["colorama"]
    assert "group" in excluded["iniconfig"]
    assert "extra not requested" in excluded["pyyaml"]


def test_extras_and_groups_add_what_they_name() -> None:
    assert "pyyaml" in names(requirement_set("python3.12", extras=("yaml",)))
    assert "iniconfig" in names(
        requirement_set("python3.12", groups=GroupSelection(with_=("dev",)))
    )
    assert names(requirement_set("python3.12", groups=GroupSelection(only=("dev",)))) == {
        "iniconfig"
    }


def test_each_requirement_pins_one_hashed_artifact_for_the_target() -> None:
    by_name: dict[str, Requirement] = {
        r.name: r for r in requirement_set("python3.11", "arm64", extras=("yaml",)).requirements
    }
    pyyaml = by_name["pyyaml"].artifact
    assert pyyaml.kind == "wheel"
    assert pyyaml.filename is not None
    assert "cp311-cp311-manylinux" in pyyaml.filename
    assert pyyaml.filename.endswith("aarch64.whl")
    six = by_name["six"]
    assert six.version == "1.17.0"
    assert six.artifact.sha256 is not None
    assert len(six.artifact.sha256) == 64
    assert six.describe() == "wheel six-1.17.0-py2.py3-none-any.whl (PyPI; sha256 checked)"


def files(*names: str) -> list[PackageFile]:
    return [{"file": name, "hash": f"sha256:{i:064x}"} for i, name in enumerate(names)]


def test_manylinux_wheel_newer_than_the_runtimes_glibc_is_never_chosen() -> None:
    ranks = {
        tag: rank for rank, tag in enumerate(LambdaTarget("python3.11", "x86_64").supported_tags())
    }
    artifact = choose_artifact(
        files("pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "pkg-1.0.tar.gz"), ranks
    )
    assert artifact is not None
    assert (artifact.kind, artifact.filename) == ("sdist", "pkg-1.0.tar.gz")
    assert choose_artifact(files("pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"), ranks) is None


def test_best_ranked_wheel_wins() -> None:
    ranks = {
        tag: rank for rank, tag in enumerate(LambdaTarget("python3.12", "x86_64").supported_tags())
    }
    artifact = choose_artifact(
        files(
            "pkg-1.0-py3-none-any.whl",
            "pkg-1.0-cp312-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "pkg-1.0-cp312-cp312-win_amd64.whl",
            "pkg-1.0.tar.gz",
        ),
        ranks,
    )
    assert artifact is not None
    assert artifact.filename == "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def test_unknown_groups_and_extras_are_config_errors() -> None:
    poetry = Factory().create_poetry(FIXTURES / "markers")
    with pytest.raises(ConfigError, match="'docs'"):
        select_groups(poetry.package, GroupSelection(with_=("docs",)))
    with pytest.raises(ConfigError, match="toml"):
        select_extras(poetry.package, ("toml",), all_extras=False)
    assert select_extras(poetry.package, (), all_extras=True) == {"yaml"}


def test_runtime_outside_requires_python_is_refused(project: Callable[[str], Path]) -> None:
    path = project("markers")
    pyproject = path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('">=3.9,<3.15"', '">=3.11,<3.15"'))
    with pytest.raises(ConfigError, match=r"python3\.10"):
        requirement_set("python3.10", fixture=path)


def test_missing_lock_asks_for_poetry_lock(project: Callable[[str], Path]) -> None:
    path = project("markers")
    (path / "poetry.lock").unlink()
    with pytest.raises(LockError) as caught:
        requirement_set("python3.12", fixture=path)
    assert "poetry lock" in str(caught.value.fix)


def test_stale_lock_names_the_problem(project: Callable[[str], Path]) -> None:
    path = project("markers")
    pyproject = path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"six (>=1.16,<2)"', '"six (>=1.17,<2)"'))
    with pytest.raises(LockError, match="out of date") as caught:
        requirement_set("python3.12", fixture=path)
    assert "poetry lock" in str(caught.value.fix)


LEGACY = FIXTURES / "poetry1-lock"


def test_poetry1_lock_is_walked_for_the_target() -> None:
    base = {"certifi", "charset-normalizer", "idna", "requests", "urllib3", "pysocks"}
    assert names(requirement_set("python3.10", fixture=LEGACY)) == base | {"tomli"}
    assert names(requirement_set("python3.12", fixture=LEGACY)) == base


def test_poetry1_lock_extras_and_groups() -> None:
    with_yaml = requirement_set("python3.12", extras=("yaml",), fixture=LEGACY)
    assert "pyyaml" in names(with_yaml)
    with_dev = requirement_set("python3.12", groups=GroupSelection(with_=("dev",)), fixture=LEGACY)
    assert "iniconfig" in names(with_dev)
    excluded = {e.name for e in requirement_set("python3.12", fixture=LEGACY).excluded}
    assert excluded == {"colorama", "iniconfig", "pyyaml", "tomli"}


def test_path_dependencies_are_built_from_their_directories() -> None:
    plan = requirement_set("python3.12", fixture=FIXTURES / "monorepo" / "services" / "api")
    by_name: dict[str, Requirement] = {r.name: r for r in plan.requirements}
    assert set(by_name) == {"docopt", "greeting", "six", "textutils"}
    for name in ("greeting", "textutils"):
        requirement = by_name[name]
        assert requirement.artifact.kind == "directory"
        assert requirement.artifact.sha256 is None
        assert requirement.origin.url == str(FIXTURES / "monorepo" / "libs" / name)
        assert "no hash" in requirement.describe()
    assert by_name["docopt"].artifact.kind == "sdist"
    assert by_name["docopt"].describe().startswith("build from sdist docopt-0.6.2.tar.gz")


def test_file_dependencies_keep_the_locks_hash() -> None:
    plan = requirement_set("python3.12", fixture=FIXTURES / "local-files")
    by_name: dict[str, Requirement] = {r.name: r for r in plan.requirements}
    wheel, sdist = by_name["vendored-tool"], by_name["legacy-helper"]
    assert (wheel.artifact.kind, wheel.origin.type) == ("wheel", "file")
    assert (sdist.artifact.kind, sdist.origin.type) == ("sdist", "file")
    assert wheel.artifact.sha256 == (
        "3cc1cbd40e2ebf7742a8e98c057a218ba2f4bb5fdfdab518b165dffb9ad45196"
    )
    assert wheel.origin.url == str(
        FIXTURES / "local-files" / "vendor" / "vendored_tool-1.0.0-py3-none-any.whl"
    )


def test_packages_from_a_configured_source_name_it() -> None:
    plan = requirement_set("python3.12", fixture=FIXTURES / "private-index")
    private = next(r for r in plan.requirements if r.name == "private-greeting")
    assert private.origin.source_name == "private"
    assert private.origin.url == "http://127.0.0.1:38080/simple"
    assert next(r for r in plan.requirements if r.name == "six").origin.url is None


def test_wheel_newer_than_the_runtimes_glibc_is_not_planned() -> None:
    plan = requirement_set("python3.11", fixture=FIXTURES / "private-index")
    tagged = next(r for r in plan.requirements if r.name == "tagged-build")
    assert tagged.artifact.filename == "tagged_build-1.0.0-cp311-cp311-manylinux_2_17_x86_64.whl"


# ---- names and hashes from the lock are input: validated before anything uses them ----------

RANKS_311 = {
    tag: rank for rank, tag in enumerate(LambdaTarget("python3.11", "x86_64").supported_tags())
}


def test_lock_file_entries_that_are_paths_or_have_malformed_hashes_are_all_named() -> None:
    entries: list[PackageFile] = [
        {"file": "../../../.ssh/pkg-1.0-py3-none-any.whl", "hash": f"sha256:{'a' * 64}"},
        {"file": "sub\\pkg-1.0-py3-none-any.whl", "hash": f"sha256:{'b' * 64}"},
        {"file": "..", "hash": f"sha256:{'c' * 64}"},
        {"file": "pkg-1.0-py3-none-any.whl", "hash": "sha256:../../etc"},
        {"file": "pkg-1.0.tar.gz", "hash": f"sha256:{'d' * 63}"},
    ]
    with pytest.raises(LockError) as caught:
        choose_artifact(entries, RANKS_311)
    assert caught.value.message == "; ".join([
        "'../../../.ssh/pkg-1.0-py3-none-any.whl' is a path, not a file name",
        "'sub\\\\pkg-1.0-py3-none-any.whl' is a path, not a file name",
        "'..' is not a file name",
        "'pkg-1.0-py3-none-any.whl' has sha256 '../../etc', not 64 hexadecimal digits",
        f"'pkg-1.0.tar.gz' has sha256 '{'d' * 63}', not 64 hexadecimal digits",
    ])  # fmt: skip


def test_other_files_of_a_release_are_still_skipped_and_hashes_are_lowercased() -> None:
    entries: list[PackageFile] = [
        {"file": "pkg-1.0.win32.exe", "hash": f"sha256:{'e' * 64}"},
        {"file": "pkg-1.0-py3.11.egg", "hash": f"sha256:{'f' * 64}"},
        {"file": "pkg-1.0-py3-none-any.whl", "hash": "md5:0123"},
        {"file": "pkg-1.0-py3-none-any.whl", "hash": f"sha256:{'AB' * 32}"},
    ]
    artifact = choose_artifact(entries, RANKS_311)
    assert artifact is not None
    assert (artifact.filename, artifact.sha256) == ("pkg-1.0-py3-none-any.whl", "ab" * 32)


def test_a_tampered_lock_names_every_package_at_once_before_anything_runs(
    project: Callable[[str], Path],
) -> None:
    path = project("local-files")
    lock_path = path / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    for package in lock["package"]:
        entry = package["files"][0]
        if package["name"] == "vendored-tool":
            entry["file"] = "../../outside/vendored_tool-1.0.0-py3-none-any.whl"
        else:
            entry["hash"] = "sha256:not-a-hash"
    lock_path.write_text(tomlkit.dumps(lock))
    with pytest.raises(LockError) as caught:
        requirement_set("python3.12", fixture=path)
    message = caught.value.message
    assert message.startswith("poetry.lock has file entries that cannot be used safely:")
    assert "  - legacy-helper 0.2.0: 'legacy_helper-0.2.0.tar.gz' has sha256 'not-a-hash'" in (
        message
    )
    assert "  - vendored-tool 1.0.0: '../../outside/vendored_tool-1.0.0-py3-none-any.whl' is a" in (
        message
    )
    assert "poetry lock" in str(caught.value.fix)


def test_a_url_or_file_dependencys_archive_may_be_a_source_snapshot_but_not_a_bad_wheel(
    project: Callable[[str], Path],
) -> None:
    path = project("local-files")
    lock_path = path / "poetry.lock"
    lock = tomlkit.parse(lock_path.read_text())
    names = {"legacy-helper": "main.zip", "vendored-tool": "vendored-tool.whl"}
    for package in lock["package"]:
        package["files"][0]["file"] = names[package["name"]]
    lock_path.write_text(tomlkit.dumps(lock))
    with pytest.raises(LockError, match=r"vendored-tool 1\.0\.0: 'vendored-tool\.whl' is not a"):
        requirement_set("python3.12", fixture=path)
    lock = tomlkit.parse(lock_path.read_text())
    lock["package"][1]["files"][0]["file"] = "vendored_tool-1.0.0-py3-none-any.whl"
    lock_path.write_text(tomlkit.dumps(lock))
    by_name: dict[str, Requirement] = {
        r.name: r for r in requirement_set("python3.12", fixture=path).requirements
    }
    snapshot = by_name["legacy-helper"].artifact
    assert (snapshot.kind, snapshot.filename) == ("sdist", "main.zip")
