"""fastlstm.optim: each optimizer's flat in-place update against a per-tensor NumPy
transcription of Keras's update rule, clipping, weight decay, schedules, regularizers."""

import math

import numpy as np
import pytest
from fastlstm import optim

SEGMENTS = [(0, 7), (7, 20), (20, 21), (21, 33)]  # four "tensors" in one flat buffer
N = 33


def _grads(rng, steps):
    return [rng.normal(0, 1.0, N) * rng.choice([0.1, 1.0, 10.0], N) for _ in range(steps)]


def _run(opt, p0, grads):
    p = p0.copy()
    opt.build(N, "float64", [a for a, _ in SEGMENTS])
    for g in grads:
        opt.apply(p, g.copy())
    return p


class Ref:
    """Keras 3's update rules, one tensor at a time, written out plainly."""

    @staticmethod
    def clip(g, clipnorm=None, global_clipnorm=None, clipvalue=None):
        g = g.copy()
        if clipnorm is not None:
            for a, b in SEGMENTS:
                n = np.linalg.norm(g[a:b])
                g[a:b] = g[a:b] * clipnorm / max(n, clipnorm)
        elif global_clipnorm is not None:
            n = np.linalg.norm(g)
            g = g * global_clipnorm / max(n, global_clipnorm)
        elif clipvalue is not None:
            g = np.clip(g, -clipvalue, clipvalue)
        return g

    @staticmethod
    def run(p0, grads, update, state, lr_of=lambda t: 0.01, wd=None, **clip):
        p = p0.copy()
        for t, g in enumerate(grads, start=1):
            g = Ref.clip(g, **clip)
            lr = lr_of(t - 1)
            for a, b in SEGMENTS:
                if wd:
                    p[a:b] = p[a:b] - p[a:b] * wd * lr
                p[a:b] = update(p[a:b], g[a:b], lr, t, state, (a, b))
        return p


def _state():
    return {}


def sgd_update(momentum, nesterov):
    def upd(p, g, lr, t, st, key):
        if not momentum:
            return p - lr * g
        m = st.get(key, np.zeros_like(p))
        m = m * momentum - g * lr
        st[key] = m
        return p + (m * momentum - g * lr if nesterov else m)
    return upd


def adam_update(b1=0.9, b2=0.999, eps=1e-7, amsgrad=False):
    def upd(p, g, lr, t, st, key):
        m, v, vh = st.get(key, (np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)))
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        vh = np.maximum(vh, v)
        st[key] = (m, v, vh)
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        return p - m * alpha / (np.sqrt(vh if amsgrad else v) + eps)
    return upd


def rmsprop_update(rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    def upd(p, g, lr, t, st, key):
        v, avg, mom = st.get(key, (np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)))
        v = rho * v + (1 - rho) * g * g
        if centered:
            avg = rho * avg + (1 - rho) * g
            den = v - avg * avg + eps
        else:
            den = v + eps
        inc = lr * g / np.sqrt(den)
        if momentum:
            mom = momentum * mom + inc
            st[key] = (v, avg, mom)
            return p - mom
        st[key] = (v, avg, mom)
        return p - inc
    return upd


def adagrad_update(init=0.1, eps=1e-7):
    def upd(p, g, lr, t, st, key):
        acc = st.get(key, np.full_like(p, init)) + g * g
        st[key] = acc
        return p - lr * g / np.sqrt(acc + eps)
    return upd


