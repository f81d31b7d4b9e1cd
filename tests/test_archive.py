from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import stat
import tarfile
import time
import zipfile
from typing import TYPE_CHECKING

import pytest

from poetry_lambda_zip import deflate as deflate_module
from poetry_lambda_zip.archive import DEFAULT_EPOCH
from poetry_lambda_zip.archive import SEAL
from poetry_lambda_zip.archive import ArchiveStats
from poetry_lambda_zip.archive import timestamp_from_environment
from poetry_lambda_zip.archive import write_zips_atomically
from poetry_lambda_zip.archive import zip_intact
from poetry_lambda_zip.contents import distribution_sizes
from poetry_lambda_zip.entries import Entry
from poetry_lambda_zip.entries import Shipped
from poetry_lambda_zip.entries import entries_from_files
from poetry_lambda_zip.entries import entries_from_tar
from poetry_lambda_zip.errors import ConfigError
from poetry_lambda_zip.errors import ConflictError
from poetry_lambda_zip.errors import OutputError
from tests.docker_helpers import sealed_again

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def write_zip_atomically(
    entries: list[Entry],
    output: Path,
    timestamp: int,
    check: Callable[[ArchiveStats], None] | None = None,
) -> ArchiveStats:
    """One zip through the writer of several."""
    (stats,) = write_zips_atomically(
        [(output, entries, b"")],
        timestamp,
        check=None if check is None else lambda written: check(written[0]),
    )
    return stats


