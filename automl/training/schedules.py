"""Learning-rate schedules in epochs, turned into Keras step-based schedules.

Keras provides the decays (PiecewiseConstant, Exponential, Cosine with warmup, CosineRestarts,
Polynomial); the small classes here add what it lacks: inverse square root decay, a linear
warmup in front of any schedule, and one fine-tuning phase's part of a schedule.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.optimizers.schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

from automl.config import Training


@keras.saving.register_keras_serializable(package="automl")
class InverseSqrtDecay(LearningRateSchedule):
    """Constant for ``timescale`` steps, then proportional to 1/sqrt(step) (Vaswani et al.)."""

    def __init__(self, initial_learning_rate: float, timescale: int):
        self.initial_learning_rate = initial_learning_rate
        self.timescale = timescale

    def __call__(self, step):
        t = ops.maximum(ops.cast(step, "float32"), float(self.timescale)) / float(self.timescale)
        return self.initial_learning_rate * ops.rsqrt(t)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "timescale": self.timescale}


@keras.saving.register_keras_serializable(package="automl")
class LinearWarmup(LearningRateSchedule):
    """Ramp linearly up to ``after``'s start over ``warmup_steps``, then follow ``after`` (shifted).

    ``after`` is a schedule or a constant rate.
    """

    def __init__(self, after, warmup_steps: int):
        self.after = after
        self.warmup_steps = warmup_steps

    def _after(self, step):
        return self.after(step) if callable(self.after) else ops.convert_to_tensor(self.after, "float32")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(self.warmup_steps)
        rest = self._after(ops.maximum(step - warm, 0.0))
        return ops.where(step < warm, self._after(0.0) * (step + 1.0) / warm, rest)

    def get_config(self):
        return {"after": keras.saving.serialize_keras_object(self.after), "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["after"]), config["warmup_steps"])


@keras.saving.register_keras_serializable(package="automl")
class PhaseSchedule(LearningRateSchedule):
    """``schedule`` from step ``offset`` on, times ``scale``: one phase's part of the run's
    schedule, for an optimizer that counts its steps from 0."""

    def __init__(self, schedule: LearningRateSchedule, offset: int, scale: float):
        self.schedule, self.offset, self.scale = schedule, offset, scale

    def __call__(self, step):
        return self.schedule(ops.cast(step, "float32") + float(self.offset)) * self.scale

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "offset": self.offset,
                "scale": self.scale}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["offset"], config["scale"])


def base_learning_rate(training: Training) -> float:
    """The optimizer's LR, linearly scaled with the batch size when asked (Goyal et al. 2017)."""
    lr = training.optimizer.learning_rate
    if training.lr_scaling_batch:
        lr *= training.batch_size / training.lr_scaling_batch
    return lr


def learning_rate(training: Training, steps_per_epoch: int, epochs: int):
    """A float (for ``constant`` and ``plateau``) or a LearningRateSchedule over ``epochs``."""
    s = training.schedule
    lr = base_learning_rate(training)
    warmup = round(s.warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch - warmup)
    if s.name in ("cosine", "one_cycle"):  # Keras' CosineDecay has its own warmup
        if s.name == "cosine":
            start, alpha = (0.0 if warmup else lr), s.alpha
        else:  # one-cycle: warm up over pct_start from lr/div_factor, then anneal
            warmup = round(s.pct_start * epochs * steps_per_epoch)
            total = max(1, epochs * steps_per_epoch - warmup)
            start, alpha = lr / s.div_factor, 1.0 / (s.div_factor * s.final_div_factor)
        return CosineDecay(start, total, alpha=alpha, warmup_target=lr if warmup else None, warmup_steps=warmup)
    if s.name in ("constant", "plateau"):
        schedule = lr
    elif s.name == "step":
        boundaries = list(range(s.every_epochs * steps_per_epoch, total, s.every_epochs * steps_per_epoch))
        values = [lr * s.factor**k for k in range(len(boundaries) + 1)]
        schedule = PiecewiseConstantDecay(boundaries, values) if boundaries else lr
    elif s.name == "exponential":
        schedule = ExponentialDecay(lr, steps_per_epoch, s.decay_per_epoch)
    elif s.name == "cosine_restarts":
        first = max(1, round(s.first_epochs * steps_per_epoch))
        schedule = CosineDecayRestarts(lr, first, t_mul=s.t_mul, m_mul=s.m_mul, alpha=s.alpha)
    elif s.name == "linear":
        schedule = PolynomialDecay(lr, total, end_learning_rate=lr * s.end_factor, power=1.0)
    elif s.name == "inverse_sqrt":
        schedule = InverseSqrtDecay(lr, max(1, round(s.timescale_epochs * steps_per_epoch)))
    else:
        raise ValueError(f"unknown schedule {s.name}")
    return LinearWarmup(schedule, warmup) if warmup else schedule
