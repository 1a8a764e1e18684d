"""The PyTorch-shaped module API: parameters()/named_parameters() in PyTorch's order,
zero_grad, backward(accumulate=...), train()/eval(), fastlstm.Linear, and optimizers that take
modules (``optim.Adam(params=[lstm, head])``, ``step``, ``zero_grad``)."""

import glob
import json
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import optim
from gradcheck import numerical_gradient

DATA = os.path.join(os.path.dirname(__file__), "data")
TORCH_FIXTURES = sorted(glob.glob(os.path.join(DATA, "torch_*.npz")))


@pytest.mark.parametrize("path", TORCH_FIXTURES, ids=os.path.basename)
def test_named_parameters_are_pytorch_s(path):
    """Names, order and shapes as torch.nn.LSTM/GRU's named_parameters() (the committed
    fixtures keep PyTorch's state_dict order)."""
    with np.load(path) as z:
        cfg = json.loads(str(z["config"]))
        torch_params = [(k[len("param."):], z[k].shape) for k in z.files if k.startswith("param.")]
    cls = fastlstm.GRU if cfg["cell"] == "gru" else fastlstm.LSTM
    kwargs = {k: cfg[k] for k in ("num_layers", "bias", "bidirectional") if k in cfg}
    if cfg.get("proj_size"):
        kwargs["proj_size"] = cfg["proj_size"]
    m = cls(cfg["input_size"], cfg["hidden_size"], **kwargs)
    assert [(n, p.shape) for n, p in m.named_parameters()] == torch_params
    views = list(m.parameters())
    assert [v.shape for v in views] == [s for _, s in torch_params]
    views[0][...] = 7.0  # views, not copies
    assert np.all(m.params[torch_params[0][0]] == 7.0)


def _lstm_step(m, x, d_out, accumulate):
    m.forward(x, train=True)
    m.backward(d_out, accumulate=accumulate)
    return m.flat_grads.copy()


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU])
def test_backward_overwrites_by_default_and_accumulates_on_request(cls):
    rng = np.random.default_rng(0)
    m = cls(5, 7, num_layers=2, dtype="float64", seed=1)
    x1, x2 = rng.standard_normal((2, 9, 3, 5))
    d1, d2 = rng.standard_normal((2, 9, 3, 7))
    g1 = _lstm_step(m, x1, d1, False)
    g2 = _lstm_step(m, x2, d2, False)  # the default overwrites: only the second batch
    assert not np.allclose(g1, g2)
    m.zero_grad()
    assert not m.flat_grads.any()
    _lstm_step(m, x1, d1, True)
    total = _lstm_step(m, x2, d2, True)
    np.testing.assert_allclose(total, g1 + g2, rtol=1e-12, atol=1e-12)
    assert _lstm_step(m, x2, d2, False) == pytest.approx(g2, rel=1e-12, abs=1e-12)


