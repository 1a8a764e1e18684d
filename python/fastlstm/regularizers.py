"""Keras's weight regularizers: ``l1(0.01)``, ``l2(0.01)``, ``l1_l2(l1=0.01, l2=0.01)`` (each an
:class:`L1L2` whose penalty is added to the loss and its gradient to the weights')."""

from .optim import L1L2, get_regularizer as get

__all__ = ["L1L2", "l1", "l2", "l1_l2", "get"]


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
