"""fastlstm model files: save/load of the bare modules (:class:`~fastlstm.LSTM`,
:class:`~fastlstm.GRU`) and of the Keras-shaped models.

The format (header metadata, tensor names, dtypes, versioning, what a reader must refuse) is
written down in docs/model-format.md; this writer and the C++ reader
(cpp/src/model_reader.cpp) follow it. A model file is a safetensors file
(:mod:`fastlstm.io.safetensors`) with the architecture as JSON in ``__metadata__["fastlstm"]``.
Files are read by the C++ reader alone (through ``fastlstm._core.read_model_file``, the code a
C++ application runs), so Python and C++ accept and refuse the same files; this module only
builds the Python objects from its validated description.

Models live above this module (``fastlstm.models`` imports it), so the model classes this
module can load register themselves here (:func:`register_model_class`) instead of being
imported: the package's imports stay acyclic.
"""

from __future__ import annotations

import json

import numpy as np

from .. import _core
from ..rnn import GRU, LSTM, dequantize_rows, is_quantized_matrix, quantize_rows
from .atomic import fspath as _fspath
from .atomic import read_bytes
from .safetensors import save_safetensors

__all__ = ["FORMAT_VERSION", "save", "load", "save_model", "load_model", "read_model_info",
           "register_model_class", "SELFCHECK_INPUT", "SELFCHECK_OUTPUT", "SELFCHECK_LENGTHS"]

#: the newest format version (docs/model-format.md): 2 adds quantized models. A float model is
#: written as version 1, which every fastlstm reads; a quantized one as version 2.
FORMAT_VERSION = 2
_LOW = ("bf16", "int8")
#: tensor names of the self-check data inside a model file
SELFCHECK_INPUT = "selfcheck.input"
SELFCHECK_OUTPUT = "selfcheck.output"
SELFCHECK_LENGTHS = "selfcheck.lengths"

# relative tolerance of verify=True: max|got - expected| <= tol * (1 + max|expected|). Loose
# enough for another machine's SIMD path, far below what a wrongly mapped weight produces.
_VERIFY_TOL = {np.dtype("float32"): 1e-4, np.dtype("float64"): 1e-9}
# =============================================================================== model files
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
    version = 2 if model_dict.get("precision", "float32") in _LOW else 1
    metadata = {"fastlstm": json.dumps({"format_version": version, "model": model_dict})}
    if selfcheck is not None:
        extra, check = selfcheck
        clash = set(extra) & set(tensors)
        if clash:
            raise ValueError(f"weight names {sorted(clash)} collide with the self-check tensors")
        tensors = {**tensors, **extra}
        metadata["fastlstm_selfcheck"] = check
    save_safetensors(path, tensors, metadata)


def _stored_weights(weights, precision):
    """name -> array as the file stores it: a quantized model's matrices (weight_ih, weight_hh,
    weight_hr) quantized as the engine packs them (bf16 bits as uint16; int8 codes plus a
    float32 ``<name>.scale`` per row), everything else as it is."""
    out = {}
    for name, value in weights.items():
        if precision in _LOW and is_quantized_matrix(name):
            _, stored, scales = quantize_rows(value, precision)
            out[name] = stored
            if scales is not None:
                out[name + ".scale"] = scales
        else:
            out[name] = np.array(value)
    return out


def _float_weights(weights, precision):
    """The inverse of :func:`_stored_weights` on a validated file's tensors: the quantized
    matrices' float32 values (what the saved model computed with), the scales consumed."""
    if precision not in _LOW:
        return dict(weights)
    out = {}
    for name, value in weights.items():
        if is_quantized_matrix(name) and value.dtype != np.float32:  # BF16 bits or I8 codes
            out[name] = dequantize_rows(value, weights.get(name + ".scale"), precision)
        elif not name.endswith(".scale"):
            out[name] = value
    return out


