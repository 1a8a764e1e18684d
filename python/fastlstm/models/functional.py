"""Keras's functional ``Model(inputs, outputs)``: the one graph machinery of fastlstm's models.

A graph is the list of :class:`~fastlstm.layers.base.Node` objects (layer calls) between the
model's inputs and outputs, in an order where every node comes after the nodes it reads.
Forward runs them in that order; backward runs them in reverse, summing the gradients of
tensors read by several nodes. A layer called more than once in one graph (shared layers)
keeps one cache per call (``_save_cache``/``_restore_cache``) and its gradients are summed
over the calls. A model is itself a layer: called on symbolic tensors it becomes one node of
another graph (a nested model).

All weights of a model live in ONE flat buffer (``model.flat_params``) and all gradients in
another (``model.flat_grads``): the engine modules use slices of them (``use_buffers``) and
Dense/Embedding weights are views, so an optimizer step is a few vectorized operations over
the whole model. Offsets are aligned to 64 bytes; the gaps stay zero. Layers shared between
models (a trained decoder reused in an inference model) live in the buffer of the model that
used them last: every entry point first takes back (copies) the weights of its layers that
another model holds, so each model always sees the current values.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..io import files as _files
from ..layers.base import KerasTensor, Layer, _shape_str
from .training import Trainer

__all__ = ["Model"]

_ALIGN = 16  # elements: 64 bytes in float32


def _structure(obj, what):
    """(kind, tensors, names) for one tensor, a list/tuple or a dict of tensors."""
    if isinstance(obj, KerasTensor):
        return "single", [obj], None
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, KerasTensor) for t in obj):
        return "list", list(obj), None
    if isinstance(obj, dict) and obj and all(isinstance(t, KerasTensor) for t in obj.values()):
        return "dict", list(obj.values()), [str(k) for k in obj]
    raise TypeError(f"Model {what} must be a symbolic tensor (from fastlstm.Input or a layer "
                    f"call), or a non-empty list or dict of them, got {type(obj).__name__}")


class Model(Trainer, Layer):
    """Keras's functional model::

        enc_in = Input((None, 8)); dec_in = Input((None, 8))
        _, h, c = LSTM(64, return_state=True)(enc_in)
        dec = LSTM(64, return_sequences=True)(dec_in, initial_state=[h, c])
        model = Model([enc_in, dec_in], Dense(8, activation="softmax")(dec))

    ``inputs``/``outputs``: one symbolic tensor, a list or a dict of them. Data for several
    inputs (outputs) is given as a list in the same order or a dict by input name (output
    name: the dict key, else the producing layer's name). ``layers`` lists the layers in
    graph order (without the inputs).
    """

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        Layer.__init__(self, name=name or "model", **kwargs)
        Trainer.__init__(self)
        if inputs is None and outputs is None:
            return  # a Sequential builds its graph later
        self._init_graph(inputs, outputs)

    # ------------------------------------------------------------------------------ graph
    def _init_graph(self, inputs, outputs):
        in_kind, ins, in_names = _structure(inputs, "inputs")
        out_kind, outs, out_names = _structure(outputs, "outputs")
        if len(set(map(id, ins))) != len(ins):
            raise ValueError("Model inputs must be distinct tensors")
        self._in_kind, self._input_tensors = in_kind, ins
        self._out_kind, self._output_tensors = out_kind, outs
        known = set(map(id, ins))
        for i, t in enumerate(ins):
            if t.node is not None:
                raise ValueError(f"Model input {i} is the output of layer {t.node.layer.name!r}; "
                                 "model inputs come from fastlstm.Input(...)")
        # nodes in an order where each comes after the nodes it reads (iterative DFS)
        nodes, done, onpath = [], set(), set()
        for out in outs:
            stack = [(out, False)]
            while stack:
                t, expanded = stack.pop()
                node = t.node
                if node is None:
                    if id(t) not in known:
                        raise ValueError(
                            f"the outputs depend on {t!r}, which is not among the model's inputs")
                    continue
                if id(node) in done:
                    continue
                if expanded:
                    done.add(id(node))
                    onpath.discard(id(node))
                    nodes.append(node)
                    continue
                onpath.add(id(node))
                stack.append((t, True))
                for src in reversed(node.inputs):
                    if src.node is None or id(src.node) not in done:
                        stack.append((src, False))
        self._nodes = nodes
        layers = []
        for node in nodes:
            if not any(node.layer is l for l in layers):
                layers.append(node.layer)
        if not layers:
            raise ValueError("the model has no layers between its inputs and outputs")
        names = Counter(l.name for l in layers)
        dup = [n for n, k in names.items() if k > 1]
        if dup:
            raise ValueError(f"layer names must be unique within a model, got {dup} twice")
        self.layers = layers
        self.input_names = in_names or [t.name or f"input_{i}" for i, t in enumerate(ins)]
        if out_names is None:
            out_names = []
            for i, t in enumerate(outs):
                if t.node is None:
                    out_names.append(t.name or f"output_{i}")
                    continue
                same = sum(o.node is not None and o.node.layer is t.node.layer for o in outs)
                out_names.append(t.node.layer.name if same == 1 else
                                 f"{t.node.layer.name}_{t.index}")
            seen = Counter()
            for i, n in enumerate(out_names):  # the same layer's same output twice
                seen[n] += 1
                if seen[n] > 1:
                    out_names[i] = f"{n}_{seen[n] - 1}"
        self.output_names = out_names
        dtypes = {l.dtype.name for l in layers if l.dtype is not None}
        if len(dtypes) > 1:
            raise ValueError(f"the layers of one model must share a dtype, got {sorted(dtypes)}")
        self.dtype = np.dtype(dtypes.pop() if dtypes else "float32")
        self._analyze()
        self._allocate()
        self.built = True

    def _analyze(self):
        """Which layers run several times, which tensors need gradients, which nodes run
        backward."""
        by_layer = Counter(id(n.layer) for n in self._nodes)
        self._multi_call = {k for k, v in by_layer.items() if v > 1}
        leaf_uses = Counter(id(leaf) for n in self._nodes for leaf in n.layer._leaf_layers())
        consumers = Counter(id(t) for n in self._nodes for t in n.inputs)
        consumers.update(id(t) for t in self._output_tensors)
        self._consumers = consumers
        self._leaves = []
        seen = set()
        for layer in self.layers:
            for leaf in layer._leaf_layers():
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    self._leaves.append(leaf)
        needs = {}  # tensor id -> depends on trainable weights
        for n in self._nodes:
            own = any(leaf.count_params() > 0 for leaf in n.layer._leaf_layers())
            up = any(needs.get(id(t), False) for t in n.inputs)
            n._needs_input = up
            n._has_params = own
            n._accumulate = any(leaf_uses[id(leaf)] > 1 for leaf in n.layer._leaf_layers())
            for t in n.outputs:
                needs[id(t)] = own or up
        self._needs = needs

    def _leaf_layers(self):
        return list(self._leaves)

    def _allocate(self):
        leaves = self._leaves
        sizes = [leaf.count_params() for leaf in leaves]
        offsets, off = [], 0
        for n in sizes:
            offsets.append(off)
            off += -(-n // _ALIGN) * _ALIGN
        total = max(off, 1)
        fp = np.zeros(total, dtype=self.dtype)
        fg = np.zeros(total, dtype=self.dtype)
        self.flat_params, self.flat_grads = fp, fg
        self._leaf_ranges = [(o, o + n) for o, n in zip(offsets, sizes)]
        for leaf, (a, b) in zip(leaves, self._leaf_ranges):
            if b > a:
                leaf._bind(fp[a:b], fg[a:b])
            leaf._owner = self
        views = self._named_views()
        item, base = fp.itemsize, fp.ctypes.data
        segs, names = [], []
        for name, leaf, wname, view in views:
            segs.append((view.ctypes.data - base) // item)
            names.append(name)
        order = np.argsort(segs, kind="stable")
        self._segments = np.asarray(segs, dtype=np.int64)[order]
        self._weight_names = names
        self._build_regularizers()
        if self.optimizer is not None:
            self.optimizer.build(total, self.dtype, self._segments)

    def _build_regularizers(self):
        """The per-value l1/l2 factors of the leaves' regularizers over the flat buffer."""
        total = self.flat_params.size
        item, base = self.flat_params.itemsize, self.flat_params.ctypes.data
        l1 = np.zeros(total, dtype=self.dtype)
        l2 = np.zeros(total, dtype=self.dtype)
        any_reg = False
        for name, leaf, wname, view in self._named_views():
            start = (view.ctypes.data - base) // item
            reg = leaf.regularizers.get(wname)
            if reg is not None:
                any_reg = True
                l1[start : start + view.size] = reg.l1
                l2[start : start + view.size] = reg.l2
        self._reg = None
        if any_reg:
            self._reg = (l1 if l1.any() else None, l2 if l2.any() else None)
            self._reg_tmp = np.zeros(total, dtype=self.dtype)

    def _bind(self, flat_params, flat_grads):
        """As a nested model: its leaves are bound one by one by the outer model."""
        raise RuntimeError("a nested model's layers are bound by the outer model")

    def _named_views(self):
        """[(file name, leaf layer, weight name, view)] in model order."""
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Model):
                out += [(f"layers.{i}.{n}", leaf, w, v) for n, leaf, w, v in layer._named_views()]
            else:
                out += [(f"layers.{i}.{w}", layer, w, v) for w, v in layer.params.items()]
        return out

    def _acquire(self):
        """Takes back (copying) the weights of layers another model holds now."""
        if not self.built:
            return
        for leaf, (a, b) in zip(self._leaves, self._leaf_ranges):
            if leaf._owner is not self:
                if b > a:
                    leaf._bind(self.flat_params[a:b], self.flat_grads[a:b])
                leaf._owner = self

    def count_params(self):
        self._require_built("count_params()")
        return sum(leaf.count_params() for leaf in self._leaves)

    # ------------------------------------------------------------------------------ passes
    def _run(self, xs, masks, training):
        """Forward over the graph: input arrays and masks -> output arrays and masks."""
        vals, msk = {}, {}
        for t, x, m in zip(self._input_tensors, xs, masks):
            vals[id(t)], msk[id(t)] = x, m
        for node in self._nodes:
            ins = [vals[id(t)] for t in node.inputs]
            outs, oms = node.layer.node_forward(ins, [msk[id(t)] for t in node.inputs],
                                                training, node)
            if training and id(node.layer) in self._multi_call:
                node._cache = node.layer._save_cache()
            for t, o, m in zip(node.outputs, outs, oms):
                vals[id(t)], msk[id(t)] = o, m
        return ([vals[id(t)] for t in self._output_tensors],
                [msk[id(t)] for t in self._output_tensors])

    def _backward(self, d_outs, need_input_grads=False, fused=()):
        """Backward over the graph from the outputs' gradients (None: no gradient); fills
        the leaves' gradients; returns the inputs' gradients when ``need_input_grads``."""
        grads = {}

        def add(t, d):
            k = id(t)
            grads[k] = d if k not in grads else grads[k] + d

        for t, d in zip(self._output_tensors, d_outs):
            if d is not None:
                add(t, d)
        for node in reversed(self._nodes):
            ds = [grads.get(id(t)) for t in node.outputs]
            if all(d is None for d in ds):
                continue
            need = node._needs_input or need_input_grads
            if not (need or node._has_params):
                continue
            if id(node.layer) in self._multi_call:
                node.layer._restore_cache(node._cache)
            saved = None
            if node._accumulate:
                saved = [leaf.flat_grads.copy() for leaf in node.layer._leaf_layers()]
            if any(node is f for f in fused):
                d_ins = node.layer.node_backward(ds, need, from_logits=True)
            else:
                d_ins = node.layer.node_backward(ds, need)
            if saved is not None:
                for leaf, s in zip(node.layer._leaf_layers(), saved):
                    leaf.flat_grads += s
            if need:
                for t, d in zip(node.inputs, d_ins):
                    if d is not None and (need_input_grads or self._needs.get(id(t), False)):
                        add(t, d)
        if need_input_grads:
            return [grads.get(id(t)) for t in self._input_tensors]
        return None

    # ------------------------------------------------------------------------------ as a layer
    def _symbolic_shapes(self, shapes, dtype, kwargs):
        if len(shapes) != len(self._input_tensors):
            raise ValueError(f"model {self.name!r} takes {len(self._input_tensors)} input(s), "
                             f"got {len(shapes)}")
        for i, (s, t) in enumerate(zip(shapes, self._input_tensors)):
            want = t.shape[1:]
            if len(s) != len(want) or any(a is not None and b is not None and a != b
                                          for a, b in zip(s, want)):
                raise ValueError(f"input {i} of model {self.name!r} must have shape "
                                 f"{_shape_str(t.shape)}, got {_shape_str((None,) + tuple(s))}")
        return [t.shape[1:] for t in self._output_tensors]

    def __call__(self, x, training=False, **kwargs):
        from ..layers.base import _flatten_tensors, _is_symbolic

        if _is_symbolic(x):
            return self._call_symbolic(_flatten_tensors(x))
        return self._call_arrays(x, training=training, **kwargs)

    def node_forward(self, xs, masks, training, node):
        return self._run(xs, masks, training)

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        d_ins = self._backward(list(d_ys), need_input_grads=True)
        return d_ins if need_input_grad else [None] * len(d_ins)

    def _save_cache(self):
        return [(node, node.layer._save_cache()) for node in self._nodes]

    def _restore_cache(self, cache):
        for node, c in cache:
            node.layer._restore_cache(c)

    @property
    def fixed_weights(self):
        return ()

    @property
    def inputs(self):
        return list(self._input_tensors)

    @property
    def outputs(self):
        return list(self._output_tensors)

    @property
    def output_shape(self):
        shapes = [t.shape[1:] for t in getattr(self, "_output_tensors", [])]
        if not shapes:
            return None
        return shapes[0] if len(shapes) == 1 else shapes

    @output_shape.setter
    def output_shape(self, value):
        pass  # derived from the graph

    def get_layer(self, name=None, index=None):
        """A layer by name or index (as Keras)."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; the model has {[l.name for l in self.layers]}")

    # ------------------------------------------------------------------------------ config
    def get_config(self):
        """The graph: layers (with the tensors each call reads) and the model's inputs and
        outputs; tensors are named ``[layer name, call index, output index]``."""
        self._require_built("get_config()")
        calls = {}
        tid = {}
        for i, t in enumerate(self._input_tensors):
            tid[id(t)] = ["__input__", i, 0]
        for node in self._nodes:
            k = calls.setdefault(id(node.layer), [])
            for j, t in enumerate(node.outputs):
                tid[id(t)] = [node.layer.name, len(k), j]
            call = {"inputs": [tid[id(t)] for t in node.inputs]}
            if node.kwargs:
                call["kwargs"] = dict(node.kwargs)
            k.append(call)
        return {
            "class": "Model",
            "dtype": self.dtype.name,
            "inputs": [{"shape": list(t.shape[1:]), "dtype": t.dtype, "name": n}
                       for t, n in zip(self._input_tensors, self.input_names)],
            "layers": [dict(layer.get_config(), name=layer.name, calls=calls[id(layer)])
                       for layer in self.layers],
            "outputs": [tid[id(t)] for t in self._output_tensors],
            # only dict outputs are named here (the other names follow from the layers')
            **({"output_names": list(self.output_names)} if self._out_kind == "dict" else {}),
        }

    @classmethod
    def from_config(cls, config):
        """A model (weights freshly initialized) from :meth:`get_config`."""
        from ..layers import Input, layer_from_config

        if not isinstance(config, dict) or config.get("class") != "Model":
            raise ValueError("not a functional Model config")
        dtype = config.get("dtype", "float32")
        ins = []
        for spec in config["inputs"]:
            dt = spec.get("dtype", dtype)
            if np.dtype(dt).kind == "f":
                dt = dtype
            t = Input(tuple(spec["shape"]), dtype=dt, name=spec.get("name"))
            t.compute_dtype = dtype
            ins.append(t)
        from ..io.files import _MODEL_CLASSES

        layers, pending = {}, []
        for spec in config["layers"]:
            spec = dict(spec)
            name, calls = spec.pop("name"), spec.pop("calls")
            if spec["class"] == "Model":
                layer = Model.from_config(spec)
            elif spec["class"] in _MODEL_CLASSES:  # a nested Sequential
                layer = _MODEL_CLASSES[spec["class"]].from_config(spec)
            else:
                layer = layer_from_config(spec)
            layer.name = name
            layers[name] = layer
            pending += [(name, k, call) for k, call in enumerate(calls)]
        # calls in an order where each comes after the calls it reads (a layer shared along
        # a path is called again downstream of its first call)
        outputs_of = {}
        while pending:
            later = []
            for name, k, call in pending:
                if any(ln != "__input__" and (ln, i) not in outputs_of
                       for ln, i, _ in call["inputs"]):
                    later.append((name, k, call))
                    continue
                layer = layers[name]
                args = [ins[i] if ln == "__input__" else outputs_of[(ln, i)][j]
                        for ln, i, j in call["inputs"]]
                kw = call.get("kwargs", {})
                if hasattr(layer, "_merge") or hasattr(layer, "_scores"):
                    out = layer(args, **kw)  # merge and attention layers take a list
                elif isinstance(layer, Model):
                    out = layer(args if len(args) > 1 else args[0])
                elif len(args) > 1:
                    out = layer(args[0], initial_state=args[1:])
                else:
                    out = layer(args[0])
                outputs_of[(name, k)] = out if isinstance(out, list) else [out]
            if len(later) == len(pending):
                raise ValueError(f"the graph has a cycle or refers to missing layer calls: "
                                 f"{[(n, k) for n, k, _ in later][:4]}")
            pending = later
        outs = [ins[i] if ln == "__input__" else outputs_of[(ln, i)][j]
                for ln, i, j in config["outputs"]]
        names = config.get("output_names")
        if names:
            outputs = dict(zip(names, outs))
        else:
            outputs = outs[0] if len(outs) == 1 else outs
        return cls(ins[0] if len(ins) == 1 else ins, outputs)

    def __getstate__(self):
        if not getattr(self, "built", False) or not hasattr(self, "_nodes"):
            return dict(self.__dict__)
        return {"_pickled": True, "config": self.get_config(), "name": self.name,
                "weights": self.get_weight_dict(),
                "compile": (self.optimizer, self._loss_arg, self._metrics_arg,
                            self._loss_weights_arg) if self.compiled else None}

    def __setstate__(self, state):
        if not state.get("_pickled"):
            self.__dict__.update(state)
            return
        other = Model.from_config(state["config"])
        other.set_weight_dict(state["weights"])
        other.name = state["name"]
        self.__dict__.update(other.__dict__)
        for leaf in self._leaves:
            leaf._owner = self
        if state["compile"] is not None:
            opt, loss, metrics, loss_weights = state["compile"]
            self.compile(opt, loss, metrics, loss_weights=loss_weights)

    # ------------------------------------------------------------------------------ summary
    def summary(self, print_fn=None, line_length=72):
        """Prints a table of layers, output shapes and parameter counts."""
        self._require_built("summary()")
        out = print_fn or print
        widths = (int(line_length * 0.45), int(line_length * 0.35))
        rows = []
        for layer in self.layers:
            shapes = [n.outputs for n in self._nodes if n.layer is layer][0]
            shape = ", ".join(_shape_str(t.shape) for t in shapes)
            kind = type(layer).__name__
            if getattr(layer, "precision", None) in ("bf16", "int8"):
                kind += f", {layer.precision}"
            rows.append((f"{layer.name} ({kind})", shape,
                         f"{layer.count_params():,}"))
        out(f'Model: "{self.name}"')
        out("_" * line_length)
        out(f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{line_length - sum(widths)}}")
        out("=" * line_length)
        for i, (a, b, c) in enumerate(rows):
            out(f"{a:<{widths[0]}}{b:<{widths[1]}}{c:>{line_length - sum(widths)}}")
            if i < len(rows) - 1:
                out("")
        out("=" * line_length)
        total = self.count_params()
        trainable = sum(l.count_params() - sum(l.params[n].size for n in l.fixed_weights)
                        for l in self._leaves if l.trainable)
        out(f"Total params: {total:,}")
        nbytes = sum(layer.weight_bytes() for layer in self._leaves)
        out(f"Weights: {nbytes:,} bytes ({self.precision})")
        out(f"Trainable params: {trainable:,}")
        out(f"Non-trainable params: {total - trainable:,}")
        out("_" * line_length)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}: {len(getattr(self, 'layers', []))} layers>"


# model files build functional models through this registration
_files.register_model_class(Model)
