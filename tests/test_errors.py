"""Bad input gets a clear error naming the argument (and expected vs given value); odd but valid
input (integer dtypes, non-contiguous or read-only arrays, empty batch, empty sequence,
NaN/Inf) gets a defined answer."""

import numpy as np
import pytest

import fastlstm

I, H, T, B = 5, 7, 9, 4


def rng():
    return np.random.default_rng(1234)


def lstm(**kw):
    kw.setdefault("dtype", "float64")
    kw.setdefault("seed", 3)
    return fastlstm.LSTM(I, H, **kw)


def gru(**kw):
    kw.setdefault("dtype", "float64")
    kw.setdefault("seed", 3)
    return fastlstm.GRU(I, H, **kw)


def x_tbi(shape=(T, B, I)):
    return rng().standard_normal(shape)


# ------------------------------------------------------------------------------------ x


@pytest.mark.parametrize("make", [lstm, gru])
@pytest.mark.parametrize("batch_first", [False, True])
def test_x_wrong_rank(make, batch_first):
    m = make(batch_first=batch_first)
    layout = r"\[B, T, I\]" if batch_first else r"\[T, B, I\]"
    with pytest.raises(ValueError, match=rf"x must be 3-D {layout} with I=5, got shape \(4, 5\)"):
        m(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"x must be 3-D .* got shape \(9, 4, 5, 1\)"):
        m.forward(np.zeros((9, 4, 5, 1)))


@pytest.mark.parametrize("make", [lstm, gru])
def test_x_wrong_feature_size(make):
    with pytest.raises(ValueError, match=r"x must have 5 features .*got shape \(9, 4, 3\)"):
        make()(np.zeros((9, 4, 3)))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.float32])
def test_x_of_other_real_dtype_is_converted(dtype):
    m = lstm()
    x = (x_tbi() * 3).astype(dtype)
    out, (h_n, c_n) = m(x)
    want, (want_h, want_c) = m(x.astype(np.float64))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(h_n, want_h)
    np.testing.assert_array_equal(c_n, want_c)


def test_x_nested_list_is_accepted():
    m = gru()
    x = x_tbi()
    np.testing.assert_array_equal(m(x.tolist())[0], m(x)[0])


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((T, B, I), dtype=np.complex128),
        np.zeros((T, B, I), dtype=object),
        np.full((T, B, I), "a"),
        None,
    ],
    ids=["complex", "object", "str", "None"],
)
@pytest.mark.parametrize("make", [lstm, gru])
def test_x_non_real_dtype_rejected(make, x):
    m = make()
    with pytest.raises(TypeError, match=r"x must hold real numbers, got dtype"):
        m(x)
    with pytest.raises(TypeError, match=r"x must hold real numbers, got dtype"):
        m.forward(x)


def _views(x):
    """Non-contiguous views with the same [T, B, I] values as x (made from other buffers)."""
    T_, B_, I_ = x.shape
    return {
        "transposed": np.ascontiguousarray(x.transpose(2, 1, 0)).transpose(2, 1, 0),
        "strided_time": np.repeat(x, 2, axis=0)[::2],
        "strided_features": np.repeat(x, 2, axis=2)[:, :, ::2],
        "reversed": np.ascontiguousarray(x[::-1])[::-1],
        "fortran": np.asfortranarray(x),
    }


