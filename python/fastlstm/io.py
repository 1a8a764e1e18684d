"""Model files, import and export.

**Model files** are safetensors files (an 8-byte little-endian header length, a JSON header, the
raw little-endian tensors) with the architecture as JSON in ``__metadata__["fastlstm"]``; any
safetensors reader opens them, and this module reads and writes them with NumPy alone.

- :func:`save` / :func:`load`: a bare :class:`~fastlstm.LSTM` or :class:`~fastlstm.GRU`;
- :func:`save_model` / :func:`load_model`: a ``fastlstm.models.Sequential``;
- :func:`save_safetensors` / :func:`load_safetensors`: the container itself.

Writes are atomic (temporary file in the target's directory, fsync, ``os.replace``) and reads
are strict: a file that is truncated, has a malformed header, overlapping or out-of-range
tensors, or a format version this code does not know raises ValueError naming the file and the
problem. With ``example_input`` a file also carries a self-check (an input and the output the
saved model gave for it) that ``verify=True`` recomputes after loading.

**Import**: :func:`from_torch` / :func:`from_torch_state_dict` (PyTorch), :func:`from_keras`
(Keras layers, models, configs and weight lists), :func:`from_onnx` (ONNX LSTM/GRU nodes, read
without the ``onnx`` package). **Export**: :func:`to_torch_state_dict`, :func:`to_onnx`.
Every import checks the shape of every tensor and refuses, naming the tensor, anything it
cannot map; nothing is ever loaded partially.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import secrets
from collections.abc import Mapping

import numpy as np

from . import _onnx_proto as _proto
from .rnn import GRU, LSTM, _to_numpy

__all__ = [
    "FORMAT_VERSION",
    "save_safetensors",
    "load_safetensors",
    "save",
    "load",
    "save_model",
    "load_model",
    "read_model_info",
    "from_torch",
    "from_torch_state_dict",
    "to_torch_state_dict",
    "from_keras",
    "from_onnx",
    "to_onnx",
]

#: the ``format_version`` this code writes and the only one it reads
FORMAT_VERSION = 1

_ST_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}
_ST_NAMES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors crate's limit as well

#: tensor names of the self-check data inside a model file
SELFCHECK_INPUT = "selfcheck.input"
SELFCHECK_OUTPUT = "selfcheck.output"
SELFCHECK_LENGTHS = "selfcheck.lengths"

# relative tolerance of verify=True: max|got - expected| <= tol * (1 + max|expected|). Loose
# enough for another machine's SIMD path, far below what a wrongly mapped weight produces.
_VERIFY_TOL = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-9}


# =============================================================================== safetensors
def _fspath(path, name="path"):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}") from None


def _atomic_write(path, chunks):
    """Writes the byte strings ``chunks`` to ``path`` through a temporary file in the same
    directory (fsync, then ``os.replace``), so ``path`` holds either its old content or all of
    the new one, never a part. The temporary file is removed if anything fails."""
    path = _fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # 0o666 filtered by the umask, like a plain open(path, "wb")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # make the rename itself durable (POSIX; best effort elsewhere)
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save_safetensors(path, tensors, metadata=None):
    """Writes ``tensors`` (name -> float32/float64/int64 array) and ``metadata`` (str -> str) to
    a safetensors file, atomically. 8-byte tensors come first so that every tensor is aligned
    to its element size in the file."""
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
                            "float32, float64 or int64")
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
    _atomic_write(path, chunks)


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
    path = _fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such model file: {path!r}") from None
    except IsADirectoryError:
        raise ValueError(f"{path!r} is a directory, not a model file") from None
    return _parse_safetensors(data, path)


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


# =============================================================================== model files
_MODULE_CONFIG_KEYS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                       "bidirectional", "proj_size", "peephole")


def _module_config(module):
    return {"input_size": module.input_size, "hidden_size": module.hidden_size,
            "num_layers": module.num_layers, "bias": module.bias,
            "batch_first": module.batch_first, "bidirectional": module.bidirectional,
            "proj_size": module.proj_size, "peephole": module.peephole}


def _selfcheck_tensors(x, y, lengths):
    tensors = {SELFCHECK_INPUT: x, SELFCHECK_OUTPUT: y}
    check = {"input": SELFCHECK_INPUT, "output": SELFCHECK_OUTPUT, "lengths": None}
    if lengths is not None:
        tensors[SELFCHECK_LENGTHS] = lengths
        check["lengths"] = SELFCHECK_LENGTHS
    return tensors, json.dumps(check)


def _example_lengths(lengths):
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"example_lengths must be an integer array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _write_model(path, model_dict, tensors, selfcheck):
    metadata = {"fastlstm": json.dumps({"format_version": FORMAT_VERSION, "model": model_dict})}
    if selfcheck is not None:
        extra, check = selfcheck
        clash = set(extra) & set(tensors)
        if clash:
            raise ValueError(f"weight names {sorted(clash)} collide with the self-check tensors")
        tensors = {**tensors, **extra}
        metadata["fastlstm_selfcheck"] = check
    save_safetensors(path, tensors, metadata)


def save(module, path, *, example_input=None, example_lengths=None):
    """Saves a bare :class:`~fastlstm.LSTM`/:class:`~fastlstm.GRU` to ``path`` (atomically).

    With ``example_input`` (in the module's layout, [T, B, I] or [B, T, I] if batch_first) and
    optionally ``example_lengths`` [B], the file also stores that input and the module's output
    for it, both batch-first ([B, T, I] and [B, T, D*S]), for ``load(path, verify=True)``.
    """
    if not isinstance(module, (LSTM, GRU)):
        hint = (" (a Sequential model: use fastlstm.io.save_model)"
                if hasattr(module, "get_weight_dict") else "")
        raise TypeError(f"module must be a fastlstm.LSTM or fastlstm.GRU, got "
                        f"{type(module).__name__}{hint}")
    model = {"class": type(module).__name__, "config": _module_config(module),
             "dtype": module.dtype.name}
    tensors = {name: np.array(v) for name, v in module.params.items()}
    selfcheck = None
    if example_input is not None:
        lengths = _example_lengths(example_lengths)
        x = np.asarray(example_input)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"example_input must hold real numbers, got dtype {x.dtype}")
        x = x.astype(module.dtype)
        y = module(x, lengths=lengths)[0]
        if not module.batch_first:
            x, y = x.transpose(1, 0, 2), y.transpose(1, 0, 2)
        selfcheck = _selfcheck_tensors(x, y, lengths)
    _write_model(path, model, tensors, selfcheck)


def _read_header_model(path):
    """Loads the file and returns (tensors, model dict, selfcheck dict or None)."""
    tensors, metadata = load_safetensors(path)
    where = repr(_fspath(path))
    if "fastlstm" not in metadata:
        raise ValueError(f"{where} is a safetensors file but not a fastlstm model: its "
                         "__metadata__ has no 'fastlstm' entry")
    try:
        info = json.loads(metadata["fastlstm"])
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: __metadata__['fastlstm'] is not valid JSON: {e}") from None
    if not isinstance(info, dict) or "format_version" not in info:
        raise ValueError(f"{where}: __metadata__['fastlstm'] must be an object with a "
                         "format_version")
    version = info["format_version"]
    if not _is_int(version):
        raise ValueError(f"{where}: format_version must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        newer = " (written by a newer fastlstm; upgrade to read it)" if version > 1 else ""
        raise ValueError(f"{where} has format_version {version}; this fastlstm reads "
                         f"format_version {FORMAT_VERSION}{newer}")
    model = info.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("class"), str):
        raise ValueError(f"{where}: the model description must be an object with a 'class'")
    selfcheck = None
    if "fastlstm_selfcheck" in metadata:
        try:
            selfcheck = json.loads(metadata["fastlstm_selfcheck"])
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{where}: __metadata__['fastlstm_selfcheck'] is not valid JSON: "
                             f"{e}") from None
        if (not isinstance(selfcheck, dict) or set(selfcheck) != {"input", "output", "lengths"}
                or not all(isinstance(selfcheck[k], str) and selfcheck[k] in tensors
                           for k in ("input", "output"))
                or not (selfcheck["lengths"] is None
                        or (isinstance(selfcheck["lengths"], str)
                            and selfcheck["lengths"] in tensors))):
            raise ValueError(f"{where}: __metadata__['fastlstm_selfcheck'] must name the "
                             "input, output (and lengths or null) tensors stored in the file, "
                             f"got {metadata['fastlstm_selfcheck']!r}"[:400])
    return tensors, model, selfcheck


def _dtype_of(model, where):
    dtype = model.get("dtype")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{where}: model dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(dtype)


def _split_selfcheck(tensors, selfcheck):
    if selfcheck is None:
        return tensors, None
    names = {selfcheck["input"], selfcheck["output"]}
    if selfcheck["lengths"] is not None:
        names.add(selfcheck["lengths"])
    check = {"input": tensors[selfcheck["input"]], "output": tensors[selfcheck["output"]],
             "lengths": None if selfcheck["lengths"] is None else tensors[selfcheck["lengths"]]}
    return {k: v for k, v in tensors.items() if k not in names}, check


def _check_weights(weights, expected, dtype, where, what="weight"):
    """expected: name -> shape. Refuses missing, unexpected, mis-shaped or mis-typed tensors."""
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing:
        raise ValueError(f"{where}: missing {what}s {missing}")
    if unexpected:
        names = list(expected)
        shown = names if len(names) <= 12 else names[:12] + ["..."]
        raise ValueError(f"{where}: unexpected tensors {unexpected} (expected {shown})")
    for name, shape in expected.items():
        arr = weights[name]
        if arr.dtype != dtype:
            raise ValueError(f"{where}: {what} {name!r} has dtype {arr.dtype.name}, the model's "
                             f"dtype is {dtype.name}")
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{where}: {what} {name!r} has shape {tuple(arr.shape)}, expected "
                             f"{tuple(shape)}")


def _check_selfcheck_data(check, where, dtype, feature_size=None, tokens=False):
    x, y, lengths = check["input"], check["output"], check["lengths"]
    if tokens:
        if x.dtype != np.int64 or x.ndim != 2:
            raise ValueError(f"{where}: self-check input must be int64 tokens [B, T], got "
                             f"{x.dtype.name} {x.shape}")
    else:
        if x.dtype != dtype or x.ndim != 3 or (feature_size is not None
                                               and x.shape[2] != feature_size):
            raise ValueError(f"{where}: self-check input must be {dtype.name} [B, T, "
                             f"{feature_size if feature_size is not None else 'F'}], got "
                             f"{x.dtype.name} {x.shape}")
    if y.dtype != dtype:
        raise ValueError(f"{where}: self-check output must be {dtype.name}, got {y.dtype.name}")
    if lengths is not None:
        T = x.shape[1]
        if (lengths.dtype != np.int64 or lengths.shape != (x.shape[0],)
                or (lengths.size and (lengths.min() < 1 or lengths.max() > T))):
            raise ValueError(f"{where}: self-check lengths must be int64 [{x.shape[0]}] in "
                             f"[1, {T}], got {lengths.dtype.name} {lengths.shape}")


def _compare_selfcheck(got, expected, dtype, where):
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise ValueError(f"{where}: self-check failed: the loaded model's output has shape "
                         f"{got.shape}, the file expects {expected.shape}")
    if expected.size == 0:
        return
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    scale = 1.0 + float(np.max(np.abs(expected)))
    tol = _VERIFY_TOL[np.dtype(dtype)]
    if not err <= tol * scale:  # also catches NaN
        raise ValueError(f"{where}: self-check failed: the loaded model's output differs from "
                         f"the stored one by up to {err:.3g} (tolerance {tol * scale:.3g})")


def _size(config, key, where, minimum=1):
    v = config.get(key)
    if not _is_int(v) or v < minimum:
        raise ValueError(f"{where}: config {key} must be an integer >= {minimum}, got {v!r}")
    return v


def _rnn_shapes(kind, input_size, hidden, layers, directions, bias, proj, peephole, prefix="",
                fixed_suffix=None):
    """Parameter name -> shape of an engine module, from its sizes alone (what the model file
    must hold), so a corrupt size is caught before anything is allocated."""
    G = (4 if kind == "LSTM" else 3) * hidden
    S = proj or hidden
    out = {}
    for k in range(layers):
        for d in range(directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            in_k = input_size if k == 0 else directions * S
            out[prefix + "weight_ih" + sfx] = (G, in_k)
            out[prefix + "weight_hh" + sfx] = (G, S)
            if bias:
                out[prefix + "bias_ih" + sfx] = (G,)
                out[prefix + "bias_hh" + sfx] = (G,)
            if proj:
                out[prefix + "weight_hr" + sfx] = (proj, hidden)
            if peephole:
                for g in ("ci", "cf", "co"):
                    out[prefix + f"weight_{g}" + sfx] = (hidden,)
    return out


def _sequential_shapes(model, where):
    """Tensor name -> shape for a Sequential MODEL per the file contract; ValueError for a layer
    kind or config it does not describe."""
    layers = model.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{where}: a Sequential needs a non-empty 'layers' list")
    out = {}
    for i, layer in enumerate(layers):
        lw = f"{where}: layer {i}"
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise ValueError(f"{lw} must be an object with 'class' and 'config'")
        kind, cfg = layer.get("class"), layer["config"]
        p = f"layers.{i}."
        if kind in ("LSTM", "GRU", "Bidirectional"):
            D = 1
            if kind == "Bidirectional":
                inner = cfg.get("layer")
                if not isinstance(inner, dict) or inner.get("class") not in ("LSTM", "GRU") \
                        or not isinstance(inner.get("config"), dict):
                    raise ValueError(f"{lw}: Bidirectional must wrap an LSTM or GRU layer")
                kind, cfg, D = inner["class"], inner["config"], 2
            units = _size(cfg, "units", lw)
            in_size = _size(cfg, "input_size", lw)
            peephole = kind == "LSTM" and bool(cfg.get("peephole", False))
            out.update(_rnn_shapes(kind, in_size, units, 1, D, bool(cfg.get("bias", True)), 0,
                                   peephole, prefix=p))
        elif kind == "Dense":
            units, in_dim = _size(cfg, "units", lw), _size(cfg, "input_dim", lw)
            out[p + "kernel"] = (in_dim, units)
            if cfg.get("use_bias", True):
                out[p + "bias"] = (units,)
        elif kind == "Embedding":
            out[p + "embeddings"] = (_size(cfg, "input_dim", lw), _size(cfg, "output_dim", lw))
        elif kind != "Dropout":
            raise ValueError(f"{lw}: unknown layer class {kind!r} (format_version "
                             f"{FORMAT_VERSION} knows Embedding, LSTM, GRU, Bidirectional, Dense, "
                             "Dropout)")
    return out


def _build_module(model, where, weights):
    cls = {"LSTM": LSTM, "GRU": GRU}.get(model["class"])
    if cls is None:
        hint = (" (use fastlstm.io.load_model)" if model["class"] == "Sequential" else "")
        raise ValueError(f"{where} holds a {model['class']!r} model, not an LSTM or GRU module"
                         f"{hint}")
    config = model.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the model has no 'config' object")
    missing = [k for k in _MODULE_CONFIG_KEYS if k not in config]
    unknown = [k for k in config if k not in _MODULE_CONFIG_KEYS]
    if missing or unknown:
        raise ValueError(f"{where}: module config must have exactly {list(_MODULE_CONFIG_KEYS)}"
                         f"; missing {missing}, unknown {unknown}")
    for k in ("input_size", "hidden_size", "num_layers", "proj_size"):
        _size(config, k, where, minimum=0 if k == "proj_size" else 1)
    for k in ("bias", "batch_first", "bidirectional", "peephole"):
        if not isinstance(config[k], bool):
            raise ValueError(f"{where}: config {k} must be true or false, got {config[k]!r}")
    dtype = _dtype_of(model, where)
    kwargs = dict(config, dtype=dtype.name)
    if cls is GRU:
        if config["proj_size"] or config["peephole"]:
            raise ValueError(f"{where}: a GRU has no proj_size or peephole, got proj_size="
                             f"{config['proj_size']}, peephole={config['peephole']}")
        del kwargs["proj_size"], kwargs["peephole"]
    if not 0 <= config["proj_size"] < config["hidden_size"] and config["proj_size"]:
        raise ValueError(f"{where}: invalid {model['class']} config: proj_size must be smaller "
                         f"than hidden_size, got {config['proj_size']} >= {config['hidden_size']}")
    # shapes first: a corrupt size must not make the engine allocate gigabytes
    expected = _rnn_shapes(model["class"], config["input_size"], config["hidden_size"],
                           config["num_layers"], 2 if config["bidirectional"] else 1,
                           config["bias"], config["proj_size"], config["peephole"])
    _check_weights(weights, expected, dtype, where)
    try:
        return cls(**kwargs, seed=0)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"{where}: invalid {model['class']} config {config}: {e}") from None


def load(path, verify=False):
    """Loads a bare LSTM/GRU saved by :func:`save`. With ``verify=True`` the file's self-check
    is rerun and a ValueError raised if the outputs differ (or if the file has none)."""
    tensors, model, selfcheck = _read_header_model(path)
    where = repr(_fspath(path))
    weights, check = _split_selfcheck(tensors, selfcheck)
    module = _build_module(model, where, weights)
    _check_weights(weights, {k: v.shape for k, v in module.params.items()}, module.dtype, where)
    for name, arr in weights.items():
        module.params[name][...] = arr
    if check is not None:
        _check_selfcheck_data(check, where, module.dtype, module.input_size)
    if verify:
        if check is None:
            raise ValueError(f"{where} carries no self-check data to verify (save it with "
                             "example_input=...)")
        x = check["input"]
        if not module.batch_first:
            x = x.transpose(1, 0, 2)
        y = module(x, lengths=check["lengths"])[0]
        if not module.batch_first:
            y = y.transpose(1, 0, 2)
        _compare_selfcheck(y, check["output"], module.dtype, where)
    return module


def read_model_info(path):
    """The parsed ``{"format_version", "model"}`` description of a model file (no weights
    built), e.g. to see which class it holds."""
    _, model, selfcheck = _read_header_model(path)
    return {"format_version": FORMAT_VERSION, "model": model,
            "selfcheck": selfcheck is not None}


# ------------------------------------------------------------------------- Sequential models
def _models():
    try:
        from . import models
    except ImportError as e:  # pragma: no cover - models ships with the package
        raise ImportError(f"fastlstm.models is needed for Sequential models: {e}") from None
    return models


def _predict(model, x, lengths):
    """Inference on the whole batch (the model's ``__call__``: no batching, no progress bar)."""
    return model(x, lengths=lengths)


def save_model(model, path, *, example_input=None, example_lengths=None):
    """Saves a ``fastlstm.models.Sequential`` (architecture from ``model.get_config()``, weights
    from ``model.get_weight_dict()``) atomically. ``example_input`` ([B, T, F] floats or [B, T]
    int tokens when the first layer is an Embedding) adds a self-check."""
    if isinstance(model, (LSTM, GRU)):
        raise TypeError("model is a bare LSTM/GRU module: use fastlstm.io.save")
    if not (hasattr(model, "get_config") and hasattr(model, "get_weight_dict")):
        raise TypeError(f"model must be a fastlstm.models.Sequential, got "
                        f"{type(model).__name__}")
    config = dict(model.get_config())
    config.setdefault("class", "Sequential")
    dtype = np.dtype(config.get("dtype", "float32"))
    tensors = {}
    for name, value in model.get_weight_dict().items():
        tensors[name] = np.array(value)
    selfcheck = None
    if example_input is not None:
        lengths = _example_lengths(example_lengths)
        x = np.asarray(example_input)
        if x.dtype.kind in "iu":
            x = x.astype(np.int64)
        elif x.dtype.kind in "fb":
            x = x.astype(dtype)
        else:
            raise TypeError(f"example_input must hold numbers, got dtype {x.dtype}")
        y = np.asarray(_predict(model, x, lengths)).astype(dtype)
        selfcheck = _selfcheck_tensors(x, y, lengths)
    _write_model(path, config, tensors, selfcheck)


def load_model(path, verify=False):
    """Loads a Sequential model saved by :func:`save_model` (``verify`` as for :func:`load`)."""
    tensors, model, selfcheck = _read_header_model(path)
    where = repr(_fspath(path))
    if model["class"] != "Sequential":
        hint = " (use fastlstm.io.load)" if model["class"] in ("LSTM", "GRU") else ""
        raise ValueError(f"{where} holds a {model['class']!r} model, not a Sequential{hint}")
    dtype = _dtype_of(model, where)
    weights, check = _split_selfcheck(tensors, selfcheck)
    # shapes from the description first: a corrupt size must not allocate gigabytes
    _check_weights(weights, _sequential_shapes(model, where), dtype, where)
    models = _models()
    try:
        seq = models.Sequential.from_config(model)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad description
        raise ValueError(f"{where}: invalid Sequential description: "
                         f"{type(e).__name__}: {e}") from None
    expected = {k: np.shape(v) for k, v in seq.get_weight_dict().items()}
    _check_weights(weights, expected, dtype, where)
    seq.set_weight_dict(weights)
    if check is not None:
        tokens = check["input"].dtype.kind in "iu"
        _check_selfcheck_data(check, where, dtype, tokens=tokens)
    if verify:
        if check is None:
            raise ValueError(f"{where} carries no self-check data to verify (save it with "
                             "example_input=...)")
        y = _predict(seq, check["input"], check["lengths"])
        _compare_selfcheck(y, check["output"], dtype, where)
    return seq


# =============================================================================== PyTorch
_TORCH_NAME = re.compile(
    r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_ci|weight_cf|weight_co)"
    r"_l(\d+)(_reverse)?$")


def _float_dtype(dtype, sample):
    if dtype is not None:
        return np.dtype(dtype).name
    return "float64" if np.asarray(sample).dtype == np.float64 else "float32"


def from_torch_state_dict(state_dict, cell="lstm", *, prefix="", dtype=None, batch_first=False,
                          dropout=0.0, **config):
    """Builds a :class:`~fastlstm.LSTM` (``cell='lstm'``) or :class:`~fastlstm.GRU` from a
    ``torch.nn.LSTM``/``GRU`` state_dict (tensors or arrays; torch is not imported).

    The architecture (input/hidden size, layers, directions, bias, projection, and fastlstm's
    peephole weights ``weight_c{i,f,o}_l{k}``) is read from the names and shapes; ``config``
    keys (input_size, hidden_size, num_layers, bidirectional, proj_size, bias, peephole) are
    checked against it. ``prefix`` selects the keys of one submodule (``"rnn."``); other keys
    are then ignored, while without a prefix any key that is not an LSTM/GRU parameter is an
    error. ``dtype`` defaults to float64 for float64 weights, else float32.
    """
    cell = str(cell).lower()
    if cell not in ("lstm", "gru"):
        raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    sd = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if not _TORCH_NAME.match(name):
            hint = ""
            if "." in name and _TORCH_NAME.match(name.rsplit(".", 1)[1]):
                hint = f" (pass prefix={name.rsplit('.', 1)[0] + '.'!r})"
            raise ValueError(f"state_dict key {key!r} is not an LSTM/GRU parameter{hint}")
        sd[name] = _to_numpy(value)
    if "weight_ih_l0" not in sd:
        raise ValueError(f"state_dict has no {prefix}weight_ih_l0 (keys: {list(state_dict)[:8]})")
    layers = {int(_TORCH_NAME.match(n).group(2)) for n in sd}
    inferred = {}
    inferred["num_layers"] = max(layers) + 1
    inferred["bidirectional"] = any(n.endswith("_reverse") for n in sd)
    inferred["bias"] = "bias_ih_l0" in sd
    w = sd["weight_ih_l0"]
    if w.ndim != 2:
        raise ValueError(f"{prefix}weight_ih_l0 must be 2-D [G, input_size], got shape {w.shape}")
    gates = 4 if cell == "lstm" else 3
    if w.shape[0] % gates or w.shape[0] == 0:
        raise ValueError(f"{prefix}weight_ih_l0 has {w.shape[0]} rows; an {cell.upper()} needs "
                         f"{gates}*hidden_size")
    inferred["hidden_size"] = w.shape[0] // gates
    inferred["input_size"] = w.shape[1]
    if cell == "lstm":
        hr = sd.get("weight_hr_l0")
        inferred["proj_size"] = 0 if hr is None else (hr.shape[0] if hr.ndim == 2 else -1)
        inferred["peephole"] = "weight_ci_l0" in sd
    else:
        extra = [n for n in sd if n.startswith(("weight_hr", "weight_c"))]
        if extra:
            raise ValueError(f"state_dict key {prefix}{extra[0]} has no place in a GRU")
    for key, value in config.items():
        if key not in inferred:
            raise TypeError(f"unexpected argument {key!r}")
        if value != inferred[key]:
            raise ValueError(f"{key}={value!r} was given but the state_dict holds "
                             f"{key}={inferred[key]!r}")
    kwargs = dict(inferred, batch_first=batch_first, dropout=dropout,
                  dtype=_float_dtype(dtype, w))
    cls = LSTM if cell == "lstm" else GRU
    try:
        module = cls(**kwargs, seed=0)
    except (ValueError, TypeError) as e:
        raise ValueError(f"state_dict describes an invalid {cls.__name__} {inferred}: "
                         f"{e}") from None
    _load_params(module, sd, f"{prefix}")
    return module


def _load_params(module, params, prefix="", source="state_dict"):
    """Shape-checks every tensor against ``module.params`` (names must match exactly), then
    copies; nothing is written unless everything fits."""
    missing = [n for n in module.params if n not in params]
    unexpected = [n for n in params if n not in module.params]
    if missing:
        raise ValueError(f"{source} is missing {[prefix + n for n in missing]}")
    if unexpected:
        raise ValueError(f"{source} has unexpected tensors {[prefix + n for n in unexpected]} "
                         f"for {module!r}")
    staged = {}
    for name, target in module.params.items():
        arr = np.asarray(params[name])
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{source} tensor {prefix + name!r} must hold real numbers, got "
                             f"dtype {arr.dtype}")
        if arr.shape != target.shape:
            raise ValueError(f"{source} tensor {prefix + name!r} has shape {arr.shape}, "
                             f"expected {target.shape}")
        staged[name] = arr
    for name, arr in staged.items():
        module.params[name][...] = arr


