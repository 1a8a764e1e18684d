"""A model's compile state in model files: the optimizer (class, configuration, slots and step
count), the losses, loss weights and metrics, so that ``load_model`` returns a model that
resumes training where it stopped (docs/model-format.md, "Compile state").

Losses and metrics are stored by name (a Keras name as given, or a built-in class with its
configuration); a function or class of your own is stored by its name only and must be given
again at load (``custom_objects={name: obj}``), as Keras does. Optimizer slots are stored per
weight: ``optimizer.{slot}.{weight name}``, each of the weight's shape, so a file's slots are
checked against its weights and do not depend on how the model lays out its buffers.
"""

from __future__ import annotations

import math

import numpy as np

from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optim
from ..io.files import SLOT_PREFIX

__all__ = ["CompileStateMixin"]

_MAX_ITEMS = 1024  # outputs, metrics per output: far above any real model

_LOSS_CLASSES = {c.__name__: c for c in (
    losses_mod.MeanSquaredError, losses_mod.MeanAbsoluteError, losses_mod.Huber,
    losses_mod.BinaryCrossentropy, losses_mod.CategoricalCrossentropy,
    losses_mod.SparseCategoricalCrossentropy)}
_METRIC_CLASSES = {c.__name__: c for c in (
    metrics_mod.BinaryAccuracy, metrics_mod.CategoricalAccuracy,
    metrics_mod.SparseCategoricalAccuracy, metrics_mod.MeanSquaredError,
    metrics_mod.MeanAbsoluteError, metrics_mod.RootMeanSquaredError)}


# ------------------------------------------------------------------------------ losses, metrics
def _custom_name(obj):
    if isinstance(obj, losses_mod.LossFunction):
        obj = obj.fn
    if isinstance(obj, metrics_mod.MeanMetricWrapper):
        obj = obj.fn
    if isinstance(obj, type):
        return obj.__name__
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) else type(obj).__name__


def _loss_to_json(loss):
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, type) and _LOSS_CLASSES.get(loss.__name__) is loss:
        return {"class": loss.__name__, "config": {}}
    if type(loss) is _LOSS_CLASSES.get(type(loss).__name__):
        cfg = {k: v for k, v in loss.get_config().items() if k != "name"}
        return {"class": type(loss).__name__, "config": cfg}
    return {"custom": _custom_name(loss)}


def _metric_to_json(m):
    if m is None or isinstance(m, str):
        return m
    if type(m) is _METRIC_CLASSES.get(type(m).__name__):
        cfg = {"name": m.name}
        if hasattr(m, "threshold"):
            cfg["threshold"] = m.threshold
        return {"class": type(m).__name__, "config": cfg}
    return {"custom": _custom_name(m)}


def _structured(value, fn, what):
    """value (one item, a list or a dict of items, or lists of items per output) to JSON."""
    if isinstance(value, dict):
        return {"dict": {str(k): _structured(v, fn, what) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_structured(v, fn, what) for v in value]}
    return fn(value)


def _custom(name, custom_objects, what):
    if not isinstance(name, str):
        raise ValueError(f"{what}: a custom entry must name the object, got {name!r}")
    if name not in (custom_objects or {}):
        raise ValueError(
            f"{what} is {name!r}, a function or class of your own that a file cannot hold: "
            f"pass it to load_model(..., custom_objects={{{name!r}: ...}}), or load with "
            "compile=False and compile again")
    return custom_objects[name]