@pytest.mark.parametrize("kind", list(_views(np.zeros((1, 1, 1)))))
@pytest.mark.parametrize("make", [lstm, gru])
def test_non_contiguous_x_equals_contiguous_copy(make, kind):
    x = x_tbi()
    view = _views(x)[kind]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(view, x)
    d = rng().standard_normal((T, B, H)) + 1
    m = make()
    want_out, want_state = m.forward(x)
    want_dx = m.backward(d)[0]
    want_grads = m.flat_grads.copy()
    out, state = m.forward(view)
    d_x = m.backward(_views(d)[kind])[0]
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(d_x, want_dx)
    np.testing.assert_array_equal(m.flat_grads, want_grads)
    if make is gru:
        state, want_state = (state,), (want_state,)
    for a, b in zip(state, want_state, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_first_from_transposed_view():
    # the common non-contiguous case: a [T, B, I] buffer handed to a batch_first module
    x = x_tbi()
    m_t = lstm()
    m_b = lstm(batch_first=True)
    m_b.load_state_dict(m_t.state_dict())
    out_b, (h_b, c_b) = m_b(x.swapaxes(0, 1))
    out_t, (h_t, c_t) = m_t(x)
    np.testing.assert_allclose(out_b.swapaxes(0, 1), out_t, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h_b, h_t, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c_b, c_t, rtol=1e-13, atol=1e-15)


def test_non_contiguous_states_and_lengths():
    m = lstm(bidirectional=True)
    x = x_tbi()
    h0 = rng().standard_normal((2, B, H))
    c0 = rng().standard_normal((2, B, H)) * 0.5
    lengths = np.array([3, 9, 1, 5])
    want = m(x, (h0, c0), lengths=lengths)
    got = m(x, (np.asfortranarray(h0), np.repeat(c0, 2, axis=1)[:, ::2]),
            lengths=np.repeat(lengths, 3)[::3])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1][0], want[1][0])
    np.testing.assert_array_equal(got[1][1], want[1][1])


@pytest.mark.parametrize("make", [lstm, gru])
def test_read_only_inputs_work_and_are_not_modified(make):
    m = make()
    x = x_tbi()
    h0 = rng().standard_normal((1, B, H))
    d = rng().standard_normal((T, B, H))
    hx = (h0, h0 * 0.5) if make is lstm else h0
    want_out = m.forward(x, hx)[0]
    want_dx = m.backward(d)[0]
    copies = [a.copy() for a in (x, h0, d)]
    for a in (x, h0, d):
        a.setflags(write=False)
    c0 = h0 * 0.5
    c0.setflags(write=False)
    out = m.forward(x, (h0, c0) if make is lstm else h0)[0]
    d_x = m.backward(d)[0]
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(d_x, want_dx)
    for a, c in zip((x, h0, d), copies):
        np.testing.assert_array_equal(a, c)


# ------------------------------------------------------------------------------------ states


def test_h0_wrong_batch():
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 4, 7\).*got \(1, 3, 7\)"):
        lstm()(x_tbi(), (np.zeros((1, 3, H)), np.zeros((1, B, H))))
    with pytest.raises(ValueError, match=r"c0 must have shape \(1, 4, 7\).*got \(1, 5, 7\)"):
        lstm()(x_tbi(), (np.zeros((1, B, H)), np.zeros((1, 5, H))))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 4, 7\).*got \(1, 3, 7\)"):
        gru()(x_tbi(), np.zeros((1, 3, H)))


def test_states_wrong_for_bidirectional():
    m = lstm(num_layers=2, bidirectional=True)
    good = np.zeros((4, B, H))
    with pytest.raises(ValueError, match=r"h0 must have shape \(4, 4, 7\) \(num_layers\*num_directions.*got \(2, 4, 7\)"):
        m(x_tbi(), (np.zeros((2, B, H)), good))
    with pytest.raises(ValueError, match=r"c0 must have shape \(4, 4, 7\).*got \(2, 4, 7\)"):
        m(x_tbi(), (good, np.zeros((2, B, H))))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4, 7\).*got \(1, 4, 7\)"):
        gru(bidirectional=True)(x_tbi(), np.zeros((1, B, H)))


def test_states_wrong_for_projection():
    m = lstm(proj_size=3, bidirectional=True)
    # h is [L*D, B, P], c is [L*D, B, H]: swapping them is the typical mistake
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4, 3\).*proj_size.*got \(2, 4, 7\)"):
        m(x_tbi(), (np.zeros((2, B, H)), np.zeros((2, B, H))))
    with pytest.raises(ValueError, match=r"c0 must have shape \(2, 4, 7\).*hidden_size.*got \(2, 4, 3\)"):
        m(x_tbi(), (np.zeros((2, B, 3)), np.zeros((2, B, 3))))


@pytest.mark.parametrize(
    "hx, given",
    [(np.zeros((1, B, H)), "ndarray"), ((np.zeros((1, B, H)),), "tuple of length 1"),
     ((np.zeros((1, B, H)),) * 3, "tuple of length 3")],
    ids=["array", "1-tuple", "3-tuple"],
)
def test_lstm_hx_not_a_pair(hx, given):
    with pytest.raises(TypeError, match=rf"hx must be a tuple \(h0, c0\) or None, got {given}$"):
        lstm()(x_tbi(), hx)