def from_torch(obj, *, cell=None, prefix="", dtype=None, batch_first=None):
    """A fastlstm module from a ``torch.nn.LSTM``/``torch.nn.GRU`` module (duck-typed, torch is
    not imported) or from a state_dict (then ``cell`` says 'lstm' or 'gru', default 'lstm')."""
    if isinstance(obj, Mapping):
        return from_torch_state_dict(obj, cell or "lstm", prefix=prefix, dtype=dtype,
                                     batch_first=bool(batch_first))
    kind = type(obj).__name__
    if kind not in ("LSTM", "GRU") or not hasattr(obj, "state_dict"):
        raise TypeError(f"expected a torch.nn.LSTM, torch.nn.GRU or a state_dict, got {kind}")
    if cell is not None and cell.lower() != kind.lower():
        raise ValueError(f"cell={cell!r} was given for a {kind}")
    config = dict(input_size=obj.input_size, hidden_size=obj.hidden_size,
                  num_layers=obj.num_layers, bidirectional=bool(obj.bidirectional),
                  bias=bool(obj.bias))
    if kind == "LSTM":
        config["proj_size"] = int(getattr(obj, "proj_size", 0))
    return from_torch_state_dict(
        obj.state_dict(), kind.lower(), dtype=dtype, dropout=float(obj.dropout),
        batch_first=bool(obj.batch_first if batch_first is None else batch_first), **config)


