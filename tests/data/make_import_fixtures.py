"""Writes the import fixtures ``tests/data/import_*`` (committed; the test suite imports none of
torch, keras, onnx or onnxruntime). Run from anywhere:

    pip install torch==2.13.0 onnx onnxruntime keras
    KERAS_BACKEND=torch python3 tests/data/make_import_fixtures.py

Every fixture is a model file in the framework's own format plus an ``.npz`` with the inputs
and the framework's outputs, so a test can check that fastlstm's import computes what the
framework computed. Sizes are odd (I=5, H=7, T=9, B=4) so no dimension hides a transposition.

ONNX, exported by PyTorch (``torch.onnx.export(..., dynamo=False)``, the exporter that writes
standard LSTM/GRU nodes); expected values from the torch module, cross-checked against
onnxruntime here:

- ``import_onnx_torch_lstm_bidir2``: nn.LSTM(num_layers=2, bidirectional=True), inputs x, h0, c0;
- ``import_onnx_torch_gru2``: nn.GRU(num_layers=2), input x only (zero initial state);
- ``import_onnx_torch_lstm_batch_first``: nn.LSTM(batch_first=True), x [B, T, I].

ONNX, written node by node with ``onnx.helper`` to reach what PyTorch never emits; expected
values from onnxruntime (layout 0) or the ``onnx.reference`` evaluator (layout 1, which
onnxruntime rejects). The graph outputs are the raw Y [T, D, B, H] (layout 1: [B, T, D, H]),
Y_h, Y_c:

- ``import_onnx_lstm_peephole_lens``: bidirectional LSTM with B, P (peepholes), sequence_lens
  and initial_h/initial_c as graph inputs;
- ``import_onnx_lstm_layout1``: forward LSTM, layout=1, P, no B;
- ``import_onnx_gru_lbr_lens``: bidirectional GRU, linear_before_reset=1, sequence_lens,
  initial_h.

ONNX files that must be refused (no .npz): ``import_onnx_bad_<reason>.onnx`` for a GRU with
linear_before_reset=0, a reverse-only LSTM, an LSTM followed by a MatMul head, a clip, custom
activations, and a constant non-zero initial_h.

Keras 3 (keras 3.15, torch backend), float64 (``keras.config.set_floatx``) so the comparisons
can be tight. The ``.npz`` holds ``config`` (``model.to_json()``), ``weight.<k>`` (the
``model.get_weights()`` list in order), ``num_weights``, ``x`` and ``output``
(``model.predict``); single-layer fixtures also hold ``layer_weight.<k>``, the layer's own
``get_weights()``:

- ``import_keras_lstm`` / ``import_keras_gru``: one layer, return_sequences=True;
- ``import_keras_lstm_nobias``: use_bias=False;
- ``import_keras_bidir_lstm`` / ``import_keras_bidir_gru``: Bidirectional(concat);
- ``import_keras_stack``: LSTM(return_sequences) -> Dropout -> GRU(go_backwards) -> Dense(softmax);
- ``import_keras_embed``: Embedding(mask_zero) -> Bidirectional(LSTM, merge_mode='sum',
  return_sequences) -> LSTM -> Dense(tanh), on right-padded int tokens;
- ``import_keras_gru_reset_before``: a GRU with reset_after=False (must be refused).
"""

from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
I, H, T, B = 5, 7, 9, 4
VERSIONS = json.dumps({"torch": torch.__version__, "onnx": onnx.__version__,
                       "onnxruntime": ort.__version__, "keras": keras.__version__,
                       "keras_backend": keras.backend.backend()})


def out(name):
    return os.path.join(HERE, name)


def save_npz(name, **arrays):
    np.savez(out(name + ".npz"), versions=np.array(VERSIONS), **arrays)


def close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max()
    assert err <= tol * (1 + np.abs(b).max()), err