def test_states_non_real_dtype():
    with pytest.raises(TypeError, match=r"c0 must hold real numbers"):
        lstm()(x_tbi(), (np.zeros((1, B, H)), np.zeros((1, B, H), complex)))
    with pytest.raises(TypeError, match=r"h0 must hold real numbers"):
        gru()(x_tbi(), np.full((1, B, H), "x"))


# ------------------------------------------------------------------------------------ backward


@pytest.mark.parametrize("make", [lstm, gru])
def test_backward_before_forward(make):
    with pytest.raises(RuntimeError, match=r"forward"):
        make().backward(np.zeros((T, B, H)))


@pytest.mark.parametrize("make", [lstm, gru])
def test_backward_after_inference_only(make):
    m = make()
    m(x_tbi())
    with pytest.raises(RuntimeError, match=r"forward\(\.\.\., train=True\)"):
        m.backward(np.zeros((T, B, H)))
    # an inference call after a training forward invalidates what backward needed
    m.forward(x_tbi())
    m(x_tbi((3, 2, I)))
    with pytest.raises(RuntimeError, match=r"forward\(\.\.\., train=True\)"):
        m.backward(np.zeros((T, B, H)))


def test_backward_wrong_shapes():
    m = lstm(num_layers=2)
    m.forward(x_tbi())
    with pytest.raises(ValueError, match=r"d_output must have shape \(9, 4, 7\), got \(9, 4, 6\)"):
        m.backward(np.zeros((T, B, 6)))
    with pytest.raises(ValueError, match=r"d_output must have shape \(9, 4, 7\), got \(4, 9, 7\)"):
        m.backward(np.zeros((B, T, H)))
    with pytest.raises(ValueError, match=r"d_h_n must have shape \(2, 4, 7\), got \(1, 4, 7\)"):
        m.backward(np.zeros((T, B, H)), np.zeros((1, B, H)))
    with pytest.raises(ValueError, match=r"d_c_n must have shape \(2, 4, 7\), got \(2, 4, 3\)"):
        m.backward(np.zeros((T, B, H)), None, np.zeros((2, B, 3)))
    with pytest.raises(TypeError, match=r"d_output must hold real numbers, got dtype complex"):
        m.backward(np.zeros((T, B, H), complex))
    g = gru(bidirectional=True)
    g.forward(x_tbi())
    with pytest.raises(ValueError, match=r"d_output must have shape \(9, 4, 14\), got \(9, 4, 7\)"):
        g.backward(np.zeros((T, B, H)))
    with pytest.raises(ValueError, match=r"d_h_n must have shape \(2, 4, 7\), got \(2, 4, 14\)"):
        g.backward(np.zeros((T, B, 2 * H)), np.zeros((2, B, 2 * H)))


def test_failed_backward_keeps_activations():
    m = lstm()
    x, d = x_tbi(), rng().standard_normal((T, B, H))
    m.forward(x)
    want = m.backward(d)[0]
    m.forward(x)
    with pytest.raises(ValueError, match="d_output"):
        m.backward(d[:, :2])
    np.testing.assert_array_equal(m.backward(d)[0], want)


# ------------------------------------------------------------------------------------ lengths


@pytest.mark.parametrize("make", [lstm, gru])
def test_lengths_errors(make):
    m = make()
    x = x_tbi()
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\) \(one per sequence\), got \(3,\)"):
        m(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\).*got \(1, 4\)"):
        m(x, lengths=[[1, 2, 3, 4]])
    with pytest.raises(TypeError, match=r"lengths must be an integer array, got dtype float64"):
        m(x, lengths=[1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match=r"lengths must be an integer array, got dtype bool"):
        m(x, lengths=[True] * 4)
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=9\], got min 0"):
        m(x, lengths=[0, 2, 3, 4])
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=9\], got min -1"):
        m(x, lengths=[-1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=9\], got min 2 max 10"):
        m.forward(x, lengths=[10, 2, 3, 4])


def test_lengths_with_batch_first_use_the_time_axis():
    m = lstm(batch_first=True)
    x = x_tbi((B, T, I))
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=9\].*max 10"):
        m(x, lengths=[10, 1, 1, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\)"):
        m(x, lengths=[1] * T)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.uint64])