def to_torch_state_dict(module):
    """The parameters of a fastlstm LSTM/GRU as NumPy arrays (copies) under PyTorch's names,
    ready for ``torch_module.load_state_dict({k: torch.from_numpy(v) ...})``. Peephole
    weights (no PyTorch counterpart) come as ``weight_c{i,f,o}_l{k}[_reverse]``."""
    if not isinstance(module, (LSTM, GRU)):
        raise TypeError(f"module must be a fastlstm.LSTM or fastlstm.GRU, got "
                        f"{type(module).__name__}")
    return {name: np.array(v) for name, v in module.params.items()}


# =============================================================================== gate orders
def _blocks(a, order, size):
    """Reorders the gate blocks (each ``size`` rows) of a along axis 0."""
    return np.concatenate([a[b * size:(b + 1) * size] for b in order], axis=0)


# position k of the target holds source block ORDER[k]
_ONNX_TO_TORCH_LSTM = (0, 2, 3, 1)  # ONNX i,o,f,c -> torch i,f,g,o
_TORCH_TO_ONNX_LSTM = (0, 3, 1, 2)  # torch i,f,g,o -> ONNX i,o,f,c
_ZRH_RZN = (1, 0, 2)  # ONNX/Keras z,r,h <-> torch r,z,n (its own inverse)