def test_train_and_eval_modes():
    x = np.random.default_rng(2).standard_normal((6, 2, 3)).astype(np.float32)
    m = fastlstm.LSTM(3, 8, num_layers=2, dropout=0.5, seed=3)
    assert m.training and m.eval() is m and not m.training
    a, _ = m.forward(x)  # eval: no dropout, nothing kept
    np.testing.assert_array_equal(a, m(x)[0])
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        m.backward(np.ones_like(a))
    m.train()
    b, _ = m.forward(x)  # training: dropout between the layers, activations kept
    assert not np.allclose(a, b)
    m.backward(np.ones_like(b))
    assert m.flat_grads.any()
    c, _ = m.forward(x, train=False)  # an explicit train= wins over the mode
    np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("shape", [(7,), (4, 7), (3, 5, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradients(shape, bias):
    rng = np.random.default_rng(4)
    lin = fastlstm.Linear(7, 3, bias=bias, dtype="float64", seed=5)
    assert list(lin.params) == (["weight", "bias"] if bias else ["weight"])
    assert lin.params["weight"].shape == (3, 7)
    assert np.shares_memory(lin.params["weight"], lin.flat_params)
    x = rng.standard_normal(shape)
    want = x @ lin.params["weight"].T + (lin.params["bias"] if bias else 0)
    np.testing.assert_allclose(lin(x), want, rtol=1e-14)
    d_y = rng.standard_normal(shape[:-1] + (3,))
    y = lin.forward(x, train=True)
    np.testing.assert_allclose(y, want, rtol=1e-14)
    d_x = lin.backward(d_y)

    def loss():
        return float(np.sum(lin(x_var) * d_y))

    x_var = x.copy()
    np.testing.assert_allclose(d_x, numerical_gradient(loss, x_var), rtol=1e-6, atol=1e-8)
    x_var = x
    for name, p in lin.params.items():
        np.testing.assert_allclose(lin.grads[name], numerical_gradient(loss, p), rtol=1e-6,
                                   atol=1e-8)


def test_linear_float32_init_accumulate_and_errors():
    lin = fastlstm.Linear(16, 4, seed=0)
    assert lin.dtype == np.float32 and lin.flat_params.size == 16 * 4 + 4
    assert np.abs(lin.flat_params).max() <= 1 / 4  # U(-1/sqrt(in), 1/sqrt(in)), PyTorch's
    x = np.ones((2, 16), np.float32)
    lin.forward(x)
    x[...] = 5  # the caller's array changes after forward: backward uses what forward saw
    lin.backward(np.ones((2, 4), np.float32))
    g = lin.flat_grads.copy()
    np.testing.assert_array_equal(lin.grads["weight"], np.full((4, 16), 2, np.float32))
    x[...] = 1
    lin.forward(x)
    lin.backward(np.ones((2, 4), np.float32), accumulate=True)
    np.testing.assert_allclose(lin.flat_grads, 2 * g)
    with pytest.raises(ValueError, match="in_features=16 on its last axis"):
        lin(np.ones((2, 15)))
    with pytest.raises(ValueError, match=r"d_y must have shape \(2, 4\)"):
        lin.backward(np.ones((2, 5)))
    lin.eval()
    lin.forward(x)
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        lin.backward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        fastlstm.Linear(0, 3)


# ---------------------------------------------------------------------------- optimizers
def test_optimizer_takes_modules_and_steps_all_of_them():
    rng = np.random.default_rng(6)
    lstm = fastlstm.LSTM(3, 5, seed=7)
    head = fastlstm.Linear(5, 2, seed=8)
    before = [lstm.flat_params.copy(), head.flat_params.copy()]
    opt = optim.SGD(params=[lstm, head], learning_rate=0.1)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    out, _ = lstm.forward(x)
    y = head.forward(out)
    lstm.backward(head.backward(np.ones_like(y)))
    grads = [lstm.flat_grads.copy(), head.flat_grads.copy()]
    opt.step()
    for m, p0, g in zip((lstm, head), before, grads):
        np.testing.assert_allclose(m.flat_params, p0 - np.float32(0.1) * g, rtol=1e-6)
    opt.zero_grad()
    assert not lstm.flat_grads.any() and not head.flat_grads.any()
    # the modules' views follow the optimizer's buffer
    assert np.shares_memory(lstm.params["weight_hh_l0"], lstm.flat_params)


def test_per_tensor_clipnorm_sees_every_module_s_tensors():
    lstm = fastlstm.LSTM(2, 3, dtype="float64", seed=0)
    head = fastlstm.Linear(3, 1, dtype="float64", seed=0)
    opt = optim.SGD(params=[lstm, head], learning_rate=1.0, clipnorm=0.5)
    for m in (lstm, head):
        for g in m.grads.values():
            g[...] = 3.0
    want = {}
    for m in (lstm, head):
        for name, g in m.grads.items():
            scale = min(1.0, 0.5 / np.linalg.norm(g))
            want[(id(m), name)] = m.params[name] - scale * g
    opt.step()
    for m in (lstm, head):
        for name, p in m.params.items():
            np.testing.assert_allclose(p, want[(id(m), name)], rtol=1e-12)


def test_adam_first_step_moves_every_parameter_by_the_rate():
    lstm = fastlstm.LSTM(3, 4, seed=0)
    opt = optim.Adam(params=lstm, learning_rate=1e-2)  # one module, or a list of them
    lstm.flat_grads[...] = 1.0
    p0 = lstm.flat_params.copy()
    opt.step()
    # Adam's first step moves every parameter by about the learning rate
    np.testing.assert_allclose(p0 - lstm.flat_params, 1e-2, rtol=1e-3)


def test_optimizer_refuses_what_is_not_a_module():
    lstm = fastlstm.LSTM(3, 4)
    with pytest.raises(TypeError, match=r"modules go in params="):
        optim.Adam(lstm.flat_params)
    with pytest.raises(TypeError, match=r"got list; modules go in params= \(Adam\(params=\[lstm, head\]"):
        optim.Adam([lstm])
    with pytest.raises(TypeError, match="pass the modules"):
        optim.Adam(params=list(lstm.parameters()))
    with pytest.raises(TypeError, match="params must be a module"):
        optim.Adam(params=[])
    with pytest.raises(ValueError, match="mixes dtypes"):
        optim.Adam(params=[lstm, fastlstm.Linear(4, 1, dtype="float64")])
    with pytest.raises(ValueError, match="twice"):
        optim.Adam(params=[lstm, lstm])
    with pytest.raises(RuntimeError, match=r"step\(\) needs the modules"):
        optim.Adam(learning_rate=1e-3).step()


def test_adam_epsilon_after_correction_is_pytorch_s_formula():
    """p -= lr * m_hat / (sqrt(v_hat) + eps), written out, for gradients near epsilon (where
    it differs from Keras's form)."""
    rng = np.random.default_rng(9)
    p = rng.standard_normal(50)
    grads = [rng.standard_normal(50) * 1e-7 for _ in range(4)]
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    want, m, v = p.copy(), np.zeros(50), np.zeros(50)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        want -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    keras_form, torch_form = p.copy(), p.copy()
    for opt, buf in ((optim.Adam(lr, epsilon=eps), keras_form),
                     (optim.Adam(lr, epsilon=eps, epsilon_after_correction=True), torch_form)):
        for g in grads:
            opt.apply(buf, g.copy())
    np.testing.assert_allclose(torch_form, want, rtol=1e-12, atol=1e-15)
    assert not np.allclose(keras_form, want, rtol=1e-3, atol=0)
