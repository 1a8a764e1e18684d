"""The safetensors container, read and written with NumPy alone: an 8-byte little-endian
header length, a JSON header (``__metadata__`` plus one entry per tensor: dtype, shape,
data_offsets) and the raw little-endian tensors. docs/model-format.md describes the layout
and what a reader refuses; ``fastlstm.io.files`` puts model files on top of it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from .atomic import atomic_write, fspath, read_bytes

__all__ = ["save_safetensors", "load_safetensors"]

# NumPy has no bfloat16: BF16 tensors are read and written as their bits, uint16 arrays (a
# fastlstm file holds no other 16-bit tensors). I8 holds int8 weights of quantized models.
_ST_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"),
              "BF16": np.dtype("<u2"), "I8": np.dtype("i1")}
_ST_NAMES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64",
             np.dtype("uint16"): "BF16", np.dtype("int8"): "I8"}
_MAX_HEADER = 100_000_000  # bytes: the safetensors crate's limit, and the C++ reader's
def save_safetensors(path, tensors, metadata=None):
    """Writes ``tensors`` (name -> float32/float64/int64/int8 array, or uint16 for the bits of
    bf16 values, written as BF16) and ``metadata`` (str -> str) to a safetensors file,
    atomically. 8-byte tensors come first, then the narrower ones, so that every tensor is
    aligned to its element size in the file."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping name -> array, got {type(tensors).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping str -> str, got {type(metadata).__name__}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str -> str, got {k!r}: {type(v).__name__}")
    arrays = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor names must be non-empty strings other than "
                             f"'__metadata__', got {name!r}")
        arr = np.asarray(value)
        if arr.dtype not in _ST_NAMES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; a fastlstm file holds "
                            "float32, float64, int64, int8 or uint16 (bf16 bits)")
        # np.array, not ascontiguousarray, which turns 0-d arrays into 1-d ones
        arrays.append((name, np.array(arr, dtype=arr.dtype.newbyteorder("<"), order="C")))
    arrays.sort(key=lambda item: -item[1].dtype.itemsize)  # stable: ties keep their order
    header = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, arr in arrays:
        header[name] = {"dtype": _ST_NAMES[arr.dtype.newbyteorder("=")],
                        "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    chunks = [len(text).to_bytes(8, "little"), text]
    chunks += [arr.tobytes() for _, arr in arrays]
    atomic_write(path, chunks)


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def load_safetensors(path):
    """Reads a safetensors file strictly; returns ``(tensors, metadata)`` (dicts, tensors as
    native-endian NumPy arrays in header order, metadata ``{}`` if absent).

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for anything
    malformed: truncation, a header length past the end, a header that is not a UTF-8 JSON
    object, unknown dtypes, shapes that do not match the byte ranges, ranges out of bounds,
    overlapping or leaving holes in the data.
    """
    path = fspath(path)
    return _parse_safetensors(read_bytes(path, "model file"), path)


def _parse_safetensors(data, path):
    where = repr(path)
    size = len(data)
    if size < 8:
        raise ValueError(f"{where} is truncated: {size} bytes, a safetensors file starts with "
                         "an 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > size - 8:
        raise ValueError(f"{where} is truncated or not a safetensors file: the header length "
                         f"is {n} bytes but only {size - 8} follow")
    if n > _MAX_HEADER:
        raise ValueError(f"{where}: header length {n} exceeds the {_MAX_HEADER}-byte limit")
    raw = data[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: the header is not valid UTF-8 ({e.reason} at byte "
                         f"{8 + e.start})") from None
    if not text.startswith("{"):
        raise ValueError(f"{where}: the header must be a JSON object starting with '{{'")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: the header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: the header must be a JSON object")
    metadata = header.pop("__metadata__", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{where}: __metadata__ must be an object of strings")
    body = memoryview(data)[8 + n:]
    spans = []
    tensors = {}
    for name, info in header.items():
        what = f"{where}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{what}: its entry must be an object with exactly dtype, shape "
                             f"and data_offsets, got {info!r}"[:300])
        dtype = _ST_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise ValueError(f"{what} has dtype {info['dtype']!r}; supported: "
                             f"{', '.join(_ST_DTYPES)}")
        shape = info["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise ValueError(f"{what}: shape must be a list of non-negative integers, got "
                             f"{shape!r}"[:300])
        offs = info["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise ValueError(f"{what}: data_offsets must be [begin, end] with 0 <= begin <= "
                             f"end, got {offs!r}"[:300])
        if offs[1] > len(body):
            raise ValueError(f"{what}: data_offsets {offs} run past the end of the data "
                             f"({len(body)} bytes): the file is truncated")
        nbytes = math.prod(shape) * dtype.itemsize
        if offs[1] - offs[0] != nbytes:
            raise ValueError(f"{what}: shape {shape} of {info['dtype']} needs {nbytes} bytes "
                             f"but data_offsets {offs} span {offs[1] - offs[0]}")
        spans.append((offs[0], offs[1], name))
        arr = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offs[0])
        tensors[name] = arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            raise ValueError(f"{where}: tensor {name!r} [{begin}, {end}) overlaps tensor "
                             f"{prev!r} (which ends at {pos})")
        if begin > pos:
            raise ValueError(f"{where}: data bytes [{pos}, {begin}) belong to no tensor")
        pos, prev = end, name
    if pos != len(body):
        raise ValueError(f"{where}: data bytes [{pos}, {len(body)}) belong to no tensor "
                         "(trailing garbage or a corrupt header)")
    return tensors, dict(metadata)