# =============================================================================== Keras
_KERAS_RNN = ("LSTM", "GRU")


def _keras_dtype_name(cfg):
    d = cfg.get("dtype")
    if isinstance(d, dict):
        d = (d.get("config") or {}).get("name")
    return d if isinstance(d, str) else None


def _keras_rnn_weights(kind, arrays, where):
    """Keras [kernel, recurrent_kernel(, bias)] of one LSTM/GRU -> torch-named arrays (l0)."""
    gates = 4 if kind == "LSTM" else 3
    if len(arrays) not in (2, 3):
        raise ValueError(f"{where}: a Keras {kind} has 2 or 3 weight arrays (kernel, "
                         f"recurrent_kernel, bias), got {len(arrays)}")
    kernel, rec = (np.asarray(a) for a in arrays[:2])
    if kernel.ndim != 2 or kernel.shape[1] % gates or kernel.shape[1] == 0:
        raise ValueError(f"{where}: kernel must be [input_dim, {gates}*units], got shape "
                         f"{kernel.shape}")
    units = kernel.shape[1] // gates
    if rec.shape != (units, gates * units):
        raise ValueError(f"{where}: recurrent_kernel must have shape {(units, gates * units)} "
                         f"(units={units}), got {rec.shape}")
    out = {}
    if kind == "LSTM":
        # Keras i,f,c,o is torch's i,f,g,o; Keras has one bias, which goes to bias_ih
        out["weight_ih_l0"] = kernel.T
        out["weight_hh_l0"] = rec.T
        if len(arrays) == 3:
            bias = np.asarray(arrays[2])
            if bias.shape != (4 * units,):
                raise ValueError(f"{where}: bias must have shape {(4 * units,)}, got "
                                 f"{bias.shape}")
            out["bias_ih_l0"] = bias
            out["bias_hh_l0"] = np.zeros_like(bias)
    else:
        out["weight_ih_l0"] = _blocks(kernel.T, _ZRH_RZN, units)
        out["weight_hh_l0"] = _blocks(rec.T, _ZRH_RZN, units)
        if len(arrays) == 3:
            bias = np.asarray(arrays[2])
            if bias.shape == (3 * units,):
                raise ValueError(f"{where}: a Keras GRU with reset_after=False (bias shape "
                                 f"{bias.shape}) applies the reset gate before the recurrent "
                                 "matrix, which fastlstm (like PyTorch and cuDNN) does not "
                                 "implement; train it with reset_after=True")
            if bias.shape != (2, 3 * units):
                raise ValueError(f"{where}: bias must have shape {(2, 3 * units)} "
                                 f"(reset_after=True: input bias, recurrent bias), got "
                                 f"{bias.shape}")
            out["bias_ih_l0"] = _blocks(bias[0], _ZRH_RZN, units)
            out["bias_hh_l0"] = _blocks(bias[1], _ZRH_RZN, units)
    return out, kernel.shape[0], units


