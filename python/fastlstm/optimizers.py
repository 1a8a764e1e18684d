"""Keras's module name for the optimizers (``from fastlstm.optimizers import Adam``); the
implementations live in :mod:`fastlstm.optim`."""

from .optim import (  # noqa: F401
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineDecay,
    ExponentialDecay,
    LearningRateSchedule,
    Optimizer,
    PiecewiseConstantDecay,
    RMSprop,
    StepDecay,
    get,
)
from . import schedules  # noqa: F401 - Keras's fastlstm.optimizers.schedules.ExponentialDecay

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "get", "schedules"]
