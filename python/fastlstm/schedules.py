"""Learning-rate schedules (Keras's ``keras.optimizers.schedules``): a learning rate as a
function of the optimizer's step count, given to an optimizer in place of a number."""

from __future__ import annotations

import math

__all__ = ["LearningRateSchedule", "ExponentialDecay", "CosineDecay", "StepDecay",
           "PiecewiseConstantDecay"]


def _positive(value, name, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return v


class LearningRateSchedule:
    """A learning rate as a function of the optimizer's step count (0 for the first step)."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        return dict(self.__dict__)


class ExponentialDecay(LearningRateSchedule):
    """``lr = initial * decay_rate ** (step / decay_steps)`` (integer division if staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.decay_rate = _positive(decay_rate, "decay_rate")
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p


class CosineDecay(LearningRateSchedule):
    """Keras's CosineDecay: optional linear warmup to ``warmup_target`` over ``warmup_steps``,
    then ``lr = (1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha`` times the start
    rate, held at ``alpha`` times it after ``decay_steps``."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate",
                                               allow_zero=True)
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.alpha = _positive(alpha, "alpha", allow_zero=True)
        self.warmup_target = None if warmup_target is None else _positive(warmup_target,
                                                                          "warmup_target")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        if self.warmup_target is not None and step < self.warmup_steps:
            frac = step / self.warmup_steps
            return self.initial_learning_rate + frac * (self.warmup_target - self.initial_learning_rate)
        start = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        s = min(step - (self.warmup_steps if self.warmup_target is not None else 0), self.decay_steps)
        cos = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return start * ((1.0 - self.alpha) * cos + self.alpha)


class StepDecay(LearningRateSchedule):
    """``lr = initial * gamma ** (step // step_size)`` (PyTorch's StepLR, counted in steps)."""

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate")
        self.step_size = int(_positive(step_size, "step_size"))
        self.gamma = _positive(gamma, "gamma")

    def __call__(self, step):
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]`` (Keras's rule)."""

    def __init__(self, boundaries, values):
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"values must have one more entry than boundaries, got {len(values)} values "
                f"and {len(boundaries)} boundaries"
            )
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]