def _keras_check_rnn_config(kind, cfg, where):
    act = cfg.get("activation", "tanh")
    rec = cfg.get("recurrent_activation", "sigmoid")
    if act != "tanh" or rec != "sigmoid":
        raise ValueError(f"{where}: activation={act!r}, recurrent_activation={rec!r}; fastlstm "
                         "implements tanh and sigmoid only")
    for flag in ("return_state", "stateful", "time_major"):
        if cfg.get(flag):
            raise ValueError(f"{where}: {flag}=True cannot be imported")
    if kind == "GRU" and not cfg.get("reset_after", True):
        raise ValueError(f"{where}: reset_after=False cannot be imported (fastlstm implements "
                         "the reset_after=True GRU of PyTorch and cuDNN)")


def _keras_nweights(cls, cfg, where):
    if cls in _KERAS_RNN:
        return 3 if cfg.get("use_bias", True) else 2
    if cls == "Bidirectional":
        inner = cfg.get("layer") or {}
        return 2 * _keras_nweights(inner.get("class_name"), inner.get("config") or {}, where)
    if cls == "Dense":
        return 2 if cfg.get("use_bias", True) else 1
    if cls == "Embedding":
        return 1
    if cls in ("Dropout", "InputLayer"):
        return 0
    raise ValueError(f"{where}: Keras layer class {cls!r} cannot be imported (supported: "
                     "LSTM, GRU, Bidirectional, Dense, Embedding, Dropout)")


def _keras_rnn_layer(kind, cfg, arrays, where, go_backwards_ok=True):
    _keras_check_rnn_config(kind, cfg, where)
    weights, input_size, units = _keras_rnn_weights(kind, arrays, where)
    if cfg.get("units", units) != units:
        raise ValueError(f"{where}: config units={cfg['units']} but the kernel holds {units}")
    if "bias_ih_l0" not in weights:  # use_bias=False is the same as zero biases
        gates = 4 if kind == "LSTM" else 3
        zero = np.zeros(gates * units, dtype=np.asarray(arrays[0]).dtype)
        weights["bias_ih_l0"], weights["bias_hh_l0"] = zero, zero.copy()
    config = {"units": units, "input_size": input_size,
              "return_sequences": bool(cfg.get("return_sequences", False)),
              "go_backwards": bool(cfg.get("go_backwards", False))}
    if kind == "LSTM":
        config["peephole"] = False
    config["bias"] = True
    return {"class": kind, "config": config}, weights, input_size, units


def _keras_layers_to_model(layer_cfgs, weights, dtype):
    """Keras serialized layers (each {"class_name", "config"}) and the model's flat weight list
    -> (fastlstm MODEL dict, tensors). Checks every array's shape and the feature sizes
    between layers."""
    layers, tensors = [], {}
    pos = 0
    features = None
    for cfg_entry in layer_cfgs:
        if not isinstance(cfg_entry, Mapping) or "class_name" not in cfg_entry:
            raise ValueError(f"a Keras layer must be serialized as {{'class_name', 'config'}}, "
                             f"got {cfg_entry!r}"[:300])
        cls = cfg_entry["class_name"]
        cfg = cfg_entry.get("config") or {}
        where = f"Keras layer {cfg.get('name', '?')!r} ({cls})"
        n = _keras_nweights(cls, cfg, where)
        if pos + n > len(weights):
            raise ValueError(f"{where} needs {n} weight arrays but only {len(weights) - pos} "
                             "are left in the weight list")
        arrays = [np.asarray(a) for a in weights[pos:pos + n]]
        pos += n
        i = len(layers)
        if cls == "InputLayer":
            continue
        if cls in _KERAS_RNN:
            layer, w, in_size, units = _keras_rnn_layer(cls, cfg, arrays, where)
            out_size = units
        elif cls == "Bidirectional":
            inner = cfg.get("layer") or {}
            kind = inner.get("class_name")
            icfg = inner.get("config") or {}
            if kind not in _KERAS_RNN:
                raise ValueError(f"{where}: wraps a {kind!r}; only LSTM and GRU can be imported")
            merge = cfg.get("merge_mode", "concat")
            if merge not in ("concat", "sum", "mul", "ave"):
                raise ValueError(f"{where}: merge_mode={merge!r} cannot be imported (concat, "
                                 "sum, mul or ave)")
            if icfg.get("go_backwards"):
                raise ValueError(f"{where}: a forward layer with go_backwards=True cannot be "
                                 "imported")
            back = cfg.get("backward_layer")
            if isinstance(back, Mapping):
                bcfg = back.get("config") or {}
                for key in ("units", "activation", "recurrent_activation", "use_bias",
                            "return_sequences", "reset_after"):
                    if bcfg.get(key) != icfg.get(key):
                        raise ValueError(f"{where}: its backward layer differs from the forward "
                                         f"one in {key} ({bcfg.get(key)!r} vs "
                                         f"{icfg.get(key)!r})")
                if back.get("class_name") != kind:
                    raise ValueError(f"{where}: backward layer is a {back.get('class_name')}, "
                                     f"forward a {kind}")
            half = len(arrays) // 2
            fwd, w, in_size, units = _keras_rnn_layer(kind, icfg, arrays[:half],
                                                      where + " forward")
            _, wb, in_b, units_b = _keras_rnn_layer(kind, icfg, arrays[half:],
                                                    where + " backward")
            if (in_b, units_b) != (in_size, units):
                raise ValueError(f"{where}: forward and backward weights differ in shape")
            w.update({k + "_reverse": v for k, v in wb.items()})
            layer = {"class": "Bidirectional", "config": {"merge_mode": merge, "layer": fwd}}
            out_size = 2 * units if merge == "concat" else units
        elif cls == "Dense":
            kernel = arrays[0]
            if kernel.ndim != 2:
                raise ValueError(f"{where}: kernel must be [input_dim, units], got shape "
                                 f"{kernel.shape}")
            in_size, units = kernel.shape
            act = cfg.get("activation", "linear") or "linear"
            if act not in ("linear", "relu", "tanh", "sigmoid", "softmax"):
                raise ValueError(f"{where}: activation {act!r} cannot be imported (linear, relu, "
                                 "tanh, sigmoid, softmax)")
            use_bias = n == 2
            w = {"kernel": kernel}
            if use_bias:
                if arrays[1].shape != (units,):
                    raise ValueError(f"{where}: bias must have shape {(units,)}, got "
                                     f"{arrays[1].shape}")
                w["bias"] = arrays[1]
            layer = {"class": "Dense", "config": {"units": units, "input_dim": in_size,
                                                  "activation": act, "use_bias": use_bias}}
            out_size = units
        elif cls == "Embedding":
            emb = arrays[0]
            if emb.ndim != 2:
                raise ValueError(f"{where}: embeddings must be [input_dim, output_dim], got "
                                 f"shape {emb.shape}")
            if i != 0:
                raise ValueError(f"{where}: an Embedding must be the first layer")
            layer = {"class": "Embedding", "config": {
                "input_dim": emb.shape[0], "output_dim": emb.shape[1],
                "mask_zero": bool(cfg.get("mask_zero", False))}}
            w = {"embeddings": emb}
            in_size, out_size = None, emb.shape[1]
        else:  # Dropout
            rate = float(cfg.get("rate", 0.0))
            layer = {"class": "Dropout", "config": {"rate": rate}}
            w, in_size, out_size = {}, features, features
        if features is not None and in_size is not None and in_size != features:
            raise ValueError(f"{where}: expects {in_size} input features but the previous layer "
                             f"gives {features}")
        features = out_size
        layers.append(layer)
        for name, arr in w.items():
            tensors[f"layers.{i}.{name}"] = np.ascontiguousarray(arr, dtype=dtype)
    if pos != len(weights):
        raise ValueError(f"the weight list has {len(weights)} arrays but the layers use {pos}")
    if not layers:
        raise ValueError("the Keras model has no layers to import")
    return {"class": "Sequential", "dtype": np.dtype(dtype).name, "layers": layers}, tensors


