"""Read the provenance unetdsl stores in its files *without running any code from them*:
TorchScript (.pt), torch.export (.pt2) and AOTInductor (.aoti.pt2) archives are zip files
(their extra files are read with zipfile; an AOTInductor package's compiled library is not
loaded), ONNX is protobuf (read with onnx.load, no execution), safetensors has a JSON
header (read by hand). Nothing is unpickled, loaded into torch or executed."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from .errors import UnetdslError
from .provenance import PREFIX


class InspectError(UnetdslError):
    pass


MAX_VALUE = 2 * 2**20  # no provenance value unetdsl writes comes near this (the spec is at most 1 MiB)
MAX_ENTRIES = 64
# what a hostile file could make inspect hold or walk: far above anything unetdsl writes (a TorchScript
# file of Stable Diffusion's U-Net has ~1,700 members; a safetensors header ~1 kB per tensor; an ONNX
# model a dozen top-level fields, most of them metadata entries)
MAX_MEMBERS = 200_000
MAX_AOTI_METADATA = 16
MAX_SAFETENSORS_HEADER = 16 * 2**20
MAX_JSON_OBJECTS = 100_000
MAX_ONNX_FIELDS = 10_000
# zip members are read only when stored or deflated (what torch writes) and not encrypted
READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _zip_members(path: Path) -> int:
    """The member count an archive's end record declares, read before zipfile builds an object per
    member (a central directory of millions of entries would hold GBs). -1 if no record is found
    (zipfile then says why)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - (22 + 65535)))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return -1
    (total,) = struct.unpack("<H", tail[at + 10:at + 12])
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if total == 0xFFFF and locator >= 0 and locator + 20 <= len(tail):  # zip64: the count is in its own record
        (offset,) = struct.unpack("<Q", tail[locator + 8:locator + 16])
        with open(path, "rb") as fh:
            fh.seek(offset)
            record = fh.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            (total,) = struct.unpack("<Q", record[32:40])
    return total


