"""Weights in safetensors, loaded strictly: every tensor used, every parameter filled, no
silent cast, no NaN/Inf. Never a pickle.

    load_weights(model, "w.safetensors")   # WeightsError listing the first offenders
    save(model, "m.safetensors")           # weights + resolved spec + version in the metadata
    unetdsl.load("m.safetensors")          # rebuilds the model from the stored spec (api.py)
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import struct
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UnetdslError, brief
from .fsutil import atomic_path, check_output
from .provenance import ID_KEY, SPEC_KEY, VERSION_KEY
from .version import __version__

FIRST = 8  # how many offenders an error lists


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WeightsError(UnetdslError):
    """A weights file that does not fit the model (or is not a readable safetensors file)."""


def _listing(names: list[str]) -> str:
    more = f" ... and {len(names) - FIRST} more" if len(names) > FIRST else ""
    return ", ".join(names[:FIRST]) + more


# safetensors dtype names unetdsl reads, and the element size each occupies in the file
READABLE: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
MAX_HEADER = 100 * 2**20  # safetensors' own limit for the JSON header
MAX_TENSORS = 1_000_000
ALIGN = 64  # bytes: a tensor used where it was read must start on this boundary (the CPU allocator's own)
_NOT_SAFETENSORS = "; truncated or another format? unetdsl reads weights only as safetensors, never pickles"


@dataclass(frozen=True)
class Entry:
    """One tensor as the header describes it, before any of its bytes are read."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # where its bytes start in the file
    nbytes: int = 0

    @property
    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point


