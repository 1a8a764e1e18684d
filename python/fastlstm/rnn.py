"""PyTorch-shaped recurrent modules: :class:`LSTM` and :class:`GRU`.

NumPy in, NumPy out. Parameters live in one flat buffer (``module.flat_params``) and
``module.params`` holds writable views of it under PyTorch's names, so an optimizer can update
everything in place with one vectorized operation; gradients likewise (``flat_grads``/``grads``).
"""

from __future__ import annotations

import math

import numpy as np

from . import _core, initializers
from .nn import Module, _as_dtype, _positive_int, _real_array

__all__ = ["LSTM", "GRU", "Stream", "LSTMStream", "param_layout"]

def param_layout(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True,
                 proj_size=0, peephole=False):
    """The engine's parameter layout: ``[(name, shape, offset), ...]`` in the order of the flat
    buffer, under PyTorch's names (``weight_ih_l0``, ..., ``_reverse``; ``weight_hr`` for a
    projection, ``weight_c{i,f,o}`` for peepholes). ``cell`` is 'lstm' or 'gru' (any case).

    The one definition is the engine's (cpp/src/config.cpp); modules, model files and importers
    all take it from here. A ValueError names an invalid combination."""
    return [(name, tuple(shape), offset) for name, shape, offset in _core.param_layout(
        str(cell).lower(), input_size, hidden_size, num_layers, bool(bidirectional), bool(bias),
        proj_size, bool(peephole))]


# fastlstm.io sits above this module (it imports LSTM and GRU to build them from files), so it
# plugs its writers in here: module.save()/to_onnx() stay conveniences without an import cycle
_WRITERS = {}


def _writer(name):
    try:
        return _WRITERS[name]
    except KeyError:  # pragma: no cover - fastlstm/__init__ imports fastlstm.io
        raise RuntimeError(f"fastlstm.io has not installed its {name}(); import fastlstm "
                           "first") from None


