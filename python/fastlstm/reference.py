"""A pure-NumPy float64 oracle of the recurrent family: LSTM, peephole LSTM, LSTMP, GRU.

Written to be read, not to be fast: one function per concern, a shape comment on every array,
the backward pass as plain step-by-step backpropagation through time. The engine
(:class:`fastlstm.LSTM`, :class:`fastlstm.GRU`) is tested against it; nothing here imports the
engine.

Conventions (the same as PyTorch and the engine)
------------------------------------------------
* Shape letters: T time, B batch, I input size of a layer, H hidden size, P projection size,
  S = P if projected else H (the size of h and of each direction's output), L layers,
  D directions (2 if bidirectional), G = 4H (LSTM) or 3H (GRU).
* ``params`` is a dict under PyTorch's names, ``{name}_l{k}`` and ``{name}_l{k}_reverse``:
  ``weight_ih`` [G, I_k], ``weight_hh`` [G, S], ``bias_ih`` [G], ``bias_hh`` [G] (no ``bias_*``
  keys at all means bias=False), ``weight_hr`` [P, H] (projection), ``weight_ci``,
  ``weight_cf``, ``weight_co`` [H] (peephole). I_0 is the input size, I_k = D*S for k > 0.
* LSTM gate order i, f, g, o::

      a = x W_ih^T + b_ih + h_prev W_hh^T + b_hh                 [B, 4H]
      i = sigmoid(a_i + w_ci * c_prev)   f = sigmoid(a_f + w_cf * c_prev)
      g = tanh(a_g)                      c = f * c_prev + i * g
      o = sigmoid(a_o + w_co * c)        m = o * tanh(c)
      h = m W_hr^T  (projection)         h = m  (otherwise)

  (peephole terms as in ONNX: i and f look at c_prev, o at the new c).
* GRU gate order r, z, n::

      r = sigmoid(W_ir x + b_ir + W_hr h_prev + b_hr)
      z = sigmoid(W_iz x + b_iz + W_hz h_prev + b_hz)
      n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))
      h = (1 - z) * n + z * h_prev

* Initial states ``h0`` [L*D, B, S] and ``c0`` [L*D, B, H], row ``k*D + d`` for layer k and
  direction d (d = 1 is the reverse direction); absent means zeros.
* Variable lengths follow PyTorch's packed sequences: sequence b has ``lengths[b]`` valid steps
  (any order, each in [1, T]); steps past it are not computed and its output is zero there;
  ``h_n``/``c_n`` hold its state after its last valid step; the reverse direction starts at its
  last valid step ``lengths[b] - 1``. Here that is done with a per-step mask: an invalid step
  keeps the previous state, so the reverse direction walks through the padding with its
  initial state untouched.
* ``dropout_masks``: an optional list of L-1 arrays, one for each layer k > 0, multiplied onto
  that layer's input (the concatenated outputs of layer k-1), already scaled (inverted
  dropout: entries 0 or 1/(1-p)). Each has the layout of ``x``: [T, B, D*S], or [B, T, D*S]
  when ``batch_first``.
* ``recurrent_masks``: optional recurrent dropout (Keras's ``recurrent_dropout``), one array
  [L*D, B, ng*S] (ng = 4 for LSTM, 3 for GRU; row ``k*D + d`` as for ``h0``): for sequence b
  and gate g, ``m_g = recurrent_masks[k*D + d, b, g*S:(g+1)*S]`` multiplies h_prev in that
  gate's recurrent product only, the same at every step::

      a_g = x W_ih_g^T + b_ih_g + (h_prev * m_g) W_hh_g^T + b_hh_g

  The LSTM's cell state and the GRU's ``z * h_prev`` use h_prev unmasked (Keras's cells with
  ``implementation=1``, whose masks are one per gate). Entries are used as given (0 or
  1/(1-rate) for inverted dropout).

Backward functions return the gradient of a scalar loss given the gradients of the outputs
(``d_output``, ``d_h_n``, ``d_c_n``; the state gradients may be None = zero). They return
``d_h0``/``d_c0`` even when the forward had no initial state (the gradient w.r.t. the zero
state), and a ``grads`` dict with the same keys and shapes as ``params``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward"]


# ===================================================================================== helpers
def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _f64(a):
    return None if a is None else np.array(a, dtype=np.float64)  # a float64 copy


def _time_major(a, batch_first):
    """[B, T, ...] -> [T, B, ...] when batch_first, else unchanged (always a float64 copy)."""
    a = np.array(a, dtype=np.float64)
    return a.transpose(1, 0, 2).copy() if batch_first else a


def _suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


# Per-layer-direction names: the cell functions see {"weight_ih": ..., "bias_ih": ... or None}.
_LSTM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
               "weight_ci", "weight_cf", "weight_co")
_GRU_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _cell_params(params, layer, direction, names):
    """The parameters of one (layer, direction) under short names; missing ones are None."""
    sfx = _suffix(layer, direction)
    return {name: params.get(name + sfx) for name in names}


def _expected_shapes(cell, input_size, hidden_size, num_layers, num_directions, proj_size,
                     peephole, bias):
    """{name: shape} of every parameter a configuration needs (PyTorch's names)."""
    H, D = hidden_size, num_directions
    S = proj_size if proj_size > 0 else H
    G = (4 if cell == "lstm" else 3) * H
    shapes = {}
    for k in range(num_layers):
        I_k = input_size if k == 0 else D * S
        for d in range(D):
            sfx = _suffix(k, d)
            shapes["weight_ih" + sfx] = (G, I_k)
            shapes["weight_hh" + sfx] = (G, S)
            if bias:
                shapes["bias_ih" + sfx] = (G,)
                shapes["bias_hh" + sfx] = (G,)
            if proj_size > 0:
                shapes["weight_hr" + sfx] = (proj_size, H)
            if peephole:
                for name in ("weight_ci", "weight_cf", "weight_co"):
                    shapes[name + sfx] = (H,)
    return shapes


def _check_params(params, shapes):
    """Raises if ``params`` does not hold exactly the arrays of ``shapes``; returns f64 copies."""
    missing = sorted(set(shapes) - set(params))
    extra = sorted(set(params) - set(shapes))
    if missing or extra:
        raise KeyError(f"params: missing {missing}, unexpected {extra}")
    out = {}
    for name, shape in shapes.items():
        arr = np.array(params[name], dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape}, got {arr.shape}")
        out[name] = arr
    return out


def _valid_mask(lengths, T, B):
    """[T, B, 1] float: 1 where step t of sequence b is computed (t < lengths[b]), else 0."""
    if lengths is None:
        return np.ones((T, B, 1))
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be {B} integers in [1, {T}], got {lengths}")
    t = np.arange(T)[:, None]  # [T, 1]
    return (t < lengths[None, :]).astype(np.float64)[:, :, None]


# ============================================================ the recurrent product h W_hh^T
def recurrent_product(h_prev, w_hh, mask):
    """h_prev [B, S] @ W_hh^T [S, G] -> [B, G]; with ``mask`` [B, ng*S] (recurrent dropout)
    gate g's columns come from (h_prev * m_g) @ W_hh_g^T instead."""
    if mask is None:
        return h_prev @ w_hh.T
    S = h_prev.shape[1]
    ng = mask.shape[1] // S
    Hg = w_hh.shape[0] // ng
    return np.concatenate([(h_prev * mask[:, g * S:(g + 1) * S]) @ w_hh[g * Hg:(g + 1) * Hg].T
                           for g in range(ng)], axis=1)


def recurrent_product_backward(d_a, h_prev, w_hh, mask):
    """Backward of :func:`recurrent_product`: d_a [B, G] -> (d_w_hh [G, S], d_h_prev [B, S])."""
    if mask is None:
        return d_a.T @ h_prev, d_a @ w_hh
    S = h_prev.shape[1]
    ng = mask.shape[1] // S
    Hg = w_hh.shape[0] // ng
    d_w = np.zeros_like(w_hh)  # [G, S]
    d_h = np.zeros_like(h_prev)  # [B, S]
    for g in range(ng):
        m = mask[:, g * S:(g + 1) * S]  # [B, S]
        d_ag = d_a[:, g * Hg:(g + 1) * Hg]  # [B, H]
        d_w[g * Hg:(g + 1) * Hg] = d_ag.T @ (h_prev * m)
        d_h += m * (d_ag @ w_hh[g * Hg:(g + 1) * Hg])
    return d_w, d_h


# ================================================================================= LSTM cell
def lstm_cell_forward(x_t, state_prev, p):
    """One LSTM step for a batch.

    x_t [B, I]; state_prev = (h_prev [B, S], c_prev [B, H]); p: the cell's parameters.
    Returns ((h [B, S], c [B, H]), step) where step keeps what the backward needs.
    """
    h_prev, c_prev = state_prev
    H = p["weight_hh"].shape[0] // 4
    a = x_t @ p["weight_ih"].T + recurrent_product(h_prev, p["weight_hh"],
                                                   p.get("recurrent_mask"))  # [B, 4H]
    if p["bias_ih"] is not None:
        a = a + p["bias_ih"] + p["bias_hh"]
    a_i, a_f, a_g, a_o = (a[:, k * H:(k + 1) * H].copy() for k in range(4))  # each [B, H]
    if p["weight_ci"] is not None:
        a_i += p["weight_ci"] * c_prev
        a_f += p["weight_cf"] * c_prev
    i = sigmoid(a_i)  # [B, H]
    f = sigmoid(a_f)  # [B, H]
    g = np.tanh(a_g)  # [B, H]
    c = f * c_prev + i * g  # [B, H]
    if p["weight_co"] is not None:
        a_o += p["weight_co"] * c
    o = sigmoid(a_o)  # [B, H]
    tanh_c = np.tanh(c)  # [B, H]
    m = o * tanh_c  # [B, H]
    h = m @ p["weight_hr"].T if p["weight_hr"] is not None else m  # [B, S]
    step = dict(x=x_t, h_prev=h_prev, c_prev=c_prev, i=i, f=f, g=g, o=o, c=c, tanh_c=tanh_c, m=m)
    return (h, c), step


def lstm_cell_backward(d_state, step, p, d_p):
    """Backward of one LSTM step.

    d_state = (d_h [B, S], d_c [B, H]): gradients w.r.t. the step's outputs h and c.
    Adds the parameter gradients into ``d_p`` (same short names as ``p``).
    Returns (d_x_t [B, I], (d_h_prev [B, S], d_c_prev [B, H])).
    """
    d_h, d_c = d_state
    i, f, g, o, c, c_prev = step["i"], step["f"], step["g"], step["o"], step["c"], step["c_prev"]
    if p["weight_hr"] is not None:
        d_p["weight_hr"] += d_h.T @ step["m"]  # [P, H]
        d_m = d_h @ p["weight_hr"]  # [B, H]
    else:
        d_m = d_h  # [B, H]
    # through m = o * tanh(c), then o = sigmoid(a_o + w_co * c)
    d_o = d_m * step["tanh_c"]  # [B, H]
    d_a_o = d_o * o * (1.0 - o)  # [B, H]
    d_c = d_c + d_m * o * (1.0 - step["tanh_c"] ** 2)  # [B, H]
    if p["weight_co"] is not None:
        d_c = d_c + d_a_o * p["weight_co"]
        d_p["weight_co"] += (d_a_o * c).sum(axis=0)
    # through c = f * c_prev + i * g
    d_a_i = d_c * g * i * (1.0 - i)  # [B, H]
    d_a_f = d_c * c_prev * f * (1.0 - f)  # [B, H]
    d_a_g = d_c * i * (1.0 - g ** 2)  # [B, H]
    d_c_prev = d_c * f  # [B, H]
    if p["weight_ci"] is not None:
        d_c_prev = d_c_prev + d_a_i * p["weight_ci"] + d_a_f * p["weight_cf"]
        d_p["weight_ci"] += (d_a_i * c_prev).sum(axis=0)
        d_p["weight_cf"] += (d_a_f * c_prev).sum(axis=0)
    # through a = x W_ih^T + b_ih + h_prev W_hh^T + b_hh
    d_a = np.concatenate([d_a_i, d_a_f, d_a_g, d_a_o], axis=1)  # [B, 4H]
    d_p["weight_ih"] += d_a.T @ step["x"]  # [4H, I]
    d_w_hh, d_h_prev = recurrent_product_backward(d_a, step["h_prev"], p["weight_hh"],
                                                  p.get("recurrent_mask"))  # [4H, S], [B, S]
    d_p["weight_hh"] += d_w_hh
    if p["bias_ih"] is not None:
        d_p["bias_ih"] += d_a.sum(axis=0)
        d_p["bias_hh"] += d_a.sum(axis=0)
    d_x = d_a @ p["weight_ih"]  # [B, I]
    return d_x, (d_h_prev, d_c_prev)


# ================================================================================== GRU cell
def gru_cell_forward(x_t, state_prev, p):
    """One GRU step. x_t [B, I]; state_prev = (h_prev [B, H],). Returns ((h [B, H],), step)."""
    (h_prev,) = state_prev
    H = p["weight_hh"].shape[0] // 3
    gx = x_t @ p["weight_ih"].T  # [B, 3H]
    gh = recurrent_product(h_prev, p["weight_hh"], p.get("recurrent_mask"))  # [B, 3H]
    if p["bias_ih"] is not None:
        gx = gx + p["bias_ih"]
        gh = gh + p["bias_hh"]
    r = sigmoid(gx[:, :H] + gh[:, :H])  # [B, H]
    z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])  # [B, H]
    hn = gh[:, 2 * H:]  # [B, H]: W_hn h_prev + b_hn, which r gates
    n = np.tanh(gx[:, 2 * H:] + r * hn)  # [B, H]
    h = (1.0 - z) * n + z * h_prev  # [B, H]
    step = dict(x=x_t, h_prev=h_prev, r=r, z=z, n=n, hn=hn)
    return (h,), step


