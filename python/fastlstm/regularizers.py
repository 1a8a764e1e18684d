"""Keras's weight regularizers: ``l1(0.01)``, ``l2(0.01)``, ``l1_l2(l1=0.01, l2=0.01)`` (each an
:class:`L1L2` whose penalty is added to the loss and its gradient to the weights').
``fastlstm.optim`` re-exports these names."""

import numpy as np

from .schedules import _positive

__all__ = ["L1L2", "l1", "l2", "l1_l2", "L1", "L2", "get", "get_regularizer"]


class L1L2:
    """Adds ``l1 * sum(|w|) + l2 * sum(w^2)`` to the loss (Keras's regularizers)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _positive(l1, "l1", allow_zero=True)
        self.l2 = _positive(l2, "l2", allow_zero=True)

    def __call__(self, w):
        w = np.asarray(w, dtype=np.float64)
        return self.l1 * float(np.abs(w).sum()) + self.l2 * float((w * w).sum())

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"L1L2(l1={self.l1}, l2={self.l2})"


def l1(l1=0.01):
    """``l1 * sum(|w|)``."""
    return L1L2(l1=l1)


def l2(l2=0.01):
    """``l2 * sum(w**2)``."""
    return L1L2(l2=l2)


def l1_l2(l1=0.01, l2=0.01):
    """``l1 * sum(|w|) + l2 * sum(w**2)``."""
    return L1L2(l1=l1, l2=l2)


L1 = l1
L2 = l2


def get_regularizer(identifier):
    """None, a regularizer object, or a name ('l1', 'l2', 'l1_l2' with Keras's 0.01)."""
    if identifier is None or isinstance(identifier, L1L2):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key == "l1":
            return L1L2(l1=0.01)
        if key == "l2":
            return L1L2(l2=0.01)
        if key in ("l1_l2", "l1l2"):
            return L1L2(l1=0.01, l2=0.01)
    raise ValueError(
        f"unknown regularizer {identifier!r}; expected 'l1', 'l2', 'l1_l2' or a "
        "fastlstm.optim.L1L2 object"
    )


get = get_regularizer
