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

from .. import _core, initializers
from ..rnn import GRU, LSTM, dequantize_rows, is_quantized_matrix, quantize_rows
from .atomic import fspath as _fspath
from .atomic import read_bytes
from .safetensors import save_safetensors

__all__ = ["FORMAT_VERSION", "save", "load", "save_model", "load_model", "read_model_info",
           "register_model_class", "SELFCHECK_INPUT", "SELFCHECK_OUTPUT", "SELFCHECK_LENGTHS"]

#: the newest format version (docs/model-format.md): 2 adds quantized models, functional models
#: and the compile state. A file that needs none of them is written as version 1, which every
#: fastlstm reads.
FORMAT_VERSION = 2
_LOW = ("bf16", "int8")
#: tensor names of the self-check data inside a model file
SELFCHECK_INPUT = "selfcheck.input"
SELFCHECK_OUTPUT = "selfcheck.output"
SELFCHECK_LENGTHS = "selfcheck.lengths"
#: prefix of the optimizer slot tensors of a compile state ("optimizer.{slot}.{weight name}")
SLOT_PREFIX = "optimizer."

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


def _write_model(path, model_dict, tensors, selfcheck, compile_state=None):
    # the oldest version that holds the file, so older readers read what they can run
    version = 2 if (model_dict.get("precision", "float32") in _LOW
                    or model_dict.get("class") == "Model" or compile_state is not None) else 1
    metadata = {"fastlstm": json.dumps({"format_version": version, "model": model_dict})}
    if compile_state is not None:
        tensors = _add_compile_state(metadata, tensors, compile_state)
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
    if spec["class"] == "Model":
        model = _graph_description(spec["graph"], repr(_fspath(path)))
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
        # every weight a layer creates is counted against the file's before it is allocated
        with initializers.weights_from_file(_weight_elements(weights) + _BUDGET_SLACK, where):
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


def save_model(model, path, *, example_input=None, example_lengths=None,
               include_optimizer=True):
    """Saves a Keras-shaped model (``fastlstm.models.Sequential`` or a functional ``Model``:
    architecture from ``model.get_config()``, weights from ``model.get_weight_dict()``, and
    once compiled its compile state, the optimizer's slots unless ``include_optimizer=False``)
    atomically. After ``model.quantize(...)`` (Sequential models) the recurrent matrices are
    stored quantized and no compile state is kept (a quantized model does not train).
    ``example_input`` ([B, T, F] floats or [B, T] int tokens when the first layer is an
    Embedding) adds a self-check (Sequential models)."""
    if isinstance(model, (LSTM, GRU)):
        raise TypeError("model is a bare LSTM/GRU module: use fastlstm.io.save")
    if not (hasattr(model, "get_config") and hasattr(model, "get_weight_dict")):
        raise TypeError(f"model must be a fastlstm.models.Sequential or Model, got "
                        f"{type(model).__name__}")
    precision = getattr(model, "precision", "float32")
    config = dict(model.get_config())
    config.setdefault("class", "Sequential")
    if precision in _LOW:
        if config["class"] != "Sequential":
            raise NotImplementedError(
                f"saving a functional Model quantized to {precision} is not supported yet: save "
                "the float model and call quantize() after fastlstm.load_model")
        config["precision"] = precision
    dtype = np.dtype(config.get("dtype", "float32"))
    tensors = _stored_weights(model.get_weight_dict(), precision)
    selfcheck = None
    if example_input is not None:
        if config["class"] != "Sequential":
            raise ValueError("example_input: a self-check is stored for Sequential models only "
                             f"(this is a {config['class']})")
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
    state = None
    if precision not in _LOW and callable(getattr(model, "_compile_state", None)):
        state = model._compile_state(include_optimizer=bool(include_optimizer))
    _write_model(path, config, tensors, selfcheck, state)


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
            f"{p!r} is a Keras file, not a fastlstm model file: import it with "
            "fastlstm.from_keras(path) (reads the archive's config.json and model.weights.h5; "
            "needs h5py: pip install fastlstm[keras]), or load it in Keras and use "
            "fastlstm.from_keras(keras_model)")


