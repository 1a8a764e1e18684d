"""ONNX: import of LSTM/GRU stacks (:func:`from_onnx`) and export of a module as standard ONNX
LSTM/GRU nodes (:func:`to_onnx`), through the ``onnx`` package (the ``fastlstm[onnx]`` extra),
imported when one of them is called."""

from __future__ import annotations

import operator

import numpy as np

from .. import _core
from ..rnn import GRU, LSTM
from .atomic import atomic_write, fspath, read_bytes
from .params import _ONNX_TO_TORCH_LSTM, _TORCH_TO_ONNX_LSTM, _ZRH_RZN, _blocks, _load_params

__all__ = ["from_onnx", "to_onnx"]

# =============================================================================== ONNX import
_GLUE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Shape",
             "Gather", "Constant", "ConstantOfShape", "Identity", "Cast", "Expand"}
# ops whose first input is the one that carries values into their output (the rest are
# shapes, indices or axes)
_PASS_FIRST = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Gather", "Identity",
               "Cast", "Expand"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastlstm.from_onnx/to_onnx need the onnx package: pip install "
                          "'fastlstm[onnx]' (or pip install onnx)") from None
    return onnx


class _Node:
    """A NodeProto's fields as Python values (attributes decoded by onnx.helper)."""

    def __init__(self, onnx, proto, where):
        self.op_type, self.name, self.domain = proto.op_type, proto.name, proto.domain
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.attributes = {}
        for a in proto.attribute:
            try:
                self.attributes[a.name] = onnx.helper.get_attribute_value(a)
            except Exception as e:  # noqa: BLE001 - a malformed attribute, whatever its kind
                raise ValueError(f"{where}: ONNX node {proto.name or '(unnamed)'!r} "
                                 f"({proto.op_type}) attribute {a.name!r} is malformed: "
                                 f"{e}") from None


# the tensor element types an importer reads: ONNX TensorProto.DataType -> NumPy
_ELEM = {1: np.dtype("float32"), 6: np.dtype("int32"), 7: np.dtype("int64"),
         11: np.dtype("float64")}


def _tensor_array(onnx, t):
    """A TensorProto as a NumPy array; ValueError (naming the tensor) for an external, unknown
    or inconsistent one, checked before anything the size of ``dims`` is made."""
    where = f"tensor {t.name!r}"
    if onnx.external_data_helper.uses_external_data(t):
        raise ValueError(f"{where} keeps its data in an external file, which is not supported")
    if t.data_type not in _ELEM:
        raise ValueError(f"{where} has data_type "
                         f"{onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in onnx.TensorProto.DataType.values() else t.data_type}"
                         "; supported: FLOAT, DOUBLE, INT32, INT64")
    if any(d < 0 for d in t.dims):
        raise ValueError(f"{where} has a negative dimension {list(t.dims)}")
    count = 1
    for d in t.dims:
        count *= d
    itemsize = _ELEM[t.data_type].itemsize
    stored = (len(t.raw_data) // itemsize if t.HasField("raw_data")
              else len({1: t.float_data, 6: t.int32_data, 7: t.int64_data,
                        11: t.double_data}[t.data_type]))
    if stored != count or (t.HasField("raw_data") and len(t.raw_data) != count * itemsize):
        raise ValueError(f"{where} holds {stored} values, dims {list(t.dims)} need {count}")
    try:
        return np.array(onnx.numpy_helper.to_array(t), dtype=_ELEM[t.data_type])
    except Exception as e:  # noqa: BLE001 - whatever the decoder refuses
        raise ValueError(f"{where} cannot be decoded: {e}") from None