def _header_hook() -> Any:
    """json.loads' object hook for a header: duplicate names refused, and at most one object per
    allowed tensor (plus the header and its metadata) built while parsing, so a 100 MiB header of
    `{}`s is refused before it becomes millions of dicts (the bound on the whole, not per entry)."""
    built = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal built
        built += 1
        if built > MAX_TENSORS + 2:
            raise WeightsError(f"the header holds more than {MAX_TENSORS + 2} JSON objects; at most {MAX_TENSORS} "
                               "tensors are read")
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise WeightsError(f"the header names tensor {key!r} twice (readers disagree on which one wins)")
            seen[key] = value
        return seen

    return hook


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Entry], dict[str, str]]:
    """The tensors (name -> dtype, shape) and metadata a safetensors file declares, checked
    against the file itself — duplicate names, unknown dtypes, offsets outside the file or sizes
    that disagree with the shapes are refused — without reading any tensor data."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p}: no such weights file")
    if not p.is_file():
        raise WeightsError(f"{p}: not a regular file (a directory or a device?); give a .safetensors file")
    try:
        with open(p, "rb") as fh:
            size_on_disk = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{p}: {len(head)} bytes: too short for a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or n > size_on_disk - 8:
                raise WeightsError(f"{p}: not a safetensors file (its header claims {n} bytes){_NOT_SAFETENSORS}")
            raw = fh.read(n)
    except OSError as exc:
        raise WeightsError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_header_hook())
    except WeightsError as exc:
        raise WeightsError(f"{p}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise WeightsError(f"{p}: not a safetensors file (unreadable header: {type(exc).__name__}){_NOT_SAFETENSORS}") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{p}: not a safetensors file (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WeightsError(f"{p}: its __metadata__ is not a mapping of strings to strings")
    if len(header) > MAX_TENSORS:
        raise WeightsError(f"{p}: {len(header)} tensors; at most {MAX_TENSORS} are read")
    data_size = size_on_disk - 8 - n
    entries: dict[str, Entry] = {}
    for name, info in header.items():
        entries[name] = _entry(p, name, info, data_size, 8 + n)
    _refuse_overlaps(p, entries, 8 + n, size_on_disk)
    return entries, meta


def _refuse_overlaps(p: Path, entries: Mapping[str, Entry], start: int, end: int) -> None:
    """The tensors' bytes must tile the data section exactly, as safetensors requires: tensors
    read as views of the file must not share bytes (one would change with the other)."""
    at = start
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].offset, kv[1].nbytes)):
        if e.offset != at:
            what = "overlaps the tensor before it" if e.offset < at else f"leaves {e.offset - at} bytes unused before it"
            raise WeightsError(f"{p}: tensor {brief(name, 60)} {what}; the file is corrupt")
        at += e.nbytes
    if at != end:
        raise WeightsError(f"{p}: {end - at} bytes after the last tensor; the file is truncated or corrupt")


def _entry(p: Path, name: str, info: Any, data_size: int, data_start: int) -> Entry:
    shown = brief(name, 60)
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise WeightsError(f"{p}: tensor {shown}: not a safetensors tensor entry")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in READABLE:
        raise WeightsError(f"{p}: tensor {shown} has dtype {brief(str(dtype), 20)}; unetdsl reads "
                           f"{', '.join(READABLE)} (convert the file first, e.g. float8 to bfloat16)")
    ints = (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
            and all(type(v) is int and 0 <= v < 2**63 for v in [*shape, *offsets]))
    if not ints or len(shape) > 8:
        raise WeightsError(f"{p}: tensor {shown}: shape and offsets must be small lists of non-negative integers")
    torch_dtype, itemsize = READABLE[dtype]
    numel = 1
    for d in shape:
        numel *= d
    start, end = offsets
    if not start <= end <= data_size or end - start != numel * itemsize:
        raise WeightsError(f"{p}: tensor {shown}: {shape} of {dtype} needs {numel * itemsize} bytes but its "
                           f"offsets {start}..{end} {'lie outside the file' if end > data_size else 'disagree'}; "
                           "the file is truncated or corrupt")
    return Entry(torch_dtype, tuple(shape), data_start + start, end - start)


def read_tensors(path: str | os.PathLike[str], names: Iterable[str] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (all, or `names`) and the metadata of a safetensors file whose header
    read_header accepted; a WeightsError saying why not.

    The file is read once into memory the model owns (not mapped): a loaded model never changes,
    nor dies with SIGBUS, because its file was overwritten or truncated afterwards. One read
    straight into the buffer the tensors view (no second copy), so the weights are held once;
    measured against mapping, benchmarks/load_speed.py. A tensor whose bytes do not start on an
    ALIGN-byte boundary is copied: CPU kernels take other SIMD paths on unaligned data, and
    results would differ from the saved model's in the last bits. `save` writes files in which
    every tensor of a whole number of ALIGN bytes is aligned."""
    p = Path(path)
    entries, metadata = read_header(p)
    wanted = list(entries) if names is None else [k for k in names if k in entries]
    try:
        owned = _read_owned(p)
    except OSError as exc:
        raise WeightsError(f"{p}: cannot read the file: {exc.strerror or exc}") from None
    return {k: _view(owned, entries[k]) for k in wanted}, metadata


# reading a large file into fresh memory is bound by faulting its pages in, which threads share out:
# measured on 2 cores, 1.1 GiB in 0.87 s by one read, 0.42 s by two (huge pages were slower still
# in a fresh process: the kernel compacts memory for them on first touch)
READ_CHUNK = 64 << 20
MAX_READERS = 4


