"""Installing wheels on this machine: every check pypa/installer makes, each refusal an exit code
with the wheel, the package and what to do, and nothing shipped after one (no Docker)."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import stat
import threading
import zipfile
from typing import TYPE_CHECKING

import pytest
from packaging.utils import canonicalize_name

from poetry_lambda_zip import pipeline
from poetry_lambda_zip import wheels as wheels_module
from poetry_lambda_zip.archive import UNZIPPED_LIMIT
from poetry_lambda_zip.contents import normalize_installed
from poetry_lambda_zip.contents import owners
from poetry_lambda_zip.contents import record_paths
from poetry_lambda_zip.entries import entries_from_files
from poetry_lambda_zip.errors import BuildFailedError
from poetry_lambda_zip.errors import OutputError
from poetry_lambda_zip.wheels import PinnedWheel
from poetry_lambda_zip.wheels import install_wheels

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Sequence
    from pathlib import Path

    from cleo.testers.command_tester import CommandTester

    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.resolve import Requirement

#: What pure-python's lock pins (the project, hello-pure, is built from its sources).
DATEUTIL = ("python-dateutil", "2.9.0.post0")
SIX = ("six", "1.17.0")
EXECUTABLE = (stat.S_IFREG | 0o755) << 16


def record(members: dict[str, bytes], record_name: str) -> bytes:
    """RECORD as a build backend writes it: every member with its sha256 and size."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([record_name, "", ""])
    return text.getvalue().encode()


def members_of(
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    dist_info: str | None = None,
    metadata: tuple[str, str] | None = None,
) -> dict[str, bytes]:
    """A valid wheel's members: ``files``, METADATA, WHEEL and RECORD (``dist_info`` and
    ``metadata`` (name, version) claim another distribution when given)."""
    dist_info = dist_info or f"{name.replace('-', '_')}-{version}.dist-info"
    claimed_name, claimed_version = metadata or (name, version)
    members = {
        **files,
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {claimed_name}\nVersion: {claimed_version}\n".encode()
        ),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    members[f"{dist_info}/RECORD"] = record(members, f"{dist_info}/RECORD")
    return members


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    members: dict[str, bytes],
    *,
    executable: Sequence[str] = (),
    stored: bool = False,
) -> Path:
    path = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression) as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member)
            info.compress_type = compression
            info.external_attr = (
                EXECUTABLE if member in executable else (stat.S_IFREG | 0o644) << 16
            )
            archive.writestr(info, data)
    return path


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    dist_info: str | None = None,
    metadata: tuple[str, str] | None = None,
) -> Path:
    members = members_of(name, version, files, dist_info=dist_info, metadata=metadata)
    return write_wheel(directory, name, version, members)


def pinned(path: Path, name: str, version: str) -> PinnedWheel:
    return PinnedWheel(path, canonicalize_name(name), version)