class _OnnxGraph:
    def __init__(self, onnx, model, where):
        self.onnx = onnx
        self.where = where
        g = model.graph
        self.nodes = [_Node(onnx, n, where) for n in g.node]
        self.inputs = [v.name for v in g.input]
        self.consts = {t.name: t for t in g.initializer}
        self.producer = {}
        for node in self.nodes:
            if node.op_type == "Constant" and node.outputs:
                t = node.attributes.get("value")
                self.consts[node.outputs[0]] = (t if isinstance(t, onnx.TensorProto) else None)
            for o in node.outputs:
                self.producer[o] = node

    def numpy(self, t):
        return _tensor_array(self.onnx, t)

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
            return self.numpy(t)
        except ValueError as e:
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
                val = None if t is None else self.safe_numpy(t)
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
                val = np.zeros(1) if t is None else self.safe_numpy(t)
                if val is None or np.any(val != 0):
                    raise ValueError(f"{self.where}: {self.node_name(node)} input {role} is "
                                     "filled with a non-zero constant; fastlstm modules take "
                                     "initial states at call time (hx=...)")
            else:
                raise ValueError(f"{self.where}: {self.node_name(node)} input {role} "
                                 f"({name!r}) is computed by a {src.op_type} node; only graph "
                                 "inputs or zeros can be imported as initial states")

    def safe_numpy(self, t):
        try:
            return self.numpy(t)
        except ValueError:
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
    """Imports the LSTM/GRU stack of an ONNX model as a fastlstm module (needs the ``onnx``
    package: ``pip install 'fastlstm[onnx]'``).

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
    onnx = _onnx()
    path = fspath(path)
    where = repr(path)
    data = read_bytes(path, "ONNX file")
    try:
        # parsed from bytes: onnx.load would also read external data files next to it
        model = onnx.ModelProto.FromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and kin
        raise ValueError(f"{where} is not a valid ONNX model: {e}") from None
    if not model.HasField("graph"):
        raise ValueError(f"{where} is not a valid ONNX model: it has no graph")
    graph = _OnnxGraph(onnx, model, where)
    rnn = []
    for node in graph.nodes:
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
                and src.inputs[0] in graph.inputs and src.inputs[0] not in graph.consts):
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
class _GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; ``to_bytes`` makes the checked
    ModelProto with onnx.helper."""

    def __init__(self, onnx, graph_name, opset, ir_version, version):
        self.onnx, self.graph_name = onnx, graph_name
        self.opset, self.ir_version, self.version = opset, ir_version, version
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []

    def initializer(self, name, array):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type, inputs, outputs, name, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, name=name,
                                                     **attrs))

    def input(self, name, elem_type, dims):
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, dims))

    def output(self, name, elem_type, dims):
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, dims))

    def to_bytes(self):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, self.graph_name, self.inputs, self.outputs,
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  ir_version=self.ir_version, producer_name="fastlstm",
                                  producer_version=self.version)
        self.onnx.checker.check_model(model)
        return model.SerializeToString()


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
    onnx = _onnx()
    kind = "LSTM" if isinstance(module, LSTM) else "GRU"
    perm = _TORCH_TO_ONNX_LSTM if kind == "LSTM" else _ZRH_RZN
    H, L, D, I = module.hidden_size, module.num_layers, module.num_directions, module.input_size
    TP = onnx.TensorProto
    elem = TP.FLOAT if module.dtype == np.float32 else TP.DOUBLE
    # the IR version that came with the opset (onnxruntime refuses an opset newer than its IR)
    ir = 7 if opset <= 14 else 8 if opset <= 18 else 9 if opset <= 20 else 10
    w = _GraphBuilder(onnx, f"fastlstm_{kind.lower()}", opset, ir,
                      _core.build_info()["version"])
    x_dims = ["B", "T", I] if module.batch_first else ["T", "B", I]
    w.input("input", elem, x_dims)
    cur = "input"
    if module.batch_first:
        w.node("Transpose", ["input"], ["input_tbi"], "to_time_major", perm=[1, 0, 2])
        cur = "input_tbi"
    lens = ""
    if with_lengths:
        w.input("lengths", TP.INT32, ["B"])
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
    atomic_write(path, [w.to_bytes()])
