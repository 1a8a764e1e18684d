"""Training options of fit/evaluate: sample and class weights, callables as losses and metrics,
generators and Sequence with steps_per_epoch; the Keras-named modules (optimizers,
regularizers, utils)."""

import numpy as np
import pytest
from fastlstm import Input, Model, Sequential, losses, optimizers, regularizers, set_seed, utils
from fastlstm.layers import LSTM, Dense


def _model(seed=0, dtype="float64", out=1, act=None):
    set_seed(seed)
    return Sequential([Input((5, 3)), LSTM(4), Dense(out, activation=act)], dtype=dtype)


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 3)), rng.normal(size=(n, 1))


# ------------------------------------------------------------------------------------ weights
def test_sample_weight_follows_keras_sum_over_batch_size():
    m = _model()
    m.compile("sgd", "mse")
    x, y = _data()
    per = ((m.predict(x, verbose=0) - y) ** 2)[:, 0]
    w = np.linspace(0.0, 2.0, len(x))
    got = m.evaluate(x, y, sample_weight=w, batch_size=len(x), verbose=0)
    # Keras: the weighted sum divided by the number of samples (not by the sum of weights)
    np.testing.assert_allclose(got, (w * per).sum() / len(x), rtol=1e-10)
    np.testing.assert_allclose(m.evaluate(x, y, sample_weight=np.ones(len(x)), verbose=0,
                                          batch_size=len(x)),
                               m.evaluate(x, y, verbose=0, batch_size=len(x)), rtol=1e-12)
    # the gradient is the weighted one: zero weight on every sample -> zero gradient
    _, g0 = m.compute_loss_and_gradients(x, y, sample_weight=np.zeros(len(x)))
    assert not g0.any()
    _, g1 = m.compute_loss_and_gradients(x, y, sample_weight=2 * np.ones(len(x)))
    _, g = m.compute_loss_and_gradients(x, y)
    np.testing.assert_allclose(g1, 2 * g, rtol=1e-10)