def _readable(path: Path, info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise InspectError(f"{path}: member {info.filename[:100]!r} is encrypted; not a file unetdsl wrote")
    if info.compress_type not in READABLE:
        raise InspectError(f"{path}: member {info.filename[:100]!r} uses compression method {info.compress_type}; "
                           "not a file unetdsl wrote")


def _from_zip(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    members = _zip_members(path)
    if members > MAX_MEMBERS:
        raise InspectError(f"{path}: an archive of {members} members; not a file unetdsl wrote")
    aoti = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".wrapper_metadata.json") and "/aotinductor/" in info.filename:
                aoti += 1
                if aoti > MAX_AOTI_METADATA:
                    raise InspectError(f"{path}: more than {MAX_AOTI_METADATA} AOTInductor metadata files; "
                                       "not a file unetdsl wrote")
                _readable(path, info)
                out.update(_aoti_target(archive, info))
                continue
            marker = "/extra/" + PREFIX
            if marker not in info.filename:
                continue
            if len(out) >= MAX_ENTRIES:
                raise InspectError(f"{path}: more than {MAX_ENTRIES} unetdsl entries; not a file unetdsl wrote")
            _readable(path, info)
            with archive.open(info) as member:  # read at most the limit, whatever the header claims
                data = member.read(MAX_VALUE + 1)
            if len(data) > MAX_VALUE:
                raise InspectError(f"{path}: entry {info.filename!r} is over {MAX_VALUE} bytes; not a file unetdsl wrote")
            out[PREFIX + info.filename.split(marker, 1)[1]] = data.decode("utf-8", errors="replace")
    return out


def _aoti_target(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, str]:
    """What an AOTInductor package was compiled for (its wrapper's metadata, a JSON file beside
    the compiled library): the package runs only on a matching platform, device and ISA."""
    with archive.open(info) as member:
        data = member.read(MAX_VALUE + 1)
    found = _json(data) if len(data) <= MAX_VALUE else None
    if not isinstance(found, dict):
        return {}
    parts = [str(found.get(k, "")) for k in ("AOTI_PLATFORM", "AOTI_MACHINE", "AOTI_DEVICE_KEY")]
    isa, capability = found.get("AOTI_CPU_ISA"), found.get("AOTI_COMPUTE_CAPABILITY")
    target = " ".join(p for p in parts if p)
    if isa:
        target += f", CPU ISA {isa}"
    if capability:
        target += f", compute capability {capability}"
    return {PREFIX + "compiled_for": target}


def _from_safetensors(path: Path) -> dict[str, str]:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InspectError(f"{path}: too short for a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_SAFETENSORS_HEADER:
            raise InspectError(f"{path}: a safetensors header of {size} bytes; not a file unetdsl wrote")
        header = _json(fh.read(size))
    if not isinstance(header, dict):
        raise InspectError(f"{path}: not a safetensors file (its header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise InspectError(f"{path}: its __metadata__ is not a mapping")
    tensors = [k for k in header if k != "__metadata__"]
    meta = {k: v for k, v in meta.items() if k.startswith(PREFIX) and isinstance(v, str)}
    meta["tensors"] = str(len(tensors))
    return meta


def _json(data: bytes) -> object:
    """json.loads, refusing a document of more than MAX_JSON_OBJECTS objects while it is parsed
    (a 16 MiB header of `{}`s would otherwise become a million dicts)."""
    built = 0

    def counted(pairs: list[tuple[str, object]]) -> dict[str, object]:
        nonlocal built
        built += 1
        if built > MAX_JSON_OBJECTS:
            raise InspectError(f"a JSON document of more than {MAX_JSON_OBJECTS} objects; not a file unetdsl wrote")
        return dict(pairs)

    return json.loads(data, object_pairs_hook=counted)


def _varint(fh: BinaryIO) -> int:
    shift = result = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise InspectError("truncated protobuf")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise InspectError("malformed protobuf varint")


def _fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a small message (StringStringEntryProto: key 1, value 2)."""
    import io

    fh, out = io.BytesIO(data), {}
    while fh.tell() < len(data):
        tag = _varint(fh)
        if tag & 7 != 2:
            raise InspectError("unexpected field in a metadata entry")
        out[tag >> 3] = fh.read(_varint(fh))
    return out


def _from_onnx(path: Path) -> dict[str, str]:
    """ModelProto's metadata_props (field 14), read from the wire format by walking the top-level
    fields and *skipping* the others (the graph with its weights is never decoded or held)."""
    out: dict[str, str] = {}
    size = path.stat().st_size
    fields = 0
    with open(path, "rb") as fh:
        while fh.tell() < size:
            fields += 1
            if fields > MAX_ONNX_FIELDS:
                raise InspectError(f"more than {MAX_ONNX_FIELDS} top-level protobuf fields; not a file unetdsl wrote")
            tag = _varint(fh)
            field_number, wire = tag >> 3, tag & 7
            if field_number == 0:  # protobuf has no field 0: zeros (a sparse or blank file) are not a model
                raise InspectError("not an ONNX model (protobuf field number 0)")
            if wire == 0:
                _varint(fh)
            elif wire == 1:
                fh.seek(8, 1)
            elif wire == 5:
                fh.seek(4, 1)
            elif wire == 2:
                length = _varint(fh)
                if fh.tell() + length > size:
                    raise InspectError("truncated protobuf")
                if field_number != 14:
                    fh.seek(length, 1)
                    continue
                if length > MAX_VALUE:
                    raise InspectError(f"a metadata entry of {length} bytes; not a file unetdsl wrote")
                entry = _fields(fh.read(length))
                key = entry.get(1, b"").decode("utf-8", errors="replace")
                if key.startswith(PREFIX):
                    if len(out) >= MAX_ENTRIES:
                        raise InspectError(f"more than {MAX_ENTRIES} unetdsl entries; not a file unetdsl wrote")
                    out[key] = entry.get(2, b"").decode("utf-8", errors="replace")
            else:
                raise InspectError(f"not an ONNX model (protobuf wire type {wire} at the top level)")
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    p = Path(path)
    if not p.exists():
        raise InspectError(f"{p}: no such file")
    if not p.is_file():
        raise InspectError(f"{p}: not a regular file (a directory or a device?)")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InspectError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        if magic.startswith(b"PK"):
            meta = _from_zip(p)
        elif p.suffix == ".onnx":
            meta = _from_onnx(p)
        elif p.suffix == ".safetensors":
            meta = _from_safetensors(p)
        else:
            raise InspectError(f"{p}: not a file unetdsl writes (.pt, .pt2, .aoti.pt2, .onnx, .safetensors)")
    except (zipfile.BadZipFile, ValueError, RecursionError, struct.error, EOFError, zlib.error,
            NotImplementedError, RuntimeError, OverflowError, MemoryError) as exc:
        # corrupt members (a bad CRC, a broken deflate stream) and everything zipfile refuses to decode
        raise InspectError(f"{p}: unreadable ({type(exc).__name__})") from None
    except OSError as exc:
        raise InspectError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except InspectError as exc:
        raise InspectError(f"{p}: {exc}") if not str(exc).startswith(str(p)) else exc from None
    if not any(k.startswith(PREFIX + "spec") for k in meta):
        raise InspectError(f"{p}: carries no unetdsl provenance (not written by unetdsl?)")
    return meta
