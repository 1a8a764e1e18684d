"""Keras's ``Attention`` (Luong's dot-product) and ``AdditiveAttention`` (Bahdanau's), with
masks, NumPy forward and backward.

``layer([query, value])`` or ``layer([query, value, key])`` (key defaults to value), query
[B, Tq, D], value/key [B, Tv, D]:

- scores [B, Tq, Tv]: ``query @ key^T`` (times the scalar ``scale`` when ``use_scale``), or
  for the additive form ``sum_d scale_d * tanh(query_i + key_j)`` (no ``scale`` without
  ``use_scale``);
- a masked value step (its mask from the graph: ``Embedding(mask_zero=True)``, ``Masking``)
  gets ``scores - 1e9`` (Keras's rule), as does a future step under ``use_causal_mask``;
- ``weights = softmax(scores)`` over Tv; ``result = weights @ value``, zeroed at masked query
  steps; the output mask is the query's.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from .base import Layer, _flatten_tensors, _is_symbolic, _shape_str, _softmax

__all__ = ["Attention", "AdditiveAttention"]

_MASKED = 1.0e9  # Keras subtracts this from the scores of masked steps


class _BaseAttention(Layer):
    def __init__(self, use_scale=False, dropout=0.0, score_mode="dot", **kwargs):
        super().__init__(**kwargs)
        self.use_scale = bool(use_scale)
        if float(dropout) != 0.0:
            raise NotImplementedError(f"{type(self).__name__}(dropout={dropout}) is not "
                                      "supported; use a Dropout layer on the output")
        if score_mode != "dot":
            raise NotImplementedError(f"score_mode={score_mode!r} is not supported (only 'dot')")
        self.dropout = 0.0

    # --------------------------------------------------------------------------- shapes
    def _symbolic_shapes(self, shapes, dtype, kwargs):
        if len(shapes) not in (2, 3):
            raise ValueError(f"{self._label()} is called on [query, value] or [query, value, "
                             f"key], got {len(shapes)} inputs")
        q, v = tuple(shapes[0]), tuple(shapes[1])
        k = tuple(shapes[2]) if len(shapes) == 3 else v
        if len(q) != 2 or len(v) != 2 or len(k) != 2:
            raise ValueError(f"{self._label()} needs 3-D query, value and key [batch, time, "
                             f"dim], got {[_shape_str((None,) + tuple(s)) for s in shapes]}")
        if q[-1] != k[-1] or (k[0] is not None and v[0] is not None and k[0] != v[0]):
            raise ValueError(f"{self._label()}: query and key need the same last axis and key "
                             f"and value the same time axis, got query {_shape_str((None,) + q)}"
                             f", value {_shape_str((None,) + v)}, key {_shape_str((None,) + k)}")
        if not self.built:
            self.dtype = np.dtype(dtype)
            self._make_weights(q[-1])
            self.input_shape, self.output_shape = q, (q[0], v[-1])
            self.built = True
        out = [(q[0], v[-1])]
        if kwargs.get("return_attention_scores"):
            out.append((q[0], v[0]))
        return out

    def _make_weights(self, dim):
        pass

    def __call__(self, inputs, training=False, mask=None, return_attention_scores=False,
                 use_causal_mask=False):
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self._label()} is called on a list [query, value(, key)], got "
                            f"{type(inputs).__name__}")
        kwargs = {"return_attention_scores": bool(return_attention_scores),
                  "use_causal_mask": bool(use_causal_mask)}
        if _is_symbolic(inputs):
            if mask is not None:
                raise TypeError(f"{self._label()}: in a graph masks come from the inputs")
            return self._call_symbolic(_flatten_tensors(inputs), kwargs)
        xs = [np.asarray(x) for x in inputs]
        self._symbolic_shapes([x.shape[1:] for x in xs],
                              "float64" if xs[0].dtype == np.float64 else "float32", kwargs)
        masks = list(mask) if mask is not None else [None, None]
        masks += [None] * (len(xs) - len(masks))

        class _Call:
            pass

        node = _Call()
        node.kwargs = kwargs
        outs, _ = self.node_forward(xs, masks, training, node)
        return outs if return_attention_scores else outs[0]

    # --------------------------------------------------------------------------- passes
    def node_forward(self, xs, masks, training, node):
        q, v = (np.asarray(a, dtype=self.dtype) for a in xs[:2])
        k = np.asarray(xs[2], dtype=self.dtype) if len(xs) > 2 else v
        q_mask, v_mask = masks[0], masks[1]
        kw = getattr(node, "kwargs", {}) or {}
        scores = self._scores(q, k)  # [B, Tq, Tv]
        B, Tq, Tv = scores.shape
        drop = None
        if v_mask is not None:
            drop = ~np.asarray(v_mask, dtype=bool)[:, None, :]
        if kw.get("use_causal_mask"):
            causal = np.triu(np.ones((Tq, Tv), dtype=bool), k=1)[None]
            drop = causal if drop is None else drop | causal
        if drop is not None:
            scores = scores - self.dtype.type(_MASKED) * drop
        w = _softmax(scores)
        out = w @ v
        qm = None
        if q_mask is not None:
            qm = np.asarray(q_mask, dtype=self.dtype)[:, :, None]
            out = out * qm
        self._fw = (q, k, v, w, qm, len(xs) > 2)
        outs = [out] + ([w] if kw.get("return_attention_scores") else [])
        return outs, [q_mask] + [None] * (len(outs) - 1)

    def node_backward(self, d_ys, need_input_grad, from_logits=False):
        q, k, v, w, qm, has_key = self._fw
        d_out = d_ys[0]
        d_w = np.zeros_like(w)
        d_v = np.zeros_like(v)
        if d_out is not None:
            d_out = np.asarray(d_out, dtype=self.dtype)
            if qm is not None:
                d_out = d_out * qm
            d_w += d_out @ v.transpose(0, 2, 1)
            d_v += w.transpose(0, 2, 1) @ d_out
        if len(d_ys) > 1 and d_ys[1] is not None:
            d_w += np.asarray(d_ys[1], dtype=self.dtype)
        d_s = w * (d_w - (d_w * w).sum(axis=-1, keepdims=True))  # softmax backward
        d_q, d_k = self._scores_backward(d_s, q, k)
        if not need_input_grad:
            return [None] * (3 if has_key else 2)
        if has_key:
            return [d_q, d_v, d_k]
        return [d_q, d_v + d_k]

    def _config(self):
        return {"use_scale": self.use_scale}


class Attention(_BaseAttention):
    """Dot-product attention (Luong): ``scores = query @ key^T`` (times a learned scalar
    ``scale``, initially 1, when ``use_scale=True``)."""

    def _make_weights(self, dim):
        if self.use_scale:
            self._allocate([("scale", np.ones((), dtype=self.dtype))])

    def _scores(self, q, k):
        s = q @ k.transpose(0, 2, 1)
        self._qk = s
        if self.use_scale:
            s = s * self.params["scale"]
        return s

    def _scores_backward(self, d_s, q, k):
        if self.use_scale:
            c = self.params["scale"]
            self.grads["scale"][...] = (d_s * self._qk).sum()
            d_s = d_s * c
        return d_s @ k, d_s.transpose(0, 2, 1) @ q


class AdditiveAttention(_BaseAttention):
    """Additive attention (Bahdanau): ``scores = sum_d scale_d * tanh(query_i + key_j)``, with a
    learned ``scale`` [dim] (glorot uniform) when ``use_scale=True`` (the default)."""

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def _make_weights(self, dim):
        if self.use_scale:
            init = initializers.get("glorot_uniform", "scale")
            self._allocate([("scale", init((dim,), self._rng, self.dtype))])

    def _scores(self, q, k):
        t = np.tanh(q[:, :, None, :] + k[:, None, :, :])  # [B, Tq, Tv, D]
        self._t = t
        if self.use_scale:
            return t @ self.params["scale"]
        return t.sum(axis=-1)

    def _scores_backward(self, d_s, q, k):
        t = self._t
        d_t = d_s[..., None] * (self.params["scale"] if self.use_scale else 1.0)
        if self.use_scale:
            self.grads["scale"][...] = np.einsum("bij,bijd->d", d_s, t)
        d_pre = d_t * (1 - t * t)
        return d_pre.sum(axis=2), d_pre.sum(axis=1)