def gru_cell_backward(d_state, step, p, d_p):
    """Backward of one GRU step: d_state = (d_h [B, H],) -> (d_x_t [B, I], (d_h_prev [B, H],))."""
    (d_h,) = d_state
    r, z, n, hn, h_prev = step["r"], step["z"], step["n"], step["hn"], step["h_prev"]
    # through h = (1 - z) * n + z * h_prev
    d_n = d_h * (1.0 - z)  # [B, H]
    d_a_z = d_h * (h_prev - n) * z * (1.0 - z)  # [B, H]
    d_h_prev = d_h * z  # [B, H]
    # through n = tanh(a_xn + r * hn)
    d_a_n = d_n * (1.0 - n ** 2)  # [B, H]
    d_hn = d_a_n * r  # [B, H]
    d_a_r = d_a_n * hn * r * (1.0 - r)  # [B, H]
    d_gx = np.concatenate([d_a_r, d_a_z, d_a_n], axis=1)  # [B, 3H]
    d_gh = np.concatenate([d_a_r, d_a_z, d_hn], axis=1)  # [B, 3H]
    d_p["weight_ih"] += d_gx.T @ step["x"]  # [3H, I]
    d_w_hh, d_h_rec = recurrent_product_backward(d_gh, h_prev, p["weight_hh"],
                                                 p.get("recurrent_mask"))  # [3H, H], [B, H]
    d_p["weight_hh"] += d_w_hh
    if p["bias_ih"] is not None:
        d_p["bias_ih"] += d_gx.sum(axis=0)
        d_p["bias_hh"] += d_gh.sum(axis=0)
    d_x = d_gx @ p["weight_ih"]  # [B, I]
    d_h_prev = d_h_prev + d_h_rec  # [B, H]
    return d_x, (d_h_prev,)


