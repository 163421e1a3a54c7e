"""`unetdsl inspect` of hostile files (issue 22, class 11): whatever an archive holds, inspect ends
in its provenance or an InspectError, quickly and in bounded memory, and the CLI exits 1 without a
traceback. Mirrors unetdsl/inspect.py."""

from __future__ import annotations

import json
import resource
import struct
import time
import zipfile
from pathlib import Path

import pytest

import unetdsl
from unetdsl.cli import main
from unetdsl.inspect import (
    MAX_AOTI_METADATA,
    MAX_JSON_OBJECTS,
    MAX_MEMBERS,
    MAX_ONNX_FIELDS,
    MAX_SAFETENSORS_HEADER,
    InspectError,
    read_metadata,
)

from .conftest import TINY


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inspect") / "good.pt"
    unetdsl.export(unetdsl.build_model(TINY, seed=0), path)
    return path


def refused(path: Path, capsys: pytest.CaptureFixture[str], says: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InspectError, match=says):
        read_metadata(path)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert time.perf_counter() - start < 20


def rewrite(src: Path, dst: Path, *, extra: dict[str, bytes] | None = None, compress: int | None = None,
            flag_bits: int | None = None, members: str = "/extra/unetdsl/") -> Path:
    """`src`'s members into `dst`, those matching `members` with another compression or flags."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            data = a.read(info.filename)
            if members in info.filename and compress is not None:
                info.compress_type = compress
            b.writestr(info, data)
        for name, data in (extra or {}).items():
            b.writestr(name, data)
    if flag_bits is not None:  # set the flag in the local and central headers of the matching members
        raw = bytearray(dst.read_bytes())
        for sig, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
            at = raw.find(sig)
            while at >= 0:
                (n,) = struct.unpack("<H", raw[at + name_len_at:at + name_len_at + 2])
                if members.encode() in raw[at + name_at:at + name_at + n]:
                    raw[at + flag_at:at + flag_at + 2] = struct.pack("<H", flag_bits)
                at = raw.find(sig, at + 4)
        dst.write_bytes(bytes(raw))
    return dst


def test_a_good_artifact_is_read(artifact: Path) -> None:
    assert read_metadata(artifact)["unetdsl/spec_id"].startswith("v2:sha256:")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99])
def test_members_in_a_compression_torch_never_writes_are_refused(method: int, artifact: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite(artifact, tmp_path / "m.pt", compress=method if method != 99 else zipfile.ZIP_DEFLATED)
    if method == 99:  # an unknown method number, patched into the headers
        raw = bytearray(bad.read_bytes())
        for sig, at_method in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            at = raw.find(sig)
            while at >= 0:
                raw[at + at_method:at + at_method + 2] = struct.pack("<H", 99)
                at = raw.find(sig, at + 4)
        bad.write_bytes(bytes(raw))
    refused(bad, capsys, "compression method|unreadable")


def test_encrypted_members_are_refused(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(rewrite(artifact, tmp_path / "m.pt", flag_bits=0x1), capsys, "encrypted|unreadable")


def test_corrupt_deflated_members_are_refused(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite(artifact, tmp_path / "m.pt", compress=zipfile.ZIP_DEFLATED)
    raw = bytearray(bad.read_bytes())
    at = raw.find(b"unetdsl/spec.json")
    raw[at + 40:at + 80] = b"\xff" * 40  # inside the deflate stream of the spec's member
    bad.write_bytes(bytes(raw))
    refused(bad, capsys, "unreadable")


def test_many_aoti_metadata_files_are_refused(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.dumps({"AOTI_PLATFORM": "linux", "AOTI_DEVICE_KEY": "cpu", "pad": "x" * 2**20}).encode()
    extra = {f"m/data/aotinductor/m{i}/m.wrapper_metadata.json": meta for i in range(MAX_AOTI_METADATA + 1)}
    refused(rewrite(artifact, tmp_path / "m.pt", extra=extra), capsys, "AOTInductor metadata files")


def test_an_archive_declaring_millions_of_members_is_refused_before_it_is_listed(tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # an end record claiming more members than any artifact has (zip64 form: the 16-bit count is 0xFFFF)
    count = MAX_MEMBERS + 1
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, 0, 0)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, 0, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    bad = tmp_path / "m.pt"
    bad.write_bytes(zip64 + locator + end)
    refused(bad, capsys, f"an archive of {count} members")


def test_a_sparse_all_zero_onnx_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.onnx"
    with open(bad, "wb") as fh:
        fh.truncate(2**30)  # 1 GiB of zeros, sparse: parsed byte by byte it took minutes
    refused(bad, capsys, "field number 0")


def test_an_onnx_file_of_endless_small_fields_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x01" * (MAX_ONNX_FIELDS + 10))  # ir_version = 1, again and again
    refused(bad, capsys, "top-level protobuf fields")


@pytest.mark.parametrize("header", [
    b"{" + b" " * (MAX_SAFETENSORS_HEADER + 1) + b"}",                       # over the bound: not even read
    b"{" + b",".join(b'"k%d":{}' % i for i in range(MAX_JSON_OBJECTS + 1)) + b"}",  # a million objects
    b"[" * 200_000 + b"]" * 200_000,                                          # nesting
])
def test_safetensors_headers_that_would_take_gigabytes_are_refused(header: bytes, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(bad, capsys, "not a file unetdsl wrote|unreadable")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 400 * 1024  # KiB: well under 400 MiB


def test_random_damage_to_an_artifact_ends_in_provenance_or_a_refusal(artifact: Path, tmp_path: Path) -> None:
    """A property over byte-level damage: flipped bytes, cuts and splices anywhere in a real artifact."""
    import random

    good = artifact.read_bytes()
    rng = random.Random(0)
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        raw = bytearray(good)
        kind = i % 3
        if kind == 0:
            for _ in range(rng.randint(1, 16)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif kind == 1:
            raw = raw[:rng.randrange(len(raw))]
        else:
            a, b = sorted(rng.randrange(len(raw)) for _ in range(2))
            raw = raw[:a] + raw[b:] + raw[a:b]
        path = tmp_path / f"d{i}.pt"
        path.write_bytes(bytes(raw))
        try:
            read_metadata(path)
            outcomes["read"] += 1
        except InspectError:
            outcomes["refused"] += 1
        path.unlink()
    assert outcomes["read"] > 0 and outcomes["refused"] > 0