def tree(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- the wheel's files land where pip install --target puts them ----------------------------


def test_a_wheel_installs_where_pip_install_target_puts_its_files(tmp_path: Path) -> None:
    data = "demo-1.0.data"
    members = members_of(
        "demo",
        "1.0",
        {
            "demo/__init__.py": b"",
            f"{data}/scripts/run": b"#!python\nprint('hi')\n",
            f"{data}/purelib/extra.py": b"X = 1\n",
            f"{data}/data/share/demo.txt": b"data\n",
            f"{data}/headers/demo.h": b"int x;\n",
            "demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndemo = demo:main\n",
        },
    )
    wheel = write_wheel(tmp_path, "demo", "1.0", members, executable=[f"{data}/scripts/run"])
    target = tmp_path / "target"
    install_wheels([pinned(wheel, "demo", "1.0")], target, "3.12")

    assert (target / "bin" / "run").read_text() == "#!/var/lang/bin/python3\nprint('hi')\n"
    assert (target / "bin" / "run").stat().st_mode & 0o777 == 0o755
    assert (target / "demo" / "__init__.py").stat().st_mode & 0o777 == 0o644
    assert (target / "extra.py").read_text() == "X = 1\n"
    assert (target / "share" / "demo.txt").read_text() == "data\n"
    assert (target / "include/site/python3.12/demo/demo.h").read_text() == "int x;\n"
    # No launcher for the console script: Lambda never runs one.
    assert sorted(p.name for p in (target / "bin").iterdir()) == ["run"]
    entries = entries_from_files(target, sorted(p for p in target.rglob("*") if p.is_file()))
    (written_record,) = [e for e in entries if e.name == "demo-1.0.dist-info/RECORD"]
    assert sorted(record_paths(written_record)) == tree(target)


# --- several wheels at once: the tree one after another gives ---------------------------------


def many_wheels(directory: Path) -> list[PinnedWheel]:
    """Wheels of every kind of overlap: a namespace package two of them share, a .data
    directory whose scheme lands on another's top-level name, and wheels apart."""
    init = b"__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    spec = [
        ("big", "1.0", {f"big/m{n}.py": f"n = {n}\n".encode() * 500 for n in range(60)}),
        ("ns-alpha", "1.0", {"ns/__init__.py": init, "ns/a.py": b"a = 1\n"}),
        ("other", "2.0", {"other/__init__.py": b"", "other/data.bin": bytes(range(256)) * 64}),
        ("ns-beta", "1.0", {"ns/__init__.py": init, "ns/b.py": b"b = 1\n"}),
        ("tool", "1.0", {"tool-1.0.data/scripts/tool": b"#!python\nprint(1)\n", "tool.py": b""}),
        ("bins", "1.0", {"bin/helper": b"helper\n", "bins.py": b""}),
    ]
    return [
        pinned(make_wheel(directory, name, version, files), name, version)
        for name, version, files in spec
    ]


def installed(root: Path) -> dict[str, tuple[bytes, int]]:
    return {name: ((root / name).read_bytes(), (root / name).stat().st_mode) for name in tree(root)}


def test_wheels_unpacked_at_once_give_the_tree_one_after_another_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = many_wheels(tmp_path / "wheels")
    # Only the wheels that share a top-level name are chained: ns (alpha, beta), bin (tool's
    # script, bins' file); the others each go alone, largest first.
    chains = wheels_module._chains(
        wheels, [wheels_module._listing(wheel) for wheel in wheels], "3.11"
    )
    assert sorted(chains) == [[0], [1, 3], [2], [4, 5]]
    assert chains[0] == [0]  # the largest first
    at_once, known = install_wheels(wheels, tmp_path / "at-once", "3.11")
    monkeypatch.setattr("poetry_lambda_zip.wheels.os.cpu_count", lambda: 1)
    in_order, _ = install_wheels(wheels, tmp_path / "in-order", "3.11")
    assert installed(tmp_path / "at-once") == installed(tmp_path / "in-order")
    assert at_once == in_order
    # Every file's sha256, as checked while it was unpacked: nothing hashes it again.
    assert {name: k.sha256 for name, k in known.items()} == {
        name: hashlib.sha256((tmp_path / "at-once" / name).read_bytes()).hexdigest()
        for name in tree(tmp_path / "at-once")
    }
    # Where each file is in its wheel: the shared __init__.py in the first wheel to ship it.
    assert at_once["ns/__init__.py"].wheel == wheels[1].path
    for name, member in at_once.items():
        with zipfile.ZipFile(member.wheel) as wheel:
            (info,) = [i for i in wheel.infolist() if i.header_offset == member.header_offset]
            assert wheel.read(info) == (tmp_path / "at-once" / name).read_bytes()
    # Every file but the RECORDs (rewritten) and the script (its shebang) is as shipped.
    assert {n for n in tree(tmp_path / "at-once") if n not in at_once} == {
        "bin/tool",
        *(f"{w.name.replace('-', '_')}-{w.version}.dist-info/RECORD" for w in wheels),
    }


