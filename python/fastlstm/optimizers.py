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

schedules = __import__("types").SimpleNamespace(
    LearningRateSchedule=LearningRateSchedule, ExponentialDecay=ExponentialDecay,
    CosineDecay=CosineDecay, PiecewiseConstantDecay=PiecewiseConstantDecay)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "get", "schedules"]
