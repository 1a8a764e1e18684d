"""Run by test_distributed.py under ``mpiexec -n 2``: checks that need several ranks, each
written by every rank to OUT/rank<r>.json for the test to assert on.

1. PyTorch-shaped modules (LSTM + Linear) trained by hand with DistributedOptimizer (each rank
   half of the batch) against one process on the whole batch (rank 0 computes that itself).
2. distributed.fit with validation data, EarlyStopping, ModelCheckpoint and CSVLogger: the
   epoch logs equal one process's, all ranks stop at the same epoch, files only from rank 0.
3. distributed.fit of a functional model with two outputs (one a masked sequence), loss
   weights, sample weights, a regularizer and a last batch of one row (rank 1 gets none).
4. A loss that overflows on one rank's rows only: every rank raises NonFiniteLossError at the
   same batch and keeps the same weights.
"""

import json
import os
import sys

import numpy as np

import fastlstm
import fastlstm.distributed as dist
from fastlstm import callbacks, optim
from fastlstm import regularizers
from fastlstm.layers import LSTM, Dense, Input, TimeDistributed
from fastlstm.models import Model, NonFiniteLossError


def module_steps(comm_part, steps=3):
    """The flat weights after `steps` SGD-momentum steps on the mean squared output of an LSTM
    and a Linear head (PyTorch's idiom: optimizer over the modules, zero_grad, step)."""
    rank, size = comm_part
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 6, 5)).astype(np.float32)  # [T, B, I], B=6 split 3/3
    fastlstm.set_seed(3)
    lstm = fastlstm.LSTM(5, 11, num_layers=2, seed=3)
    head = fastlstm.Linear(11, 2, seed=4)
    opt = optim.SGD(params=[lstm, head], learning_rate=0.1, momentum=0.9)
    if size > 1:
        opt = dist.DistributedOptimizer(opt)
        dist.broadcast_parameters(opt)
    part = np.array_split(np.arange(6), size)[rank]
    xb = np.ascontiguousarray(x[:, part])
    for _ in range(steps):
        opt.zero_grad()
        h, _ = lstm.forward(xb, train=True)
        out = head.forward(h)
        d_h = head.backward(2.0 * out / out.size)  # d mean(out^2)
        lstm.backward(d_h)
        opt.step()
    return np.concatenate([lstm.flat_params, head.flat_params]), \
        getattr(opt, "allreduce_calls", 0)


def fit_run(rank, size, out_dir):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((130, 7, 3)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)[:, None]
    xv, yv = x[:33] * 0.5, y[:33]
    fastlstm.set_seed(5)
    model = fastlstm.Sequential([Input((None, 3)), LSTM(9), Dense(1, activation="sigmoid")])
    model.compile(optim.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    cbs = [callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0),
           callbacks.ModelCheckpoint(os.path.join(out_dir, f"ckpt_from{rank}.fastlstm")),
           callbacks.CSVLogger(os.path.join(out_dir, f"log_from{rank}.csv"))]
    fit = dist.fit if size > 1 else (lambda m, *a, **k: m.fit(*a, **k))
    h = fit(model, x, y, batch_size=32, epochs=4, verbose=0, validation_data=(xv, yv),
            callbacks=cbs)
    return h.history, model.flat_params.copy()


def functional_run(rank, size):
    rng = np.random.default_rng(2)
    n, T = 65, 6  # batches of 32, 32 and 1
    x = rng.standard_normal((n, T, 4)).astype(np.float32)
    lengths = rng.integers(1, T + 1, n)
    y_seq = np.tanh(np.cumsum(x[..., :2], axis=1)).astype(np.float32)
    y_end = (x[:, 0, :1] > 0).astype(np.float32)
    sw = rng.uniform(0.5, 2.0, n)
    fastlstm.set_seed(8)
    inp = Input((None, 4))
    z = LSTM(7, return_sequences=True)(inp)
    seq = TimeDistributed(Dense(2), name="seq")(z)
    end = Dense(1, activation="sigmoid", name="end",
                kernel_regularizer=regularizers.l2(0.01))(LSTM(5)(z))
    model = Model(inp, {"seq": seq, "end": end})
    model.compile(optim.Adam(0.02), {"seq": "mse", "end": "binary_crossentropy"},
                  metrics={"end": ["accuracy"]}, loss_weights={"seq": 0.5, "end": 2.0})
    fit = dist.fit if size > 1 else (lambda m, *a, **k: m.fit(*a, **k))
    h = fit(model, x, {"seq": y_seq, "end": y_end}, batch_size=32, epochs=3, verbose=0,
            lengths=lengths, sample_weight=sw, validation_split=0.2)
    return h.history, model.flat_params.copy()


def nonfinite_run(rank, size):
    x = np.ones((40, 5, 3), np.float32)
    y = np.zeros((40, 1), np.float32)
    y[5] = 3e38  # (out - y)**2 overflows: on rank 0's rows of the first batch only
    fastlstm.set_seed(1)
    model = fastlstm.Sequential([Input((None, 3)), LSTM(4), Dense(1)])
    model.compile("sgd", "mse")
    fastlstm.set_seed(1)
    before = model.flat_params.copy()
    fit = dist.fit if size > 1 else (lambda m, *a, **k: m.fit(*a, **k))
    try:
        fit(model, x, y, batch_size=32, shuffle=False, verbose=0)
        raised = None
    except NonFiniteLossError as e:
        raised = [e.epoch, e.batch]
    return raised, bool(np.array_equal(before, model.flat_params)), model.flat_params.tolist()


def main():
    out_dir = sys.argv[1]
    rank, size = dist.init()
    result = {"rank": rank, "size": size, "threads": fastlstm.get_num_threads()}
    w, calls = module_steps((rank, size))
    result["allreduce_calls"] = calls
    result["module_weights"] = w.tolist()
    hist, wf = fit_run(rank, size, out_dir)
    result["history"] = hist
    result["fit_weights"] = wf.tolist()
    hf, wff = functional_run(rank, size)
    result["functional_history"], result["functional_weights"] = hf, wff.tolist()
    result["nonfinite"] = nonfinite_run(rank, size)
    if rank == 0:  # one process on the same problems, for the test to compare with
        os.makedirs(os.path.join(out_dir, "single"), exist_ok=True)
        w1, _ = module_steps((0, 1))
        h1, wf1 = fit_run(0, 1, os.path.join(out_dir, "single"))
        hf1, wff1 = functional_run(0, 1)
        result["single"] = {"module_weights": w1.tolist(), "history": h1,
                            "fit_weights": wf1.tolist(), "functional_history": hf1,
                            "functional_weights": wff1.tolist(),
                            "nonfinite": nonfinite_run(0, 1)}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