def test_wheels_apart_are_unpacked_at_the_same_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two largest chains each wait at a barrier for the other: one after another, the
    first would wait alone and the barrier break."""
    wheels = many_wheels(tmp_path / "wheels")
    monkeypatch.setattr("poetry_lambda_zip.wheels.os.cpu_count", lambda: 2)
    barrier = threading.Barrier(2, timeout=10)
    real = wheels_module._install_wheel
    met: list[str] = []

    def meeting(wheel: PinnedWheel, number: int, tree: object) -> None:
        if number in (0, 2):  # the first wheel of each of the two largest chains
            barrier.wait()
            met.append(wheel.name)
        real(wheel, number, tree)  # type: ignore[arg-type]

    monkeypatch.setattr(wheels_module, "_install_wheel", meeting)
    install_wheels(wheels, tmp_path / "target", "3.11")
    assert sorted(met) == ["big", "other"]


def broken(directory: Path, name: str, files: dict[str, bytes], bad: str) -> PinnedWheel:
    """A wheel whose ``bad`` member does not match RECORD."""
    members = members_of(name, "1.0", files)
    members[bad] += b"# tampered\n"
    return pinned(write_wheel(directory, name, "1.0", members), name, "1.0")


def test_the_first_wheel_that_fails_is_refused_whichever_fails_first(tmp_path: Path) -> None:
    """Wheels unpacked at once fail as one after another would: the first one's error, though
    a later one (small, broken at its first file) fails sooner."""
    files = {f"alpha/m{n:03}.py": b"x = 1\n" * 2000 for n in range(200)}
    first = broken(tmp_path / "a", "alpha", files, bad="alpha/m199.py")
    second = broken(tmp_path / "b", "beta", {"beta/__init__.py": b""}, bad="beta/__init__.py")
    chains = wheels_module._chains(
        [first, second], [wheels_module._listing(w) for w in (first, second)], "3.11"
    )
    assert chains == [[0], [1]]  # apart: unpacked at once
    for attempt in range(3):
        with pytest.raises(BuildFailedError) as caught:
            install_wheels([first, second], tmp_path / f"target-{attempt}", "3.11")
        assert "alpha-1.0-py3-none-any.whl" in caught.value.message
        assert "alpha/m199.py" in caught.value.message


# --- a malformed wheel or one that is not what the lock pins: exit 5, nothing shipped --------


def traversal(directory: Path) -> Path:
    return make_wheel(directory, *DATEUTIL, {"dateutil/__init__.py": b"", "../escape.py": b"x"})


def other_dist_info(directory: Path) -> Path:
    # The lock pins python-dateutil; the file holds requests 99.0.
    return make_wheel(
        directory, *DATEUTIL, {"requests/__init__.py": b""}, dist_info="requests-99.0.dist-info"
    )


def other_version(directory: Path) -> Path:
    members = members_of("python-dateutil", "3.0", {"dateutil/__init__.py": b""})
    return write_wheel(directory, *DATEUTIL, members)


def other_metadata(directory: Path) -> Path:
    return make_wheel(directory, *DATEUTIL, {"x.py": b""}, metadata=("requests", "99.0"))


def hash_mismatch(directory: Path) -> Path:
    members = members_of(*DATEUTIL, {"dateutil/__init__.py": b"safe = True\n"})
    members["dateutil/__init__.py"] = b"safe = False\n"
    return write_wheel(directory, *DATEUTIL, members)


def script_mismatch(directory: Path) -> Path:
    """A script (its stream is rewound to fix the shebang) that is not what RECORD says."""
    script = "python_dateutil-2.9.0.post0.data/scripts/tool"
    members = members_of(*DATEUTIL, {script: b"#!python\nprint('safe')\n"})
    members[script] = b"#!python\nprint('evil')\n"
    return write_wheel(directory, *DATEUTIL, members, executable=[script])


def size_mismatch(directory: Path) -> Path:
    """The right hash with the wrong size."""
    members = members_of(*DATEUTIL, {"dateutil/__init__.py": b"x = 1\n"})
    name = "python_dateutil-2.9.0.post0.dist-info/RECORD"
    members[name] = members[name].replace(b",6\n", b",7\n", 1)
    return write_wheel(directory, *DATEUTIL, members)


def bad_crc(directory: Path) -> Path:
    content = b"VERSION = '2.9.0'\n"
    wheel = write_wheel(
        directory, *DATEUTIL, members_of(*DATEUTIL, {"dateutil/v.py": content}), stored=True
    )
    raw = wheel.read_bytes()
    at = raw.index(content)
    wheel.write_bytes(raw[:at] + b"W" + raw[at + 1 :])
    return wheel


def file_and_directory(directory: Path) -> Path:
    return make_wheel(directory, *DATEUTIL, {"dateutil/tz": b"a file", "dateutil/tz/x.py": b""})


def latin1_record(directory: Path) -> Path:
    members = members_of(*DATEUTIL, {"dateutil/café.py": b""})
    name = "python_dateutil-2.9.0.post0.dist-info/RECORD"
    members[name] = members[name].decode().encode("latin-1")
    return write_wheel(directory, *DATEUTIL, members)


def unrecorded_file(directory: Path) -> Path:
    members = members_of(*DATEUTIL, {"dateutil/__init__.py": b""})
    return write_wheel(directory, *DATEUTIL, {**members, "dateutil/extra.py": b"smuggled"})


MALFORMED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "member outside the target": (traversal, "'../escape.py' would land outside the package"),
    "another distribution": (other_dist_info, "it holds requests-99.0.dist-info"),
    "another version": (
        other_version,
        "python_dateutil-3.0.dist-info (METADATA: python-dateutil 3.0)",
    ),
    "metadata of another": (other_metadata, "(METADATA: requests 99.0), not python-dateutil"),
    "RECORD hash mismatch": (hash_mismatch, "dateutil/__init__.py didn't match RECORD"),
    "script hash mismatch": (script_mismatch, "data/scripts/tool didn't match RECORD"),
    "RECORD size mismatch": (size_mismatch, "dateutil/__init__.py didn't match RECORD"),
    "bad CRC": (bad_crc, "it is damaged (Bad CRC-32 for file 'dateutil/v.py')"),
    "file and directory": (file_and_directory, "dateutil/tz both as a file and as a directory"),
    "latin-1 RECORD": (latin1_record, "its RECORD is not UTF-8 text"),
    "file missing from RECORD": (unrecorded_file, "dateutil/extra.py is not mentioned in RECORD"),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_wheel_that_is_not_what_the_lock_pins_is_refused(
    tmp_path: Path, case: tuple[Callable[[Path], Path], str]
) -> None:
    make, detail = case
    wheel = make(tmp_path / "wheels")
    target = tmp_path / "install" / "target"
    with pytest.raises(BuildFailedError) as caught:
        install_wheels([pinned(wheel, *DATEUTIL)], target, "3.11")
    error = caught.value
    assert error.exit_code == 5
    assert error.message.startswith(
        f"The wheel {wheel.name} for python-dateutil 2.9.0.post0 cannot be installed: "
    )
    assert detail in error.message
    assert error.fix is not None
    assert str(wheel) in error.fix
    assert "run `poetry lock`" in error.fix
    assert "report it to python-dateutil's authors" in error.fix
    assert not (tmp_path / "install" / "escape.py").exists()


class FakeFetcher:
    """Stands in for Poetry's downloads: the wheel made for each requirement's name."""

    def __init__(self, wheels: dict[str, Path]) -> None:
        self.wheels = wheels

    def fetch_all(self, requirements: Sequence[Requirement], progress: Progress) -> list[Path]:
        return [self.wheels[requirement.name] for requirement in requirements]


@pytest.fixture
def fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The wheels the command gets for pure-python's lock: valid ones unless a test replaces
    one (by canonical name)."""
    directory = tmp_path / "fetched"
    wheels = {
        "python-dateutil": make_wheel(directory, *DATEUTIL, {"dateutil/__init__.py": b""}),
        "six": make_wheel(directory, *SIX, {"six.py": b"# six\n"}),
    }
    monkeypatch.setattr(pipeline, "WheelFetcher", lambda *args, **kwargs: FakeFetcher(wheels))
    return wheels