def _read_owned(p: Path) -> torch.Tensor:
    """The whole file as an owned (N,) uint8 tensor (the allocator aligns it to 64 bytes), read
    straight into it, in parallel slices for a large file; an OSError if the file changes size
    while it is read."""
    buffer = None
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        buffer = torch.empty(size, dtype=torch.uint8)
        view = memoryview(buffer.numpy()).cast("B")  # type: ignore[arg-type]
        readers = max(1, min(MAX_READERS, torch.get_num_threads(), size // READ_CHUNK))
        if readers > 1 and hasattr(os, "preadv"):
            step = -(-size // readers)
            with ThreadPoolExecutor(readers) as pool:  # preadv releases the GIL
                list(pool.map(lambda lo: _read_range(fd, view, lo, min(size, lo + step)), range(0, size, step)))
        else:
            _read_range(fd, view, 0, size)
        if os.pread(fd, 1, size):
            raise OSError(errno.EIO, "the file grew while it was read")
    finally:
        os.close(fd)
    return buffer


def _read_range(fd: int, view: memoryview, start: int, end: int) -> None:
    at = start
    while at < end:
        n = os.preadv(fd, [view[at:end]], at) if hasattr(os, "preadv") else os.readv(fd, [view[at:end]])
        if not n:
            raise OSError(errno.EIO, f"the file shrank while it was read (at byte {at} of {end})")
        at += n


def _view(mapped: torch.Tensor, e: Entry) -> torch.Tensor:
    raw = mapped[e.offset:e.offset + e.nbytes]  # (nbytes,) uint8
    if (mapped.data_ptr() + e.offset) % ALIGN:
        raw = raw.clone()  # the allocator aligns (to 64 bytes)
    return raw.view(e.dtype).view(e.shape)


def check_entries(model: nn.Module, entries: Mapping[str, Entry], source: str) -> None:
    """Raise WeightsError unless the declared tensors fill `model`'s state exactly (names, shapes,
    kinds, one float dtype): checked from the header, before a byte of data is read."""
    state = model.state_dict()
    problems = []
    missing = sorted(set(state) - set(entries))
    unexpected = sorted(set(entries) - set(state))
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) the model needs: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) the model has no place for: "
                        f"{_listing([brief(k, 60)[1:-1] for k in unexpected])}")
    shared = sorted(set(state) & set(entries))
    shapes = [f"{k} {list(entries[k].shape)} (model: {list(state[k].shape)})" for k in shared
              if entries[k].shape != tuple(state[k].shape)]
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) of the wrong shape: {_listing(shapes)}")
    float_dtypes = sorted({_name(entries[k].dtype) for k in shared if entries[k].is_floating_point})
    kinds = [f"{k} {_name(entries[k].dtype)} (model: {_name(state[k].dtype)})" for k in shared
             if entries[k].is_floating_point != state[k].is_floating_point()]
    if kinds:
        problems.append(f"{len(kinds)} tensor(s) of the wrong kind: {_listing(kinds)}")
    if len(float_dtypes) > 1:
        problems.append(f"mixed floating dtypes {', '.join(float_dtypes)}: save the file in one dtype")
    if problems:
        raise WeightsError(f"{source} does not fit the model:\n  - " + "\n  - ".join(problems))


def check_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError unless `tensors` fills `model`'s state exactly, with finite values."""
    check_entries(model, {k: Entry(v.dtype, tuple(v.shape)) for k, v in tensors.items()}, source)
    bad = _non_finite(tensors)
    if bad:
        raise WeightsError(f"{source} does not fit the model:\n  - {len(bad)} tensor(s) holding NaN or Inf: {_listing(bad)}")


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating tensors holding a NaN or Inf. Tensors that lie end to end in one
    storage (views of one read buffer, `read_tensors`) are checked a run at a time: one reduction
    over the file's bytes instead of one per tensor (3x faster on a 300 M-parameter file); only a
    run that fails is searched tensor by tensor for the names."""
    floats = {k: v for k, v in tensors.items() if v.is_floating_point() and v.numel() > 0}
    by_storage: dict[tuple[int, torch.dtype], list[tuple[int, str]]] = {}
    for k, v in floats.items():
        where = (v.untyped_storage().data_ptr(), v.dtype) if v.is_contiguous() else (id(v), v.dtype)
        by_storage.setdefault(where, []).append((int(v.storage_offset()), k))
    suspects: list[str] = []
    for members in by_storage.values():
        members.sort()
        run = [members[0][1]]
        for (prev, prev_key), (offset, key) in itertools.pairwise(members):
            if offset == prev + floats[prev_key].numel():
                run.append(key)
            else:
                suspects += _failing_run(floats, run)
                run = [key]
        suspects += _failing_run(floats, run)
    return sorted(k for k in suspects if not _finite(floats[k]))


def _failing_run(floats: Mapping[str, torch.Tensor], run: list[str]) -> list[str]:
    """`run` if its tensors, one contiguous span of one storage, hold a NaN or Inf; else []."""
    first = floats[run[0]]
    if len(run) == 1:
        return [] if _finite(first) else run
    span = first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(),
                                   (sum(floats[k].numel() for k in run),), (1,))
    return [] if _finite(span) else run


def _finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in `t`: its least and greatest values are finite (NaN propagates through
    both). One reduction, nothing allocated: 6 GB/s here, where `isfinite(t).all()` makes 0.5."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _checked_tensors(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The file's tensors once they are known to fill `model` exactly: names and shapes from the
    header first (no data read for a file that cannot fit), then the values (NaN/Inf)."""
    entries, _ = read_header(path)
    check_entries(model, entries, str(path))
    tensors, _ = read_tensors(path)
    check_weights(model, tensors, str(path))
    return tensors