class _RNNBase(Module):
    """Shared by LSTM and GRU: configuration, the flat parameter buffer, calls into the engine."""

    _cell = ""

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        proj_size=0,
        peephole=False,
        dtype="float32",
        seed=None,
    ):
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.proj_size = _positive_int(proj_size, "proj_size", minimum=0)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.peephole = bool(peephole)
        try:
            dropout = float(dropout)
        except (TypeError, ValueError):
            raise TypeError(f"dropout must be a float, got {dropout!r}") from None
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.dtype = _as_dtype(dtype)
        #: "float32"/"float64" (the dtype), or "bf16"/"int8" for a module made by quantize()
        self.precision = self.dtype.name
        layout = param_layout(self._cell, self.input_size, self.hidden_size, self.num_layers,
                              self.bidirectional, self.bias, self.proj_size, self.peephole)
        # counted before the engine allocates (while a model file is built)
        initializers.reserve(sum(math.prod(p[1]) for p in layout),
                             f"a {type(self).__name__}(input_size={self.input_size}, "
                             f"hidden_size={self.hidden_size})")
        self._engine = self._make_engine()
        self._init_buffers(layout)
        assert self.flat_params.size == self._engine.num_params
        self._rng = np.random.default_rng(seed)
        self.reset_parameters()

    def _make_engine(self):
        # the engine validates the combination (proj_size < hidden_size, peephole for LSTM, ...)
        cls = _core.RNN_float32 if self.dtype == np.float32 else _core.RNN_float64
        lowp = self.precision in _LOW_PRECISIONS
        return cls(self._cell, self.input_size, self.hidden_size, self.num_layers,
                   self.bidirectional, self.bias, self.proj_size, self.peephole, self.dropout,
                   self.precision if lowp else "float32")

    def _options(self):
        """The constructor's arguments that describe this module (for copies)."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional)

    # ----------------------------------------------------------------------------- precision
    @property
    def quantized(self):
        """True for an inference-only module made by :meth:`quantize`."""
        return self.precision in _LOW_PRECISIONS

    def quantize(self, precision):
        """A new inference-only module of the same kind and options, with its weights in
        ``precision``: ``"bf16"`` (bf16 weights, activations rounded to bf16 for the products,
        float32 accumulation and cell state) or ``"int8"`` (symmetric int8 weights with one
        scale per row, i.e. per gate and unit; inputs and hidden states quantized per step and
        per row; int32 accumulation). This module is left untouched; a float64 module quantizes
        too (the result computes in float32). ``q(x, hx, lengths=...)`` and ``q.stream(batch)``
        return float32; ``q.forward(..., train=True)`` and ``q.backward`` raise (the module is
        in eval mode).

        ``q.params`` hold the quantized weights' values (dequantized, as float32); biases and
        peepholes stay float32.
        """
        precision = _check_precision(precision)
        if self.quantized:
            raise ValueError(
                f"this module is already quantized to {self.precision}; quantize the float "
                "module it was made from")
        flat = self.flat_params.astype(np.float32)
        if not np.all(np.isfinite(flat)):
            raise ValueError("cannot quantize: the parameters hold a NaN or infinity")
        opts = self._options()
        opts["dtype"] = "float32"
        q = type(self)(**opts)
        q._become_quantized(precision)
        q.flat_params[...] = flat
        for name, w in q.params.items():
            if name.startswith(_MATRIX_PREFIXES):
                w[...] = quantize_rows(w, precision)[0]
        return q

    def _become_quantized(self, precision):
        """Makes this float32 module an inference-only one quantized to ``precision`` (its
        engine and eval mode); the caller then sets the parameters to the quantized values
        (:meth:`quantize`, or a model file's weights through :func:`dequantize_rows`)."""
        assert self.dtype == np.float32 and not self.quantized
        self.precision = _check_precision(precision)
        self._engine = self._make_engine()
        self.eval()

    def _check_trainable(self, what):
        if self.quantized:
            raise RuntimeError(
                f"{what}: this module is quantized to {self.precision} for inference only; "
                "train the float module it was quantized from")

    def train(self, mode=True):
        if mode:
            self._check_trainable("train()")
        return super().train(mode)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def state_size(self):
        """Size of h (and of each direction's output): proj_size if set, else hidden_size."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def reset_parameters(self):
        """PyTorch's default: every parameter from U(-1/sqrt(H), 1/sqrt(H))."""
        k = 1.0 / math.sqrt(self.hidden_size)
        self.flat_params[...] = self._rng.uniform(-k, k, size=self.flat_params.shape)

    @classmethod
    def from_torch(cls, module, dtype="float32"):
        """Copies a ``torch.nn.LSTM``/``torch.nn.GRU`` (duck-typed: torch is never imported)."""
        kwargs = dict(
            input_size=module.input_size,
            hidden_size=module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            dtype=dtype,
        )
        if cls is LSTM:
            kwargs["proj_size"] = getattr(module, "proj_size", 0)
        obj = cls(**kwargs)
        obj.load_state_dict(module.state_dict())
        return obj

    # ----------------------------------------------------------------------------- calls
    def _prepare_x(self, x):
        x = _real_array(x, "x")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if x.ndim != 3:
            layout = "[B, T, I]" if self.batch_first else "[T, B, I]"
            raise ValueError(
                f"x must be 3-D {layout} with I={self.input_size}, got shape {x.shape}"
            )
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x must have {self.input_size} features on its last axis "
                f"(input_size), got shape {x.shape}"
            )
        return np.ascontiguousarray(x)

    def _batch_of(self, x):
        return x.shape[0] if self.batch_first else x.shape[1]

    def _prepare_state(self, value, name, batch, size):
        if value is None:
            return None
        arr = _real_array(value, name)
        expected = (self.num_layers * self.num_directions, batch, size)
        if arr.shape != expected:
            raise ValueError(
                f"{name} must have shape {expected} (num_layers*num_directions, batch, "
                f"{'proj_size' if name.startswith('h') and self.proj_size else 'hidden_size'}),"
                f" got {arr.shape}"
            )
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def _prepare_lengths(self, lengths, x):
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"lengths must be an integer array, got dtype {arr.dtype}")
        batch = self._batch_of(x)
        if arr.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {arr.shape}")
        T = x.shape[1] if self.batch_first else x.shape[0]
        if arr.size and (arr.min() < 1 or arr.max() > T):
            raise ValueError(f"every length must be in [1, T={T}], got min {arr.min()} max {arr.max()}")
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _prepare_d(self, value, name):
        # shapes are checked by the engine binding, under the module's lock, against the
        # forward whose state backward uses (another thread's forward may have replaced it)
        if value is None:
            return None
        return np.ascontiguousarray(_real_array(value, name), dtype=self.dtype)

    def _run(self, x, hx, lengths, train, recurrent_mask=None):
        train = self._train_flag(train)
        if train:
            self._check_trainable("forward(..., train=True)")
        x = self._prepare_x(x)
        batch = self._batch_of(x)
        h0, c0 = self._split_hx(hx, batch)
        lengths = self._prepare_lengths(lengths, x)
        seed = int(self._rng.integers(0, 2**63)) if (train and self.dropout > 0) else 0
        if recurrent_mask is not None:
            # the binding checks the shape [L*D, B, gates*S] and names the argument
            recurrent_mask = np.ascontiguousarray(
                _real_array(recurrent_mask, "recurrent_mask"), dtype=self.dtype)
        out, h_n, c_n = self._engine.forward(
            self.flat_params, x, lengths, h0, c0, train, self.batch_first, seed, recurrent_mask
        )
        return out, h_n, c_n

    def _backward(self, d_output, d_h_n, d_c_n, accumulate):
        self._check_trainable("backward()")
        # The engine binding checks, under the module's lock, that this thread ran the last
        # forward(..., train=True) (else RuntimeError "... is being trained by another thread")
        # and the shapes of the gradients against it.
        d_output = self._prepare_d(d_output, "d_output")
        d_h_n = self._prepare_d(d_h_n, "d_h_n")
        d_c_n = self._prepare_d(d_c_n, "d_c_n")
        return self._write_grads(lambda: self._engine.backward(
            self.flat_params, d_output, d_h_n, d_c_n, self.flat_grads), accumulate)

    # ----------------------------------------------------------------------------- files
    def save(self, path, *, example_input=None, example_lengths=None):
        """Saves to a fastlstm model file (safetensors, written atomically). ``example_input``
        stores a self-check that ``fastlstm.load(path, verify=True)`` re-runs."""
        _writer("save")(self, path, example_input=example_input,
                        example_lengths=example_lengths)

    def to_onnx(self, path, **kwargs):
        """Writes standard ONNX LSTM/GRU nodes (see :func:`fastlstm.io.to_onnx`)."""
        _writer("to_onnx")(self, path, **kwargs)

    def to_torch_state_dict(self):
        """The parameters under PyTorch's names, as NumPy arrays (copies): the same as
        :meth:`state_dict`."""
        return self.state_dict()

    def __repr__(self):
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            opts.append(f"num_layers={self.num_layers}")
        for name, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("proj_size", 0),
            ("peephole", False),
        ):
            if getattr(self, name, default) != default:
                opts.append(f"{name}={getattr(self, name)!r}")
        opts.append(f"dtype='{self.dtype.name}'")
        if self.quantized:
            opts.append(f"precision='{self.precision}'")
        return f"{type(self).__name__}({', '.join(opts)})"


