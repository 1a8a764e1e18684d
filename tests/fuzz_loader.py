"""Fuzz the Python loader (fastlstm.load / fastlstm.io.load_model, which read through the C++
reader's binding): random corruptions and truncations of the fuzzer's seed files (the same
kinds of mutation as tests/cpp/test_model_fuzz.cpp) must load (and then verify, or fail their
self-check) or raise ValueError; never crash, hang (> 5 s for one file) or raise anything else.

Usage (CI runs it from .ci/run): ``python tests/fuzz_loader.py [ITERATIONS] [SEED|time]``;
ITERATIONS mutations per seed file (default 2000: 20,000 files, 10 seeds), SEED fixed (default
20261123) or ``time`` (a seed from the clock, printed, so a failure reproduces). Exit status 1 on any
crash, hang or foreign exception. Prints the counts and the slowest file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import warnings

import numpy as np

import fastlstm
from fastlstm import io as fio

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = ["seq_embedding", "seq_backwards", "lstm_stacked_bidir_proj", "lstm_peephole_nobias_f64",
         "seq_merge_modes", "seq_gru_last",
         # quantized files (no self-check: a loaded one is run on an input instead of verified)
         "lstm_stacked_bidir_proj_int8", "seq_stream_bf16", "functional", "compiled"]
# where each seed lies: tests/data/cpp/NAME, or the corpus's seed_NAME (a functional model, read
# by Python's graph loader, and a Sequential with a compile state)
SEED_PATHS = {"functional": os.path.join("fuzz", "seed_functional.safetensors"),
              "compiled": os.path.join("fuzz", "seed_compiled.safetensors")}
JSONISH = b'{}[]",:0123456789-+.eE tfnul\\'
HANG_SECONDS = 5.0


def mutate(good: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(good)
    hdr_end = 8 + int.from_bytes(good[:8], "little")

    def pick(lo, hi):
        return lo + int(rng.integers(0, max(1, hi - lo)))

    kind, count = int(rng.integers(0, 9)), 1 + int(rng.integers(0, 4))
    if kind == 0:  # flip bits in the header
        for _ in range(count):
            b[pick(0, hdr_end)] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # JSON-ish characters in the header
        for _ in range(count):
            b[pick(8, hdr_end)] = JSONISH[int(rng.integers(0, len(JSONISH)))]
    elif kind == 2:  # digits: sizes, offsets, versions
        for _ in range(count):
            b[pick(8, hdr_end)] = ord("0") + int(rng.integers(0, 10))
    elif kind == 3:  # truncate anywhere
        del b[pick(0, len(good)):]
    elif kind == 4:  # a new header length
        n = [0, 1, 7, hdr_end - 9, hdr_end - 7, len(good), 1 << 40, (1 << 64) - 1,
             int(rng.integers(0, 2**63))][int(rng.integers(0, 9))]
        b[:8] = n.to_bytes(8, "little")
    elif kind == 5:  # delete a range of the header
        at = pick(8, hdr_end)
        del b[at:min(hdr_end, at + 1 + int(rng.integers(0, 16)))]
    elif kind == 6:  # duplicate a range of the header elsewhere in it
        frm = pick(8, hdr_end)
        piece = b[frm:min(hdr_end, frm + 1 + int(rng.integers(0, 24)))]
        at = pick(8, hdr_end)
        b[at:at] = piece
    elif kind == 7:  # random bytes in the data
        for _ in range(count):
            if len(good) > hdr_end:
                b[pick(hdr_end, len(good))] = int(rng.integers(0, 256))
    else:  # anything anywhere
        for _ in range(count):
            if b:
                b[pick(0, len(b))] = int(rng.integers(0, 256))
    return bytes(b)


def _run_once(model):
    """Runs a loaded model once on a small input (raises ValueError if the model is unusable)."""
    if isinstance(model, (fastlstm.LSTM, fastlstm.GRU)):
        x = np.ones((2, 3, model.input_size), np.float32)
        y = model(x if model.batch_first else x.transpose(1, 0, 2))[0]
    else:
        y = model.predict(np.ones((2, 3, model.layers[0].input_shape[-1]), np.float32),
                          verbose=0)
    if not np.all(np.isfinite(y)):
        raise ValueError("the loaded model's output is not finite")


def main(argv):
    iterations = int(argv[1]) if len(argv) > 1 else 2000
    seed_arg = argv[2] if len(argv) > 2 else "20261123"
    seed = time.time_ns() % 2**63 if seed_arg == "time" else int(seed_arg)
    print(f"python loader fuzz: seed {seed} (reproduce: python tests/fuzz_loader.py "
          f"{iterations} {seed}), {iterations} mutations per seed file", flush=True)
    rng = np.random.default_rng(seed)
    # mutated weights may be Inf/NaN: NumPy's warnings about them are expected here
    warnings.simplefilter("ignore", RuntimeWarning)
    counts = dict(tried=0, refused=0, loaded=0, verified=0, check_failed=0, foreign=0, hangs=0)
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.safetensors")
        for name in SEEDS:
            rel = SEED_PATHS.get(name, os.path.join("cpp", name + ".safetensors"))
            with open(os.path.join(HERE, "data", rel), "rb") as f:
                good = f.read()
            load = fio.load_model if name.startswith("seq_") or name in SEED_PATHS \
                else fastlstm.load
            for i in range(iterations):
                data = mutate(good, rng)
                with open(path, "wb") as f:
                    f.write(data)
                t0 = time.perf_counter()
                loaded = False
                try:
                    m = load(path)
                    loaded = True
                    counts["loaded"] += 1
                    if fio.read_model_info(path)["selfcheck"]:
                        load(path, verify=True)
                    else:  # run it instead: a quantized file carries no self-check
                        _run_once(m)
                    counts["verified"] += 1
                except ValueError:
                    counts["check_failed" if loaded else "refused"] += 1
                except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
                    counts["foreign"] += 1
                    print(f"FOREIGN EXCEPTION ({name} mutation {i}): {type(e).__name__}: {e}")
                dt = time.perf_counter() - t0
                counts["tried"] += 1
                if dt > slowest[0]:
                    slowest = (dt, f"{name} mutation {i}")
                if dt > HANG_SECONDS:
                    counts["hangs"] += 1
                    print(f"HANG: {name} mutation {i} took {dt:.1f} s")
    print(f"python loader: {counts['tried']} mutated files tried, refused {counts['refused']}, "
          f"loaded {counts['loaded']} (self-check verified {counts['verified']}, self-check "
          f"failed {counts['check_failed']}), crashes 0 (still running), foreign exceptions "
          f"{counts['foreign']}, hangs {counts['hangs']}; slowest {slowest[0]:.3f} s "
          f"({slowest[1]})")
    bad = counts["foreign"] or counts["hangs"] or counts["refused"] < counts["tried"] // 2 \
        or counts["loaded"] == 0
    print("FAILED" if bad else "OK: no crash, no hang, no foreign exception")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