_CELLS = {
    "lstm": (lstm_cell_forward, lstm_cell_backward, _LSTM_NAMES),
    "gru": (gru_cell_forward, gru_cell_backward, _GRU_NAMES),
}


# ======================================================================= one direction in time
def direction_forward(cell, x, state0, valid, p, reverse):
    """Runs one cell over the sequence in one direction.

    x [T, B, I]; state0: tuple of [B, *] initial states (h first); valid [T, B, 1].
    At an invalid step (past a sequence's length) the state passes through unchanged and the
    output is zero. Returns (out [T, B, S], state_n (tuple), steps (list of T step caches,
    indexed by time)).
    """
    cell_forward = _CELLS[cell][0]
    T = x.shape[0]
    out = np.zeros((T, x.shape[1], state0[0].shape[1]))  # [T, B, S]
    steps = [None] * T
    state = state0
    for t in (reversed(range(T)) if reverse else range(T)):
        new_state, steps[t] = cell_forward(x[t], state, p)
        v = valid[t]  # [B, 1]
        state = tuple(v * s_new + (1.0 - v) * s_old for s_new, s_old in zip(new_state, state))
        out[t] = v * new_state[0]
    return out, state, steps


def direction_backward(cell, d_out, d_state_n, valid, steps, p, d_p, reverse):
    """Backward of :func:`direction_forward`.

    d_out [T, B, S]; d_state_n: tuple like state_n. Adds into ``d_p``.
    Returns (d_x [T, B, I], d_state0 (tuple)).
    """
    cell_backward = _CELLS[cell][1]
    T = d_out.shape[0]
    I = steps[0]["x"].shape[1]
    d_x = np.zeros((T, d_out.shape[1], I))  # [T, B, I]
    d_state = d_state_n
    for t in (range(T) if reverse else reversed(range(T))):
        v = valid[t]  # [B, 1]
        # the state after step t was v * new + (1 - v) * old; the output was v * new_h
        d_new = [v * ds for ds in d_state]
        d_new[0] = d_new[0] + v * d_out[t]
        d_x[t], d_old = cell_backward(tuple(d_new), steps[t], p, d_p)
        d_state = tuple(d_o + (1.0 - v) * ds for d_o, ds in zip(d_old, d_state))
    return d_x, d_state