def test_lengths_any_integer_dtype(dtype):
    m = lstm()
    lengths = [9, 1, 4, 6]
    want = m(x_tbi(), lengths=np.array(lengths, np.int64))[0]
    np.testing.assert_array_equal(m(x_tbi(), lengths=np.array(lengths, dtype))[0], want)


# ------------------------------------------------------------------------------------ constructor


def test_gru_has_no_peephole():
    with pytest.raises(TypeError, match=r"peephole"):
        fastlstm.GRU(I, H, peephole=True)


def test_gru_has_no_proj_size():
    with pytest.raises(TypeError, match=r"proj_size"):
        fastlstm.GRU(I, H, proj_size=3)


@pytest.mark.parametrize("p", [7, 9])
def test_proj_size_not_below_hidden_size(p):
    with pytest.raises(ValueError, match=rf"proj_size must be smaller than hidden_size \(7\), got {p}"):
        fastlstm.LSTM(I, H, proj_size=p)


def test_proj_size_negative():
    with pytest.raises(ValueError, match=r"proj_size must be >= 0, got -1"):
        fastlstm.LSTM(I, H, proj_size=-1)


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU])
@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
def test_sizes_invalid(cls, arg):
    def make(value):
        kw = dict(input_size=I, hidden_size=H, num_layers=1)
        kw[arg] = value
        return cls(**kw)

    with pytest.raises(ValueError, match=rf"{arg} must be >= 1, got 0"):
        make(0)
    with pytest.raises(ValueError, match=rf"{arg} must be >= 1, got -3"):
        make(-3)
    for bad, tname in ((7.0, "float"), ("7", "str"), (None, "NoneType"), (True, "bool")):
        with pytest.raises(TypeError, match=rf"{arg} must be an int, got {tname}"):
            make(bad)
    assert getattr(make(np.int64(2)), arg) == 2  # NumPy integers are ints


