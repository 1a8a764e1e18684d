"""The concurrency contract of modules, streams and models (see README, "Threads"):

- inference (``module(x)``, ``Sequential.predict`` without stateful layers, the C++
  ``Model::predict``) may run from several threads at once on one object and gives each caller
  its own answer;
- training one module from two threads is not supported, and is refused rather than wrong: a
  ``backward()`` whose thread did not run the module's last ``forward(..., train=True)`` raises
  RuntimeError ("... is being trained by another thread"); every backward that returns gives the
  gradient of its own thread's forward.
"""

import threading

import numpy as np
import pytest

import fastlstm


def _reference_dx(module, x):
    """d_x of forward(x, train=True) with d_output = ones, computed alone."""
    out, _ = module.forward(x, train=True)
    d_x, _ = module.backward(np.ones_like(out))
    return d_x


def _run_threads(work, n):
    """Runs work(k) for k < n on n threads; returns the exceptions they raised."""
    errors = []

    def guarded(k):
        try:
            work(k)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _hammer(module, inputs, rounds):
    """Each thread loops forward(train=True) + backward on its own input; returns per thread
    the list of d_x arrays that came back and the count of refusals, plus any other error."""
    results = [[] for _ in inputs]
    refused = [0 for _ in inputs]
    barrier = threading.Barrier(len(inputs))

    def work(k):
        barrier.wait()
        for _ in range(rounds):
            out, _ = module.forward(inputs[k], train=True)
            try:
                d_x, _ = module.backward(np.ones_like(out))
            except RuntimeError as e:
                assert "being trained by another thread" in str(e)
                refused[k] += 1
                continue
            results[k].append(d_x)

    return results, refused, _run_threads(work, len(inputs))


@pytest.mark.parametrize("batches", [(4, 2), (3, 3)], ids=["unequal", "equal"])
def test_two_threads_training_one_module(batches):
    """Issue 14: with the saved-state checks outside the module's lock, unequal batches read
    past the other thread's d_output (heap overflow) and equal ones returned wrong d_x."""
    rng = np.random.default_rng(7)
    m = fastlstm.LSTM(8, 16, batch_first=True, seed=1)
    # T=30 and 1000 rounds: about 10 overlapping calls per run here (measured), each of which
    # went wrong before the fix
    inputs = [rng.standard_normal((b, 30, 8)).astype(np.float32) for b in batches]
    expected = [_reference_dx(m, x) for x in inputs]
    results, refused, errors = _hammer(m, inputs, rounds=1000)
    assert not errors, errors[0]
    for k, got in enumerate(results):
        for d_x in got:
            assert d_x.shape == expected[k].shape
            np.testing.assert_array_equal(d_x, expected[k])
    # both outcomes happened: the threads did overlap, and training still went through
    assert sum(len(r) for r in results) > 0


def test_refusal_names_the_cause():
    m = fastlstm.GRU(3, 4, seed=0)
    x = np.zeros((2, 1, 3), np.float32)
    out, _ = m.forward(x, train=True)
    t = threading.Thread(target=lambda: m.forward(x, train=True))
    t.start()
    t.join()
    with pytest.raises(RuntimeError, match="GRU is being trained by another thread"):
        m.backward(np.ones_like(out))
    # the thread that ran the last training forward may go on
    out, _ = m.forward(x, train=True)
    d_x, _ = m.backward(np.ones_like(out))
    assert d_x.shape == x.shape


def test_inference_from_several_threads():
    rng = np.random.default_rng(3)
    m = fastlstm.LSTM(6, 10, num_layers=2, seed=2)
    inputs = [rng.standard_normal((7, b, 6)).astype(np.float32) for b in (1, 2, 3, 5)]
    expected = [m(x)[0] for x in inputs]

    def work(k):
        for _ in range(50):
            np.testing.assert_array_equal(m(inputs[k])[0], expected[k])

    errors = _run_threads(work, len(inputs))
    assert not errors, errors[0]


def test_sequential_predict_from_several_threads():
    from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Dropout

    m = fastlstm.Sequential()
    m.add(LSTM(12, return_sequences=True, input_shape=(None, 5)))
    m.add(Dropout(0.2))
    m.add(Bidirectional(GRU(6)))
    m.add(Dense(3, activation="softmax"))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((b, 4 + b, 5)).astype(np.float32) for b in (1, 2, 3, 5)]
    lengths = [None, np.array([6, 2]), None, np.array([9, 1, 4, 9, 3])]
    expected = [m.predict(x, lengths=n, verbose=0) for x, n in zip(inputs, lengths)]

    def work(k):
        for _ in range(40):
            y = m.predict(inputs[k], lengths=lengths[k], verbose=0)
            np.testing.assert_array_equal(y, expected[k])

    errors = _run_threads(work, len(inputs))
    assert not errors, errors[0]