def shipped(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("dist/*.zip"))


def refused(run_command: Callable[[Path, str], CommandTester], path: Path, status: int) -> str:
    """Build ``path`` with the local builder, expecting exit ``status`` with no traceback
    and no zip; the error text."""
    tester = run_command(path, "--runtime python3.11 --builder local --no-compile")
    error = tester.io.fetch_error()
    assert tester.status_code == status, error
    assert "Traceback" not in error
    assert shipped(path) == []
    return error


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_the_command_refuses_a_bad_wheel_with_exit_5_and_ships_nothing(
    project: Callable[[str], Path],
    run_command: Callable[[Path, str], CommandTester],
    fetched: dict[str, Path],
    tmp_path: Path,
    case: tuple[Callable[[Path], Path], str],
) -> None:
    make, detail = case
    fetched["python-dateutil"] = make(tmp_path / "bad")
    path = project("pure-python")
    error = refused(run_command, path, 5)
    assert f"{fetched['python-dateutil'].name} for python-dateutil 2.9.0.post0" in error
    assert detail in error
    assert "run `poetry lock`" in error


# --- two distributions that install one path --------------------------------------------------


def test_two_wheels_that_install_one_path_differently_are_refused_naming_both(
    tmp_path: Path,
) -> None:
    first = make_wheel(tmp_path, "alpha", "1.0", {"shared/data.txt": b"alpha's"})
    second = make_wheel(tmp_path, "beta", "2.0", {"shared/data.txt": b"beta's"})
    wheels = [pinned(first, "alpha", "1.0"), pinned(second, "beta", "2.0")]
    with pytest.raises(BuildFailedError) as caught:
        install_wheels(wheels, tmp_path / "target", "3.11")
    assert caught.value.exit_code == 5
    assert caught.value.message == (
        "Two files want the same place in the zip: shared/data.txt is installed by alpha 1.0"
        " (alpha-1.0-py3-none-any.whl) and beta 2.0 (beta-2.0-py3-none-any.whl), differently."
    )
    assert caught.value.fix is not None
    assert "Leave one of them out with --exclude-package (alpha or beta)" in caught.value.fix