def entry(name: str, data: bytes = b"x", executable: bool = False) -> Entry:
    return Entry(name=name, size=len(data), executable=executable, open=lambda: io.BytesIO(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_entries_in_any_order_give_the_same_bytes(tmp_path: Path) -> None:
    entries = [entry("b/two.py", b"2"), entry("a.py", b"1"), entry("bin/tool", b"#!", True)]
    first = write_zip_atomically(entries, tmp_path / "one.zip", DEFAULT_EPOCH)
    second = write_zip_atomically(entries[::-1], tmp_path / "two.zip", DEFAULT_EPOCH)
    assert first.sha256 == second.sha256 == sha256(tmp_path / "one.zip")
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["a.py", "b/two.py", "bin/tool"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
    assert [i.external_attr >> 16 for i in infos] == [0o100644, 0o100644, 0o100755]
    assert first.unzipped_size == 4
    assert first.files == 3


def test_source_date_epoch_sets_every_timestamp(tmp_path: Path) -> None:
    timestamp = timestamp_from_environment({"SOURCE_DATE_EPOCH": "1700000000"})
    write_zip_atomically([entry("a.py")], tmp_path / "out.zip", timestamp)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert archive.getinfo("a.py").date_time == (2023, 11, 14, 22, 13, 20)
    assert timestamp_from_environment({"SOURCE_DATE_EPOCH": "5"}) == DEFAULT_EPOCH
    assert timestamp_from_environment({}) == DEFAULT_EPOCH
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        timestamp_from_environment({"SOURCE_DATE_EPOCH": "yesterday"})
    # The last time a zip entry holds, and after it (2108, and a time no platform has).
    latest = timestamp_from_environment({"SOURCE_DATE_EPOCH": "4354819198"})
    write_zip_atomically([entry("a.py")], tmp_path / "latest.zip", latest)
    with zipfile.ZipFile(tmp_path / "latest.zip") as archive:
        assert archive.getinfo("a.py").date_time == (2107, 12, 31, 23, 59, 58)
    for later in ("4354819200", "99999999999999999999"):
        with pytest.raises(ConfigError, match=f"SOURCE_DATE_EPOCH={later} is after 2107"):
            timestamp_from_environment({"SOURCE_DATE_EPOCH": later})


def test_distributions_are_counted_by_their_metadata(tmp_path: Path) -> None:
    stats = write_zip_atomically(
        [entry("six.py"), entry("six-1.0.dist-info/METADATA"), entry("x/y.dist-info/METADATA")],
        tmp_path / "out.zip",
        DEFAULT_EPOCH,
    )
    assert stats.distributions == 1


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.py", "a/../../b.py", "a\\b.py"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match="unsafe"):
        write_zip_atomically([entry(name)], tmp_path / "out.zip", DEFAULT_EPOCH)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_keeps_the_old_zip_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    output = tmp_path / "out.zip"
    output.write_bytes(b"the good zip")

    def refuse(stats: ArchiveStats) -> None:
        raise OutputError("too big")

    with pytest.raises(OutputError, match="too big"):
        write_zip_atomically([entry("a.py")], output, DEFAULT_EPOCH, check=refuse)
    assert output.read_bytes() == b"the good zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip"]


def test_two_entries_for_one_name_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConflictError, match=r"same place.*index\.py"):
        write_zip_atomically(
            [entry("index.py"), entry("index.py")], tmp_path / "out.zip", DEFAULT_EPOCH
        )


def test_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        write_zip_atomically([entry("a.py")], tmp_path, DEFAULT_EPOCH)


def tar_with(*members: tuple[str, bytes | None, str | None]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                archive.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755 if name.endswith("tool") else 0o600
                archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def test_tar_from_the_container_loses_its_prefix_and_keeps_only_the_exec_bit() -> None:
    archive = tar_with(
        ("target", None, None),
        ("target/pkg/__init__.py", b"A", None),
        ("target/bin/tool", b"#!", None),
        ("target/pkg/alias.py", None, "__init__.py"),
    )
    entries = {e.name: e for e in entries_from_tar(archive, "target")}
    assert sorted(entries) == ["bin/tool", "pkg/__init__.py", "pkg/alias.py"]
    assert entries["bin/tool"].executable
    assert not entries["pkg/__init__.py"].executable
    with entries["pkg/alias.py"].open() as handle:
        assert handle.read() == b"A"


def test_a_link_out_of_the_installed_tree_is_refused() -> None:
    archive = tar_with(("target/pkg/secret", None, "../../../etc/shadow"))
    with pytest.raises(OutputError, match="outside the installed tree"):
        entries_from_tar(archive, "target")


def test_project_files_are_named_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "a.json").write_text("{}")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh")
    os.chmod(script, 0o700)
    entries = entries_from_files(tmp_path, [tmp_path / "config" / "a.json", script])
    assert [(e.name, e.executable) for e in entries] == [("config/a.json", False), ("run.sh", True)]


def test_distribution_sizes_follow_each_record() -> None:
    record = (
        b"pkg/__init__.py,sha256=x,3\npkg/data.bin,,\n"
        b"../../../bin/tool,,\npkg-1.0.dist-info/RECORD,,\n"
    )
    sizes = distribution_sizes(
        [
            entry("pkg/__init__.py", b"abc"),
            entry("pkg/data.bin", b"12345"),
            entry("bin/tool", b"#!"),
            entry("pkg-1.0.dist-info/RECORD", record),
            entry("other.py", b"not listed"),
        ]
    )
    assert sizes == {"pkg": 3 + 5 + 2 + len(record)}


def zipfile_reference(entries: list[Entry], path: Path, timestamp: int) -> bytes:
    """The zip as zipfile's own writer makes it (ZipFile.open(info, "w")), for comparison,
    sealed as the writer seals it: the comment ends with the sha256 of every byte before it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.comment = SEAL + b"0" * 64
        for item in sorted(entries, key=lambda e: e.name):
            info = zipfile.ZipInfo(item.name, date_time=time.gmtime(timestamp)[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            mode = 0o755 if item.executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.file_size = item.size
            with item.open() as source, archive.open(info, "w") as target:
                target.write(source.read())
    sealed_again(path)
    return path.read_bytes()


MIXED = [
    entry("empty.txt", b""),
    entry("bin/tool", b"#!/bin/sh\n", executable=True),
    entry("päckage/ünïcode.py", "x = 'ü'\n".encode()),
    entry("big/random.bin", random.Random(1).randbytes(3 << 20)),
    entry("big/text.py", b"value = 1\n" * 200_000),
    *[entry(f"many/m{n:03}.py", f"n = {n}\n".encode() * 800) for n in range(120)],
]


def test_the_parallel_writer_writes_the_bytes_zipfile_writes(tmp_path: Path) -> None:
    ours = write_zip_atomically(MIXED, tmp_path / "ours.zip", DEFAULT_EPOCH)
    reference = zipfile_reference(MIXED, tmp_path / "reference.zip", DEFAULT_EPOCH)
    assert ours.path.read_bytes() == reference


def test_a_written_zip_is_sealed_and_its_sha256_is_the_files(tmp_path: Path) -> None:
    stats = write_zip_atomically(MIXED[:5], tmp_path / "sealed.zip", DEFAULT_EPOCH)
    data = stats.path.read_bytes()
    assert zip_intact(stats.path)
    assert data[-76:-64] == SEAL
    assert hashlib.sha256(data[:-64]).hexdigest().encode() == data[-64:]
    assert stats.sha256 == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(stats.path) as archive:  # still a zip every reader opens
        assert archive.testzip() is None


@pytest.mark.parametrize("change", ["zip -g", "truncated", "byte flipped", "unsealed"])
def test_a_zip_changed_after_it_was_written_is_not_intact(tmp_path: Path, change: str) -> None:
    path = write_zip_atomically(MIXED[:5], tmp_path / "changed.zip", DEFAULT_EPOCH).path
    data = path.read_bytes()
    if change == "zip -g":  # an entry added, the comment (and so the seal) kept
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("extra.py", "ADDED = True\n")
        with zipfile.ZipFile(path) as archive:
            assert archive.comment.endswith(data[-76:])
    elif change == "truncated":
        path.write_bytes(data[: len(data) // 2] + data[-100:])
    elif change == "byte flipped":
        path.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    else:  # a zip of an earlier version: no seal at all
        path.write_bytes(data[:-76])
    assert not zip_intact(path)


def test_unchanged_entries_reuse_the_replaced_zips_deflated_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.zip"
    write_zip_atomically(MIXED, output, DEFAULT_EPOCH)
    changed = [entry("big/text.py", b"value = 2\n" * 200_000), *MIXED[:4], *MIXED[5:]]
    fresh = zipfile_reference(changed, tmp_path / "fresh.zip", DEFAULT_EPOCH)
    compressed: list[str] = []
    original = deflate_module._compress_file

    def counting(item: Entry, data: bytes | None = None) -> tuple[int, bytes]:
        compressed.append(item.name)
        return original(item, data)

    monkeypatch.setattr(deflate_module, "_compress_file", counting)
    write_zip_atomically(changed, output, DEFAULT_EPOCH)
    # Deflated again: the changed entry, and what came before the first entry that showed
    # this zlib deflates as the replaced zip's writer did (small entries); not the rest.
    assert "big/text.py" in compressed
    assert len(compressed) < len(MIXED) // 2
    assert output.read_bytes() == fresh


# ---- a wheel's deflated bytes, copied --------------------------------------------------------

#: A wheel's writer: deflated at level 9, so its bytes differ from this writer's (level 6).
WHEEL_LEVEL = 9
WHEEL_MEMBERS = {
    "pkg/text.py": b"value = 1\n" * 20_000,
    "pkg/small.py": b"x = 1\n",
    "pkg/big.bin": b"abc" * (3 << 20),  # over the size read whole: compared a chunk at a time
    "pkg/stored.txt": b"stored, not deflated\n" * 100,
}


def a_wheel(path: Path) -> dict[str, Shipped]:
    """A wheel of ``WHEEL_MEMBERS`` (one of them stored), and where it holds each."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=WHEEL_LEVEL) as wheel:
        for name, data in WHEEL_MEMBERS.items():
            stored = name.endswith("stored.txt")
            wheel.writestr(name, data, zipfile.ZIP_STORED if stored else None)
    with zipfile.ZipFile(path) as wheel:
        return {
            info.filename: Shipped(path, info.header_offset, info.compress_size, info.file_size)
            for info in wheel.infolist()
        }


def wheel_bytes(path: Path, name: str) -> bytes:
    """A member's data as the wheel stores it."""
    with zipfile.ZipFile(path) as wheel:
        info = wheel.getinfo(name)
    data = path.read_bytes()
    start = (
        info.header_offset
        + 30
        + int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    )
    start += int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    return data[start : start + info.compress_size]


def from_wheel(name: str, data: bytes, shipped: dict[str, Shipped]) -> Entry:
    return dataclasses.replace(entry(name, data), shipped=shipped[name])


def test_a_file_as_its_wheel_shipped_it_gets_the_wheels_deflated_bytes(tmp_path: Path) -> None:
    shipped = a_wheel(tmp_path / "demo.whl")
    entries = [from_wheel(name, data, shipped) for name, data in WHEEL_MEMBERS.items()]
    ours = write_zip_atomically(entries, tmp_path / "ours.zip", DEFAULT_EPOCH)
    with zipfile.ZipFile(ours.path) as archive:
        assert archive.testzip() is None
        assert {i.filename: archive.read(i) for i in archive.infolist()} == WHEEL_MEMBERS
        marked = {i.filename for i in archive.infolist() if i.extra}
    assert marked == {"pkg/text.py", "pkg/small.py", "pkg/big.bin"}  # not the stored one
    for name in marked:
        assert wheel_bytes(ours.path, name) == wheel_bytes(tmp_path / "demo.whl", name)
    # And the zip is as byte-reproducible as any: the same entries give the same bytes.
    again = write_zip_atomically(entries[::-1], tmp_path / "again.zip", DEFAULT_EPOCH)
    assert again.sha256 == ours.sha256


def changed_file(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize("name", ["pkg/text.py", "pkg/big.bin"])
def test_a_file_changed_since_its_wheel_shipped_it_is_deflated_here(
    tmp_path: Path, name: str
) -> None:
    shipped = a_wheel(tmp_path / "demo.whl")
    edited = changed_file(WHEEL_MEMBERS[name])
    entries = [from_wheel(name, edited, shipped)]
    ours = write_zip_atomically(entries, tmp_path / "ours.zip", DEFAULT_EPOCH)
    plain = [entry(name, edited)]
    assert ours.path.read_bytes() == zipfile_reference(plain, tmp_path / "ref.zip", DEFAULT_EPOCH)


def test_a_wheel_that_changed_since_it_was_unpacked_is_not_copied(tmp_path: Path) -> None:
    wheel = tmp_path / "demo.whl"
    shipped = a_wheel(wheel)
    entries = [from_wheel(name, WHEEL_MEMBERS[name], shipped) for name in ("pkg/text.py",)]
    # The same place in the wheel now holds another member's bytes (same sizes, valid deflate).
    other = dict(WHEEL_MEMBERS)
    other["pkg/text.py"] = changed_file(other["pkg/text.py"])
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=WHEEL_LEVEL) as rewritten:
        for name, data in other.items():
            rewritten.writestr(name, data)
    ours = write_zip_atomically(entries, tmp_path / "ours.zip", DEFAULT_EPOCH)
    plain = [entry("pkg/text.py", WHEEL_MEMBERS["pkg/text.py"])]
    assert ours.path.read_bytes() == zipfile_reference(plain, tmp_path / "ref.zip", DEFAULT_EPOCH)
    wheel.unlink()  # a wheel that is gone: the same
    gone = write_zip_atomically(entries, tmp_path / "gone.zip", DEFAULT_EPOCH)
    assert gone.sha256 == ours.sha256


def test_a_record_claiming_more_deflated_bytes_than_a_file_can_take_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept tree's record may be hostile: it never makes the writer read gigabytes."""
    shipped = a_wheel(tmp_path / "demo.whl")
    name = "pkg/small.py"
    huge = dataclasses.replace(shipped[name], compressed=10 << 30)
    reads: list[int] = []
    real = os.pread

    def counting(descriptor: int, size: int, offset: int) -> bytes:
        reads.append(size)
        return real(descriptor, size, offset)

    monkeypatch.setattr(os, "pread", counting)
    entries = [dataclasses.replace(entry(name, WHEEL_MEMBERS[name]), shipped=huge)]
    ours = write_zip_atomically(entries, tmp_path / "ours.zip", DEFAULT_EPOCH)
    assert reads == []
    plain = [entry(name, WHEEL_MEMBERS[name])]
    assert ours.path.read_bytes() == zipfile_reference(plain, tmp_path / "ref.zip", DEFAULT_EPOCH)


def test_a_wheels_deflated_bytes_in_the_replaced_zip_are_not_reused_for_a_file_deflated_here(
    tmp_path: Path,
) -> None:
    shipped = a_wheel(tmp_path / "demo.whl")
    output = tmp_path / "out.zip"
    names = ["pkg/text.py", "pkg/big.bin"]
    write_zip_atomically(
        [*MIXED, *(from_wheel(name, WHEEL_MEMBERS[name], shipped) for name in names)],
        output,
        DEFAULT_EPOCH,
    )
    # The same files, now not from a wheel (another source built them): the zip is the one
    # from scratch, though the replaced one holds entries of those names, sizes and bytes.
    plain = [*MIXED, *(entry(name, WHEEL_MEMBERS[name]) for name in names)]
    write_zip_atomically(plain, output, DEFAULT_EPOCH)
    assert output.read_bytes() == zipfile_reference(plain, tmp_path / "ref.zip", DEFAULT_EPOCH)


def test_deflated_bytes_of_another_writer_are_not_reused(tmp_path: Path) -> None:
    output = tmp_path / "out.zip"
    # Same names, sizes, CRCs and contents, deflated at another level: valid, but not the
    # bytes this writer makes, so nothing of it is reused and the zip is the one from scratch.
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as other:
        for item in MIXED:
            with item.open() as source:
                other.writestr(item.name, source.read())
    write_zip_atomically(MIXED, output, DEFAULT_EPOCH)
    assert output.read_bytes() == zipfile_reference(MIXED, tmp_path / "ref.zip", DEFAULT_EPOCH)