# ------------------------------------------------------------------------------ torch -> ONNX
def torch_onnx(name, module, x, hx, batch_first):
    module.eval()
    args = (torch.tensor(x),) if hx is None else (torch.tensor(x), hx)
    with torch.no_grad():
        y, state = module(*args)
    is_lstm = isinstance(module, torch.nn.LSTM)
    names_in = ["x"] + ([] if hx is None else (["h0", "c0"] if is_lstm else ["h0"]))
    names_out = ["output", "h_n"] + (["c_n"] if is_lstm else [])
    bt = {0: "B", 1: "T"} if batch_first else {0: "T", 1: "B"}
    dyn = {"x": bt, "output": bt}
    export_args = (torch.tensor(x),) if hx is None else (torch.tensor(x), hx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, export_args, out(name + ".onnx"), dynamo=False,
                          input_names=names_in, output_names=names_out, dynamic_axes=dyn,
                          opset_version=14)
    expected = [y.numpy()] + ([s.numpy() for s in state] if is_lstm else [state.numpy()])
    feeds = {"x": x}
    if hx is not None:
        hs = hx if is_lstm else (hx,)
        feeds.update({n: t.numpy() for n, t in zip(names_in[1:], hs)})
    for got, exp in zip(ort.InferenceSession(out(name + ".onnx")).run(None, feeds), expected):
        close(got, exp, 1e-5)
    arrays = dict(feeds)
    arrays.update(dict(zip(names_out, expected)))
    save_npz(name, **arrays)


def make_torch_onnx(rng):
    torch.manual_seed(0)
    m = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = torch.tensor(rng.standard_normal((4, B, H)).astype(np.float32) * 0.5)
    c0 = torch.tensor(rng.standard_normal((4, B, H)).astype(np.float32) * 0.5)
    torch_onnx("import_onnx_torch_lstm_bidir2", m, x, (h0, c0), False)

    m = torch.nn.GRU(I, H, num_layers=2)
    torch_onnx("import_onnx_torch_gru2", m, rng.standard_normal((T, B, I)).astype(np.float32),
               None, False)

    m = torch.nn.LSTM(I, H, batch_first=True)
    torch_onnx("import_onnx_torch_lstm_batch_first", m,
               rng.standard_normal((B, T, I)).astype(np.float32), None, True)


