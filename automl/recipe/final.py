"""The final model: the best configuration retrained on train + validation.

A stratified tenth of that is held out for early stopping (the test split stays untouched
until the single evaluation at the end), and training stops before the stage's time runs out.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from automl.config import TrialConfig
from automl.data import Dataset
from automl.data.dataset import holdout
from automl.training.fit import TrialResult, fit

HELD_OUT = 0.1


class Deadline(keras.callbacks.Callback):
    """Stops training when another epoch like the last one would not fit in ``seconds``. The
    first epoch runs whatever the budget; it includes tracing, so ``estimate`` (seconds of a
    later epoch), when known, stands in for its length."""

    def __init__(self, seconds: float, estimate: float | None = None):
        super().__init__()
        self.seconds, self.estimate = seconds, estimate
        self.start: float | None = None

    def on_train_begin(self, logs=None):  # once: a phased training calls fit once per phase
        if self.start is None:
            self.start = self.epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        last = now - self.epoch_start
        if epoch == 0 and self.estimate is not None:
            last = min(last, self.estimate)
        if now - self.start + last > self.seconds:
            self.model.stop_training = True


def train_final(config: TrialConfig, data: Dataset, *, epochs: int, seconds: float, seed: int, objective: str,
                callbacks: list[keras.callbacks.Callback], epoch_estimate: float | None = None) -> TrialResult:
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    x_fit, x_held, y_fit, y_held = holdout(x, y, HELD_OUT, seed)
    joined = dataclasses.replace(data, x_train=x_fit, y_train=y_fit, x_val=x_held, y_val=y_held)
    settings = config.model_dump()
    if settings["training"]["early_stopping"] is None:  # the configuration's own patience wins
        # Not before half the epochs: while the schedule's LR is high, the small held-out part's
        # accuracy wobbles, and a stop there kept a model of the first epoch (a from-scratch final
        # on 1,250 images: best at epoch 1 of 15, stopped at 4, test 0.84 where its search read 0.96).
        settings["training"]["early_stopping"] = {"patience": max(3, epochs // 4), "start_from_epoch": epochs // 2}
    return fit(TrialConfig.model_validate(settings), joined, epochs=epochs, seed=seed, objective=objective,
               callbacks=[*callbacks, Deadline(seconds, epoch_estimate)])