def _keras_normalize(config):
    """A Keras model/layer serialization (dict or JSON text) -> list of layer entries."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as e:
            raise ValueError(f"the Keras config is not valid JSON: {e}") from None
    if not isinstance(config, Mapping) or "class_name" not in config:
        raise ValueError("a Keras config must be a dict (or JSON text) with 'class_name' and "
                         "'config', as from layer/model.to_json() or keras.saving."
                         "serialize_keras_object")
    cls = config["class_name"]
    if cls == "Sequential":
        inner = config.get("config") or {}
        layers = inner.get("layers") if isinstance(inner, Mapping) else inner
        if not isinstance(layers, list):
            raise ValueError("a Keras Sequential config must list its layers")
        return layers
    if cls in ("Functional", "Model"):
        raise ValueError("only Keras Sequential models (or single layers) can be imported, "
                         f"got a {cls} model")
    return [config]


def from_keras(obj, weights=None, *, cell=None, bidirectional=False, dtype=None):
    """Imports Keras weights.

    - ``from_keras(model_or_layer)``: a Keras Sequential model or an LSTM/GRU/Bidirectional/
      Dense/Embedding layer object (duck-typed through ``get_config``/``get_weights``; keras is
      not imported) -> a ``fastlstm.models.Sequential`` computing the same thing;
    - ``from_keras(config, weights)``: the same from ``model.to_json()`` (or the dict
      ``{"class_name": ..., "config": ...}``) and ``model.get_weights()``;
    - ``from_keras(weights, cell='lstm'|'gru', bidirectional=False)``: a weight list of one
      Keras LSTM/GRU (``[kernel, recurrent_kernel, bias]``, Bidirectional: forward then
      backward) -> a bare batch-first :class:`~fastlstm.LSTM`/:class:`~fastlstm.GRU` whose
      output is the Keras layer's with ``return_sequences=True``.

    Keras' gate orders (LSTM i,f,c,o with one bias; GRU z,r,h with a [2, 3H] bias,
    reset_after=True) are mapped to PyTorch's; everything else is refused with the reason.
    """
    if isinstance(obj, (list, tuple)) and weights is None:
        return _keras_weights_to_module(obj, cell, bidirectional, dtype)
    if cell is not None:
        raise ValueError("cell= is for a bare weight list; a Keras layer or config says what "
                         "it is")
    if hasattr(obj, "get_config") and hasattr(obj, "get_weights"):
        if weights is not None:
            raise ValueError("weights= is taken from the Keras object itself")
        cls = type(obj).__name__
        if cls in ("Functional", "Model"):
            raise ValueError("only Keras Sequential models (or single layers) can be imported")
        config = {"class_name": cls, "config": obj.get_config()}
        weights = obj.get_weights()
    else:
        config = obj
        if weights is None:
            raise ValueError("from_keras(config, weights): weights (the model's get_weights() "
                             "list) are required with a config")
    layer_cfgs = _keras_normalize(config)
    weights = list(weights)
    if dtype is None:
        floats = [np.asarray(w).dtype for w in weights if np.asarray(w).dtype.kind == "f"]
        dtype = "float64" if floats and all(d == np.float64 for d in floats) else "float32"
    model, tensors = _keras_layers_to_model(layer_cfgs, weights, np.dtype(dtype))
    models = _models()
    seq = models.Sequential.from_config(model)
    expected = {k: np.shape(v) for k, v in seq.get_weight_dict().items()}
    _check_weights(tensors, expected, np.dtype(dtype), "from_keras")
    seq.set_weight_dict(tensors)
    return seq


def _keras_weights_to_module(arrays, cell, bidirectional, dtype):
    if cell is None or str(cell).lower() not in ("lstm", "gru"):
        raise ValueError(f"from_keras(weights): cell must be 'lstm' or 'gru', got {cell!r}")
    kind = str(cell).upper()
    arrays = [np.asarray(a) for a in arrays]
    D = 2 if bidirectional else 1
    if len(arrays) % D or len(arrays) // D not in (2, 3):
        raise ValueError(f"a Keras {'Bidirectional ' if D == 2 else ''}{kind} weight list holds "
                         f"{D * 3} arrays ({D * 2} without bias), got {len(arrays)}")
    n = len(arrays) // D
    params = {}
    shapes = []
    for d in range(D):
        where = f"Keras {kind} weights" + ("" if D == 1 else (" forward", " backward")[d])
        w, in_size, units = _keras_rnn_weights(kind, arrays[d * n:(d + 1) * n], where)
        shapes.append((in_size, units))
        sfx = "_reverse" if d else ""
        params.update({k + sfx: v for k, v in w.items()})
    if len(set(shapes)) != 1:
        raise ValueError(f"forward weights {shapes[0]} and backward weights {shapes[1]} "
                         "(input_dim, units) differ")
    in_size, units = shapes[0]
    cls = LSTM if kind == "LSTM" else GRU
    module = cls(in_size, units, bias=n == 3, batch_first=True, bidirectional=D == 2,
                 dtype=_float_dtype(dtype, arrays[0]), seed=0)
    _load_params(module, params, source="Keras weight list")
    return module


# =============================================================================== ONNX import
_GLUE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Shape",
             "Gather", "Constant", "ConstantOfShape", "Identity", "Cast", "Expand"}
# ops whose first input is the one that carries values into their output (the rest are
# shapes, indices or axes)
_PASS_FIRST = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Gather", "Identity",
               "Cast", "Expand"}


class _OnnxGraph:
    def __init__(self, model, where):
        self.where = where
        self.g = model.graph
        self.consts = dict(self.g.initializers)
        self.producer = {}
        for node in self.g.nodes:
            if node.op_type == "Constant" and node.outputs:
                t = node.attributes.get("value")
                self.consts[node.outputs[0]] = t if isinstance(t, _proto.Tensor) else None
            for o in node.outputs:
                self.producer[o] = node

    def node_name(self, node):
        return f"ONNX node {node.name or '(unnamed)'!r} ({node.op_type})"

    def const(self, name, node, role):
        """The value of a constant input, or a ValueError naming the node and the input."""
        if name not in self.consts:
            src = self.producer.get(name)
            how = (f"computed by a {src.op_type} node" if src is not None
                   else "a graph input")
            raise ValueError(f"{self.where}: {self.node_name(node)} input {role} ({name!r}) is "
                             f"{how}; only constant weights (initializers) can be imported")
        t = self.consts[name]
        if t is None:
            raise ValueError(f"{self.where}: {self.node_name(node)} input {role} ({name!r}) is "
                             "a Constant without a tensor value")
        try:
            return t.numpy()
        except _proto.ProtoError as e:
            raise ValueError(f"{self.where}: {self.node_name(node)} input {role}: {e}") from None

    def ancestors(self, name):
        seen, stack = set(), [name]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            node = self.producer.get(n)
            if node is not None:
                stack.extend(i for i in node.inputs if i)
        return seen

    def check_state(self, name, node, role):
        """An initial state must come from graph inputs (supplied at call time) or be zero."""
        stack, seen = [name], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.consts:
                t = self.consts[n]
                val = None if t is None else _safe_numpy(t)
                if val is None or np.any(val != 0):
                    raise ValueError(f"{self.where}: {self.node_name(node)} input {role} "
                                     f"({name!r}) is a non-zero constant; fastlstm modules take "
                                     "initial states at call time (hx=...)")
                continue
            src = self.producer.get(n)
            if src is None:
                continue  # a graph input: the caller passes it as hx
            if src.op_type in _PASS_FIRST:
                stack.extend(src.inputs[:1])
            elif src.op_type == "Concat":
                stack.extend(src.inputs)
            elif src.op_type == "ConstantOfShape":
                t = src.attributes.get("value")
                val = np.zeros(1) if t is None else _safe_numpy(t)
                if val is None or np.any(val != 0):
                    raise ValueError(f"{self.where}: {self.node_name(node)} input {role} is "
                                     "filled with a non-zero constant; fastlstm modules take "
                                     "initial states at call time (hx=...)")
            else:
                raise ValueError(f"{self.where}: {self.node_name(node)} input {role} "
                                 f"({name!r}) is computed by a {src.op_type} node; only graph "
                                 "inputs or zeros can be imported as initial states")


def _safe_numpy(t):
    try:
        return t.numpy()
    except _proto.ProtoError:
        return None


def _onnx_layer(graph, node):
    """One ONNX LSTM/GRU node -> (info dict, torch-named params for this layer index 0)."""
    where = f"{graph.where}: {graph.node_name(node)}"
    kind = node.op_type
    gates = 4 if kind == "LSTM" else 3
    a = node.attributes
    direction = a.get("direction", b"forward")
    direction = direction.decode("utf-8", "replace") if isinstance(direction, bytes) else str(
        direction)
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{where}: direction={direction!r}; fastlstm has forward and "
                         "bidirectional layers (a reverse-only layer cannot be imported)")
    D = 2 if direction == "bidirectional" else 1
    acts = a.get("activations")
    default = [b"Sigmoid", b"Tanh", b"Tanh"][:gates - 1] * D
    if acts is not None and (not isinstance(acts, list)
                             or not all(isinstance(s, bytes) for s in acts)):
        raise ValueError(f"{where}: activations must be a list of strings, got {acts!r}"[:300])
    if acts is not None and [s.lower() for s in acts] != [s.lower() for s in default]:
        raise ValueError(f"{where}: activations {[s.decode() for s in acts]}; only the defaults "
                         f"{[s.decode() for s in default]} can be imported")
    if "clip" in a:
        raise ValueError(f"{where}: clip={a['clip']} cannot be imported (fastlstm does not clip "
                         "pre-activations)")
    if kind == "LSTM" and a.get("input_forget", 0):
        raise ValueError(f"{where}: input_forget=1 (coupled input and forget gates) cannot be "
                         "imported")
    if kind == "GRU" and a.get("linear_before_reset", 0) != 1:
        raise ValueError(f"{where}: linear_before_reset=0 cannot be imported; fastlstm's GRU "
                         "is PyTorch's (linear_before_reset=1)")
    layout = a.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout={layout} (must be 0 or 1)")
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    if not ins[1] or not ins[2]:
        raise ValueError(f"{where}: inputs W and R are required")
    W = graph.const(ins[1], node, "W")
    R = graph.const(ins[2], node, "R")
    if R.ndim != 3 or R.shape[0] != D or R.shape[1] % gates or R.shape[1] != gates * R.shape[2]:
        raise ValueError(f"{where}: R ({ins[2]!r}) has shape {R.shape}, expected "
                         f"[num_directions={D}, {gates}*hidden_size, hidden_size]")
    H = R.shape[2]
    if a.get("hidden_size", H) != H:
        raise ValueError(f"{where}: hidden_size={a['hidden_size']} but R holds {H}")
    if W.ndim != 3 or W.shape[:2] != (D, gates * H):
        raise ValueError(f"{where}: W ({ins[1]!r}) has shape {W.shape}, expected "
                         f"[num_directions={D}, {gates}*hidden_size={gates * H}, input_size]")
    B = None
    if ins[3]:
        B = graph.const(ins[3], node, "B")
        if B.shape != (D, 2 * gates * H):
            raise ValueError(f"{where}: B ({ins[3]!r}) has shape {B.shape}, expected "
                             f"{(D, 2 * gates * H)} [num_directions, {2 * gates}*hidden_size]")
    if ins[4] and ins[4] in graph.consts:
        raise ValueError(f"{where}: sequence_lens ({ins[4]!r}) is a constant; fastlstm takes "
                         "lengths at call time (lengths=...), so only a graph input can be "
                         "imported")
    if ins[5]:
        graph.check_state(ins[5], node, "initial_h")
    if kind == "LSTM" and ins[6]:
        graph.check_state(ins[6], node, "initial_c")
    P = None
    if kind == "LSTM" and ins[7]:
        P = graph.const(ins[7], node, "P")
        if P.shape != (D, 3 * H):
            raise ValueError(f"{where}: P ({ins[7]!r}) has shape {P.shape}, expected "
                             f"{(D, 3 * H)} [num_directions, 3*hidden_size]")
    for role, arr in (("W", W), ("R", R), ("B", B), ("P", P)):
        if arr is not None and arr.dtype.kind != "f":
            raise ValueError(f"{where}: {role} has dtype {arr.dtype}, expected a float type")
    perm = _ONNX_TO_TORCH_LSTM if kind == "LSTM" else _ZRH_RZN
    params = []
    for d in range(D):
        p = {"weight_ih": _blocks(W[d], perm, H), "weight_hh": _blocks(R[d], perm, H)}
        if B is not None:
            p["bias_ih"] = _blocks(B[d, :gates * H], perm, H)
            p["bias_hh"] = _blocks(B[d, gates * H:], perm, H)
        if P is not None:  # ONNX P is i, o, f
            p["weight_ci"], p["weight_co"], p["weight_cf"] = P[d, :H], P[d, H:2 * H], P[d, 2 * H:]
        params.append(p)
    info = {"kind": kind, "D": D, "H": H, "I": W.shape[2], "layout": layout,
            "dtype": W.dtype, "has_bias": B is not None, "has_p": P is not None}
    return info, params


def from_onnx(path, *, dtype=None, batch_first=None):
    """Imports the LSTM/GRU stack of an ONNX model as a fastlstm module (the ``onnx`` package
    is not needed).

    The graph may hold one LSTM or GRU node per layer (``direction`` forward or bidirectional),
    chained through shape glue (Transpose, Reshape, Squeeze, Concat, Slice, ...), as
    ``torch.onnx.export`` and :func:`to_onnx` write it; the module's output
    ([T, B, D*H], or [B, T, D*H] with batch_first) is what such a graph returns after its glue.
    W, R, B and P must be constants; sequence_lens and initial states may be graph inputs
    (pass them as ``lengths=`` / ``hx=``) or zero. ``batch_first`` defaults to True for
    ``layout=1`` nodes or an input transposed from [B, T, I], else False; ``dtype`` to the
    weights' type. Anything else (other ops, activations, clip, reverse-only direction,
    linear_before_reset=0, ...) is refused, naming the node.
    """
    path = _fspath(path)
    where = repr(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such ONNX file: {path!r}") from None
    try:
        model = _proto.parse_model(data)
    except _proto.ProtoError as e:
        raise ValueError(f"{where} is not a valid ONNX model: {e}") from None
    graph = _OnnxGraph(model, where)
    rnn = []
    for node in graph.g.nodes:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{where}: {graph.node_name(node)} is in domain {node.domain!r}; "
                             "only standard ONNX ops can be imported")
        if node.op_type in ("LSTM", "GRU"):
            rnn.append(node)
        elif node.op_type not in _GLUE_OPS:
            raise ValueError(f"{where}: {graph.node_name(node)} is neither an LSTM/GRU nor shape "
                             "glue; from_onnx imports a recurrent stack only "
                             f"(glue ops: {', '.join(sorted(_GLUE_OPS))})")
    if not rnn:
        raise ValueError(f"{where} has no LSTM or GRU node")
    kinds = {n.op_type for n in rnn}
    if len(kinds) > 1:
        raise ValueError(f"{where} mixes LSTM and GRU nodes; a fastlstm module is one or the "
                         "other")
    layers = [_onnx_layer(graph, n) for n in rnn]
    first = layers[0][0]
    for k, ((info, _), node) in enumerate(zip(layers, rnn)):
        name = graph.node_name(node)
        if k == 0:
            continue
        prev = layers[k - 1][0]
        for key in ("D", "H", "layout"):
            if info[key] != first[key]:
                raise ValueError(f"{where}: {name} has {key}={info[key]} but the first layer "
                                 f"has {first[key]}; a fastlstm stack is uniform")
        if info["I"] != prev["D"] * prev["H"]:
            raise ValueError(f"{where}: {name} takes {info['I']} input features but the layer "
                             f"before it gives {prev['D'] * prev['H']}")
        if rnn[k - 1].outputs[0] not in graph.ancestors(node.inputs[0]):
            raise ValueError(f"{where}: {name}'s input X does not come from the previous "
                             "recurrent node's Y; only a chain of layers can be imported")
    x_anc = graph.ancestors(rnn[0].inputs[0])
    if any(o in x_anc for n in rnn for o in n.outputs):
        raise ValueError(f"{where}: the first recurrent node's input depends on a recurrent "
                         "output")
    if batch_first is None:
        batch_first = first["layout"] == 1
        src = graph.producer.get(rnn[0].inputs[0])
        if (first["layout"] == 0 and src is not None and src.op_type == "Transpose"
                and src.attributes.get("perm") == [1, 0, 2] and src.inputs
                and src.inputs[0] in graph.g.inputs and src.inputs[0] not in graph.consts):
            batch_first = True
    kind = first["kind"]
    has_bias = any(info["has_bias"] for info, _ in layers)
    has_p = any(info["has_p"] for info, _ in layers)
    if dtype is None:
        dtype = "float64" if first["dtype"] == np.float64 else "float32"
    kwargs = dict(input_size=first["I"], hidden_size=first["H"], num_layers=len(layers),
                  bias=has_bias, batch_first=bool(batch_first),
                  bidirectional=first["D"] == 2, dtype=dtype, seed=0)
    if kind == "LSTM":
        kwargs["peephole"] = has_p
    module = (LSTM if kind == "LSTM" else GRU)(**kwargs)
    params = {}
    for k, (info, per_dir) in enumerate(layers):
        for d, p in enumerate(per_dir):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            for name, arr in p.items():
                params[name + sfx] = arr
            for name in ("bias_ih", "bias_hh") if has_bias else ():
                params.setdefault(name + sfx, np.zeros(module.params[name + sfx].shape))
            for name in ("weight_ci", "weight_cf", "weight_co") if has_p else ():
                params.setdefault(name + sfx, np.zeros(info["H"]))
    _load_params(module, params, source=f"{where}")
    return module


# =============================================================================== ONNX export
def to_onnx(module, path, *, with_lengths=False, with_state=False, opset=14):
    """Writes ``module`` (a fastlstm LSTM or GRU) as an ONNX model (atomically): one standard
    LSTM/GRU node per layer (``direction="bidirectional"`` for both directions), with
    Transpose/Reshape/Concat glue so that the graph computes exactly the module's call.

    Inputs: ``input`` ([T, B, I], or [B, T, I] with batch_first), then ``lengths`` (int32 [B],
    with ``with_lengths``), ``h0`` [L*D, B, H] and (LSTM) ``c0`` (with ``with_state``).
    Outputs: ``output``, ``h_n`` and (LSTM) ``c_n``, shaped as the module returns them.
    Nodes use layout=0 (ONNX Runtime rejects layout=1) and, for GRU, linear_before_reset=1.
    A projection (proj_size) has no ONNX equivalent and is refused.
    """
    if not isinstance(module, (LSTM, GRU)):
        raise TypeError(f"module must be a fastlstm.LSTM or fastlstm.GRU, got "
                        f"{type(module).__name__}")
    if module.proj_size:
        raise ValueError(f"ONNX's LSTM operator has no projection; a module with proj_size="
                         f"{module.proj_size} cannot be exported")
    opset = operator.index(opset)
    if opset < 14:
        raise ValueError(f"opset must be >= 14 (LSTM/GRU with the layout attribute), got {opset}")
    from . import __version__

    kind = "LSTM" if isinstance(module, LSTM) else "GRU"
    perm = _TORCH_TO_ONNX_LSTM if kind == "LSTM" else _ZRH_RZN
    H, L, D, I = module.hidden_size, module.num_layers, module.num_directions, module.input_size
    elem = _proto.FLOAT if module.dtype == np.float32 else _proto.DOUBLE
    # the IR version that came with the opset (onnxruntime refuses an opset newer than its IR)
    ir = 7 if opset <= 14 else 8 if opset <= 18 else 9 if opset <= 20 else 10
    w = _proto.ModelWriter(f"fastlstm_{kind.lower()}", opset=opset, ir_version=ir,
                           version=__version__)
    x_dims = ["B", "T", I] if module.batch_first else ["T", "B", I]
    w.input("input", elem, x_dims)
    cur = "input"
    if module.batch_first:
        w.node("Transpose", ["input"], ["input_tbi"], "to_time_major", perm=[1, 0, 2])
        cur = "input_tbi"
    lens = ""
    if with_lengths:
        w.input("lengths", _proto.INT32, ["B"])
        lens = "lengths"
    if with_state:
        w.input("h0", elem, [L * D, "B", H])
        if kind == "LSTM":
            w.input("c0", elem, [L * D, "B", H])
    w.initializer("concat_directions", np.array([0, 0, -1], dtype=np.int64))
    p = module.params
    y_h, y_c = [], []
    for k in range(L):
        sfx = [f"_l{k}", f"_l{k}_reverse"][:D]
        W = np.stack([_blocks(p["weight_ih" + s], perm, H) for s in sfx])  # [D, G, I_k]
        R = np.stack([_blocks(p["weight_hh" + s], perm, H) for s in sfx])  # [D, G, H]
        ins = [cur, w.initializer(f"W_l{k}", W), w.initializer(f"R_l{k}", R), "", lens, "", ""]
        if module.bias:
            B = np.stack([np.concatenate([_blocks(p["bias_ih" + s], perm, H),
                                          _blocks(p["bias_hh" + s], perm, H)]) for s in sfx])
            ins[3] = w.initializer(f"B_l{k}", B)  # [D, 2G]
        if with_state:
            starts = w.initializer(f"state_start_l{k}", np.array([k * D], dtype=np.int64))
            ends = w.initializer(f"state_end_l{k}", np.array([(k + 1) * D], dtype=np.int64))
            w.node("Slice", ["h0", starts, ends], [f"h0_l{k}"], f"h0_slice_l{k}")
            ins[5] = f"h0_l{k}"
            if kind == "LSTM":
                w.node("Slice", ["c0", starts, ends], [f"c0_l{k}"], f"c0_slice_l{k}")
                ins[6] = f"c0_l{k}"
        if kind == "LSTM" and module.peephole:  # ONNX P is i, o, f
            P = np.stack([np.concatenate([p["weight_ci" + s], p["weight_co" + s],
                                          p["weight_cf" + s]]) for s in sfx])
            ins.append(w.initializer(f"P_l{k}", P))
        while ins and ins[-1] == "":
            ins.pop()
        outs = [f"Y_l{k}", f"Y_h_l{k}"] + ([f"Y_c_l{k}"] if kind == "LSTM" else [])
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if kind == "GRU":
            attrs["linear_before_reset"] = 1
        w.node(kind, ins, outs, f"{kind.lower()}_l{k}", **attrs)
        # Y [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H]
        w.node("Transpose", [f"Y_l{k}"], [f"Y_tbdh_l{k}"], f"y_transpose_l{k}",
               perm=[0, 2, 1, 3])
        last = k == L - 1
        cur = "output" if last and not module.batch_first else f"X_l{k + 1}"
        w.node("Reshape", [f"Y_tbdh_l{k}", "concat_directions"], [cur], f"y_reshape_l{k}")
        y_h.append(f"Y_h_l{k}")
        y_c.append(f"Y_c_l{k}")
    if module.batch_first:
        w.node("Transpose", [cur], ["output"], "to_batch_major", perm=[1, 0, 2])
    out_dims = ["B", "T", D * H] if module.batch_first else ["T", "B", D * H]
    w.output("output", elem, out_dims)
    states = [("h_n", y_h)] + ([("c_n", y_c)] if kind == "LSTM" else [])
    for name, parts in states:
        if len(parts) == 1:
            w.node("Identity", parts, [name], f"{name}_identity")
        else:
            w.node("Concat", parts, [name], f"{name}_concat", axis=0)
        w.output(name, elem, [L * D, "B", H])
    _atomic_write(path, [w.to_bytes()])