@pytest.mark.parametrize("dtype", ["float16", np.float16, "int32", "complex64", "nope"])
def test_dtype_invalid(dtype):
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64', got"):
        fastlstm.LSTM(I, H, dtype=dtype)
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64', got"):
        fastlstm.GRU(I, H, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64")])
def test_dtype_spellings(dtype):
    assert fastlstm.LSTM(I, H, dtype=dtype).dtype == np.dtype(dtype)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_dropout_out_of_range(p):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got"):
        fastlstm.LSTM(I, H, num_layers=2, dropout=p)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got"):
        fastlstm.GRU(I, H, num_layers=2, dropout=p)


def test_dropout_not_a_number():
    with pytest.raises(TypeError, match=r"dropout must be a float, got 'a'"):
        fastlstm.LSTM(I, H, dropout="a")
    with pytest.raises(TypeError, match=r"dropout must be a float, got None"):
        fastlstm.GRU(I, H, dropout=None)


# ------------------------------------------------------------------------------------ stream


@pytest.mark.parametrize("make", [lstm, gru])
def test_stream_on_bidirectional(make):
    with pytest.raises(ValueError, match=r"bidirectional"):
        make(bidirectional=True).stream()


@pytest.mark.parametrize("make", [lstm, gru])
def test_stream_step_wrong_shape(make):
    s = make(num_layers=2).stream(batch=2)
    with pytest.raises(ValueError, match=r"x_t must have shape \(2, 5\) \(batch, input_size\), got \(2, 4\)"):
        s.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x_t must have shape \(2, 5\).*got \(3, 5\)"):
        s.step(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"x_t must have shape \(2, 5\).*got \(5,\)"):
        s.step(np.zeros(5))  # a 1-D step is only read as batch 1 when batch is 1
    with pytest.raises(TypeError, match=r"x_t must hold real numbers"):
        s.step(np.zeros((2, 5), complex))
    assert s.step(np.zeros((2, 5))).shape == (2, H)


def test_stream_batch_invalid():
    with pytest.raises(ValueError, match=r"batch must be >= 1, got 0"):
        lstm().stream(batch=0)
    with pytest.raises(TypeError, match=r"batch must be an int, got float"):
        lstm().stream(batch=2.0)


def test_stream_set_state_wrong_shape():
    s = lstm(num_layers=2).stream(batch=3)
    with pytest.raises(ValueError, match=r"h must have shape \(2, 3, 7\), got \(2, 4, 7\)"):
        s.set_state(np.zeros((2, 4, H)), np.zeros((2, 3, H)))


# ------------------------------------------------------------------------------------ state dict


def _other_state(m):
    return {k: v + 1.0 for k, v in m.state_dict().items()}


@pytest.mark.parametrize("make", [lstm, gru])
def test_load_state_dict_wrong_shape_changes_nothing(make):
    m = make(num_layers=2)
    before = m.flat_params.copy()
    sd = _other_state(m)
    # the bad entry last, so that a load that writes as it checks would have changed the others
    sd["weight_ih_l1"] = np.zeros((sd["weight_ih_l1"].shape[0], H + 1))
    with pytest.raises(ValueError, match=r"parameter 'weight_ih_l1' must have shape \(\d+, 7\), got \(\d+, 8\)"):
        m.load_state_dict(sd)
    np.testing.assert_array_equal(m.flat_params, before)


def test_load_state_dict_non_real_value_changes_nothing():
    m = lstm()
    before = m.flat_params.copy()
    sd = _other_state(m)
    sd["bias_hh_l0"] = np.full(4 * H, "a")
    with pytest.raises(TypeError, match=r"parameter 'bias_hh_l0' must hold real numbers"):
        m.load_state_dict(sd)
    np.testing.assert_array_equal(m.flat_params, before)


def test_load_state_dict_missing_key():
    m = lstm()
    before = m.flat_params.copy()
    old_bias = m.params["bias_hh_l0"].copy()
    sd = _other_state(m)
    del sd["bias_hh_l0"]
    with pytest.raises(KeyError, match=r"missing parameters: \['bias_hh_l0'\]"):
        m.load_state_dict(sd)
    np.testing.assert_array_equal(m.flat_params, before)
    m.load_state_dict(sd, strict=False)  # non-strict loads what is there
    np.testing.assert_array_equal(m.params["weight_hh_l0"], sd["weight_hh_l0"])
    np.testing.assert_array_equal(m.params["bias_hh_l0"], old_bias)


def test_load_state_dict_unexpected_key():
    m = lstm()
    before = m.flat_params.copy()
    sd = _other_state(m)
    sd["weight_hr_l0"] = np.zeros((3, H))
    with pytest.raises(KeyError, match=r"unexpected parameter 'weight_hr_l0'; expected \["):
        m.load_state_dict(sd)
    np.testing.assert_array_equal(m.flat_params, before)
    m.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(m.params["weight_ih_l0"], sd["weight_ih_l0"])


# ------------------------------------------------------------------------------------ empty


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("make", [lstm, gru])
def test_empty_batch(make, bidirectional):
    m = make(num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = np.zeros((T, 0, I))
    out, state = m.forward(x)
    h_n = state[0] if make is lstm else state
    assert out.shape == (T, 0, D * H)
    assert h_n.shape == (2 * D, 0, H)
    if make is lstm:
        assert state[1].shape == (2 * D, 0, H)
    m.flat_grads[...] = 7.0
    back = m.backward(np.zeros((T, 0, D * H)))
    assert back[0].shape == (T, 0, I)
    assert np.all(m.flat_grads == 0.0)  # no sequence, no gradient (overwritten, not kept)
    assert m(x, lengths=np.zeros(0, np.int64))[0].shape == (T, 0, D * H)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("make", [lstm, gru])
def test_empty_sequence(make, bidirectional):
    m = make(num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    r = rng()
    x = np.zeros((0, B, I))
    # without a state: zeros
    out, state = m(x)
    assert out.shape == (0, B, D * H)
    for s in state if make is lstm else (state,):
        assert s.shape == (2 * D, B, H)
        assert np.all(s == 0.0)
    # with a state: returned unchanged, and the gradient passes straight through
    h0 = r.standard_normal((2 * D, B, H))
    c0 = r.standard_normal((2 * D, B, H))
    d_h_n = r.standard_normal((2 * D, B, H))
    d_c_n = r.standard_normal((2 * D, B, H))
    m.flat_grads[...] = 7.0
    if make is lstm:
        out, (h_n, c_n) = m.forward(x, (h0, c0))
        np.testing.assert_array_equal(h_n, h0)
        np.testing.assert_array_equal(c_n, c0)
        d_x, (d_h0, d_c0) = m.backward(np.zeros((0, B, D * H)), d_h_n, d_c_n)
        np.testing.assert_array_equal(d_h0, d_h_n)
        np.testing.assert_array_equal(d_c0, d_c_n)
    else:
        out, h_n = m.forward(x, h0)
        np.testing.assert_array_equal(h_n, h0)
        d_x, d_h0 = m.backward(np.zeros((0, B, D * H)), d_h_n)
        np.testing.assert_array_equal(d_h0, d_h_n)
    assert d_x.shape == (0, B, I)
    assert np.all(m.flat_grads == 0.0)


# ------------------------------------------------------------------------------------ NaN / Inf


@pytest.mark.parametrize("make", [lstm, gru])
def test_nan_propagates_in_its_sequence_only(make):
    m = make(bidirectional=True)
    x = x_tbi()
    clean_out = m.forward(x)[0]
    d = rng().standard_normal(clean_out.shape)
    clean_dx = m.backward(d)[0]
    bad = x.copy()
    bad[3, 1, 2] = np.nan
    out, state = m.forward(bad)
    fwd, rev = out[..., :H], out[..., H:]
    # forward direction: NaN from step 3 on; reverse direction: NaN up to step 3
    assert np.all(np.isnan(fwd[3:, 1])) and not np.any(np.isnan(fwd[:3, 1]))
    assert np.all(np.isnan(rev[:4, 1])) and not np.any(np.isnan(rev[4:, 1]))
    others = [0, 2, 3]
    np.testing.assert_allclose(out[:, others], clean_out[:, others], rtol=1e-13, atol=1e-15)
    for s in state if make is lstm else (state,):
        assert np.all(np.isnan(s[:, 1]))
        assert np.all(np.isfinite(s[:, others]))
    d_x = m.backward(d)[0]
    assert np.any(np.isnan(d_x[:, 1]))
    np.testing.assert_allclose(d_x[:, others], clean_dx[:, others], rtol=1e-12, atol=1e-14)
    assert np.any(np.isnan(m.flat_grads))  # a batch-summed gradient sees the NaN


@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("make", [lstm, gru])
def test_inf_saturates_without_crashing(make, value):
    m = make(num_layers=2)
    x = x_tbi()
    clean_out = m.forward(x)[0]
    d = rng().standard_normal(clean_out.shape)
    clean_dx = m.backward(d)[0]
    bad = x.copy()
    bad[3, 1, 2] = value
    out = m.forward(bad)[0]
    # a single infinite input drives each gate to its limit (sigmoid 0/1, tanh -1/1): finite
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:3], clean_out[:3])
    assert np.any(out[3:, 1] != clean_out[3:, 1])
    others = [0, 2, 3]
    np.testing.assert_allclose(out[:, others], clean_out[:, others], rtol=1e-13, atol=1e-15)
    d_x = m.backward(d)[0]
    np.testing.assert_allclose(d_x[:, others], clean_dx[:, others], rtol=1e-12, atol=1e-14)


def test_stream_set_state_needs_c_for_lstm_and_refuses_it_for_gru():
    lstm = fastlstm.LSTM(3, 4)
    st = lstm.stream(batch=2)
    h = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="c must be given with h for an LSTM stream"):
        st.set_state(h)
    st.set_state(h, np.ones((1, 2, 4), np.float32))
    assert np.array_equal(st.state[1], np.ones((1, 2, 4), np.float32))
    gst = fastlstm.GRU(3, 4).stream(batch=2)
    with pytest.raises(ValueError, match="c is only for LSTM streams"):
        gst.set_state(h, h)
    with pytest.raises(ValueError, match=r"h must have shape \(1, 2, 4\)"):
        gst.set_state(np.zeros((1, 3, 4), np.float32))