def test_a_file_one_wheel_installs_where_another_has_a_directory_is_refused(
    tmp_path: Path,
) -> None:
    first = make_wheel(tmp_path, "alpha", "1.0", {"shared": b"a file"})
    second = make_wheel(tmp_path, "beta", "1.0", {"shared/x.py": b""})
    wheels = [pinned(first, "alpha", "1.0"), pinned(second, "beta", "1.0")]
    first_a_file = r"shared is installed by alpha 1.0 .* and beta 1.0 .*, the first as a file,"
    with pytest.raises(BuildFailedError, match=first_a_file):
        install_wheels(wheels, tmp_path / "target", "3.11")
    first_a_directory = r"shared is installed by beta 1.0 .* and alpha .*, the first as a directory"
    with pytest.raises(BuildFailedError, match=first_a_directory):
        install_wheels(wheels[::-1], tmp_path / "other", "3.11")


def test_a_file_two_wheels_install_with_the_same_bytes_is_installed_once(
    tmp_path: Path,
) -> None:
    # A namespace package's __init__.py, shipped by each of its distributions.
    init = b"__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    first = make_wheel(tmp_path, "ns-alpha", "1.0", {"ns/__init__.py": init, "ns/a.py": b""})
    second = make_wheel(tmp_path, "ns-beta", "1.0", {"ns/__init__.py": init, "ns/b.py": b""})
    target = tmp_path / "target"
    install_wheels(
        [pinned(first, "ns-alpha", "1.0"), pinned(second, "ns-beta", "1.0")], target, "3.11"
    )
    assert (target / "ns" / "__init__.py").read_bytes() == init
    assert {"ns/a.py", "ns/b.py"} <= set(tree(target))


def test_the_command_refuses_two_dependencies_that_install_one_path_and_ships_nothing(
    project: Callable[[str], Path],
    run_command: Callable[[Path, str], CommandTester],
    fetched: dict[str, Path],
    tmp_path: Path,
) -> None:
    fetched["six"] = make_wheel(tmp_path / "clash", *SIX, {"dateutil/__init__.py": b"# six"})
    path = project("pure-python")
    error = refused(run_command, path, 5)
    assert "python-dateutil 2.9.0.post0" in error
    assert "six 1.17.0" in error
    assert "the zip: dateutil/__init__.py is installed by python-dateutil" in error
    assert "differently" in error
    assert "--exclude-package" in error


