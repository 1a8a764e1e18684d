"""Import from Keras: Sequential models, single LSTM/GRU/Bidirectional/Dense/Embedding layers,
their serialized configs with weight lists, a Keras 3 ``.keras`` file (a zip of config.json and
model.weights.h5, read with h5py), or a bare LSTM/GRU weight list (duck-typed; keras is never
imported). Keras' gate orders are mapped to PyTorch's; anything that cannot be mapped is
refused with the reason."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from ..rnn import GRU, LSTM
from .files import build_model
from .params import _ZRH_RZN, _blocks, _float_dtype, _load_params

__all__ = ["from_keras"]


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
    for rate in ("dropout", "recurrent_dropout"):  # training only; kept for a later fit
        if cfg.get(rate):
            config[rate] = float(cfg[rate])
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
            if cfg.get("units", units) != units:
                raise ValueError(f"{where}: config units={cfg['units']} but the kernel holds "
                                 f"{units}")
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
            for k, key in enumerate(("input_dim", "output_dim")):
                if cfg.get(key, emb.shape[k]) != emb.shape[k]:
                    raise ValueError(f"{where}: config {key}={cfg[key]} but the embeddings have "
                                     f"shape {emb.shape}")
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
    - ``from_keras(path)``: a Keras 3 ``.keras`` file (``model.save("m.keras")`` of a
      Sequential model), read without Keras: the zip's ``config.json`` and its
      ``model.weights.h5`` (needs h5py: ``pip install fastlstm[keras]``); nothing is extracted
      to disk;
    - ``from_keras(weights, cell='lstm'|'gru', bidirectional=False)``: a weight list of one
      Keras LSTM/GRU (``[kernel, recurrent_kernel, bias]``, Bidirectional: forward then
      backward) -> a bare batch-first :class:`~fastlstm.LSTM`/:class:`~fastlstm.GRU` whose
      output is the Keras layer's with ``return_sequences=True``.

    Keras' gate orders (LSTM i,f,c,o with one bias; GRU z,r,h with a [2, 3H] bias,
    reset_after=True) are mapped to PyTorch's; everything else is refused with the reason.
    """
    if isinstance(obj, (list, tuple)) and weights is None:
        return _keras_weights_to_module(obj, cell, bidirectional, dtype)
    if weights is None and _is_keras_path(obj):
        if cell is not None:
            raise ValueError("cell= is for a bare weight list; a .keras file says what it is")
        obj, weights = _read_keras_file(obj)
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
    return build_model(model, tensors, np.dtype(dtype), "from_keras")


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



# =============================================================================== .keras files
# A Keras 3 ``.keras`` file is a zip: metadata.json, config.json (the model's serialization, the
# JSON of model.to_json()) and model.weights.h5, where a Sequential's layers (InputLayer left
# out) are the groups layers/<snake_case class name>[_k] in order (the k-th repeat of a class
# gets _k), each with its variables as datasets vars/0..n-1, an LSTM/GRU's under cell/vars and a
# Bidirectional's under forward_layer/cell/vars then backward_layer/cell/vars: in that order
# they are model.get_weights().
_KERAS_SNAKE = {"LSTM": "lstm", "GRU": "gru", "Bidirectional": "bidirectional",
                "Dense": "dense", "Embedding": "embedding", "Dropout": "dropout"}
_KERAS_CONFIG_MAX = 64 << 20  # bytes of config.json read at most
_KERAS_MAX_EXPANSION = 100  # a compressed weights member may hold at most this times its size


def _is_keras_path(obj):
    if isinstance(obj, os.PathLike):
        return True
    if isinstance(obj, str) and not obj.lstrip().startswith("{"):
        return obj.endswith(".keras") or os.path.isfile(obj)
    return False


def _keras_member(archive, name, where):
    try:
        return archive.getinfo(name)
    except KeyError:
        raise ValueError(f"{where} has no {name} (a Keras 3 .keras file holds config.json and "
                         "model.weights.h5)") from None


