"""--sbom: a CycloneDX 1.6 document beside each zip, valid against the format's schema, listing
exactly what that zip ships (with the lock's sha256 and each distribution's declared license),
and reproducible like the zip: the same bytes from an up-to-date build, a --force build and a
copy of the project elsewhere."""

from __future__ import annotations

import builtins
import json
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest
import tomlkit
from cyclonedx.schema import OutputFormat
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation import make_schemabased_validator
from packaging.utils import canonicalize_name

from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.sbom import require_library

if TYPE_CHECKING:
    from collections.abc import Callable

    from cleo.testers.command_tester import CommandTester

    from tests.docker_helpers import Build

    Run = Callable[[Path, str], CommandTester]

LOCAL = "--builder local --runtime python3.11"


def _document(path: Path) -> dict[str, Any]:
    text = path.read_text()
    validator = make_schemabased_validator(OutputFormat.JSON, SchemaVersion.V1_6)
    errors = validator.validate_str(text)
    assert errors is None, f"{path.name} is not valid CycloneDX 1.6: {errors}"
    document: dict[str, Any] = json.loads(text)
    return document


def _built(tester: CommandTester) -> dict[str, Any]:
    assert tester.status_code == 0, tester.io.fetch_error()
    result: dict[str, Any] = json.loads(tester.io.fetch_output())
    return result