def materialize(model: nn.Module, path: str | os.PathLike[str], *, memory_format: str = "channels_last") -> torch.dtype | None:
    """Fill a model built on the meta device from a safetensors file, with the checks of
    `load_weights`: its parameters become the file's tensors, views of the one buffer the file is
    read into (no random init, no copy after the read; `read_tensors`), in the file's floating
    dtype, which is returned.
    `memory_format` is the one the model was built with (1x1 weights get their strides back)."""
    from .compiler import pointwise_weights_channels_last

    tensors = _checked_tensors(model, path)
    model.load_state_dict(tensors, strict=True, assign=True)  # meta tensors replaced by the file's
    if memory_format == "channels_last":
        pointwise_weights_channels_last(model)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    return next(iter(dtypes)) if dtypes else None


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> torch.dtype | None:
    """Fill `model` from a safetensors file, exactly. The model takes the file's floating dtype
    (an explicit, lossless step: the file says what it is); returns that dtype."""
    tensors = _checked_tensors(model, path)
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    dtype = next(iter(dtypes)) if dtypes else None
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_state_dict(tensors, strict=True)
    return dtype


# --- unetdsl's own checkpoint: weights + the spec that builds them ------------------------------


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """One safetensors file: the weights, and the resolved spec, spec id and version as metadata."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise WeightsError("unetdsl.save needs a model made by unetdsl.build_model (it stores model.spec)")
    meta = {SPEC_KEY: spec.stored_json(), ID_KEY: spec.spec_id, VERSION_KEY: __version__}
    target = check_output(path)
    with atomic_path(target) as tmp:
        write_safetensors(model.state_dict(), tmp, meta)
    return target


WRITTEN = {dtype: name for name, (dtype, _) in READABLE.items()}


def write_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """A safetensors file any reader takes, laid out so that `read_tensors` can use every tensor
    in place: the header is padded with spaces (the format allows it) to end on an ALIGN-byte
    boundary, and the tensors whose size is a whole number of ALIGN bytes come first, so each of
    them starts aligned (in the models unetdsl builds that is nearly all: channel counts are
    multiples of 16); the few others follow and are copied when read."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    unknown = sorted({str(v.dtype) for v in tensors.values() if v.dtype not in WRITTEN})
    if unknown:
        raise WeightsError(f"cannot write tensors of dtype {', '.join(unknown)} to safetensors")
    order = sorted(tensors, key=lambda k: (tensors[k].nbytes % ALIGN != 0, k))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    at = 0
    for k in order:
        t = tensors[k]
        header[k] = {"dtype": WRITTEN[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + t.nbytes]}
        at += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % ALIGN)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for k in order:  # each tensor's bytes, little-endian as the format says (as torch stores them here)
            fh.write(tensors[k].reshape(-1).view(torch.uint8).numpy().data)