def _item_from_json(j, custom_objects, what, kind, check_name, classes):
    """A loss or metric item of the compile state: None, a Keras name (``check_name`` raises
    ValueError for an unknown one), a built-in class with its config, or a custom entry."""
    if j is None:
        return None
    if isinstance(j, str):
        try:
            check_name(j)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        return j
    if isinstance(j, dict) and set(j) == {"custom"}:
        return _custom(j["custom"], custom_objects, what)
    if isinstance(j, dict) and set(j) == {"class", "config"} and isinstance(j["config"], dict) \
            and isinstance(j["class"], str):
        cls = classes.get(j["class"])
        if cls is None:
            raise ValueError(f"{what}: unknown {kind} class {j['class']!r}; expected one of "
                             f"{sorted(classes)}")
        try:
            return cls(**j["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: invalid {j['class']} config: {e}") from None
    raise ValueError(f"{what} must be a {kind} name, {{'class', 'config'}} or {{'custom'}}, "
                     f"got {j!r}")


def _loss_from_json(j, custom_objects, what):
    return _item_from_json(j, custom_objects, what, "loss", losses_mod.get, _LOSS_CLASSES)


def _metric_from_json(j, custom_objects, what):
    return _item_from_json(j, custom_objects, what, "metric",
                           lambda name: metrics_mod.get(name, None, (2,)), _METRIC_CLASSES)


def _unstructured(j, fn, what, depth=0):
    if isinstance(j, dict) and set(j) == {"dict"}:
        d = j["dict"]
        if not isinstance(d, dict) or len(d) > _MAX_ITEMS or depth > 2:
            raise ValueError(f"{what}: 'dict' must be an object of at most {_MAX_ITEMS} entries")
        return {k: _unstructured(v, fn, f"{what}[{k!r}]", depth + 1) for k, v in d.items()}
    if isinstance(j, dict) and set(j) == {"list"}:
        items = j["list"]
        if not isinstance(items, list) or len(items) > _MAX_ITEMS or depth > 2:
            raise ValueError(f"{what}: 'list' must be an array of at most {_MAX_ITEMS} entries")
        return [_unstructured(v, fn, f"{what}[{i}]", depth + 1) for i, v in enumerate(items)]
    return fn(j, what)


def _number(v, what):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


# ------------------------------------------------------------------------------ the mixin
class CompileStateMixin:
    """``_compile_state`` (what ``save`` writes) and ``_restore_compile_state`` (what
    ``load_model`` reads) over a model's compile arguments and optimizer."""

    def _compile_state(self, include_optimizer=True):
        """(JSON object, tensors) of the compile state, or None when not compiled."""
        if not getattr(self, "compiled", False):
            return None
        meta = {"loss": _structured(self._loss_arg, _loss_to_json, "loss"),
                "loss_weights": _structured(self._loss_weights_arg,
                                            lambda v: None if v is None else float(v),
                                            "loss_weights"),
                "metrics": _structured(self._metrics_arg, _metric_to_json, "metrics"),
                "optimizer": None}
        layers = self._layer_training_state()
        if layers:
            meta["layers"] = layers
        tensors = {}
        if include_optimizer:
            opt = self.optimizer
            meta["optimizer"] = optim.serialize(opt)
            if opt._n is not None and opt._n == self.flat_params.size:
                state = opt.get_state()
                meta["iterations"] = state["iterations"]
                for slot, flat in state["slots"].items():
                    for name, start, n, shape in self._flat_views():
                        tensors[f"{SLOT_PREFIX}{slot}.{name}"] = flat[start:start + n].reshape(
                            shape).copy()
                meta["slots"] = sorted(state["slots"])
        return meta, tensors

    def _leaf_prefixes(self):
        """{weight-name prefix ("layers.0", "layers.2.layers.1"): leaf layer} of the leaves
        that hold weights."""
        out = {}
        for name, leaf, wname, _ in self._named_views():
            out.setdefault(name[:-len(wname) - 1], leaf)
        return out

    def _layer_training_state(self):
        """What training needs that the architecture does not keep: the layers frozen with
        ``trainable=False`` and the weight regularizers, by layer prefix (defaults left out)."""
        out = {}
        for prefix, leaf in self._leaf_prefixes().items():
            entry = {}
            if not leaf.trainable:
                entry["trainable"] = False
            regs = {w: {"l1": float(r.l1), "l2": float(r.l2)}
                    for w, r in leaf.regularizers.items() if r is not None}
            if regs:
                entry["regularizers"] = regs
            if entry:
                out[prefix] = entry
        return out

    def _check_layer_training_state(self, layers, ctx):
        """The staged (leaf, trainable, {weight: L1L2}) of a file's "layers" entry."""
        leaves = self._leaf_prefixes()
        if not isinstance(layers, dict) or len(layers) > len(leaves):
            raise ValueError(f"{ctx}: layers must be an object by layer prefix")
        staged = []
        for prefix, entry in layers.items():
            lctx = f"{ctx}: layers[{prefix!r}]"
            leaf = leaves.get(prefix)
            if leaf is None:
                raise ValueError(f"{lctx} names no layer with weights of the model")
            if not isinstance(entry, dict) or set(entry) - {"trainable", "regularizers"}:
                raise ValueError(f"{lctx} may hold only trainable and regularizers")
            trainable = entry.get("trainable", True)
            if not isinstance(trainable, bool):
                raise ValueError(f"{lctx}.trainable must be true or false")
            regs = entry.get("regularizers", {})
            if not isinstance(regs, dict):
                raise ValueError(f"{lctx}.regularizers must be an object")
            built = {}
            for w, r in regs.items():
                if w not in leaf.params or not isinstance(r, dict) or set(r) != {"l1", "l2"}:
                    raise ValueError(f"{lctx}.regularizers[{w!r}] must be {{'l1', 'l2'}} for a "
                                     f"weight of the layer ({sorted(leaf.params)})")
                try:
                    built[w] = optim.L1L2(_number(r["l1"], "l1"), _number(r["l2"], "l2"))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{lctx}.regularizers[{w!r}]: {e}") from None
            staged.append((leaf, trainable, built))
        return staged

    def _flat_views(self):
        """[(weight name, start, size, shape)] of each weight in the flat buffer."""
        base, item = self.flat_params.ctypes.data, self.flat_params.itemsize
        return [(name, (v.ctypes.data - base) // item, v.size, v.shape)
                for name, _, _, v in self._named_views()]

    def _restore_compile_state(self, meta, tensors, custom_objects, where):
        """Compiles the model from a file's compile state and restores the optimizer's slots
        and step count; everything is checked before the model changes."""
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: the compile state must be a JSON object")
        known = {"loss", "loss_weights", "metrics", "optimizer", "iterations", "slots",
                 "layers"}
        unknown = set(meta) - known
        if unknown or not {"loss", "loss_weights", "metrics", "optimizer"} <= set(meta):
            raise ValueError(f"{where}: the compile state must have the keys loss, "
                             f"loss_weights, metrics, optimizer (and iterations, slots when "
                             f"the optimizer was built), got {sorted(meta)}")
        ctx = f"{where}: compile state"
        layer_state = self._check_layer_training_state(meta.get("layers", {}), ctx)
        loss = _unstructured(meta["loss"], lambda j, w: _loss_from_json(j, custom_objects, w),
                             f"{ctx} loss")
        if loss is None:
            raise ValueError(f"{ctx}: loss must not be null")
        metrics = (None if meta["metrics"] is None else
                   _unstructured(meta["metrics"],
                                 lambda j, w: _metric_from_json(j, custom_objects, w),
                                 f"{ctx} metrics"))
        lw = _unstructured(meta["loss_weights"], _number, f"{ctx} loss_weights")
        opt_spec = meta["optimizer"]
        if opt_spec is None:
            opt = "rmsprop" if not tensors else None
            if tensors:
                raise ValueError(f"{ctx}: optimizer slots without an optimizer")
        else:
            try:
                opt = optim.deserialize(opt_spec, custom_objects)
            except ValueError as e:
                raise ValueError(f"{ctx}: {e}") from None
        slots, state = meta.get("slots"), None
        if ("slots" in meta) != ("iterations" in meta) or (opt_spec is None and "slots" in meta):
            raise ValueError(f"{ctx}: iterations and slots come together, with an optimizer")
        if "slots" in meta:
            it = meta["iterations"]
            if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= 2**53:
                raise ValueError(f"{ctx}: iterations must be an integer in [0, 2**53], got "
                                 f"{it!r}")
            if not isinstance(slots, list) or not all(isinstance(s, str) for s in slots) or \
                    len(slots) > 16:
                raise ValueError(f"{ctx}: slots must be a list of slot names")
            views = self._flat_views()
            shapes = {name: shape for name, _, _, shape in views}
            expected = {f"{SLOT_PREFIX}{s}.{name}" for s in slots for name, *_ in views}
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            if missing or extra:
                raise ValueError(f"{ctx}: optimizer slot tensors missing {missing[:6]}, "
                                 f"unexpected {extra[:6]}")
            for k in expected:
                w = k[len(SLOT_PREFIX):].split(".", 1)[1]
                a = tensors[k]
                if a.shape != shapes[w] or a.dtype != self.dtype:
                    raise ValueError(f"{ctx}: slot tensor {k!r} has shape {a.shape} and dtype "
                                     f"{a.dtype}, the weight {w!r} has {shapes[w]} and "
                                     f"{self.dtype}")
            flat = {}
            for s in slots:
                buf = np.zeros(self.flat_params.size, dtype=self.dtype)
                for name, start, n, _ in views:
                    buf[start:start + n] = tensors[f"{SLOT_PREFIX}{s}.{name}"].ravel()
                flat[s] = buf
            state = {"iterations": it, "slots": flat}
        elif tensors:
            raise ValueError(f"{ctx}: slot tensors {sorted(tensors)[:6]} without a slots list")
        for leaf, trainable, regs in layer_state:
            leaf.trainable = trainable
            leaf.regularizers = dict(regs)
        if layer_state:
            self._build_regularizers()
        try:
            self.compile(opt, loss, metrics, loss_weights=lw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ctx}: compile() refused it: {e}") from None
        if state is not None:
            opt = self.optimizer
            fill = {}
            if hasattr(opt, "initial_accumulator_value"):
                fill["accumulator"] = opt.initial_accumulator_value  # the gaps between weights
            for s, buf in state["slots"].items():
                if s in fill:
                    full = np.full_like(buf, fill[s])
                    for _, start, n, _ in self._flat_views():
                        full[start:start + n] = buf[start:start + n]
                    state["slots"][s] = full
            try:
                opt.set_state(state)
            except ValueError as e:
                raise ValueError(f"{ctx}: {e}") from None