# ============================================================================ the whole network
def _network_forward(cell, params, x, states0, *, num_layers, bidirectional, proj_size,
                     peephole, lengths, batch_first, dropout_masks, recurrent_masks=None):
    """Shared by LSTM and GRU. states0: tuple of initial states ([L*D, B, *] or None each).

    Returns (output in x's layout, states_n (tuple of [L*D, B, *]), cache).
    """
    x = _time_major(x, batch_first)  # [T, B, I]
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D, got shape {x.shape}")
    T, B, I = x.shape
    D = 2 if bidirectional else 1
    L = num_layers
    bias = "bias_ih_l0" in params
    H = np.shape(params["weight_hh_l0"])[0] // (4 if cell == "lstm" else 3)
    S = proj_size if proj_size > 0 else H
    shapes = _expected_shapes(cell, I, H, L, D, proj_size, peephole, bias)
    params = _check_params(params, shapes)
    valid = _valid_mask(lengths, T, B)  # [T, B, 1]

    state_sizes = (S, H) if cell == "lstm" else (S,)
    states0 = tuple(np.zeros((L * D, B, n)) if s is None else _f64(s)
                    for s, n in zip(states0, state_sizes))  # each [L*D, B, *]
    for k, (s, n) in enumerate(zip(states0, state_sizes)):
        if s.shape != (L * D, B, n):
            raise ValueError(f"initial state {('h0', 'c0')[k]} must have shape "
                             f"{(L * D, B, n)}, got {s.shape}")

    if dropout_masks is None:
        masks = [None] * L
    else:
        if len(dropout_masks) != L - 1:
            raise ValueError(f"dropout_masks needs {L - 1} arrays (layers 1..L-1), "
                             f"got {len(dropout_masks)}")
        masks = [None] + [_time_major(m, batch_first) for m in dropout_masks]  # [T, B, D*S]
    ng = 4 if cell == "lstm" else 3
    if recurrent_masks is not None:
        recurrent_masks = _f64(recurrent_masks)
        if recurrent_masks.shape != (L * D, B, ng * S):
            raise ValueError(f"recurrent_masks must have shape {(L * D, B, ng * S)}, got "
                             f"{recurrent_masks.shape}")

    names = _CELLS[cell][2]
    layer_inputs = []  # per layer: [T, B, I_k], after dropout
    steps = {}  # (k, d) -> list of T step caches
    states_n = tuple(np.zeros_like(s) for s in states0)  # each [L*D, B, *]
    inp = x  # [T, B, I_0]
    for k in range(L):
        if masks[k] is not None:
            if masks[k].shape != inp.shape:
                want = (B, T, inp.shape[2]) if batch_first else inp.shape
                got = masks[k].transpose(1, 0, 2).shape if batch_first else masks[k].shape
                raise ValueError(f"dropout_masks[{k - 1}] must have shape {want}, got {got}")
            inp = inp * masks[k]
        layer_inputs.append(inp)
        outs = []
        for d in range(D):
            p = _cell_params(params, k, d, names)
            if recurrent_masks is not None:
                p["recurrent_mask"] = recurrent_masks[k * D + d]  # [B, ng*S]
            state0 = tuple(s[k * D + d] for s in states0)
            out, state_n, steps[k, d] = direction_forward(cell, inp, state0, valid, p,
                                                          reverse=(d == 1))
            for s_all, s in zip(states_n, state_n):
                s_all[k * D + d] = s
            outs.append(out)  # [T, B, S]
        inp = np.concatenate(outs, axis=2)  # [T, B, D*S]

    output = inp.transpose(1, 0, 2).copy() if batch_first else inp
    cache = dict(cell=cell, params=params, valid=valid, masks=masks, steps=steps,
                 recurrent_masks=recurrent_masks,
                 layer_inputs=layer_inputs, L=L, D=D, S=S, H=H, T=T, B=B,
                 batch_first=batch_first, state_sizes=state_sizes)
    return output, states_n, cache


