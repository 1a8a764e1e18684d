"""fastlstm model files: save/load of the bare modules (:class:`~fastlstm.LSTM`,
:class:`~fastlstm.GRU`) and of the Keras-shaped models.

The format (header metadata, tensor names, dtypes, versioning, what a reader must refuse) is
written down in docs/model-format.md; this writer and the C++ reader
(cpp/src/model_reader.cpp) follow it. A model file is a safetensors file
(:mod:`fastlstm.io.safetensors`) with the architecture as JSON in ``__metadata__["fastlstm"]``.

Models live above this module (``fastlstm.models`` imports it), so the model classes this
module can load register themselves here (:func:`register_model_class`) instead of being
imported: the package's imports stay acyclic.
"""

from __future__ import annotations

import json

import numpy as np

from ..rnn import GRU, LSTM, param_layout
from .atomic import fspath as _fspath
from .safetensors import _is_int, load_safetensors, save_safetensors

__all__ = ["FORMAT_VERSION", "save", "load", "save_model", "load_model", "read_model_info",
           "register_model_class", "SELFCHECK_INPUT", "SELFCHECK_OUTPUT", "SELFCHECK_LENGTHS"]

FORMAT_VERSION = 1
#: tensor names of the self-check data inside a model file
SELFCHECK_INPUT = "selfcheck.input"
SELFCHECK_OUTPUT = "selfcheck.output"
SELFCHECK_LENGTHS = "selfcheck.lengths"

# relative tolerance of verify=True: max|got - expected| <= tol * (1 + max|expected|). Loose
# enough for another machine's SIMD path, far below what a wrongly mapped weight produces.
_VERIFY_TOL = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-9}
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


# the largest size a file may give (the C++ reader's limit as well; docs/model-format.md)
_MAX_SIZE = 2**30


def _size(config, key, where, minimum=1):
    v = config.get(key)
    if not _is_int(v) or v < minimum:
        raise ValueError(f"{where}: config {key} must be an integer >= {minimum}, got {v!r}")
    if v > _MAX_SIZE:
        raise ValueError(f"{where}: config {key} must be at most 2^30, got {v}")
    return v


def _layout_shapes(where, kind, input_size, hidden, layers, bidirectional, bias, proj=0,
                   peephole=False, prefix=""):
    """Parameter name -> shape of an engine module from its sizes alone (the engine's layout,
    :func:`fastlstm.rnn.param_layout`), so a corrupt size is caught before anything is
    allocated."""
    try:
        layout = param_layout(kind, input_size, hidden, layers, bidirectional, bias, proj,
                              peephole)
    except ValueError as e:
        raise ValueError(f"{where}: invalid {kind} config: {e}") from None
    return {prefix + name: shape for name, shape, _ in layout}


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
            out.update(_layout_shapes(lw, kind, in_size, units, 1, D == 2,
                                      bool(cfg.get("bias", True)), peephole=peephole, prefix=p))
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
    # shapes first: a corrupt size must not make the engine allocate gigabytes (and a layer
    # count beyond the tensors present must not build a huge layout)
    if config["num_layers"] * (2 if config["bidirectional"] else 1) * 2 > len(weights):
        raise ValueError(f"{where}: config num_layers={config['num_layers']} but the file holds "
                         f"only {len(weights)} weight tensors")
    expected = _layout_shapes(where, model["class"], config["input_size"],
                              config["hidden_size"], config["num_layers"],
                              config["bidirectional"], config["bias"], config["proj_size"],
                              config["peephole"])
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
# model classes that files can hold beside the bare modules, by their "class" name; filled by
# fastlstm.models (which sits above this module) through register_model_class
_MODEL_CLASSES = {}


def register_model_class(cls):
    """Lets :func:`load_model` (and the Keras importer) build ``cls`` from a model file's
    description: ``cls.from_config(description)``, ``get_weight_dict()`` and
    ``set_weight_dict(tensors)``, stored under ``cls.__name__``. Returns ``cls``."""
    for method in ("from_config", "get_config", "get_weight_dict", "set_weight_dict"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"a model class needs {method}(); {cls.__name__} has none")
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def build_model(model, weights, dtype, where):
    """A registered model class built from its description ``model`` (the ``"model"`` object of
    a file) with ``weights`` (name -> array, checked against the built model's own names,
    shapes and ``dtype`` before anything is written)."""
    cls = _MODEL_CLASSES.get(model["class"])
    if cls is None:  # pragma: no cover - fastlstm/__init__ imports fastlstm.models
        raise ValueError(f"{where}: no model class {model['class']!r} is registered (import "
                         "fastlstm.models)")
    try:
        built = cls.from_config(model)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad description
        raise ValueError(f"{where}: invalid {model['class']} description: "
                         f"{type(e).__name__}: {e}") from None
    expected = {k: np.shape(v) for k, v in built.get_weight_dict().items()}
    _check_weights(weights, expected, dtype, where)
    built.set_weight_dict(weights)
    return built


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
    seq = build_model(model, weights, dtype, where)
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