# ------------------------------------------------------------------------------ hand-made ONNX
def onnx_model(nodes, inits, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="make_import_fixtures")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def vi(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def make_hand_onnx(rng):
    f32 = np.float32
    # bidirectional LSTM with B, P, sequence_lens, initial states
    D = 2
    inits = {"W": rng.uniform(-0.5, 0.5, (D, 4 * H, I)).astype(f32),
             "R": rng.uniform(-0.5, 0.5, (D, 4 * H, H)).astype(f32),
             "B": rng.uniform(-0.5, 0.5, (D, 8 * H)).astype(f32),
             "P": rng.uniform(-0.5, 0.5, (D, 3 * H)).astype(f32)}
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "lens", "h0", "c0", "P"],
                            ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=H,
                            direction="bidirectional")
    model = onnx_model([node], inits,
                       [vi("X", ["T", "B", I]), vi("lens", ["B"], TensorProto.INT32),
                        vi("h0", [D, "B", H]), vi("c0", [D, "B", H])],
                       [vi("Y", ["T", D, "B", H]), vi("Y_h", [D, "B", H]),
                        vi("Y_c", [D, "B", H])])
    onnx.save(model, out("import_onnx_lstm_peephole_lens.onnx"))
    feeds = {"X": rng.standard_normal((T, B, I)).astype(f32),
             "lens": np.array([5, T, 1, 7], dtype=np.int32),
             "h0": rng.standard_normal((D, B, H)).astype(f32) * 0.5,
             "c0": rng.standard_normal((D, B, H)).astype(f32) * 0.5}
    Y, Y_h, Y_c = ort.InferenceSession(out("import_onnx_lstm_peephole_lens.onnx")).run(None, feeds)
    # the reference evaluator ignores sequence_lens: cross-check it on full lengths
    full = dict(feeds, lens=np.full(B, T, dtype=np.int32))
    sess = ort.InferenceSession(out("import_onnx_lstm_peephole_lens.onnx"))
    for a, b in zip(ReferenceEvaluator(model).run(None, full), sess.run(None, full)):
        close(a, b, 1e-5)
    save_npz("import_onnx_lstm_peephole_lens", **feeds, Y=Y, Y_h=Y_h, Y_c=Y_c)

    # layout=1 forward LSTM with P and no B: onnxruntime rejects layout=1, the reference runs it
    inits = {"W": rng.uniform(-0.5, 0.5, (1, 4 * H, I)).astype(f32),
             "R": rng.uniform(-0.5, 0.5, (1, 4 * H, H)).astype(f32),
             "P": rng.uniform(-0.5, 0.5, (1, 3 * H)).astype(f32)}
    node = helper.make_node("LSTM", ["X", "W", "R", "", "", "", "", "P"], ["Y", "Y_h", "Y_c"],
                            name="lstm_bf", hidden_size=H, layout=1)
    model = onnx_model([node], inits, [vi("X", ["B", "T", I])],
                       [vi("Y", ["B", "T", 1, H]), vi("Y_h", ["B", 1, H]),
                        vi("Y_c", ["B", 1, H])])
    onnx.save(model, out("import_onnx_lstm_layout1.onnx"))
    x = rng.standard_normal((B, T, I)).astype(f32)
    Y, Y_h, Y_c = ReferenceEvaluator(model).run(None, {"X": x})
    # the same weights in layout 0 through onnxruntime agree
    node0 = helper.make_node("LSTM", ["X", "W", "R", "", "", "", "", "P"], ["Y", "Y_h", "Y_c"],
                             hidden_size=H)
    m0 = onnx_model([node0], inits, [vi("X", ["T", "B", I])],
                    [vi("Y", ["T", 1, "B", H]), vi("Y_h", [1, "B", H]), vi("Y_c", [1, "B", H])])
    Y0, _, _ = ort.InferenceSession(m0.SerializeToString()).run(None, {"X": x.transpose(1, 0, 2)})
    close(Y0.transpose(2, 0, 1, 3), Y, 1e-5)
    save_npz("import_onnx_lstm_layout1", X=x, Y=Y, Y_h=Y_h, Y_c=Y_c)

    # bidirectional GRU, linear_before_reset=1, sequence_lens, initial_h
    inits = {"W": rng.uniform(-0.5, 0.5, (D, 3 * H, I)).astype(f32),
             "R": rng.uniform(-0.5, 0.5, (D, 3 * H, H)).astype(f32),
             "B": rng.uniform(-0.5, 0.5, (D, 6 * H)).astype(f32)}
    node = helper.make_node("GRU", ["X", "W", "R", "B", "lens", "h0"], ["Y", "Y_h"], name="gru",
                            hidden_size=H, direction="bidirectional", linear_before_reset=1)
    model = onnx_model([node], inits,
                       [vi("X", ["T", "B", I]), vi("lens", ["B"], TensorProto.INT32),
                        vi("h0", [D, "B", H])],
                       [vi("Y", ["T", D, "B", H]), vi("Y_h", [D, "B", H])])
    onnx.save(model, out("import_onnx_gru_lbr_lens.onnx"))
    feeds = {"X": rng.standard_normal((T, B, I)).astype(f32),
             "lens": np.array([T, 2, 6, 1], dtype=np.int32),
             "h0": rng.standard_normal((D, B, H)).astype(f32) * 0.5}
    Y, Y_h = ort.InferenceSession(out("import_onnx_gru_lbr_lens.onnx")).run(None, feeds)
    save_npz("import_onnx_gru_lbr_lens", **feeds, Y=Y, Y_h=Y_h)

    make_bad_onnx(rng)