def _network_backward(cache, d_output, d_states_n):
    """Backward of :func:`_network_forward`. d_states_n: tuple of [L*D, B, *] or None each.

    Returns (d_x in x's layout, d_states0 (tuple of [L*D, B, *]), grads dict).
    """
    cell, params, valid = cache["cell"], cache["params"], cache["valid"]
    L, D, S, T, B = cache["L"], cache["D"], cache["S"], cache["T"], cache["B"]
    d_out = _time_major(d_output, cache["batch_first"])  # [T, B, D*S]
    if d_out.shape != (T, B, D * S):
        raise ValueError(f"d_output must have shape {(T, B, D * S)} time-major, "
                         f"got {d_out.shape}")
    d_states_n = tuple(np.zeros((L * D, B, n)) if ds is None else _f64(ds)
                       for ds, n in zip(d_states_n, cache["state_sizes"]))
    grads = {name: np.zeros_like(v) for name, v in params.items()}
    d_states0 = tuple(np.zeros_like(ds) for ds in d_states_n)
    names = _CELLS[cell][2]

    for k in reversed(range(L)):
        d_inp = np.zeros_like(cache["layer_inputs"][k])  # [T, B, I_k]
        for d in range(D):
            p = _cell_params(params, k, d, names)
            if cache["recurrent_masks"] is not None:
                p["recurrent_mask"] = cache["recurrent_masks"][k * D + d]
            d_p = {name: grads.get(name + _suffix(k, d)) for name in names}
            d_state_n = tuple(ds[k * D + d] for ds in d_states_n)
            d_x_dir, d_state0 = direction_backward(
                cell, d_out[:, :, d * S:(d + 1) * S], d_state_n, valid, cache["steps"][k, d],
                p, d_p, reverse=(d == 1))
            d_inp += d_x_dir
            for ds_all, ds in zip(d_states0, d_state0):
                ds_all[k * D + d] = ds
        if cache["masks"][k] is not None:
            d_inp = d_inp * cache["masks"][k]
        d_out = d_inp  # the gradient w.r.t. layer k-1's output

    d_x = d_out.transpose(1, 0, 2).copy() if cache["batch_first"] else d_out
    return d_x, d_states0, grads


