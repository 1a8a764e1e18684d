#!/usr/bin/env python3
"""Scale-out measurements: data-parallel training over MPI, the Allreduce's cost, and
GridSearchCV with n_jobs. Interleaved repeats, medians; see bench/README.md.

    python bench/scaleout.py train --ranks 1,2 --cpus 2      # epochs/s: 1 x 2 threads vs 2 x 1
    python bench/scaleout.py allreduce --ranks 2             # seconds per Allreduce by size
    python bench/scaleout.py gridsearch --jobs 1,2           # GridSearchCV n_jobs=1 vs 2

``train``: the train_small case's model (B=32 global batch, T=50, I=128, H=256, one LSTM layer
and a Dense(1) head, MSE, Adam), 16 steps per epoch; every configuration uses ``--cpus``
CPUs in all: 1 process x cpus threads, or r ranks x cpus/r threads (``mpiexec -n r``, from the
mpich wheel). Reported: epochs/s (median), the speed-up over 1 process, the scaling efficiency
(speed-up / ranks... against the 1-process run with all CPUs), and the Allreduce time per step
(median over ranks' means; it includes waiting for the slowest rank).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve()


def _mpich():
    d = metadata.distribution("mpich")
    files = {f.name: Path(d.locate_file(f)).resolve() for f in d.files or []}
    return files["mpiexec"], files["libmpi.so"].parent


def _launch(ranks, threads, args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "FASTLSTM_NUM_THREADS")}
    if threads is not None:
        env["FASTLSTM_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(HERE), *args]
    if ranks > 1:
        mpiexec, libdir = _mpich()
        env.setdefault("MPI4PY_LIBMPI", str(libdir))
        cmd = [str(mpiexec), "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{cmd} failed:\n{out.stdout}\n{out.stderr}")
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


# ------------------------------------------------------------------------------ train
def _train_worker(a):
    import numpy as np

    import fastlstm
    import fastlstm.distributed as dist
    from fastlstm import optim
    from fastlstm.layers import LSTM, Dense, Input

    rank, size = dist.init(threads=None)
    rng = np.random.default_rng(0)
    n = a.batch * a.steps
    x = rng.standard_normal((n, a.timesteps, a.features)).astype(np.float32)
    y = rng.standard_normal((n, 1)).astype(np.float32)
    fastlstm.set_seed(0)
    model = fastlstm.Sequential([Input((None, a.features)), LSTM(a.hidden), Dense(1)])
    opt = dist.DistributedOptimizer(optim.Adam(1e-4))
    model.compile(opt, "mse")
    dist.fit(model, x, y, batch_size=a.batch, epochs=1, verbose=0)  # warm-up
    opt.allreduce_seconds, opt.allreduce_calls = 0.0, 0
    t0 = time.perf_counter()
    dist.fit(model, x, y, batch_size=a.batch, epochs=a.epochs, verbose=0)
    sec = time.perf_counter() - t0
    row = {"rank": rank, "size": size, "threads": fastlstm.get_num_threads(),
           "epochs_per_s": a.epochs / sec,
           "allreduce_per_step_ms": 1e3 * opt.allreduce_seconds / max(opt.allreduce_calls, 1),
           "params": int(model.flat_params.size)}
    rows = [row]
    if size > 1:  # rank 0 prints every rank's line (ranks printing at once interleave)
        from mpi4py import MPI

        rows = MPI.COMM_WORLD.gather(row, root=0)
    if rank == 0:
        for r in rows:
            print(json.dumps(r), flush=True)


def _train(a):
    configs = [(r, a.threads_per_rank or max(1, a.cpus // r)) for r in a.ranks]
    res = {c: [] for c in configs}
    for rep in range(a.repeats):
        for r, t in configs:  # interleaved: the machine's load hits every config alike
            rows = _launch(r, t, ["_train_worker", "--epochs", str(a.epochs),
                                  "--batch", str(a.batch), "--steps", str(a.steps),
                                  "--hidden", str(a.hidden), "--features", str(a.features),
                                  "--timesteps", str(a.timesteps)])
            res[(r, t)].append(rows)
            print(f"  repeat {rep + 1}: {r} rank(s) x {t} thread(s): "
                  f"{rows[0]['epochs_per_s']:.3f} epochs/s", file=sys.stderr, flush=True)
    base = statistics.median(rows[0]["epochs_per_s"] for rows in res[configs[0]])
    table = []
    for (r, t), runs in res.items():
        eps = statistics.median(rows[0]["epochs_per_s"] for rows in runs)
        ar = statistics.median(statistics.mean(x["allreduce_per_step_ms"] for x in rows)
                               for rows in runs)
        spread = max(rw[0]["epochs_per_s"] for rw in runs) / min(rw[0]["epochs_per_s"]
                                                                 for rw in runs)
        table.append({"ranks": r, "threads": t, "epochs_per_s": eps, "vs_first": eps / base,
                      "allreduce_ms_per_step": ar, "max_over_min": spread,
                      "params": runs[0][0]["params"]})
    cpus = (f"{a.threads_per_rank} thread(s) per rank" if a.threads_per_rank
            else f"{a.cpus} CPUs in all")
    print(f"train_small-sized model ({table[0]['params']} parameters), global batch {a.batch}, "
          f"{a.steps} steps/epoch, {cpus}; medians of {a.repeats}")
    print("| ranks x threads | epochs/s | vs first row | Allreduce ms/step | max/min |")
    print("| --- | --- | --- | --- | --- |")
    for row in table:
        print(f"| {row['ranks']} x {row['threads']} | {row['epochs_per_s']:.3f} | "
              f"{row['vs_first']:.2f} | {row['allreduce_ms_per_step']:.3f} | "
              f"{row['max_over_min']:.2f} |")
    return table


# ------------------------------------------------------------------------------ allreduce
def _allreduce_worker(a):
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = {}
    for n in a.sizes:
        buf = np.ones(n, np.float32)
        for _ in range(3):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times = []
        for _ in range(a.iters):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        out[n] = statistics.median(times)
    allt = comm.gather(out, root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({"size": comm.Get_size(),
                          "ms": {n: 1e3 * max(t[n] for t in allt) for n in a.sizes}}))


def _allreduce(a):
    print("| ranks | " + " | ".join(f"{n * 4 / 1e6:g} MB" for n in a.sizes) + " |")
    print("| --- |" + " --- |" * len(a.sizes))
    rows = []
    for r in a.ranks:
        row = _launch(r, 1, ["_allreduce_worker", "--iters", str(a.iters), "--sizes",
                             ",".join(map(str, a.sizes))])[0]
        rows.append(row)
        print(f"| {r} | " + " | ".join(f"{row['ms'][str(n)]:.3f} ms" for n in a.sizes) + " |")
    return rows


# ------------------------------------------------------------------------------ gridsearch
def _gridsearch_worker(a):
    import numpy as np
    from sklearn.model_selection import GridSearchCV

    from fastlstm.sklearn import LSTMClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((a.samples, 30, 16)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    est = LSTMClassifier(units=64, epochs=4, batch_size=32, random_state=0)
    grid = {"units": [32, 64], "learning_rate": [0.003, 0.01]}
    import joblib

    # start joblib's workers first (a search pays that once per process, not per fit) and read
    # the engine's thread count inside them (loky sets OMP_NUM_THREADS there)
    t0 = time.perf_counter()
    inner = joblib.Parallel(n_jobs=a.n_jobs)(joblib.delayed(_engine_threads)() for _ in range(2))
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    GridSearchCV(est, grid, cv=3, n_jobs=a.n_jobs).fit(X, y)
    sec = time.perf_counter() - t0
    print(json.dumps({"n_jobs": a.n_jobs, "seconds": sec, "startup_seconds": startup,
                      "worker_threads": inner}))


def _engine_threads():
    import fastlstm
    import fastlstm.sklearn  # noqa: F401  (imported by the search's tasks)

    return fastlstm.get_num_threads()


def _gridsearch(a):
    res = {j: [] for j in a.jobs}
    for rep in range(a.repeats):
        for j in a.jobs:
            row = _launch(1, None, ["_gridsearch_worker", "--n-jobs", str(j),
                                     "--samples", str(a.samples)])[0]
            res[j].append(row["seconds"])
            print(f"  repeat {rep + 1}: n_jobs={j}: {row['seconds']:.2f} s + "
                  f"{row['startup_seconds']:.2f} s starting workers (engine threads in "
                  f"the workers: {row['worker_threads']})", file=sys.stderr, flush=True)
    print(f"GridSearchCV, 4 candidates x 3 folds, LSTMClassifier(epochs=4) on "
          f"{a.samples} x 30 x 16, workers started before the timing; medians of {a.repeats}")
    print("| n_jobs | seconds | max/min |")
    print("| --- | --- | --- |")
    for j, ts in res.items():
        print(f"| {j} | {statistics.median(ts):.2f} | {max(ts) / min(ts):.2f} |")
    return res


def _ints(s):
    return [int(v) for v in s.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--ranks", type=_ints, default=[1, 2])
    t.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    t.add_argument("--threads-per-rank", type=int, default=0,
                   help="instead of --cpus in all: this many threads in every rank")
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--epochs", type=int, default=3)
    for p in (t, sub.add_parser("_train_worker")):
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--steps", type=int, default=16)
        p.add_argument("--timesteps", type=int, default=50)
        p.add_argument("--features", type=int, default=128)
        p.add_argument("--hidden", type=int, default=256)
        if p is not t:
            p.add_argument("--epochs", type=int, default=3)
    r = sub.add_parser("allreduce")
    r.add_argument("--ranks", type=_ints, default=[2])
    for p in (r, sub.add_parser("_allreduce_worker")):
        p.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 400_000, 4_000_000])
        p.add_argument("--iters", type=int, default=50)
    g = sub.add_parser("gridsearch")
    g.add_argument("--jobs", type=_ints, default=[1, 2])
    g.add_argument("--repeats", type=int, default=3)
    for p in (g, sub.add_parser("_gridsearch_worker")):
        p.add_argument("--samples", type=int, default=600)
    sub.choices["_gridsearch_worker"].add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.cmd.startswith("_"):
        {"_train_worker": _train_worker, "_allreduce_worker": _allreduce_worker,
         "_gridsearch_worker": _gridsearch_worker}[a.cmd](a)
        return 0
    result = {"train": _train, "allreduce": _allreduce, "gridsearch": _gridsearch}[a.cmd](a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