def save(module, path, *, example_input=None, example_lengths=None):
    """Saves a bare :class:`~fastlstm.LSTM`/:class:`~fastlstm.GRU` to ``path`` (atomically).
    A module made by ``quantize("bf16" | "int8")`` is saved with its matrices stored quantized
    (format_version 2, docs/model-format.md); :func:`load` gives it back bit for bit.

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
    if module.quantized:
        model["precision"] = module.precision
    tensors = _stored_weights(module.params, module.precision)
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


def _read_model(path):
    """The C++ reader's validated description of the model file at ``path``
    (``fastlstm._core.read_model_file``: the reader and checks of ``fastlstm::Model::load``, the
    one reader of the format): a dict with class, dtype, config (LSTM/GRU) or layers
    (Sequential), every field present, weights (name -> array in the file's dtype) and
    selfcheck (input, output, lengths arrays, or None). Everything the file claims was checked
    before it was allocated; a refusal is a ValueError naming the file, the field and the
    reason."""
    path = _fspath(path)
    return _core.read_model_file(read_bytes(path, "model file"), path)


def _no_self_check(where):
    return ValueError(f"{where} carries no self-check data to verify (save it with "
                      "example_input=...)")


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
        want = dtype.get(name) if isinstance(dtype, dict) else dtype
        if arr.dtype != want:
            raise ValueError(f"{where}: {what} {name!r} has dtype {arr.dtype.name}, expected "
                             f"{want.name}")
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{where}: {what} {name!r} has shape {tuple(arr.shape)}, expected "
                             f"{tuple(shape)}")


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
def load(path, verify=False):
    """Loads a bare LSTM/GRU saved by :func:`save` (a quantized file: an inference-only module
    of that ``precision``, as ``quantize`` makes). With ``verify=True`` the file's self-check
    is rerun and a ValueError raised if the outputs differ (or if the file has none)."""
    spec = _read_model(path)
    where = repr(_fspath(path))
    cls = {"LSTM": LSTM, "GRU": GRU}.get(spec["class"])
    if cls is None:
        raise ValueError(f"{where} holds a {spec['class']!r} model, not an LSTM or GRU module "
                         "(use fastlstm.io.load_model)")
    config = dict(spec["config"])
    if cls is GRU:  # validated: no projection, no peepholes
        del config["proj_size"], config["peephole"]
    module = cls(**config, dtype=spec["dtype"], seed=0)
    if spec["precision"] in _LOW:  # validated: dtype float32
        module._become_quantized(spec["precision"])
    for name, arr in _float_weights(spec["weights"], spec["precision"]).items():
        module.params[name][...] = arr
    if verify:
        check = spec["selfcheck"]
        if check is None:
            raise _no_self_check(where)
        x = check["input"]
        if not module.batch_first:
            x = x.transpose(1, 0, 2)
        y = module(x, lengths=check["lengths"])[0]
        if not module.batch_first:
            y = y.transpose(1, 0, 2)
        _compare_selfcheck(y, check["output"], module.dtype, where)
    return module


def read_model_info(path):
    """The validated ``{"format_version", "model", "selfcheck"}`` description of a model file
    (no weights built), e.g. to see which class it holds; ``model`` has every field, defaults
    filled in (``precision``: "float32", or "bf16"/"int8" for a quantized model)."""
    spec = _read_model(path)
    model = {k: spec[k] for k in ("class", "dtype", "precision", "config", "layers")
             if k in spec}
    return {"format_version": spec["format_version"], "model": model,
            "selfcheck": spec["selfcheck"] is not None}


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


def build_model(model, weights, dtype, where, precision="float32"):
    """A registered model class built from its description ``model`` (the ``"model"`` object of
    a file) with ``weights`` (name -> array, checked against the built model's own names,
    shapes and ``dtype`` before anything is written). ``precision`` "bf16"/"int8": the built
    model is quantized first (``quantize``) and ``weights`` are the float32 values of its
    quantized recurrent layers (their weights are float32, the others ``dtype``)."""
    cls = _MODEL_CLASSES.get(model["class"])
    if cls is None:  # pragma: no cover - fastlstm/__init__ imports fastlstm.models
        raise ValueError(f"{where}: no model class {model['class']!r} is registered (import "
                         "fastlstm.models)")
    try:
        built = cls.from_config(model)
    except Exception as e:  # noqa: BLE001 - any failure here means a bad description
        raise ValueError(f"{where}: invalid {model['class']} description: "
                         f"{type(e).__name__}: {e}") from None
    if precision in _LOW:
        built.quantize(precision)
    own = built.get_weight_dict()
    expected = {k: np.shape(v) for k, v in own.items()}
    _check_weights(weights, expected, {k: v.dtype for k, v in own.items()}, where)
    built.set_weight_dict(weights)
    return built


def _predict(model, x, lengths):
    """Inference on the whole batch (the model's ``__call__``: no batching, no progress bar)."""
    return model(x, lengths=lengths)


def save_model(model, path, *, example_input=None, example_lengths=None):
    """Saves a ``fastlstm.models.Sequential`` (architecture from ``model.get_config()``, weights
    from ``model.get_weight_dict()``) atomically; after ``model.quantize(...)`` the recurrent
    matrices are stored quantized (format_version 2). ``example_input`` ([B, T, F] floats or [B, T]
    int tokens when the first layer is an Embedding) adds a self-check."""
    if isinstance(model, (LSTM, GRU)):
        raise TypeError("model is a bare LSTM/GRU module: use fastlstm.io.save")
    if not (hasattr(model, "get_config") and hasattr(model, "get_weight_dict")):
        raise TypeError(f"model must be a fastlstm.models.Sequential, got "
                        f"{type(model).__name__}")
    precision = getattr(model, "precision", "float32")
    config = dict(model.get_config())
    config.setdefault("class", "Sequential")
    if precision in _LOW:
        config["precision"] = precision
    dtype = np.dtype(config.get("dtype", "float32"))
    tensors = _stored_weights(model.get_weight_dict(), precision)
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


def _refuse_keras_file(path):
    """A Keras 3 ``.keras`` file (a zip) gets an error that says what to do instead."""
    p = _fspath(path)
    try:
        with open(p, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
    except OSError:
        return  # the reader reports a missing or unreadable file
    if zipped or p.endswith(".keras"):
        raise ValueError(
            f"{p!r} is a Keras file, not a fastlstm model file: load it in Keras and import it "
            "with fastlstm.from_keras(keras_model) (or from_keras(model.to_json(), "
            "model.get_weights())); reading .keras archives directly is not supported")


def load_model(path, verify=False):
    """Loads a Sequential model saved by :func:`save_model` (``verify`` as for :func:`load`)."""
    _refuse_keras_file(path)
    spec = _read_model(path)
    where = repr(_fspath(path))
    if spec["class"] != "Sequential":
        raise ValueError(f"{where} holds a {spec['class']!r} model, not a Sequential (use "
                         "fastlstm.io.load)")
    dtype = np.dtype(spec["dtype"])
    model = {"class": "Sequential", "dtype": spec["dtype"], "layers": spec["layers"]}
    seq = build_model(model, _float_weights(spec["weights"], spec["precision"]), dtype, where,
                      spec["precision"])
    if verify:
        check = spec["selfcheck"]
        if check is None:
            raise _no_self_check(where)
        y = _predict(seq, check["input"], check["lengths"])
        _compare_selfcheck(y, check["output"], dtype, where)
    return seq