def _keras_var_groups(cls, cfg, group, where):
    """The h5 groups (in get_weights order) that hold a layer's variables, with the number of
    datasets each must hold."""
    n = _keras_nweights(cls, cfg, where)
    if n == 0:
        return []
    if cls in _KERAS_RNN:
        return [(f"{group}/cell/vars", n)]
    if cls == "Bidirectional":
        return [(f"{group}/forward_layer/cell/vars", n // 2),
                (f"{group}/backward_layer/cell/vars", n // 2)]
    return [(f"{group}/vars", n)]


def _read_keras_file(path):
    """A .keras file -> (config dict, flat weight list in model.get_weights() order). Every
    dataset's declared size is checked against the size of the weights member before it is
    read, so a hostile file cannot make us allocate what it claims."""
    where = repr(os.fspath(path))
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"from_keras: no such file {where}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{where} is not a Keras 3 .keras file (a zip archive): {e}") from None
    with archive:
        info = _keras_member(archive, "config.json", where)
        if info.file_size > _KERAS_CONFIG_MAX:
            raise ValueError(f"{where}: config.json claims {info.file_size} bytes, more than the "
                             f"{_KERAS_CONFIG_MAX} a model config can need")
        try:
            config = json.loads(archive.read(info).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: config.json is not valid JSON: {e}") from None
        except zipfile.BadZipFile as e:
            raise ValueError(f"{where}: config.json cannot be read: {e}") from None
        layer_cfgs = _keras_normalize(config)
        # the groups the config implies, before the weights are opened
        used, plan, groups = {}, [], set()
        for entry in layer_cfgs:
            if not isinstance(entry, Mapping) or "class_name" not in entry:
                raise ValueError(f"{where}: a layer in config.json is not {{'class_name', "
                                 f"'config'}}: {entry!r}"[:300])
            cls, cfg = entry["class_name"], entry.get("config") or {}
            if cls == "InputLayer":
                continue
            lwhere = f"{where}: Keras layer {cfg.get('name', '?')!r} ({cls})"
            base = _KERAS_SNAKE.get(cls)
            if base is None:
                _keras_nweights(cls, cfg, lwhere)  # raises: cannot be imported
            k = used.get(base, -1) + 1
            used[base] = k
            group = f"layers/{base}" + (f"_{k}" if k else "")
            groups.add(group.split("/")[1])
            plan += [(g, n, lwhere) for g, n in _keras_var_groups(cls, cfg, group, lwhere)]
        winfo = _keras_member(archive, "model.weights.h5", where)
        if winfo.file_size > _KERAS_MAX_EXPANSION * winfo.compress_size + (1 << 20):
            raise ValueError(f"{where}: model.weights.h5 claims {winfo.file_size} bytes from "
                             f"{winfo.compress_size} compressed: refused as a zip bomb")
        try:
            import h5py
        except ImportError:
            raise ImportError("reading the weights of a .keras file needs h5py: "
                              "pip install fastlstm[keras] (or pip install h5py)") from None
        weights = []
        with archive.open(winfo) as stream:
            try:
                h5 = h5py.File(stream, "r")
            except (OSError, ValueError) as e:
                raise ValueError(f"{where}: model.weights.h5 is not an HDF5 file: {e}") from None
            with h5:
                budget = winfo.file_size  # the bytes the weights member really holds
                for group, n, lwhere in plan:
                    vars_ = h5.get(group)
                    if not isinstance(vars_, h5py.Group):
                        raise ValueError(f"{lwhere}: model.weights.h5 has no group {group!r}; "
                                         "the weights do not match config.json")
                    names = sorted(vars_.keys(), key=lambda s: (not s.isdigit(), len(s), s))
                    if names != [str(j) for j in range(n)]:
                        raise ValueError(f"{lwhere}: {group} must hold the datasets 0..{n - 1} "
                                         f"that config.json implies, got {names}"[:300])
                    for name in names:
                        ds = vars_[name]
                        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f" or \
                                ds.ndim not in (1, 2):
                            raise ValueError(f"{lwhere}: {group}/{name} must be a 1-d or 2-d "
                                             "float dataset, got "
                                             f"{getattr(ds, 'dtype', type(ds).__name__)} "
                                             f"{getattr(ds, 'shape', '')}")
                        nbytes = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
                        if nbytes > budget:
                            raise ValueError(f"{lwhere}: {group}/{name} claims shape "
                                             f"{ds.shape} ({nbytes} bytes), more than the "
                                             "rest of model.weights.h5 holds")
                        budget -= nbytes
                        try:
                            weights.append(np.asarray(ds[()]))
                        except (OSError, ValueError) as e:
                            raise ValueError(f"{lwhere}: {group}/{name} cannot be read: "
                                             f"{e}") from None
                extra = sorted(set(h5.get("layers", {}).keys()) - groups)
                if extra:
                    raise ValueError(f"{where}: model.weights.h5 holds weights of layers "
                                     f"{extra} that config.json does not have")
    return config, weights