_LOW_PRECISIONS = ("bf16", "int8")
_MATRIX_PREFIXES = ("weight_ih", "weight_hh", "weight_hr")


def _check_precision(precision):
    if precision not in _LOW_PRECISIONS:
        raise ValueError(f"precision must be 'bf16' or 'int8', got {precision!r}")
    return precision


def quantize_rows(w, precision):
    """The engine's weight quantization of a 2-D float32 matrix, row by row: returns
    ``(values, stored, scales)`` where ``values`` are the quantized weights as float32 (what
    the products compute with), ``stored`` what a file keeps (bf16: the upper 16 bits as
    uint16; int8: int8) and ``scales`` the int8 per-row scales (None for bf16)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if precision == "bf16":
        u = w.view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        values = (r.astype(np.uint32) << 16).view(np.float32)
        return values, r, None
    mx = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (mx / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(mx > 0, np.float32(127) / mx, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8)
    return (q.astype(np.float32) * scale[:, None]).astype(np.float32), q, scale


def is_quantized_matrix(name):
    """True for the parameters a quantized module keeps quantized (``weight_ih``,
    ``weight_hh``, ``weight_hr``; biases and peepholes stay float32). ``name`` may carry a
    ``"layers.{i}."`` prefix."""
    return name.rsplit(".", 1)[-1].startswith(_MATRIX_PREFIXES)


def dequantize_rows(stored, scales, precision):
    """The inverse of :func:`quantize_rows`: the float32 values of stored quantized weights
    (bf16: uint16 bits; int8: int8 codes and float32 per-row ``scales``). Quantizing the result
    again gives back ``stored`` and ``scales`` exactly (the writer's scales are fixed points of
    the scheme), so a model file's weights are what the engine packs."""
    if precision == "bf16":
        return (np.asarray(stored, np.uint16).astype(np.uint32) << 16).view(np.float32)
    q = np.asarray(stored, np.int8)
    scales = np.asarray(scales, np.float32)
    return (q.astype(np.float32) * scales[:, None]).astype(np.float32)