def _shipped_names(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return {
            canonicalize_name(name.split("/")[-2].removesuffix(".dist-info").rsplit("-", 1)[0])
            for name in archive.namelist()
            if name.endswith(".dist-info/METADATA")
        }


def _locked_hashes(project_dir: Path) -> dict[str, set[str]]:
    lock = tomlkit.parse((project_dir / "poetry.lock").read_text())
    return {
        str(package["name"]): {str(f["hash"]).removeprefix("sha256:") for f in package["files"]}
        for package in lock["package"]
    }


def test_the_sbom_lists_what_the_zip_ships_and_is_valid_cyclonedx(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    result = _built(run_command(path, f"{LOCAL} --sbom --json"))
    (output,) = result["outputs"]
    zip_path, sbom_path = output["path"], output["sbom"]
    assert sbom_path == zip_path + ".cdx.json"
    document = _document(path / "dist" / (zip_path.rsplit("/", 1)[-1] + ".cdx.json"))

    assert document["bomFormat"] == "CycloneDX"
    assert document["specVersion"] == "1.6"
    project_component = document["metadata"]["component"]
    assert project_component["name"] == "hello-pure"
    assert project_component["version"] == "0.1.0"
    properties = {p["name"]: p["value"] for p in project_component["properties"]}
    assert properties["poetry-lambda-zip:zip:sha256"] == output["sha256"]
    assert properties["poetry-lambda-zip:runtime"] == "python3.11"

    components = {c["name"]: c for c in document["components"]}
    shipped = _shipped_names(path / "dist" / zip_path.rsplit("/", 1)[-1]) - {"hello-pure"}
    assert set(components) == shipped == {"python-dateutil", "six"}
    locked = _locked_hashes(path)
    for name, component in components.items():
        assert component["purl"] == f"pkg:pypi/{name}@{component['version']}"
        (digest,) = [h["content"] for h in component["hashes"] if h["alg"] == "SHA-256"]
        assert digest in locked[name]
        assert component["licenses"], f"{name}: no license read from its metadata"
    assert components["six"]["licenses"] == [
        {"license": {"acknowledgement": "declared", "id": "MIT"}}
    ]
    graph = {d["ref"]: set(d.get("dependsOn", ())) for d in document["dependencies"]}
    dateutil, six = components["python-dateutil"]["bom-ref"], components["six"]["bom-ref"]
    assert graph[dateutil] == {six}
    assert graph[project_component["bom-ref"]] == {dateutil}


def test_the_sbom_is_the_same_bytes_up_to_date_forced_and_elsewhere(
    project: Callable[[str], Path], run_command: Run, tmp_path: Path
) -> None:
    path = project("pure-python")
    first = _built(run_command(path, f"{LOCAL} --sbom --json"))["outputs"][0]
    written = (path / "dist" / (first["path"].rsplit("/", 1)[-1] + ".cdx.json")).read_bytes()

    again = _built(run_command(path, f"{LOCAL} --sbom --json"))
    assert again["up_to_date"] is True
    forced = _built(run_command(path, f"{LOCAL} --sbom --json --force"))
    assert forced["written"], "--force wrote nothing"
    elsewhere = shutil.copytree(path, tmp_path / "another" / "place", ignore=lambda *_: {"dist"})
    moved = _built(run_command(elsewhere, f"{LOCAL} --sbom --json"))["outputs"][0]
    assert moved["sha256"] == first["sha256"]
    for document in (again["outputs"][0]["sbom"], forced["outputs"][0]["sbom"], moved["sbom"]):
        assert Path(document).read_bytes() == written
    assert str(tmp_path) not in written.decode()


def test_an_edit_that_changes_the_zip_changes_its_sbom(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    before = _built(run_command(path, f"{LOCAL} --sbom --json"))["outputs"][0]
    old = _document(path / "dist" / (before["path"].rsplit("/", 1)[-1] + ".cdx.json"))
    module = next((path / "src").rglob("*.py"))
    module.write_text(module.read_text() + "\nEDITED = True\n")
    after = _built(run_command(path, f"{LOCAL} --sbom --json"))["outputs"][0]
    assert after["sha256"] != before["sha256"]
    new = _document(path / "dist" / (after["path"].rsplit("/", 1)[-1] + ".cdx.json"))
    zip_sha256 = "poetry-lambda-zip:zip:sha256"
    for document, expected in ((old, before), (new, after)):
        properties = {
            p["name"]: p["value"] for p in document["metadata"]["component"]["properties"]
        }
        assert properties[zip_sha256] == expected["sha256"]
    assert new["serialNumber"] != old["serialNumber"]


def test_each_zip_of_a_split_layout_lists_only_what_it_ships(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    result = _built(run_command(path, f"{LOCAL} --sbom --json --layout split"))
    kinds = {output["kind"]: output for output in result["outputs"]}
    assert set(kinds) == {"function", "layer"}
    for kind, names in (("function", set()), ("layer", {"python-dateutil", "six"})):
        document = _document(path / "dist" / (kinds[kind]["path"].rsplit("/", 1)[-1] + ".cdx.json"))
        assert {c["name"] for c in document.get("components", ())} == names
        properties = {
            p["name"]: p["value"] for p in document["metadata"]["component"]["properties"]
        }
        assert properties["poetry-lambda-zip:zip:kind"] == kind


def test_a_distribution_left_out_is_not_in_the_sbom(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("pure-python")
    result = _built(run_command(path, f"{LOCAL} --sbom --json --exclude-package six"))
    document = _document(
        path / "dist" / (result["outputs"][0]["path"].rsplit("/", 1)[-1] + ".cdx.json")
    )
    assert {c["name"] for c in document["components"]} == {"python-dateutil"}


def test_without_the_library_sbom_is_refused_before_anything_is_built(
    project: Callable[[str], Path], run_command: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_cyclonedx(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("cyclonedx"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cyclonedx)
    with pytest.raises(ConfigError) as caught:
        require_library()
    assert "poetry-lambda-zip[sbom]" in (caught.value.fix or "")

    path = project("pure-python")
    tester = run_command(path, f"{LOCAL} --sbom")
    assert tester.status_code == ConfigError.exit_code
    assert "cyclonedx-python-lib" in tester.io.fetch_error()
    assert not (path / "dist").exists()


@pytest.mark.docker
def test_path_dependencies_have_no_purl_and_name_their_place_in_the_project(
    project: Callable[[str], Path], build: Callable[..., Build]
) -> None:
    path = project("local-files")
    built = build(path, "--builder docker --sbom")
    assert built.status == 0, built.error
    document = _document(built.zip_path.with_name(built.zip_path.name + ".cdx.json"))
    components = {c["name"]: c for c in document["components"]}
    assert set(components) == {"legacy-helper", "vendored-tool"}
    locked = _locked_hashes(path)
    for name, filename in (
        ("legacy-helper", "vendor/legacy_helper-0.2.0.tar.gz"),
        ("vendored-tool", "vendor/vendored_tool-1.0.0-py3-none-any.whl"),
    ):
        component = components[name]
        assert "purl" not in component, "no index knows a path dependency by that name"
        properties = {p["name"]: p["value"] for p in component["properties"]}
        assert properties["poetry-lambda-zip:source"] == "file"
        assert properties["poetry-lambda-zip:path"] == filename
        (digest,) = [h["content"] for h in component["hashes"]]
        assert digest in locked[name]
    assert str(path) not in json.dumps(document)


def test_each_function_of_a_table_gets_its_own_sbom_named_after_the_table(
    project: Callable[[str], Path], run_command: Run
) -> None:
    path = project("functions-dirs")
    tester = run_command(path, f"{LOCAL} --sbom")
    assert tester.status_code == 0, tester.io.fetch_error()
    output = tester.io.fetch_output()
    zips = sorted((path / "dist").glob("*.zip"))
    assert len(zips) == 3
    assert f"{len(zips)} SBOMs (CycloneDX), each beside its zip" in output
    for zip_path in zips:
        document = _document(zip_path.with_name(zip_path.name + ".cdx.json"))
        properties = {
            p["name"]: p["value"] for p in document["metadata"]["component"]["properties"]
        }
        assert properties["poetry-lambda-zip:zip"] == zip_path.name
        assert {c["name"] for c in document["components"]} == _shipped_names(zip_path) - {
            canonicalize_name(document["metadata"]["component"]["name"])
        }
