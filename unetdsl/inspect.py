"""Read the provenance unetdsl stores in its files *without running any code from them*:
TorchScript (.pt) and torch.export (.pt2) archives are zip files (their extra files are read
with zipfile), ONNX is protobuf (read with onnx.load, no execution), safetensors has a JSON
header (read by hand). Nothing is unpickled, loaded into torch or executed."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from .errors import UnetdslError

PREFIX = "unetdsl/"


class InspectError(UnetdslError):
    pass


def _from_zip(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            marker = "/extra/" + PREFIX
            if marker in name:
                out[PREFIX + name.split(marker, 1)[1]] = archive.read(name).decode("utf-8", errors="replace")
    return out


def _from_safetensors(path: Path) -> dict[str, str]:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InspectError(f"{path}: too short for a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > 100 * 2**20:
            raise InspectError(f"{path}: implausible safetensors header size {size}")
        header = json.loads(fh.read(size))
    meta = header.get("__metadata__") or {}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    meta = {k: v for k, v in meta.items() if k.startswith(PREFIX)}
    meta["tensors"] = str(len(tensors))
    return meta


def _from_onnx(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        raise InspectError("reading .onnx files needs the 'onnx' package: pip install 'unetdsl[onnx]'") from None
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith(PREFIX)}


def read_metadata(path: str | Path) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        raise InspectError(f"{p}: no such file")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    try:
        if magic.startswith(b"PK"):
            meta = _from_zip(p)
        elif p.suffix == ".onnx":
            meta = _from_onnx(p)
        elif p.suffix == ".safetensors":
            meta = _from_safetensors(p)
        else:
            raise InspectError(f"{p}: not a file unetdsl writes (.pt, .pt2, .onnx, .safetensors)")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, struct.error) as exc:
        raise InspectError(f"{p}: unreadable ({exc})") from None
    except InspectError:
        raise
    except Exception as exc:  # onnx's protobuf errors have no common base we can import lazily
        raise InspectError(f"{p}: unreadable ({type(exc).__name__}: {exc})") from None
    if not any(k.startswith(PREFIX + "spec") for k in meta):
        raise InspectError(f"{p}: carries no unetdsl provenance (not written by unetdsl?)")
    return meta