class LSTM(_RNNBase):
    """A (stacked, bidirectional, projected, peephole) LSTM, PyTorch's math and names.

    ``output, (h_n, c_n) = lstm(x, hx=None, lengths=None)`` runs inference;
    ``lstm.forward(x, hx=None, lengths=None, train=None)`` (``train=None``: the module's mode,
    training unless :meth:`eval` was called) keeps what
    ``d_x, (d_h0, d_c0) = lstm.backward(d_output, d_h_n=None, d_c_n=None, accumulate=False)``
    needs, which writes ``lstm.grads`` (adds to them with ``accumulate=True``, as PyTorch's
    ``.grad`` does).

    ``forward(..., recurrent_mask=m)`` applies recurrent dropout (Keras's ``recurrent_dropout``)
    with given masks: m [L*D, B, 4*S] (gates i, f, g, o), the factor on each unit of h_{t-1}
    in that gate's recurrent product, the same at every step (entries 0 or 1/(1-rate));
    ``backward`` uses the same masks. It applies whenever given, so pass it for training only.
    """

    _cell = "lstm"

    def _options(self):
        return dict(super()._options(), proj_size=self.proj_size, peephole=self.peephole)

    def _split_hx(self, hx, batch):
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            given = type(hx).__name__
            if isinstance(hx, (tuple, list)):
                given += f" of length {len(hx)}"
            raise TypeError(f"hx must be a tuple (h0, c0) or None, got {given}")
        h0 = self._prepare_state(hx[0], "h0", batch, self.state_size)
        c0 = self._prepare_state(hx[1], "c0", batch, self.hidden_size)
        return h0, c0

    def __call__(self, x, hx=None, lengths=None):
        return self.forward(x, hx, lengths=lengths, train=False)

    def forward(self, x, hx=None, lengths=None, train=None, recurrent_mask=None):
        out, h_n, c_n = self._run(x, hx, lengths, train, recurrent_mask)
        return out, (h_n, c_n)

    def backward(self, d_output, d_h_n=None, d_c_n=None, accumulate=False):
        d_x, d_h0, d_c0 = self._backward(d_output, d_h_n, d_c_n, accumulate)
        return d_x, (d_h0, d_c0)

    def stream(self, batch=1):
        """A step-by-step inference stream with the state carried inside (unidirectional)."""
        return Stream(self, batch)