def make_bad_onnx(rng):
    f32 = np.float32

    def lstm_inits(D=1, gates=4):
        return {"W": rng.uniform(-0.5, 0.5, (D, gates * H, I)).astype(f32),
                "R": rng.uniform(-0.5, 0.5, (D, gates * H, H)).astype(f32)}

    ys = [vi("Y", None), vi("Y_h", None)]
    cases = {
        "gru_lbr0": ([helper.make_node("GRU", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
                                       name="gru_lbr0")], lstm_inits(gates=3), ys),
        "reverse": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
                                      direction="reverse", name="lstm_rev")],
                    lstm_inits(), ys),
        "clip": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
                                   clip=3.0, name="lstm_clip")], lstm_inits(), ys),
        "activations": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
                                          activations=["Sigmoid", "Relu", "Tanh"],
                                          name="lstm_relu")], lstm_inits(), ys),
        "const_h0": ([helper.make_node("LSTM", ["X", "W", "R", "", "", "h0c"], ["Y", "Y_h"],
                                       hidden_size=H, name="lstm_h0")],
                     dict(lstm_inits(), h0c=np.ones((1, B, H), f32)), ys),
        "matmul_head": ([helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
                                          name="lstm"),
                         helper.make_node("MatMul", ["Y", "head"], ["Z"], name="head")],
                        dict(lstm_inits(), head=rng.standard_normal((H, 3)).astype(f32)),
                        [vi("Z", None), vi("Y_h", None)]),
    }
    for reason, (nodes, inits, outputs) in cases.items():
        graph = helper.make_graph(nodes, "bad", [vi("X", ["T", "B", I])], outputs,
                                  [numpy_helper.from_array(v, k) for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 7
        onnx.save(model, out(f"import_onnx_bad_{reason}.onnx"))


# ------------------------------------------------------------------------------ Keras
def keras_fixture(name, model, x, single_layer=None):
    y = model.predict(x, verbose=0)
    weights = model.get_weights()
    arrays = {f"weight.{k}": np.asarray(w) for k, w in enumerate(weights)}
    if single_layer is not None:
        lw = single_layer.get_weights()
        arrays.update({f"layer_weight.{k}": np.asarray(w) for k, w in enumerate(lw)})
    save_npz(name, config=np.array(model.to_json()), num_weights=np.array(len(weights)),
             x=x, output=np.asarray(y), **arrays)


def make_keras(rng):
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(0)
    L = keras.layers

    def randomize(model):
        # non-zero biases everywhere (Keras initializes them to zero/one)
        model.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in model.get_weights()])

    x = rng.standard_normal((B, T, I))
    for name, layer in [("lstm", L.LSTM(H, return_sequences=True)),
                        ("gru", L.GRU(H, return_sequences=True)),
                        ("lstm_nobias", L.LSTM(H, return_sequences=True, use_bias=False)),
                        ("bidir_lstm", L.Bidirectional(L.LSTM(H, return_sequences=True))),
                        ("bidir_gru", L.Bidirectional(L.GRU(H, return_sequences=True)))]:
        model = keras.Sequential([keras.Input((T, I)), layer])
        randomize(model)
        keras_fixture(f"import_keras_{name}", model, x, single_layer=layer)

    model = keras.Sequential([keras.Input((T, I)), L.LSTM(H, return_sequences=True),
                              L.Dropout(0.3), L.GRU(6, go_backwards=True),
                              L.Dense(3, activation="softmax")])
    randomize(model)
    keras_fixture("import_keras_stack", model, x)

    tokens = rng.integers(1, 20, size=(B, T))
    for b, n in enumerate([T, 4, 1, 6]):  # right-padded with 0, one row full, one of length 1
        tokens[b, n:] = 0
    model = keras.Sequential([keras.Input((T,), dtype="int64"),
                              L.Embedding(20, 6, mask_zero=True),
                              L.Bidirectional(L.LSTM(H, return_sequences=True), merge_mode="sum"),
                              L.LSTM(5), L.Dense(4, activation="tanh")])
    randomize(model)
    keras_fixture("import_keras_embed", model, tokens)

    model = keras.Sequential([keras.Input((T, I)), L.GRU(H, reset_after=False,
                                                         return_sequences=True)])
    randomize(model)
    keras_fixture("import_keras_gru_reset_before", model, x)


def main():
    rng = np.random.default_rng(20240611)
    make_torch_onnx(rng)
    make_hand_onnx(rng)
    make_keras(rng)
    print("wrote", sorted(f for f in os.listdir(HERE) if f.startswith("import_")))


if __name__ == "__main__":
    main()
