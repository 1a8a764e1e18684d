"""Optimizers, learning-rate schedules and weight regularizers (Keras 3's math and defaults).

An optimizer updates ONE flat parameter buffer in place from ONE flat gradient buffer (a model
keeps all its weights in one of each), so a step is one call whatever the number of layers: a
fused C++ loop over the buffer (``fastlstm/optim.hpp``) that does, element by element, the
NumPy formulas of each class's ``_update_numpy`` in the same order and precision, so the two
give the same bits (the NumPy formulas run where the buffers do not suit the loop).

PyTorch's way: ``opt = Adam(params=[lstm, head], learning_rate=1e-3)`` takes modules
(:class:`~fastlstm.LSTM`, :class:`~fastlstm.GRU`, :class:`~fastlstm.Linear`), moves their
parameters and gradients into one buffer of its own (``module.use_buffers``), and then
``opt.step()`` updates them all and ``opt.zero_grad()`` clears their gradients.

Keras's way: ``optimizer.apply(params, grads)`` clips ``grads`` in place (``clipnorm`` per weight tensor
using the segment table given to ``build``, or ``global_clipnorm``, or ``clipvalue``: one of
them, as Keras), applies decoupled ``weight_decay`` (``p -= lr * wd * p``), then the update.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from . import _core
except ImportError:  # the pure-NumPy parts of the package without the extension
    _core = None

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "get",
    "LearningRateSchedule",
    "ExponentialDecay",
    "CosineDecay",
    "StepDecay",
    "PiecewiseConstantDecay",
    "L1L2",
    "L1",
    "L2",
    "l1",
    "l2",
    "l1_l2",
    "get_regularizer",
]


from .schedules import (  # noqa: F401 - re-exported: fastlstm.optim.ExponentialDecay etc.
    CosineDecay,
    ExponentialDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    StepDecay,
    _positive,
)
from .regularizers import (  # noqa: F401 - re-exported: fastlstm.optim.L1L2 etc.
    L1,
    L2,
    L1L2,
    get_regularizer,
    l1,
    l1_l2,
    l2,
)


# ------------------------------------------------------------------------------------- optimizers
_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _is_module(obj):
    return all(hasattr(obj, a) for a in ("flat_params", "flat_grads", "use_buffers", "params"))


def _is_modules(obj):
    return _is_module(obj) or (isinstance(obj, (list, tuple)) and bool(obj)
                               and all(map(_is_module, obj)))


class Optimizer:
    """Base: learning rate (a float or a schedule), gradient clipping, weight decay, state."""

    _default_lr = 0.001

    def __init__(self, learning_rate=None, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None, params=None):
        if isinstance(learning_rate, np.ndarray) or _is_modules(learning_rate):
            raise TypeError(
                f"learning_rate must be a number or a schedule, got "
                f"{type(learning_rate).__name__}; modules go in params= "
                f"({type(self).__name__}(params=[lstm, head], learning_rate=1e-3))")
        if learning_rate is None:
            learning_rate = self._default_lr
        if isinstance(learning_rate, LearningRateSchedule) or callable(learning_rate):
            self._schedule = learning_rate
            self._lr = None
        else:
            self._schedule = None
            self._lr = _positive(learning_rate, "learning_rate", allow_zero=True)
        given = [n for n, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"only one of clipnorm, clipvalue, global_clipnorm can be set, got {given}")
        self.clipnorm = None if clipnorm is None else _positive(clipnorm, "clipnorm")
        self.clipvalue = None if clipvalue is None else _positive(clipvalue, "clipvalue")
        self.global_clipnorm = None if global_clipnorm is None else _positive(global_clipnorm,
                                                                              "global_clipnorm")
        self.weight_decay = None if weight_decay is None else _positive(weight_decay,
                                                                        "weight_decay",
                                                                        allow_zero=True)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._n = None
        self._modules = None
        if params is not None:
            self._take_modules(params)

    def _take_modules(self, params):
        mods = [params] if _is_module(params) else params
        if not isinstance(mods, (list, tuple)) or not mods or not all(map(_is_module, mods)):
            got = (type(params).__name__ if not isinstance(params, (list, tuple))
                   else "[" + ", ".join(type(m).__name__ for m in params) + "]")
            raise TypeError(
                "params must be a module or a non-empty list of modules (fastlstm.LSTM, GRU, "
                f"Linear: objects with flat_params, flat_grads and use_buffers), got {got}; "
                "parameter views (module.parameters()) cannot be optimized on their own: pass "
                "the modules")
        if len({id(m) for m in mods}) != len(mods):
            raise ValueError("params lists a module twice")
        dtypes = {m.flat_params.dtype for m in mods}
        if len(dtypes) != 1:
            raise ValueError(f"params mixes dtypes {sorted(d.name for d in dtypes)}; one "
                             "optimizer updates one dtype")
        dtype = dtypes.pop()
        sizes = [m.flat_params.size for m in mods]
        flat_p = np.zeros(sum(sizes), dtype=dtype)
        flat_g = np.zeros(sum(sizes), dtype=dtype)
        segments, start = [], 0
        for m, n in zip(mods, sizes):
            segments += [start + int(p.ctypes.data - m.flat_params.ctypes.data)
                         // dtype.itemsize for p in m.params.values()]
            m.use_buffers(flat_p[start:start + n], flat_g[start:start + n])
            start += n
        # the state is built at the first step, once a subclass has set its hyperparameters
        self._modules, self._flat, self._segments = list(mods), (flat_p, flat_g), segments

    def step(self):
        """One update of the modules given as ``params`` from their ``grads`` (PyTorch's
        ``optimizer.step()``)."""
        if self._modules is None:
            raise RuntimeError(f"step() needs the modules: {type(self).__name__}(params=[...]);"
                               " a Keras-style optimizer is driven by apply(params, grads)")
        if self._n is None:
            self.build(self._flat[0].size, self._flat[0].dtype, segments=self._segments)
        self.apply(*self._flat)

    def zero_grad(self):
        """Sets the gradients of every module given as ``params`` to zero."""
        if self._modules is None:
            raise RuntimeError(f"zero_grad() needs the modules: {type(self).__name__}"
                               "(params=[...])")
        self._flat[1][...] = 0

    @property
    def learning_rate(self):
        """The rate the next step uses (a schedule is evaluated at ``iterations``)."""
        if self._schedule is not None:
            return float(self._schedule(self.iterations))
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        if self._schedule is not None:
            raise TypeError("this optimizer's learning rate is a schedule; it cannot be set")
        self._lr = _positive(value, "learning_rate", allow_zero=True)

    lr = learning_rate

    def build(self, size, dtype="float32", segments=None):
        """Allocates the state for ``size`` parameters. ``segments``: start offsets of each
        weight tensor in the flat buffer (for per-tensor ``clipnorm``)."""
        self._n = int(size)
        self._dtype = np.dtype(dtype)
        self._tmp = np.zeros(self._n, dtype=self._dtype)
        starts = np.zeros(1, dtype=np.int64) if segments is None else np.asarray(segments, np.int64)
        if starts.size == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        self._seg_starts = starts
        self._seg_sizes = np.diff(np.append(starts, self._n))
        self._build_state()

    def _build_state(self):
        pass

    def _zeros(self, fill=0.0):
        return np.full(self._n, fill, dtype=self._dtype)

    def _clip(self, grads):
        if self.clipnorm is not None:
            sq = np.multiply(grads, grads, out=self._tmp)
            norms = np.sqrt(np.add.reduceat(sq, self._seg_starts).astype(np.float64))
            scale = self.clipnorm / np.maximum(norms, self.clipnorm)
            if (scale < 1).any():
                grads *= np.repeat(scale.astype(self._dtype), self._seg_sizes)
        elif self.global_clipnorm is not None:
            norm = math.sqrt(float(np.dot(grads, grads)))
            if norm > self.global_clipnorm:
                grads *= self._dtype.type(self.global_clipnorm / norm)
        elif self.clipvalue is not None:
            np.clip(grads, -self.clipvalue, self.clipvalue, out=grads)

    def apply(self, params, grads):
        """One step: updates ``params`` in place (``grads`` may be clipped in place)."""
        if self._n is None:
            self.build(params.size, params.dtype)
        if params.shape != (self._n,) or grads.shape != (self._n,):
            raise ValueError(
                f"this optimizer was built for {self._n} parameters, got buffers of shapes "
                f"{params.shape} and {grads.shape}"
            )
        self._clip(grads)
        lr = self.learning_rate
        if self.weight_decay:
            params *= self._dtype.type(1.0 - lr * self.weight_decay)
        self._update(params, grads, lr, self.iterations + 1)
        self.iterations += 1

    #: whether _update may run the fused C++ loop (one call for the whole buffer, bitwise the
    #: NumPy formulas of _update_numpy); False: the NumPy formulas (tests compare the two)
    fused = True

    def _update(self, p, g, lr, t):
        """The update of ``p`` from ``g`` at step ``t``: the fused C++ loop where the buffers
        allow it (1-D, C-contiguous, this optimizer's dtype, not overlapping), else the NumPy
        formulas. The two give the same bits."""
        if (self.fused and _core is not None and self._dtype in _FUSED_DTYPES
                and p.dtype == self._dtype and g.dtype == p.dtype and p.ndim == 1 and p.flags.c_contiguous and g.flags.c_contiguous
                and p.flags.writeable):
            try:
                self._update_fused(p, g, lr, t)
                return
            except ValueError:  # overlapping buffers: checked before anything is written
                pass
        self._update_numpy(p, g, lr, t)

    def _update_fused(self, p, g, lr, t):
        raise ValueError("no fused update")

    def _update_numpy(self, p, g, lr, t):
        raise NotImplementedError

    def get_config(self):
        cfg = {"name": self.name, "learning_rate": self._lr if self._schedule is None else None,
               "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
               "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}
        cfg.update(self._hyper())
        return cfg

    def _hyper(self):
        return {}

    # ------------------------------------------------------------------------- state
    #: slot name -> attribute holding it (a flat array like the parameters, or None when the
    #: configuration does not use it); get_state/set_state and model files use these names
    _SLOTS = {}

    def slot_names(self):
        """The names of the slots this optimizer keeps with its configuration (built)."""
        return [k for k, attr in self._SLOTS.items() if getattr(self, attr, None) is not None]

    def get_state(self):
        """``{"iterations": int, "slots": {name: flat array copy}}``: everything besides the
        configuration that the next step depends on (for resuming training). Built only."""
        if self._n is None:
            raise RuntimeError(f"{type(self).__name__}.get_state(): the optimizer has not been "
                               "built (compile a built model, or take one step)")
        return {"iterations": int(self.iterations),
                "slots": {k: getattr(self, self._SLOTS[k]).copy() for k in self.slot_names()}}

    def set_state(self, state):
        """Restores :meth:`get_state`'s result into this built optimizer of the same
        configuration; everything is checked before anything is written."""
        if self._n is None:
            raise RuntimeError(f"{type(self).__name__}.set_state(): build the optimizer first")
        if not isinstance(state, dict) or set(state) != {"iterations", "slots"}:
            raise ValueError("state must be a dict with exactly 'iterations' and 'slots'")
        it = state["iterations"]
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or not 0 <= it <= 2**53:
            raise ValueError(f"state['iterations'] must be an integer in [0, 2**53], got {it!r}")
        slots, want = state["slots"], self.slot_names()
        if not isinstance(slots, dict) or sorted(slots) != sorted(want):
            got = sorted(slots) if isinstance(slots, dict) else type(slots).__name__
            raise ValueError(f"{type(self).__name__} with this configuration keeps slots "
                             f"{sorted(want)}, got {got}")
        staged = {}
        for k in want:
            a = np.asarray(slots[k])
            if a.shape != (self._n,):
                raise ValueError(f"slot {k!r} must have shape ({self._n},), got {a.shape}")
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError(f"slot {k!r} must hold finite floats")
            staged[k] = a
        for k, a in staged.items():
            getattr(self, self._SLOTS[k])[...] = a
        self.iterations = int(it)

    def __repr__(self):
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"


class SGD(Optimizer):
    """``m = momentum*m - lr*g; p += m`` (nesterov: ``p += momentum*m - lr*g``); plain
    ``p -= lr*g`` without momentum. Keras's default rate 0.01."""

    _default_lr = 0.01

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _positive(momentum, "momentum", allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.nesterov = bool(nesterov)

    _SLOTS = {"momentum": "_m"}

    def _build_state(self):
        self._m = self._zeros() if self.momentum else None

    def _update_fused(self, p, g, lr, t):
        _core.sgd_update(p, g, self._m, lr, self.momentum, self.nesterov)

    def _update_numpy(self, p, g, lr, t):
        tmp = self._tmp
        np.multiply(g, self._dtype.type(lr), out=tmp)  # lr*g
        if self._m is None:
            p -= tmp
            return
        m = self._m
        m *= self._dtype.type(self.momentum)
        m -= tmp
        if self.nesterov:
            p -= tmp
            np.multiply(m, self._dtype.type(self.momentum), out=tmp)
            p += tmp
        else:
            p += m

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Keras's Adam: ``alpha = lr*sqrt(1-b2^t)/(1-b1^t)``, ``p -= alpha*m/(sqrt(v)+eps)``.

    ``epsilon_after_correction=True`` adds epsilon after the bias correction instead, as
    PyTorch's Adam (and Algorithm 1 of Kingma & Ba) do: ``p -= lr*m_hat/(sqrt(v_hat)+eps)``
    with ``m_hat = m/(1-b1^t)``, ``v_hat = v/(1-b2^t)``. The two differ where a gradient is not
    much larger than epsilon; use it (with ``epsilon=1e-8``, PyTorch's default) to reproduce a
    PyTorch training run."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, epsilon_after_correction=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        for name, v in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon = _positive(epsilon, "epsilon")
        self.amsgrad = bool(amsgrad)
        self.epsilon_after_correction = bool(epsilon_after_correction)

    _SLOTS = {"m": "_m", "v": "_v", "vhat": "_vhat"}

    def _build_state(self):
        self._m, self._v = self._zeros(), self._zeros()
        self._vhat = self._zeros() if self.amsgrad else None

    def _update_fused(self, p, g, lr, t):
        b1, b2 = self.beta_1, self.beta_2
        if self.epsilon_after_correction:
            alpha, corr = lr / (1 - b1**t), 1 / math.sqrt(1 - b2**t)
        else:
            alpha, corr = lr * math.sqrt(1 - b2**t) / (1 - b1**t), 1.0
        _core.adam_update(p, g, self._m, self._v, self._vhat, 1 - b1, 1 - b2, self.epsilon,
                          alpha, corr, self.epsilon_after_correction)

    def _update_numpy(self, p, g, lr, t):
        dt = self._dtype.type
        m, v, tmp = self._m, self._v, self._tmp
        b1, b2 = self.beta_1, self.beta_2
        # m += (g - m)*(1-b1); v += (g*g - v)*(1-b2), Keras's forms, in place
        np.subtract(g, m, out=tmp)
        tmp *= dt(1 - b1)
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp -= v
        tmp *= dt(1 - b2)
        v += tmp
        if self._vhat is not None:
            np.maximum(self._vhat, v, out=self._vhat)
            v = self._vhat
        np.sqrt(v, out=tmp)
        if self.epsilon_after_correction:  # sqrt(v_hat) + eps, PyTorch's form
            alpha = lr / (1 - b1**t)
            tmp *= dt(1 / math.sqrt(1 - b2**t))
        else:
            alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        tmp += dt(self.epsilon)
        np.divide(m, tmp, out=tmp)
        tmp *= dt(alpha)
        p -= tmp

    def _hyper(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
                "epsilon_after_correction": self.epsilon_after_correction}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default ``weight_decay=0.004``)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """Keras's RMSprop: ``v = rho*v + (1-rho)*g^2``; ``p -= lr*g/sqrt(v + eps)`` (centered
    subtracts the squared mean gradient; momentum accumulates the increments)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= float(rho) < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        self.rho = float(rho)
        self.momentum = _positive(momentum, "momentum", allow_zero=True)
        self.epsilon = _positive(epsilon, "epsilon")
        self.centered = bool(centered)

    _SLOTS = {"v": "_v", "average_gradient": "_avg", "momentum": "_m"}

    def _build_state(self):
        self._v = self._zeros()
        self._avg = self._zeros() if self.centered else None
        self._m = self._zeros() if self.momentum else None
        self._tmp2 = self._zeros()

    def _update_fused(self, p, g, lr, t):
        _core.rmsprop_update(p, g, self._v, self._avg, self._m, self.rho, 1 - self.rho,
                             self.epsilon, lr, self.momentum)

    def _update_numpy(self, p, g, lr, t):
        dt = self._dtype.type
        v, tmp, tmp2 = self._v, self._tmp, self._tmp2
        v *= dt(self.rho)
        np.multiply(g, g, out=tmp)
        tmp *= dt(1 - self.rho)
        v += tmp
        if self._avg is not None:
            a = self._avg
            a *= dt(self.rho)
            np.multiply(g, dt(1 - self.rho), out=tmp)
            a += tmp
            np.multiply(a, a, out=tmp)
            np.subtract(v, tmp, out=tmp)
            tmp += dt(self.epsilon)
        else:
            np.add(v, dt(self.epsilon), out=tmp)
        np.sqrt(tmp, out=tmp)
        np.multiply(g, dt(lr), out=tmp2)
        np.divide(tmp2, tmp, out=tmp)
        if self._m is not None:
            self._m *= dt(self.momentum)
            self._m += tmp
            p -= self._m
        else:
            p -= tmp

    def _hyper(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adagrad(Optimizer):
    """Keras's Adagrad: ``acc += g^2``; ``p -= lr*g/sqrt(acc + eps)``, acc starting at 0.1."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _positive(initial_accumulator_value,
                                                   "initial_accumulator_value", allow_zero=True)
        self.epsilon = _positive(epsilon, "epsilon")

    _SLOTS = {"accumulator": "_acc"}

    def _build_state(self):
        self._acc = self._zeros(self.initial_accumulator_value)
        self._tmp2 = self._zeros()

    def _update_fused(self, p, g, lr, t):
        _core.adagrad_update(p, g, self._acc, lr, self.epsilon)

    def _update_numpy(self, p, g, lr, t):
        dt = self._dtype.type
        tmp, tmp2 = self._tmp, self._tmp2
        np.multiply(g, g, out=tmp)
        self._acc += tmp
        np.add(self._acc, dt(self.epsilon), out=tmp)
        np.sqrt(tmp, out=tmp)
        np.multiply(g, dt(lr), out=tmp2)
        np.divide(tmp2, tmp, out=tmp)
        p -= tmp

    def _hyper(self):
        return {"initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier):
    """An optimizer from a name ('adam', 'sgd', 'rmsprop', 'adagrad', 'adamw'; Keras's
    defaults) or an :class:`Optimizer` instance (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        return _OPTIMIZERS[identifier.lower()]()
    raise ValueError(
        f"unknown optimizer {identifier!r}; expected one of {sorted(_OPTIMIZERS)} or an "
        "fastlstm.optim.Optimizer instance"
    )


_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, CosineDecay, StepDecay,
                                      PiecewiseConstantDecay)}


def serialize(optimizer):
    """``{"class", "config"}`` of an optimizer: JSON data that :func:`deserialize` turns back
    into an equal (unbuilt) optimizer; a schedule is stored as ``{"class", "config"}`` in
    ``config["learning_rate"]``. Raises ValueError for a learning rate that is a plain
    function (it cannot be stored)."""
    cfg = optimizer.get_config()
    sched = optimizer._schedule
    if sched is not None:
        if type(sched).__name__ not in _SCHEDULES or type(sched) is not _SCHEDULES[
                type(sched).__name__]:
            raise ValueError(f"the optimizer's learning rate {sched!r} is a function, which "
                             "cannot be stored in a file (use a fastlstm.optim schedule)")
        cfg["learning_rate"] = {"class": type(sched).__name__, "config": sched.get_config()}
    return {"class": type(optimizer).__name__, "config": cfg}


def deserialize(spec, custom_objects=None):
    """The optimizer :func:`serialize` described (``custom_objects``: name -> class, for
    optimizer classes of your own). Raises ValueError naming what is wrong."""
    if not isinstance(spec, dict) or set(spec) != {"class", "config"}:
        raise ValueError("an optimizer description must be an object with exactly 'class' and "
                         "'config'")
    name, cfg = spec["class"], spec["config"]
    if not isinstance(name, str):
        raise ValueError(f"an optimizer's class must be a name, got {name!r}")
    known = {c.__name__: c for c in _OPTIMIZERS.values()}
    cls = (custom_objects or {}).get(name) or known.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ValueError(f"unknown optimizer class {name!r}; expected one of {sorted(known)} "
                         "(an optimizer class of your own: load_model(..., custom_objects={"
                         f"{name!r}: TheClass}}))")
    if not isinstance(cfg, dict):
        raise ValueError(f"the {name} optimizer's config must be an object")
    cfg = dict(cfg)
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict):
        if set(lr) != {"class", "config"} or not isinstance(lr["class"], str) or \
                lr["class"] not in _SCHEDULES or not isinstance(lr["config"], dict):
            raise ValueError(f"the {name} optimizer's learning_rate schedule must be one of "
                             f"{sorted(_SCHEDULES)} as {{'class', 'config'}}, got {lr!r}")
        try:
            cfg["learning_rate"] = _SCHEDULES[lr["class"]](**lr["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid {lr['class']} schedule: {e}") from None
    try:
        return cls(**cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid {name} optimizer config: {e}") from None