class GRU(_RNNBase):
    """A (stacked, bidirectional) GRU, PyTorch's math and names (gate order r, z, n).

    ``output, h_n = gru(x, h0=None, lengths=None)``;
    ``d_x, d_h0 = gru.backward(d_output, d_h_n=None, accumulate=False)`` after
    ``gru.forward(..., train=True)`` (or in training mode).
    ``forward(..., recurrent_mask=m)``: recurrent dropout as for :class:`LSTM`, m [L*D, B, 3*H]
    (gates r, z, n; the n gate's mask is on h_{t-1} inside W_hn h_{t-1}, and z * h_{t-1} is
    not masked, as in Keras).
    """

    _cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, dtype=dtype, seed=seed)

    def _split_hx(self, hx, batch):
        return self._prepare_state(hx, "h0", batch, self.hidden_size), None

    def __call__(self, x, h0=None, lengths=None):
        return self.forward(x, h0, lengths=lengths, train=False)

    def forward(self, x, h0=None, lengths=None, train=None, recurrent_mask=None):
        out, h_n, _ = self._run(x, h0, lengths, train, recurrent_mask)
        return out, h_n

    def backward(self, d_output, d_h_n=None, accumulate=False):
        d_x, d_h0, _ = self._backward(d_output, d_h_n, None, accumulate)
        return d_x, d_h0

    def stream(self, batch=1):
        """A step-by-step inference stream with the state carried inside (unidirectional)."""
        return Stream(self, batch)


class Stream:
    """One time step per call: ``y_t = stream.step(x_t)`` with x_t [B, I] -> y_t [B, S].

    Stepping T times gives the full-sequence output. The weights are packed once, when the
    stream is made, into the kernels' layout; after changing the module's parameters call
    :meth:`reload_params`.
    """

    def __init__(self, module, batch=1):
        if module.bidirectional:
            raise ValueError("a stream runs one step at a time; bidirectional needs the whole "
                             "sequence (use the module's __call__)")
        self.module = module
        self.batch = _positive_int(batch, "batch")
        self._dtype = module.dtype
        self._shape = (self.batch, module.input_size)
        cls = _core.Stream_float32 if module.dtype == np.float32 else _core.Stream_float64
        self._stream = cls(module._cell, module.input_size, module.hidden_size,
                           module.num_layers, module.bias, module.proj_size, module.peephole,
                           module.flat_params, self.batch,
                           module.precision if module.quantized else "float32")

    def step(self, x_t):
        # fast path for the real-time loop: a C-contiguous [B, I] array of the module's dtype
        # goes straight to the binding
        if (type(x_t) is np.ndarray and x_t.dtype is self._dtype and x_t.shape == self._shape
                and x_t.flags.c_contiguous):
            return self._stream.step(x_t)
        x_t = _real_array(x_t, "x_t")
        if x_t.ndim == 1 and self.batch == 1:
            x_t = x_t[None, :]
        expected = (self.batch, self.module.input_size)
        if x_t.shape != expected:
            raise ValueError(f"x_t must have shape {expected} (batch, input_size), got {x_t.shape}")
        return self._stream.step(np.ascontiguousarray(x_t, dtype=self.module.dtype))

    def reset(self):
        """Sets the carried state to zeros."""
        self._stream.reset()

    def reload_params(self):
        """Re-reads the module's parameters (after an optimizer step or a load)."""
        self._stream.reload_params()

    @property
    def state(self):
        """(h [L, B, S], c [L, B, H]) for LSTM; (h, None) for GRU: copies."""
        return self._stream.state()

    def set_state(self, h, c=None):
        """Sets the carried state: h [L, B, S] and, for an LSTM, c [L, B, H] (required: keeping
        an old c beside a new h would be a state no sequence produced)."""
        if isinstance(self.module, LSTM) and c is None:
            raise ValueError("c must be given with h for an LSTM stream (h [L, B, S], c [L, B, H])")
        if isinstance(self.module, GRU) and c is not None:
            raise ValueError("c is only for LSTM streams; a GRU has no cell state")
        dt = self.module.dtype
        self._stream.set_state(np.ascontiguousarray(_real_array(h, "h"), dtype=dt),
                               None if c is None
                               else np.ascontiguousarray(_real_array(c, "c"), dtype=dt))


#: the former name of :class:`Stream` (it streams GRUs too), kept as an alias
LSTMStream = Stream
