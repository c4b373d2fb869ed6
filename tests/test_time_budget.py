"""The final training's time budget: it stops in time, and fits its LR schedule into the epochs it gets."""

import math
import time

import keras
import numpy as np
import pytest
from keras.optimizers.schedules import CosineDecay

from automl.config import TrialConfig
from automl.training.fit import LearningRateLogger, fit
from automl.training.time_budget import TimeBudget

X = np.zeros((64, 2), "float32")  # two steps per epoch at batch 32
STEPS, EPOCHS = 2, 8


def _model(rate: float = 0.01) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(rate), "mse")
    return model


def _fitted_run(seconds: float, estimate: float | None = None) -> list[float]:
    """The LR of each epoch of a cosine schedule over EPOCHS epochs that each take 10 s (a fake clock)."""
    now = [0.0]

    class TenSeconds(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            now[0] += 10.0

    budget = TimeBudget(seconds, estimate, CosineDecay(1.0, EPOCHS * STEPS), STEPS, EPOCHS, clock=lambda: now[0])
    callbacks = [TenSeconds(), budget, LearningRateLogger()]
    return _model().fit(X, X[:, :1], epochs=EPOCHS, verbose=0, callbacks=callbacks).history["learning_rate"]


def _cosine(epochs: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * epochs / EPOCHS))


def test_with_time_enough_the_schedule_runs_as_planned():
    rates = _fitted_run(seconds=1000.0)
    assert rates == pytest.approx([_cosine(k + 0.5) for k in range(EPOCHS)], abs=1e-6)


def test_a_short_budget_compresses_the_schedule_instead_of_cutting_it_off():
    # 45 s afford 4 epochs of 10 s: the first runs as planned (its length is not known yet), the
    # other three share the remaining 7 epochs of the schedule and end it near its lowest LR
    rates = _fitted_run(seconds=45.0)
    assert rates == pytest.approx([_cosine(0.5), _cosine(1 + 7 / 6), _cosine(1 + 7 / 2), _cosine(8 - 7 / 6)],
                                  abs=1e-6)
    assert rates[-1] < 0.1  # a plain deadline would have stopped at epoch 4's LR, 0.6 of the peak
    # knowing the epoch's length from the start, the 4 epochs share the schedule evenly
    assert _fitted_run(seconds=45.0, estimate=10.0) == pytest.approx([_cosine(k) for k in (1, 3, 5, 7)], abs=1e-6)


def test_it_stops_before_its_time_runs_out():
    model = _model()
    history = model.fit(X, X[:, :1], epochs=50, verbose=0, callbacks=[TimeBudget(seconds=0.0)]).history
    assert len(history["loss"]) == 1  # the first epoch always runs
    history = model.fit(X, X[:, :1], epochs=5, verbose=0, callbacks=[TimeBudget(seconds=600.0)]).history
    assert len(history["loss"]) == 5

    class SlowFirstEpoch(keras.callbacks.Callback):  # as tracing makes it
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                time.sleep(2.0)

    def epochs_run(estimate):
        budget = TimeBudget(seconds=3.5, estimate=estimate)
        return len(model.fit(X, X[:, :1], epochs=5, verbose=0, callbacks=[SlowFirstEpoch(), budget]).history["loss"])

    assert epochs_run(None) == 1  # another 2 s epoch would not fit
    assert epochs_run(0.01) == 5  # later epochs are known to be short


def test_fit_fits_a_single_phase_schedule_into_its_seconds(digits):
    model = {"stem": [{"filters": 4}], "stages": [{"family": "vgg", "filters": 4}]}
    config = TrialConfig.model_validate({"model": model, "training": {"epochs": 6, "schedule": {"name": "cosine"}}})
    # estimated at 1000 s an epoch, 2500 s afford 2: the first epoch runs half the schedule; measured
    # (well under a second), the rest fits as planned, one epoch of the schedule per epoch
    result = fit(config, digits, seed=0, seconds=2500.0, epoch_estimate=1000.0)
    lr = config.training.optimizer.learning_rate
    expected = [0.5 * lr * (1 + math.cos(math.pi * e / 6)) for e in (1.5, 3.5, 4.5, 5.5)]
    assert result.history["learning_rate"] == pytest.approx(expected, rel=1e-4)
    assert isinstance(result.model.optimizer.learning_rate, keras.Variable)  # a float the budget set