# ========================================================================== public functions
def lstm_forward(params, x, h0=None, c0=None, *, num_layers=1, bidirectional=False,
                 proj_size=0, peephole=False, lengths=None, batch_first=False,
                 dropout_masks=None, recurrent_masks=None):
    """LSTM forward (see the module docstring for every convention).

    x [T, B, I] (or [B, T, I] if batch_first); h0 [L*D, B, S]; c0 [L*D, B, H].
    Returns (output [T, B, D*S] (or [B, T, D*S]), h_n [L*D, B, S], c_n [L*D, B, H], cache).
    """
    output, (h_n, c_n), cache = _network_forward(
        "lstm", params, x, (h0, c0), num_layers=num_layers, bidirectional=bidirectional,
        proj_size=proj_size, peephole=peephole, lengths=lengths, batch_first=batch_first,
        dropout_masks=dropout_masks, recurrent_masks=recurrent_masks)
    return output, h_n, c_n, cache


def lstm_backward(cache, d_output, d_h_n=None, d_c_n=None):
    """Returns (d_x (x's layout), d_h0 [L*D, B, S], d_c0 [L*D, B, H], grads {name: array})."""
    d_x, (d_h0, d_c0), grads = _network_backward(cache, d_output, (d_h_n, d_c_n))
    return d_x, d_h0, d_c0, grads


def gru_forward(params, x, h0=None, *, num_layers=1, bidirectional=False, lengths=None,
                batch_first=False, dropout_masks=None, recurrent_masks=None):
    """GRU forward. x [T, B, I] (or [B, T, I]); h0 [L*D, B, H].

    Returns (output [T, B, D*H] (or [B, T, D*H]), h_n [L*D, B, H], cache).
    """
    output, (h_n,), cache = _network_forward(
        "gru", params, x, (h0,), num_layers=num_layers, bidirectional=bidirectional,
        proj_size=0, peephole=False, lengths=lengths, batch_first=batch_first,
        dropout_masks=dropout_masks, recurrent_masks=recurrent_masks)
    return output, h_n, cache


def gru_backward(cache, d_output, d_h_n=None):
    """Returns (d_x (x's layout), d_h0 [L*D, B, H], grads {name: array})."""
    d_x, (d_h0,), grads = _network_backward(cache, d_output, (d_h_n,))
    return d_x, d_h0, grads