def load_model(path, verify=False, compile=True, custom_objects=None):
    """Loads a Keras-shaped model saved by :func:`save_model` (a Sequential or a functional
    Model). A file with a compile state gives a compiled model whose optimizer continues from
    the saved slots and step count (``compile=False``: an uncompiled model); losses, metrics or
    an optimizer class of your own are named in the file and found in ``custom_objects``
    (name -> object). ``verify`` as for :func:`load`."""
    _refuse_keras_file(path)
    spec = _read_model(path)
    where = repr(_fspath(path))
    if spec["class"] not in ("Sequential", "Model"):
        raise ValueError(f"{where} holds a {spec['class']!r} model, not a Sequential or a "
                         "functional Model (use fastlstm.io.load)")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"custom_objects must be a dict name -> object, got "
                        f"{type(custom_objects).__name__}")
    dtype = np.dtype(spec["dtype"])
    weights = {k: v for k, v in spec["weights"].items() if not k.startswith(SLOT_PREFIX)}
    slots = {k: v for k, v in spec["weights"].items() if k.startswith(SLOT_PREFIX)}
    if spec["class"] == "Model":
        model = _graph_description(spec["graph"], where)
    else:
        model = {"class": "Sequential", "dtype": spec["dtype"], "layers": spec["layers"]}
    built = build_model(model, _float_weights(weights, spec["precision"]), dtype, where,
                        spec["precision"])
    if verify:
        check = spec["selfcheck"]
        if check is None:
            raise _no_self_check(where)
        y = _predict(built, check["input"], check["lengths"])
        _compare_selfcheck(y, check["output"], dtype, where)
    if compile and spec["compile"] is not None:
        try:
            meta = json.loads(spec["compile"])
        except ValueError as e:
            raise ValueError(f"{where}: __metadata__[\"fastlstm_compile\"] is not valid JSON: "
                             f"{e}") from None
        built._restore_compile_state(meta, slots, custom_objects, where)
    return built


# ------------------------------------------------------------------------- compile state
# (docs/model-format.md, "Compile state"): the JSON in __metadata__["fastlstm_compile"], the
# optimizer's slots as tensors SLOT_PREFIX + "{slot}.{weight name}" of the weights' shapes


def _add_compile_state(metadata, tensors, state):
    meta, slot_tensors = state
    clash = set(slot_tensors) & set(tensors)
    if clash:
        raise ValueError(f"weight names {sorted(clash)[:4]} collide with optimizer slots")
    metadata["fastlstm_compile"] = json.dumps(meta, allow_nan=False)
    return {**tensors, **slot_tensors}


# ------------------------------------------------------------------------- functional graphs
# (docs/model-format.md, "Functional models"). The C++ reader checks the container, the version,
# the class and the weights' dtype and hands the description over; the graph is checked here,
# before anything is built, and built under a weight budget (initializers.weights_from_file).
_MAX_ITEMS = 1024       # layers, calls of a layer, inputs and outputs of a model or a call
_MAX_RANK = 8           # entries of an input shape
_MAX_DIM = 1 << 24      # a size in a shape or a config (the C++ reader's limit)
_MAX_INT = 1 << 31      # any integer in a layer config (an Embedding vocabulary)
_MODEL_KEYS = {"class", "dtype", "inputs", "layers", "outputs", "output_names"}


def _graph_description(text, where):
    try:
        info = json.loads(text)
        model = info["model"]
    except (ValueError, KeyError, TypeError) as e:  # checked by the C++ reader already
        raise ValueError(f"{where}: invalid functional model description: {e}") from None
    _check_graph(model, "model", where, depth=0)
    return model


def _fail(where, ctx, msg):
    raise ValueError(f"{where}: {ctx} {msg}")


def _list(obj, key, ctx, where, lo=1, hi=_MAX_ITEMS):
    v = obj.get(key)
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        _fail(where, f"{ctx}.{key}", f"must be a list of {lo} to {hi} entries, got "
              f"{type(v).__name__ if not isinstance(v, list) else f'{len(v)} entries'}")
    return v