def test_class_weight_is_a_sample_weight_by_label():
    m = _model(out=3, act="softmax")
    m.compile("sgd", "sparse_categorical_crossentropy")
    x, _ = _data()
    y = np.arange(len(x)) % 3
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    a = m.train_on_batch(x, y, class_weight=cw)
    m2 = _model(out=3, act="softmax")
    m2.compile("sgd", "sparse_categorical_crossentropy")
    b = m2.train_on_batch(x, y, sample_weight=np.array([cw[int(c)] for c in y]))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_array_equal(m.get_weights()[0], m2.get_weights()[0])
    with pytest.raises(ValueError, match=r"no weight for class\(es\) \[2\]"):
        m.fit(x, y, class_weight={0: 1.0, 1: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(12,\)"):
        m.fit(x, y, sample_weight=np.ones(3), verbose=0)


# ------------------------------------------------------------------------------------ callables
def test_callable_loss_with_gradient_trains_like_the_builtin():
    def my_mse(y_true, y_pred):
        return ((y_pred - y_true) ** 2).mean(axis=-1)

    my_mse.gradient = lambda y_true, y_pred: 2 * (y_pred - y_true) / y_pred.shape[-1]

    def mean_error(y_true, y_pred):
        return (y_pred - y_true)[:, 0]

    x, y = _data()
    a, b = _model(), _model()
    a.compile("adam", my_mse, metrics=[mean_error])
    b.compile("adam", "mse")
    ha = a.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-10)
    want = float((a.predict(x, verbose=0) - y).mean())
    np.testing.assert_allclose(a.evaluate(x, y, verbose=0, return_dict=True,
                                          batch_size=len(x))["mean_error"], want, rtol=1e-10)


def test_loss_subclass_with_call_and_gradient_and_a_loss_without_gradient():
    class Quartic(losses.Loss):
        name = "quartic"

        def call(self, y_true, y_pred):
            return ((y_pred - y_true) ** 4).sum(axis=-1)

        def gradient(self, y_true, y_pred):
            return 4 * (y_pred - y_true) ** 3

    m = _model()
    m.compile("sgd", Quartic())
    x, y = _data()
    v, g = m.compute_loss_and_gradients(x, y)
    eps = 1e-6
    p = m.flat_params
    i = int(np.argmax(np.abs(g)))
    old = p[i]
    p[i] = old + eps
    up = m.compute_loss_and_gradients(x, y)[0]
    p[i] = old - eps
    down = m.compute_loss_and_gradients(x, y)[0]
    p[i] = old
    np.testing.assert_allclose(g[i], (up - down) / (2 * eps), rtol=1e-6)
    m.compile("sgd", lambda t, p: ((p - t) ** 2).mean(-1))
    assert m.evaluate(x, y, verbose=0) > 0
    with pytest.raises(TypeError, match="no gradient"):
        m.fit(x, y, verbose=0)


# ------------------------------------------------------------------------------------ generators
class _Batches(utils.Sequence):
    def __init__(self, x, y, bs):
        super().__init__()
        self.x, self.y, self.bs, self.ends = x, y, bs, 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        sl = slice(i * self.bs, (i + 1) * self.bs)
        return self.x[sl], self.y[sl]

    def on_epoch_end(self):
        self.ends += 1


def test_sequence_and_generator_fit_like_arrays():
    x, y = _data(16)
    ref = _model()
    ref.compile("adam", "mse")
    h_ref = ref.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    seq = _Batches(x, y, 4)
    a = _model()
    a.compile("adam", "mse")
    h_a = a.fit(seq, epochs=3, verbose=0)
    assert seq.ends == 3
    np.testing.assert_allclose(h_a.history["loss"], h_ref.history["loss"], rtol=1e-10)

    def forever():
        while True:
            for i in range(4):
                yield x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]

    b = _model()
    b.compile("adam", "mse")
    h_b = b.fit(forever(), steps_per_epoch=4, epochs=3, verbose=0,
                validation_data=_Batches(x, y, 8))
    np.testing.assert_allclose(h_b.history["loss"], h_ref.history["loss"], rtol=1e-10)
    np.testing.assert_allclose(h_b.history["val_loss"][-1], b.evaluate(x, y, verbose=0),
                               rtol=1e-10)
    np.testing.assert_allclose(b.evaluate(_Batches(x, y, 5), verbose=0),
                               b.evaluate(x, y, verbose=0), rtol=1e-10)
    np.testing.assert_allclose(b.predict(_Batches(x, y, 5), verbose=0),
                               b.predict(x, verbose=0), rtol=1e-12)
    np.testing.assert_allclose(b.predict(forever(), steps=2, verbose=0),
                               b.predict(x[:8], verbose=0), rtol=1e-12)
    with pytest.raises(ValueError, match="steps_per_epoch is required"):
        b.fit(iter([(x, y)]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="stopped after 1 batches"):
        b.fit(iter([(x, y)]), steps_per_epoch=2, epochs=1, verbose=0)


# ------------------------------------------------------------------------------------ modules
def test_pad_sequences_keras_defaults_and_options():
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    np.testing.assert_array_equal(utils.pad_sequences(seqs),
                                  [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(utils.pad_sequences(seqs, maxlen=3),
                                  [[1, 2, 3], [0, 0, 4], [7, 8, 9]])
    np.testing.assert_array_equal(
        utils.pad_sequences(seqs, maxlen=4, padding="post", truncating="post", value=-1),
        [[1, 2, 3, -1], [4, -1, -1, -1], [5, 6, 7, 8]])
    assert utils.pad_sequences(seqs).dtype == np.int32
    with pytest.raises(ValueError, match="padding must be"):
        utils.pad_sequences(seqs, padding="left")


def test_to_categorical_and_regularizers_and_optimizers():
    np.testing.assert_array_equal(utils.to_categorical([0, 2, 1]),
                                  [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert utils.to_categorical([[1], [0]], num_classes=4).shape == (2, 4)
    with pytest.raises(ValueError, match="num_classes=2"):
        utils.to_categorical([3], num_classes=2)
    r = regularizers.l1_l2(l1=0.1, l2=0.2)
    assert (r.l1, r.l2) == (0.1, 0.2)
    assert regularizers.l2(0.3).l2 == 0.3 and regularizers.l1().l1 == 0.01
    set_seed(0)
    inp = Input((4, 2))
    m = Model(inp, Dense(1, kernel_regularizer=regularizers.l2(0.5))(LSTM(3)(inp)))
    m.compile(optimizers.Adam(0.01), "mse")
    x, y = np.ones((2, 4, 2)), np.zeros((2, 1))
    k = m.layers[1].params["kernel"]
    plain = float(((m.predict(x, verbose=0) - y) ** 2).mean())
    np.testing.assert_allclose(m.evaluate(x, y, verbose=0), plain + 0.5 * (k ** 2).sum(),
                               rtol=1e-5)
    utils.set_random_seed(5)
    a = np.random.rand()
    utils.set_random_seed(5)
    assert np.random.rand() == a
