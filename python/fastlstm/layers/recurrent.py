"""LSTM, GRU and Bidirectional as Keras layers over the C++ engine.

Masks (from ``Embedding(mask_zero=True)``, ``Masking`` or ``lengths=``) follow Keras whatever
the padding side: masked steps carry the state through unchanged; with ``return_sequences``
a one-direction layer repeats its last output at a masked step (its initial state before the
first real step) and a bidirectional one outputs zeros there. Right padding runs the engine's
lengths path directly; left padding and gaps gather each row's real steps to the left first.
A row of length 0 (all padding) returns its initial state (zeros unless given or stateful).

``go_backwards=True`` runs each sequence's real steps in reverse; with ``return_sequences``
the outputs come in that processing order, right-padded with zeros (on unpadded input exactly
Keras; padded input must be right-padded, anything else is refused).

``initial_state=[h, c]`` (``[h]`` for GRU; per direction for Bidirectional) starts the layer
from given states, and in a graph their gradients flow back (the engine returns d_h0, d_c0);
``return_state=True`` adds the final states to the outputs.

``recurrent_dropout=r`` is Keras's: in training, per sequence and gate, a mask over the units
of h_{t-1} (0 or 1/(1-r)) multiplies h_{t-1} in that gate's recurrent product at every step of
the batch (the cell state and the GRU's ``z * h_{t-1}`` are not masked); new masks for every
batch, drawn from the layer's generator (so ``set_seed`` makes them reproducible), one set per
direction; the engine's forward and backward apply them. Inference has no dropout.

Training keeps an LSTM's ``bias_hh`` fixed (Keras has a single bias; ``bias_ih`` plays it),
so optimizer steps match Keras's; GRU's two biases are both Keras weights and both train.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..optim import get_regularizer
from ..rnn import GRU as _EngineGRU
from ..rnn import LSTM as _EngineLSTM
from ..rnn import _positive_int as _int_arg
from .base import (Layer, _flatten_tensors, _is_symbolic, _rate_arg, _sequence_input,
                   _shape_str)
from .mask_steps import place_outputs, reverse_index, unplace_outputs

__all__ = ["LSTM", "GRU"]


# ------------------------------------------------------------------------------------- recurrent
class _Recurrent(Layer):
    """LSTM and GRU as Keras layers over one engine module (batch-first, one layer)."""

    _engine_cls = None
    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kwargs):
        super().__init__(**kwargs)
        self.units = _int_arg(units, "units")
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(
                f"{type(self).__name__}: the engine implements activation='tanh' and "
                f"recurrent_activation='sigmoid' only, got {activation!r} and "
                f"{recurrent_activation!r}"
            )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer,
                                                      "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self._regularizer_args = (kernel_regularizer, recurrent_regularizer, bias_regularizer)
        self.dropout = _rate_arg(dropout, "dropout")
        self.recurrent_dropout = _rate_arg(recurrent_dropout, "recurrent_dropout")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.merge_mode = None  # set by Bidirectional
        self._directions = 1
        self._module = None
        self._state = None  # stateful: (h [D, B, H], c [D, B, H] or None)
        self._d_out_cache = None
        self._rdrop = None  # training: the recurrent dropout masks of the last forward

    # --------------------------------------------------------------------------- building
    def _engine_kwargs(self):
        return {}

    def _build(self, input_shape):
        _sequence_input(self, input_shape, features_known=True)
        F = input_shape[1]
        H, G = self.units, self._gates * self.units
        self._module = self._engine_cls(
            F, H, bias=self.use_bias, batch_first=True,
            bidirectional=self._directions == 2, dtype=self.dtype,
            seed=initializers.spawn_seed(), **self._engine_kwargs(),
        )
        p = self._module.params
        k_reg, r_reg, b_reg = (get_regularizer(r) for r in self._regularizer_args)
        for suffix in ("", "_reverse")[: self._directions]:
            # Keras kernel [F, G] / recurrent kernel [H, G]; the engine stores their transposes
            p["weight_ih_l0" + suffix][...] = self.kernel_initializer((F, G), self._rng, self.dtype).T
            p["weight_hh_l0" + suffix][...] = self.recurrent_initializer((H, G), self._rng, self.dtype).T
            if self.use_bias:
                p["bias_ih_l0" + suffix][...] = self._initial_bias(G)
                p["bias_hh_l0" + suffix][...] = self._initial_recurrent_bias(G)
            for peep in ("weight_ci_l0", "weight_cf_l0", "weight_co_l0"):
                if peep + suffix in p:
                    p[peep + suffix][...] = self.kernel_initializer((H,), self._rng, self.dtype)
            for name, reg in (("weight_ih_l0", k_reg), ("weight_hh_l0", r_reg),
                              ("bias_ih_l0", b_reg), ("bias_hh_l0", b_reg)):
                if reg is not None and name + suffix in p:
                    self.regularizers[name + suffix] = reg
        self._sync_views()
        out_feat = self._output_features()
        T = input_shape[0]
        return (T, out_feat) if self.return_sequences else (out_feat,)

    def _initial_bias(self, G):
        return self.bias_initializer((G,), self._rng, self.dtype)

    def _initial_recurrent_bias(self, G):
        return self.bias_initializer((G,), self._rng, self.dtype)

    def _output_features(self):
        if self._directions == 2 and self.merge_mode == "concat":
            return 2 * self.units
        return self.units

    @property
    def precision(self):
        """The weights' precision: the dtype's name, or "bf16"/"int8" after quantization."""
        return self._module.precision if self._module is not None else self.dtype.name

    def _quantize(self, mode):
        # the layer's engine module becomes its quantized copy (inference only); the model's
        # flat buffers no longer hold this layer's parameters
        self._module = self._module.quantize(mode)
        self._sync_views()

    def weight_bytes(self):
        if self.precision not in ("bf16", "int8"):
            return super().weight_bytes()
        total = 0
        for name, v in self.params.items():
            if name.startswith(("weight_ih", "weight_hh", "weight_hr")):
                total += v.size * 2 if self.precision == "bf16" else v.size + 4 * v.shape[0]
            else:
                total += v.nbytes
        return total

    def _sync_views(self):
        m = self._module
        self.flat_params, self.flat_grads = m.flat_params, m.flat_grads
        self.params, self.grads = m.params, m.grads

    def _bind(self, flat_params, flat_grads):
        self._module.use_buffers(flat_params, flat_grads)
        self._module.flat_grads[...] = 0
        self._sync_views()

    def reset_states(self, states=None):
        """Forgets the carried state (stateful layers); ``states`` sets it instead."""
        if states is None:
            self._state = None
            return
        h = np.asarray(states[0], dtype=self.dtype)
        c = np.asarray(states[1], dtype=self.dtype) if len(states) > 1 else None
        self._state = (h.reshape((self._directions,) + h.shape[-2:]),
                       None if c is None else c.reshape((self._directions,) + c.shape[-2:]))

    @property
    def states(self):
        """Keras's ``layer.states`` of a stateful layer: ``[h, c]`` (LSTM) or ``[h]`` (GRU),
        each [B, units], the state the next call starts from; None before the first call."""
        if self._state is None:
            return None
        h, c = self._state
        return [h[0].copy()] + ([] if c is None else [c[0].copy()])

    # --------------------------------------------------------------------------- calls
    def _check_x(self, x):
        x = np.asarray(x)
        self._check_rank(x, 3, "[batch, time, features]")
        F = self.input_shape[1]
        if x.shape[2] != F:
            raise ValueError(
                f"{self._label()} was built for {F} input features, got an input of shape "
                f"{x.shape}"
            )
        if x.dtype != self.dtype:
            if x.dtype.kind not in "fiub":
                raise TypeError(f"{self._label()} needs real-valued input, got dtype {x.dtype}")
            x = x.astype(self.dtype)
        return x

    def _initial_state(self, B):
        if not self.stateful or self._state is None:
            return None
        h, c = self._state
        if h.shape[1] != B:
            raise ValueError(
                f"stateful {self._label()} carries state for batches of {h.shape[1]} sequences, "
                f"got a batch of {B}: use the same batch size throughout (a sample count "
                "divisible by batch_size) or call reset_states()"
            )
        return h, c

    def compute_mask(self, x, mask):
        # a recurrent layer consumes the mask unless it returns sequences
        return mask if self.return_sequences else None

    def _engine_call(self, x, hx, lengths, training, rmask):
        raise NotImplementedError

    def _recurrent_masks(self, B):
        """Keras's recurrent dropout masks for one batch: per direction, sequence and gate, a
        mask over the units of h_{t-1}, 0 or 1/(1-rate), kept for every step of the call
        (Keras's cells with implementation=1 draw one per gate). [D, B, gates*units] in the
        engine's gate order (PyTorch's: LSTM i,f,g,o; GRU r,z,n)."""
        keep = 1.0 - self.recurrent_dropout
        shape = (self._directions, B, self._gates * self.units)
        return (self._rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    def _engine_backward(self, d_output, d_h_n, d_c_n):
        raise NotImplementedError

    def _state_count(self):
        return 2 if self._gates == 4 else 1

    def _initial_from_list(self, states, B):
        """``initial_state=[h, c]`` (LSTM) or ``[h]`` (GRU), per direction -> engine hx."""
        n = self._state_count()
        D, H = self._directions, self.units
        if len(states) != n * D:
            what = "[h, c]" if n == 2 else "[h]"
            raise ValueError(f"{self._label()} needs initial_state={what}"
                             f"{' for each direction' if D == 2 else ''} ({n * D} arrays of "
                             f"shape [batch, {H}]), got {len(states)}")
        arrs = []
        for i, s in enumerate(states):
            a = np.asarray(s)
            if a.shape != (B, H):
                raise ValueError(f"initial_state[{i}] of {self._label()} must have shape "
                                 f"({B}, {H}), got {a.shape}")
            if a.dtype.kind not in "fiub":
                raise TypeError(f"initial_state[{i}] must hold numbers, got dtype {a.dtype}")
            arrs.append(a.astype(self.dtype, copy=False))
        h = np.ascontiguousarray(np.stack(arrs[0::n]))
        c = np.ascontiguousarray(np.stack(arrs[1::n])) if n == 2 else None
        return h, c

    def forward(self, x, training=False, lengths=None, mask=None, initial_state=None,
                _drop=None, _rdrop=None):
        """Runs the layer; ``mask`` [B, T] bool (True: a real step) or ``lengths`` [B] (right
        padding). Masked steps carry the state through unchanged, as in Keras: the engine
        runs each sequence's real steps packed to the left (gathered when the mask is not
        already a prefix), and the outputs are put back in place."""
        x = self._check_x(x)
        if training:
            self._fwd_args = (x, lengths, mask, initial_state)
        B, T, _ = x.shape
        if lengths is not None:
            lm = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
            mask = lm if mask is None else lm & mask
        idx, count, eng_len, zero = None, None, None, None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (B, T):
                raise ValueError(f"{self._label()}: the mask must have shape ({B}, {T}), got "
                                 f"{mask.shape}")
            count = mask.sum(axis=1).astype(np.int64)
            if count.min() == T:
                mask, count = None, None  # no padding: the engine's plain path
            else:
                if not np.array_equal(mask, np.arange(T)[None, :] < count[:, None]):
                    # left padding or gaps: the real steps of each row, in order, first
                    if self.go_backwards and self.return_sequences and self._directions == 1:
                        raise NotImplementedError(
                            f"{self._label()}: go_backwards=True with return_sequences=True "
                            "needs right-padded input (its mask is not a prefix of each row)")
                    idx = np.argsort(~mask, axis=1, kind="stable")
                eng_len = count
                if (count == 0).any():
                    zero = count == 0
                    eng_len = np.maximum(count, 1)
        drop = _drop
        if training and self.dropout > 0 and drop is None:
            # one mask per sequence reused at every step (Keras's implementation=2)
            keep = 1.0 - self.dropout
            drop = (self._rng.random((B, 1, x.shape[2])) < keep).astype(self.dtype) / self.dtype.type(keep)
        if drop is not None:
            x = x * drop
        # recurrent dropout: training only, new masks for every call (batch); a stateful layer
        # draws them per batch too. Inference runs the engine without masks.
        rdrop = _rdrop
        if training and self.recurrent_dropout > 0 and rdrop is None:
            rdrop = self._recurrent_masks(B)
        self._rdrop = rdrop if training else None
        if idx is not None:
            x = np.take_along_axis(x, idx[:, :, None], axis=1)
        rev = None
        if self.go_backwards:
            if eng_len is None:
                x = x[:, ::-1]
            else:
                rev = reverse_index(eng_len, B, T)
                x = x[np.arange(B)[:, None], rev]
        x = np.ascontiguousarray(x)
        given = initial_state is not None and len(initial_state) > 0
        hx = self._initial_from_list(initial_state, B) if given else self._initial_state(B)
        out, h_n, c_n = self._engine_call(x, hx, eng_len, training, self._rdrop)
        if zero is not None:
            h_n[:, zero] = 0 if hx is None else hx[0][:, zero]
            if c_n is not None:
                c_n[:, zero] = 0 if hx is None else hx[1][:, zero]
        if self.stateful:
            self._state = (h_n.copy(), None if c_n is None else c_n.copy())
        carry = None
        if self.return_sequences:
            out, carry = place_outputs(out, mask, idx, count, hx, B, T, self._directions,
                                        self.go_backwards, self.units)
            y = self._merge(out[..., : self.units], out[..., self.units :], training) \
                if self._directions == 2 else out
        else:
            y = self._merge(h_n[0], h_n[1], training) if self._directions == 2 else h_n[0]
        if training:
            self._cache = (B, T, zero, drop, rev, idx, mask, carry, given)
        self._last_states = (h_n, c_n)
        return y

    def _merge(self, f, b, training):
        mode = self.merge_mode
        if training and mode == "mul":
            self._merged_parts = (f, b)
        if mode == "concat":
            return np.concatenate([f, b], axis=-1)
        if mode == "sum":
            return f + b
        if mode == "mul":
            return f * b
        return (f + b) * self.dtype.type(0.5)

    def _merge_backward(self, d_y):
        mode = self.merge_mode
        if mode == "concat":
            return d_y
        if mode == "sum":
            return np.concatenate([d_y, d_y], axis=-1)
        if mode == "mul":
            f, b = self._merged_parts
            return np.concatenate([d_y * b, d_y * f], axis=-1)
        half = d_y * self.dtype.type(0.5)
        return np.concatenate([half, half], axis=-1)

    def backward(self, d_y, need_input_grad=True, d_states=None):
        """Gradients after ``forward(..., training=True)``: ``d_y`` of the output (None: zero),
        ``d_states`` of the returned states (list like the states, entries may be None).
        Returns d_x, or ``(d_x, d_initial_state list)`` when ``d_states`` is given."""
        cache = self._cache
        B, T, zero, drop, rev, idx, mask, carry, given = cache
        D, H = self._directions, self.units
        n = self._state_count()
        if (d_states and any(ds is not None for ds in d_states)) or zero is not None \
                or not self.return_sequences:
            d_h_n = np.zeros((D, B, H), dtype=self.dtype)
            d_c_n = np.zeros((D, B, H), dtype=self.dtype) if n == 2 else None
        else:  # no gradient reaches the final states: the engine starts from zeros itself
            d_h_n = d_c_n = None
        for i, ds in enumerate(d_states or []):
            if ds is None:
                continue
            (d_h_n if i % n == 0 else d_c_n)[i // n] += np.asarray(ds, dtype=self.dtype)
        d_h0_out = None
        if d_y is not None:
            d_y = np.asarray(d_y, dtype=self.dtype)
            if D == 2:
                d_y = self._merge_backward(d_y)
        if self.return_sequences:
            if d_y is None:
                d_output = np.zeros((B, T, D * H), dtype=self.dtype)
            else:
                d_output, d_h0_out = unplace_outputs(d_y, cache)
        else:
            d_output = np.zeros((B, T, D * H), dtype=self.dtype)
            if d_y is not None:
                d_h_n += d_y.reshape(B, D, H).transpose(1, 0, 2)
        d_output = np.ascontiguousarray(d_output)
        if zero is not None:
            d_output[zero] = 0
            pass_h = d_h_n[:, zero].copy()
            pass_c = None if d_c_n is None else d_c_n[:, zero].copy()
            d_h_n[:, zero] = 0
            if d_c_n is not None:
                d_c_n[:, zero] = 0
        d_x, d_h0, d_c0 = self._engine_backward(d_output, d_h_n, d_c_n)
        if d_states is not None:
            d_h0 = np.array(d_h0)
            if d_c0 is not None:
                d_c0 = np.array(d_c0)
            if zero is not None:
                d_h0[:, zero] = pass_h
                if d_c0 is not None:
                    d_c0[:, zero] = pass_c
            if d_h0_out is not None:
                d_h0[0] += d_h0_out
            d_init = []
            for d in range(D):
                d_init.append(d_h0[d])
                if n == 2:
                    d_init.append(d_c0[d])
        if need_input_grad:
            if self.go_backwards:
                d_x = d_x[:, ::-1] if rev is None else d_x[np.arange(B)[:, None], rev]
            if idx is not None:
                full = np.zeros_like(d_x)
                np.put_along_axis(full, idx[:, :, None], d_x, axis=1)
                d_x = full * mask[:, :, None]
            elif zero is not None:
                d_x = np.array(d_x)
                d_x[zero] = 0
            if drop is not None:
                d_x = d_x * drop
        else:
            d_x = None
        return d_x if d_states is None else (d_x, d_init)

    # --------------------------------------------------------------------------- graphs
    def _restore_cache(self, cache):
        # the engine keeps one call's activations: a layer called several times in a graph
        # runs its forward again (same inputs, same dropout mask) before each backward
        self.__dict__.update(cache)
        x, lengths, mask, init = self._fwd_args
        self.forward(x, training=True, lengths=lengths, mask=mask, initial_state=init,
                     _drop=self._cache[3], _rdrop=self._rdrop)

    def _symbolic_shapes(self, shapes, dtype, kwargs):
        out = Layer._symbolic_shapes(self, shapes[:1], dtype, kwargs)[0]
        D, H, n = self._directions, self.units, self._state_count()
        if len(shapes) > 1:
            if len(shapes) - 1 != n * D:
                self._initial_from_list([None] * (len(shapes) - 1), 0)  # raises the message
            for i, s in enumerate(shapes[1:]):
                if tuple(s) != (H,):
                    raise ValueError(f"initial_state[{i}] of {self._label()} must have shape "
                                     f"(None, {H}), got {_shape_str((None,) + tuple(s))}")
        if self.stateful and len(shapes) > 1:
            raise ValueError(f"{self._label()} is stateful: it cannot take initial_state too")
        return [out] + ([(H,)] * (n * D) if self.return_state else [])

    def node_forward(self, xs, masks, training, node):
        y = self.forward(xs[0], training=training, mask=masks[0],
                         initial_state=xs[1:] if len(xs) > 1 else None)
        outs = [y]
        if self.return_state:
            outs += self._state_list()
        return outs, [self.compute_mask(xs[0], masks[0])] + [None] * (len(outs) - 1)

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        d_x, d_init = self.backward(d_ys[0], need_input_grad=need_input_grad,
                                    d_states=list(d_ys[1:]))
        return [d_x] + d_init

    def _state_list(self):
        h_n, c_n = self._last_states
        states = []
        for d in range(self._directions):
            states.append(h_n[d])
            if c_n is not None:
                states.append(c_n[d])
        return states

    def __call__(self, x, training=False, lengths=None, initial_state=None, mask=None):
        if initial_state is not None and not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        if _is_symbolic(x, initial_state):
            if lengths is not None or mask is not None:
                raise TypeError(f"{self._label()}: in a graph masks come from Embedding("
                                "mask_zero=True) or Masking, not from lengths=/mask=")
            return self._call_symbolic(_flatten_tensors(x) + _flatten_tensors(initial_state or []))
        x = np.asarray(x)
        if not self.built:
            self.build(x.shape[1:], "float64" if x.dtype == np.float64 else "float32")
        if lengths is not None:
            lengths = np.asarray(lengths, dtype=np.int64)
        y = self.forward(x, training=training, lengths=lengths, mask=mask,
                         initial_state=initial_state)
        if not self.return_state:
            return y
        return [y] + self._state_list()

    # --------------------------------------------------------------------------- config
    def _config(self):
        cfg = {
            "units": self.units,
            "input_size": None if self.input_shape is None else self.input_shape[1],
            "return_sequences": self.return_sequences,
            "go_backwards": self.go_backwards,
        }
        cfg.update(self._extra_config())
        cfg["bias"] = self.use_bias
        if self.dropout:
            cfg["dropout"] = self.dropout
        if self.recurrent_dropout:
            cfg["recurrent_dropout"] = self.recurrent_dropout
        if self.stateful:
            cfg["stateful"] = True
        if self.return_state:
            cfg["return_state"] = True
        return cfg

    def _extra_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        input_size = config.pop("input_size", None)
        config["use_bias"] = config.pop("bias", True)
        if input_size is not None:
            config.setdefault("input_shape", (None, input_size))
        return cls(**config)


class LSTM(_Recurrent):
    """Keras's ``LSTM`` on the engine: glorot_uniform kernel, orthogonal recurrent kernel,
    forget-gate bias 1 (all in ``bias_ih``; ``bias_hh`` 0), PyTorch's i,f,g,o gate order.

    ``peephole=True`` adds the engine's ONNX-style peephole weights (initialized like the
    kernel, as TF's PeepholeLSTMCell does).
    """

    _engine_cls = _EngineLSTM
    _gates = 4

    def __init__(self, units, unit_forget_bias=True, peephole=False, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.peephole = bool(peephole)

    def _engine_kwargs(self):
        return {"peephole": self.peephole}

    @property
    def fixed_weights(self):
        # Keras's LSTM has one bias; the engine adds bias_ih and bias_hh. Training only bias_ih
        # (bias_hh stays at its value, 0 from Keras's init) gives Keras's updates exactly.
        if not self.use_bias:
            return ()
        return tuple(n for n in ("bias_hh_l0", "bias_hh_l0_reverse") if n in self.params)

    def _initial_bias(self, G):
        b = self.bias_initializer((G,), self._rng, self.dtype)
        if self.unit_forget_bias:
            H = self.units
            b[H : 2 * H] = 1.0
        return b

    def _initial_recurrent_bias(self, G):
        # Keras has one bias; the engine's second one starts at 0 so that their sum is Keras's
        return np.zeros(G, dtype=self.dtype)

    def _engine_call(self, x, hx, lengths, training, rmask):
        out, (h_n, c_n) = self._module.forward(x, hx, lengths=lengths, train=training,
                                               recurrent_mask=rmask)
        return out, h_n, c_n

    def _engine_backward(self, d_output, d_h_n, d_c_n):
        d_x, (d_h0, d_c0) = self._module.backward(d_output, d_h_n, d_c_n)
        return d_x, d_h0, d_c0

    def _extra_config(self):
        return {"peephole": self.peephole}


class GRU(_Recurrent):
    """Keras's ``GRU`` (``reset_after=True``, its default) on the engine: PyTorch's r,z,n gate
    order and two biases (Keras's input and recurrent bias rows)."""

    _engine_cls = _EngineGRU
    _gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        if not reset_after:
            raise NotImplementedError(
                "GRU(reset_after=False) is not supported: the engine implements the "
                "reset-after GRU (Keras's default, PyTorch's and cuDNN's)"
            )
        if kwargs.get("peephole"):
            raise ValueError("peephole=True is an LSTM option; GRU has no cell state")
        kwargs.pop("peephole", None)
        super().__init__(units, **kwargs)

    def _engine_call(self, x, hx, lengths, training, rmask):
        out, h_n = self._module.forward(x, None if hx is None else hx[0], lengths=lengths,
                                        train=training, recurrent_mask=rmask)
        return out, h_n, None

    def _engine_backward(self, d_output, d_h_n, d_c_n):
        d_x, d_h0 = self._module.backward(d_output, d_h_n)
        return d_x, d_h0, None


_RECURRENT = {"LSTM": LSTM, "GRU": GRU}