def _check_ints(value, ctx, where, depth=0):
    """Every number in a layer config: integers within _MAX_INT, floats finite."""
    if depth > 16:
        _fail(where, ctx, "is nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            _fail(where, ctx, f"is {value}, beyond the limit of {_MAX_INT}")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            _fail(where, ctx, "must be finite")
    elif isinstance(value, list):
        if len(value) > _MAX_ITEMS:
            _fail(where, ctx, f"has {len(value)} entries, more than {_MAX_ITEMS}")
        for i, v in enumerate(value):
            _check_ints(v, f"{ctx}[{i}]", where, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_ints(v, f"{ctx}.{k}", where, depth + 1)


def _check_graph(model, ctx, where, depth):
    """The graph description of a functional model (nested models recursively): known keys,
    sizes within the limits, every tensor reference naming an existing layer call (or model
    input) and output, and no cycle."""
    if depth > 16:
        _fail(where, ctx, "nests models more than 16 deep")
    if not isinstance(model, dict):
        _fail(where, ctx, "must be an object")
    unknown = set(model) - _MODEL_KEYS - ({"name", "calls"} if depth else set())
    if unknown:
        _fail(where, ctx, f"has unknown key(s) {sorted(unknown)} (expected only "
              f"{sorted(_MODEL_KEYS)})")
    if model.get("dtype") not in ("float32", "float64"):
        _fail(where, f"{ctx}.dtype", f"must be \"float32\" or \"float64\", got "
              f"{model.get('dtype')!r}")
    inputs = _list(model, "inputs", ctx, where)
    for i, spec in enumerate(inputs):
        ictx = f"{ctx}.inputs[{i}]"
        if not isinstance(spec, dict) or set(spec) - {"shape", "dtype", "name"} or \
                "shape" not in spec:
            _fail(where, ictx, "must be an object with shape (and dtype, name) only")
        shape = spec["shape"]
        if not isinstance(shape, list) or len(shape) > _MAX_RANK or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool)
                              and 1 <= d <= _MAX_DIM) for d in shape):
            _fail(where, f"{ictx}.shape", f"must be a list of at most {_MAX_RANK} sizes in "
                  f"[1, {_MAX_DIM}] or null, got {shape!r}")
        if spec.get("dtype", "float32") not in ("float32", "float64", "int32", "int64"):
            _fail(where, f"{ictx}.dtype", f"must be float32, float64, int32 or int64, got "
                  f"{spec.get('dtype')!r}")
        if not isinstance(spec.get("name", ""), (str, type(None))):
            _fail(where, f"{ictx}.name", "must be a string")
    layers = _list(model, "layers", ctx, where)
    ncalls = {}
    for i, layer in enumerate(layers):
        lctx = f"{ctx}.layers[{i}]"
        if not isinstance(layer, dict):
            _fail(where, lctx, "must be an object")
        name, cls = layer.get("name"), layer.get("class")
        if not isinstance(name, str) or not name or name == "__input__":
            _fail(where, f"{lctx}.name", f"must be a non-empty layer name, got {name!r}")
        if name in ncalls:
            _fail(where, f"{lctx}.name", f"{name!r} names two layers")
        if not isinstance(cls, str):
            _fail(where, f"{lctx}.class", "must be a string")
        ncalls[name] = len(_list(layer, "calls", lctx, where))
        if cls == "Model":
            _check_graph(layer, lctx, where, depth + 1)
        elif cls == "Sequential":
            if set(layer) - {"class", "dtype", "layers", "name", "calls"}:
                _fail(where, lctx, f"has unknown key(s) "
                      f"{sorted(set(layer) - {'class', 'dtype', 'layers', 'name', 'calls'})}")
            _check_ints(_list(layer, "layers", lctx, where), f"{lctx}.layers", where)
        else:
            if set(layer) - {"class", "config", "name", "calls"}:
                _fail(where, lctx, "has unknown key(s) "
                      f"{sorted(set(layer) - {'class', 'config', 'name', 'calls'})}")
            if not isinstance(layer.get("config", {}), dict):
                _fail(where, f"{lctx}.config", "must be an object")
            _check_ints(layer.get("config", {}), f"{lctx}.config", where)

    def ref(r, rctx):
        if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
                and all(isinstance(k, int) and not isinstance(k, bool) for k in r[1:])):
            _fail(where, rctx, f"must be [layer name, call index, output index], got {r!r}")
        ln, k, j = r
        if ln == "__input__":
            if not (0 <= k < len(inputs) and j == 0):
                _fail(where, rctx, f"refers to model input {k} (output {j}); the model has "
                      f"{len(inputs)} input(s)")
            return None
        if ln not in ncalls:
            _fail(where, rctx, f"refers to layer {ln!r}, which is not in the model")
        if not (0 <= k < ncalls[ln] and 0 <= j < 64):
            _fail(where, rctx, f"refers to call {k} (output {j}) of layer {ln!r}, which is "
                  f"called {ncalls[ln]} time(s)")
        return (ln, k)

    deps = {}
    for i, layer in enumerate(layers):
        for k, call in enumerate(layer["calls"]):
            cctx = f"{ctx}.layers[{i}].calls[{k}]"
            if not isinstance(call, dict) or set(call) - {"inputs", "kwargs"}:
                _fail(where, cctx, "must be an object with inputs (and kwargs) only")
            if not isinstance(call.get("kwargs", {}), dict):
                _fail(where, f"{cctx}.kwargs", "must be an object")
            _check_ints(call.get("kwargs", {}), f"{cctx}.kwargs", where)
            srcs = _list(call, "inputs", cctx, where)
            deps[(layer["name"], k)] = {d for n, r in enumerate(srcs)
                                        if (d := ref(r, f"{cctx}.inputs[{n}]")) is not None}
    outputs = _list(model, "outputs", ctx, where)
    for n, r in enumerate(outputs):
        ref(r, f"{ctx}.outputs[{n}]")
    names = model.get("output_names")
    if names is not None and (not isinstance(names, list) or len(names) != len(outputs)
                              or not all(isinstance(x, str) for x in names)):
        _fail(where, f"{ctx}.output_names", "must be a list of strings, one per output")
    # Kahn's algorithm: whatever is left depends on itself
    left = dict(deps)
    while left:
        ready = [c for c, d in left.items() if not (d & left.keys())]
        if not ready:
            ln, k = sorted(left)[0]
            _fail(where, ctx, f"has a cycle: call {k} of layer {ln!r} depends (through "
                  f"{len(left)} call(s)) on its own output")
        for c in ready:
            del left[c]


_BUDGET_SLACK = 1 << 16  # values a layer may create beyond its saved weights (none today)


def _weight_elements(weights):
    return sum(int(np.asarray(w).size) for w in weights.values())
