"""Run by test_distributed.py under ``mpiexec -n 2``: checks that need several ranks, each
written by every rank to OUT/rank<r>.json for the test to assert on.

1. PyTorch-shaped modules (LSTM + Linear) trained by hand with DistributedOptimizer (each rank
   half of the batch) against one process on the whole batch (rank 0 computes that itself).
2. distributed.fit with validation data, EarlyStopping, ModelCheckpoint and CSVLogger: the
   epoch logs equal one process's, all ranks stop at the same epoch, files only from rank 0.
"""

import json
import os
import sys

import numpy as np

import fastlstm
import fastlstm.distributed as dist
from fastlstm import callbacks, optim
from fastlstm.layers import LSTM, Dense, Input


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
    if rank == 0:  # one process on the same problems, for the test to compare with
        os.makedirs(os.path.join(out_dir, "single"), exist_ok=True)
        w1, _ = module_steps((0, 1))
        h1, wf1 = fit_run(0, 1, os.path.join(out_dir, "single"))
        result["single"] = {"module_weights": w1.tolist(), "history": h1,
                            "fit_weights": wf1.tolist()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
