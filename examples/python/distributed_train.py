"""Data-parallel training over MPI: the same script runs as one process or as N ranks.

    python examples/python/distributed_train.py                   # one process
    mpirun -n 2 python examples/python/distributed_train.py       # 2 ranks on this machine
    mpirun -n 8 -f hosts python examples/python/distributed_train.py   # MPICH, 8 ranks on hosts
    srun -n 8 --mpi=pmi2 python examples/python/distributed_train.py   # Slurm

``--batch-size`` is the GLOBAL batch: each of N ranks computes ``batch_size / N`` rows of it and
the gradients are averaged with one Allreduce per step, so the weights after training equal one
process's with the same batch size (to float32 summation order), on every rank.

Data loading: every rank must see the same samples in the same order. Here every rank makes
them from the same seed; with real data, save them once (``np.save``) and open them with
``np.load(path, mmap_mode="r")`` on every rank: each rank then reads only the rows of its part.
Only rank 0 prints and saves (``--out``).
"""

import argparse
import time

import numpy as np

import fastlstm
import fastlstm.distributed as dist
from fastlstm.layers import LSTM, Dense, Input


def make_data(n, timesteps, features, seed=0):
    """A sequence regression task: y is a smooth function of the sequence's running mean."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, timesteps, features)).astype(np.float32)
    y = np.tanh(x.mean(axis=1)[:, :2] * 3.0).astype(np.float32)
    return x, y


def build(features, hidden, optimizer="adam"):
    model = fastlstm.Sequential([Input((None, features)), LSTM(hidden), Dense(2)])
    model.compile(optimizer, "mse", metrics=["mae"])
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--timesteps", type=int, default=20)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64, help="the global batch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=0)
    ap.add_argument("--out", help="rank 0 saves the trained model here (.fastlstm)")
    ap.add_argument("--save-weights", help="every rank saves its flat weights to "
                    "PREFIX<rank>.npy (to check that they are identical)")
    args = ap.parse_args(argv)

    rank, size = dist.init()
    fastlstm.set_seed(args.seed)  # the same initial weights everywhere (rank 0's are
    # broadcast at the start of fit anyway)
    x, y = make_data(args.samples, args.timesteps, args.features, seed=args.seed)
    model = build(args.features, args.hidden, args.optimizer)
    start = time.perf_counter()
    history = dist.fit(model, x, y, batch_size=args.batch_size, epochs=args.epochs,
                       verbose=args.verbose)  # progress is printed by rank 0 only
    seconds = time.perf_counter() - start
    if rank == 0:
        print(f"{size} rank(s) x {fastlstm.get_num_threads()} thread(s): "
              f"{args.epochs / seconds:.2f} epochs/s, final loss {history.history['loss'][-1]:.6f}")
        if args.out:
            model.save(args.out)
    if args.save_weights:
        np.save(f"{args.save_weights}{rank}.npy", model.flat_params)


if __name__ == "__main__":
    main()