CASES = [
    (lambda: optim.SGD(0.05), sgd_update(0, False), 0.05, None, {}),
    (lambda: optim.SGD(0.05, momentum=0.9), sgd_update(0.9, False), 0.05, None, {}),
    (lambda: optim.SGD(0.05, momentum=0.8, nesterov=True), sgd_update(0.8, True), 0.05, None, {}),
    (lambda: optim.Adam(0.01), adam_update(), 0.01, None, {}),
    (lambda: optim.Adam(0.01, beta_1=0.5, amsgrad=True), adam_update(b1=0.5, amsgrad=True), 0.01, None, {}),
    (lambda: optim.AdamW(0.01, weight_decay=0.1), adam_update(), 0.01, 0.1, {}),
    (lambda: optim.RMSprop(0.01), rmsprop_update(), 0.01, None, {}),
    (lambda: optim.RMSprop(0.01, momentum=0.5, centered=True), rmsprop_update(momentum=0.5, centered=True), 0.01, None, {}),
    (lambda: optim.Adagrad(0.1), adagrad_update(), 0.1, None, {}),
    (lambda: optim.Adam(0.01, clipnorm=1.0), adam_update(), 0.01, None, {"clipnorm": 1.0}),
    (lambda: optim.SGD(0.05, global_clipnorm=2.0), sgd_update(0, False), 0.05, None, {"global_clipnorm": 2.0}),
    (lambda: optim.RMSprop(0.01, clipvalue=0.5), rmsprop_update(), 0.01, None, {"clipvalue": 0.5}),
    (lambda: optim.SGD(0.05, weight_decay=0.2), sgd_update(0, False), 0.05, 0.2, {}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_optimizer_matches_keras_update_rule(case):
    make, update, lr, wd, clip = CASES[case]
    rng = np.random.default_rng(case)
    p0 = rng.normal(size=N)
    grads = _grads(rng, 6)
    got = _run(make(), p0, grads)
    want = Ref.run(p0, grads, update, {}, lr_of=lambda t: lr, wd=wd, **clip)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert not np.allclose(got, p0)


def test_float32_update_stays_float32_and_in_place():
    opt = optim.Adam(0.01)
    p = np.ones(10, dtype=np.float32)
    g = np.full(10, 0.5, dtype=np.float32)
    ref = p
    opt.apply(p, g)
    assert p is ref and p.dtype == np.float32
    np.testing.assert_allclose(p, 1 - 0.01, rtol=1e-5)
    assert opt.iterations == 1


def test_schedule_drives_the_learning_rate():
    sched = optim.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    opt = optim.SGD(sched)
    rng = np.random.default_rng(1)
    p0, grads = rng.normal(size=N), _grads(rng, 5)
    got = _run(opt, p0, grads)
    want = Ref.run(p0, grads, sgd_update(0, False), {}, lr_of=lambda t: 0.1 * 0.5 ** (t / 2))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert opt.learning_rate == pytest.approx(0.1 * 0.5 ** 2.5)
    with pytest.raises(TypeError, match="schedule"):
        opt.learning_rate = 0.1


def test_schedule_values():
    e = optim.ExponentialDecay(1.0, 10, 0.1, staircase=True)
    assert [e(s) for s in (0, 9, 10, 25)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    c = optim.CosineDecay(2.0, 100, alpha=0.1)
    assert c(0) == pytest.approx(2.0) and c(100) == pytest.approx(0.2) and c(500) == pytest.approx(0.2)
    assert c(50) == pytest.approx(2.0 * (0.9 * 0.5 + 0.1))
    w = optim.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=5)
    assert w(0) == 0.0 and w(4) == pytest.approx(0.8) and w(5) == pytest.approx(1.0)
    assert w(15) == pytest.approx(0.0, abs=1e-12)
    s = optim.StepDecay(1.0, step_size=3, gamma=0.5)
    assert [s(k) for k in (0, 2, 3, 7)] == [1.0, 1.0, 0.5, 0.25]
    pw = optim.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [pw(k) for k in (0, 10, 11, 20, 21)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    with pytest.raises(ValueError, match="one more entry"):
        optim.PiecewiseConstantDecay([1], [1.0])


def test_get_and_bad_arguments():
    assert isinstance(optim.get("adam"), optim.Adam) and optim.get("sgd").learning_rate == 0.01
    assert optim.get("rmsprop").learning_rate == 0.001
    opt = optim.Adagrad()
    assert optim.get(opt) is opt
    with pytest.raises(ValueError, match="unknown optimizer 'nadamz'"):
        optim.get("nadamz")
    with pytest.raises(ValueError, match="only one of clipnorm"):
        optim.SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        optim.Adam(-1.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        optim.SGD(momentum=1.0)
    with pytest.raises(ValueError, match="beta_1"):
        optim.Adam(beta_1=1.0)
    opt = optim.SGD()
    opt.build(5)
    with pytest.raises(ValueError, match="built for 5 parameters"):
        opt.apply(np.zeros(6), np.zeros(6))


def test_regularizers():
    w = np.array([1.0, -2.0, 3.0])
    assert optim.L1L2(0.1, 0.2)(w) == pytest.approx(0.1 * 6 + 0.2 * 14)
    assert optim.get_regularizer("l2").l2 == 0.01 and optim.get_regularizer("l2").l1 == 0.0
    assert optim.l1(0.3)(w) == pytest.approx(1.8)
    assert optim.get_regularizer(None) is None
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        optim.get_regularizer("l3")


# ------------------------------------------------------------------ the fused update (C++)
FUSED_CONFIGS = [
    lambda: optim.SGD(0.05),
    lambda: optim.SGD(0.05, momentum=0.9),
    lambda: optim.SGD(0.05, momentum=0.8, nesterov=True),
    lambda: optim.Adam(0.01),
    lambda: optim.Adam(0.003, beta_1=0.5, beta_2=0.99, epsilon=1e-3, amsgrad=True),
    lambda: optim.Adam(0.01, epsilon=1e-8, epsilon_after_correction=True),
    lambda: optim.Adam(0.01, amsgrad=True, epsilon_after_correction=True),
    lambda: optim.AdamW(0.01, weight_decay=0.1, clipnorm=0.5),
    lambda: optim.RMSprop(0.01),
    lambda: optim.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True),
    lambda: optim.RMSprop(0.01, centered=True, clipvalue=0.3),
    lambda: optim.RMSprop(0.01, momentum=0.9),
    lambda: optim.Adagrad(0.1),
    lambda: optim.Adagrad(0.05, initial_accumulator_value=0.0, epsilon=1e-3),
    lambda: optim.Adam(optim.ExponentialDecay(0.01, 3, 0.5)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(FUSED_CONFIGS)))
def test_fused_update_is_bitwise_the_numpy_formulas(case, dtype):
    # one C++ call per step against the NumPy formulas of _update_numpy, on an odd size (not a
    # multiple of any vector width), gradients from 1e-9 to 1e3 with zeros and exact repeats:
    # parameters and every slot must agree to the bit after each step
    n = 1037
    rng = np.random.default_rng(100 + case)
    p0 = rng.normal(size=n).astype(dtype)
    fused, plain = FUSED_CONFIGS[case](), FUSED_CONFIGS[case]()
    plain.fused = False
    seg = [0, 100, 517, 518]
    fused.build(n, dtype, seg)
    plain.build(n, dtype, seg)
    calls, fused_calls = [], []
    real, real_fused = plain._update_numpy, fused._update_fused
    plain._update_numpy = lambda *a: (calls.append(1), real(*a))
    fused._update_fused = lambda *a: (fused_calls.append(1), real_fused(*a))
    p, q = p0.copy(), p0.copy()
    for _ in range(7):
        g = (rng.normal(size=n) * 10.0 ** rng.integers(-9, 4, n)).astype(dtype)
        g[rng.integers(0, n, 40)] = 0
        g[::97] = g[0]
        fused.apply(p, g.copy())
        plain.apply(q, g.copy())
        np.testing.assert_array_equal(p, q)
        for k in fused.slot_names():
            np.testing.assert_array_equal(fused.get_state()["slots"][k],
                                          plain.get_state()["slots"][k], err_msg=k)
    assert len(calls) == len(fused_calls) == 7  # each took its own path
    assert p.dtype == np.dtype(dtype) and not np.array_equal(p, p0)


def test_fused_update_falls_back_to_numpy_for_buffers_it_cannot_take():
    # a strided parameter view and float16 buffers take the NumPy formulas; same results
    base = np.random.default_rng(0).normal(size=(2, 41)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=41).astype(np.float32)
    a, b = optim.Adam(0.01), optim.Adam(0.01)
    b.fused = False
    p, q = base.copy(), base.copy()
    a.apply(p.T[:, 0], g.copy())  # a column: a stride of 41 elements
    b.apply(q.T[:, 0], g.copy())
    np.testing.assert_array_equal(p, q)
    h = optim.SGD(0.1, momentum=0.5)
    p16 = np.ones(5, np.float16)
    h.apply(p16, np.full(5, 0.5, np.float16))
    assert p16.dtype == np.float16 and np.all(p16 == np.float16(1) - np.float16(0.05))


def test_fused_update_binding_checks_its_buffers():
    from fastlstm import _core

    p = np.zeros(8, np.float32)
    g = np.ones(8, np.float32)
    with pytest.raises(TypeError, match="grads must have the dtype of params"):
        _core.sgd_update(p, g.astype(np.float64), None, 0.1, 0.0, False)
    with pytest.raises(ValueError, match="m must have 8 elements"):
        _core.adam_update(p, g, np.zeros(7, np.float32), np.zeros(8, np.float32), None,
                          0.1, 0.001, 1e-7, 0.01, 1.0, False)
    with pytest.raises(ValueError, match="grads shares memory with params"):
        _core.sgd_update(p, p, None, 0.1, 0.0, False)
    with pytest.raises(ValueError, match="params must be writable"):
        ro = np.zeros(8, np.float32)
        ro.flags.writeable = False
        _core.adagrad_update(ro, g, np.zeros(8, np.float32), 0.1, 1e-7)
    with pytest.raises(ValueError, match="v must be 1-D"):
        _core.rmsprop_update(p, g, np.zeros((2, 4), np.float32), None, None, 0.9, 0.1, 1e-7,
                             0.01, 0.0)
    with pytest.raises(TypeError, match="params must have dtype float32 or float64"):
        _core.sgd_update(np.zeros(8, np.int32), g, None, 0.1, 0.0, False)
    assert np.all(p == 0)  # nothing was written by a refused call