# --- the size limit, before anything is unpacked ---------------------------------------------


def declared_huge(directory: Path, name: str, declared: int) -> Path:
    """A tiny wheel whose zip directory declares ``declared`` bytes for one member."""
    wheel = make_wheel(directory, name, "1.0", {f"{name}/blob": b""})
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.getinfo(f"{name}/blob").file_size = declared
    return wheel


def test_wheels_declaring_more_than_lambda_allows_are_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each alone fits; together they do not.
    wheels = [
        pinned(declared_huge(tmp_path, name, size), name, "1.0")
        for name, size in [("small", 1_000_000), ("big", 140_000_000), ("bigger", 150_000_000)]
    ]

    def no_member_is_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("a member was read")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_member_is_read)
    target = tmp_path / "install" / "target"
    with pytest.raises(OutputError) as caught:
        install_wheels(wheels, target, "3.11")
    error = caught.value
    assert error.exit_code == 6
    assert f"Lambda allows at most {UNZIPPED_LIMIT:,}" in error.message
    listed = [line.split()[-1] for line in error.message.splitlines() if " MB  " in line]
    assert listed == [
        "bigger-1.0-py3-none-any.whl",
        "big-1.0-py3-none-any.whl",
        "small-1.0-py3-none-any.whl",
    ]
    assert error.fix is not None
    assert "--exclude-package" in error.fix
    assert not (tmp_path / "install").exists()


def test_the_command_refuses_a_wheel_declaring_more_than_lambda_allows_and_ships_nothing(
    project: Callable[[str], Path],
    run_command: Callable[[Path, str], CommandTester],
    fetched: dict[str, Path],
    tmp_path: Path,
) -> None:
    fetched["six"] = declared_huge(tmp_path / "bomb", "six", UNZIPPED_LIMIT)
    path = project("pure-python")
    error = refused(run_command, path, 6)
    assert "six-1.0-py3-none-any.whl" in error


# --- RECORD is CSV everywhere: a comma in a file name --------------------------------------


def test_a_comma_in_a_file_name_round_trips_through_record_and_ownership(
    tmp_path: Path,
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", {"demo/__init__.py": b"", "demo/a,b.py": b"x"})
    target = tmp_path / "target"
    install_wheels([pinned(wheel, "demo", "1.0")], target, "3.11")
    installed = entries_from_files(target, sorted(p for p in target.rglob("*") if p.is_file()))
    entries = normalize_installed(installed)

    unpacked = tmp_path / "normalized"
    for entry in entries:
        (unpacked / entry.name).parent.mkdir(parents=True, exist_ok=True)
        with entry.open() as handle:
            (unpacked / entry.name).write_bytes(handle.read())
    (found,) = importlib.metadata.distributions(path=[str(unpacked)])
    assert "demo/a,b.py" in [file.as_posix() for file in found.files or []]
    assert owners(entries)["demo/a,b.py"] == "demo"


def test_split_layout_puts_the_projects_file_with_a_comma_in_the_function_zip(
    project: Callable[[str], Path],
    run_command: Callable[[Path, str], CommandTester],
    fetched: dict[str, Path],
) -> None:
    path = project("pure-python")
    (path / "src" / "hello_pure" / "a,b.py").write_text("X = 1\n")
    tester = run_command(path, "--runtime python3.11 --builder local --no-compile --layout split")
    assert tester.status_code == 0, tester.io.fetch_error()
    function = path / "dist" / "hello_pure-0.1.0-python3.11-x86_64.zip"
    layer = path / "dist" / "hello_pure-0.1.0-python3.11-x86_64-layer.zip"
    assert shipped(path) == sorted([function.name, layer.name])
    with zipfile.ZipFile(function) as archive:
        assert "hello_pure/a,b.py" in archive.namelist()
        archive.extractall(path / "function")
    with zipfile.ZipFile(layer) as archive:
        assert "python/hello_pure/a,b.py" not in archive.namelist()
    (found,) = importlib.metadata.distributions(path=[str(path / "function")])
    assert "hello_pure/a,b.py" in [file.as_posix() for file in found.files or []]
