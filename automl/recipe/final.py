"""The final model: the best configuration retrained on train + validation.

A stratified tenth of that is held out for early stopping (the test split stays untouched
until the single evaluation at the end), and training fits its LR schedule into the stage's
time (automl.training.time_budget). The held-out part then decides whether predictions average
test-time views (automl.training.test_time) before that evaluation.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from automl.config import TrialConfig
from automl.data import Dataset
from automl.data.dataset import holdout
from automl.training.fit import TrialResult, fit
from automl.training.test_time import ViewChoice, choose_views, scores, with_views

HELD_OUT = 0.1


def train_final(config: TrialConfig, data: Dataset, *, epochs: int, seconds: float, seed: int, objective: str,
                callbacks: list[keras.callbacks.Callback], epoch_estimate: float | None = None,
                jit_compile: bool | str = "auto") -> tuple[TrialResult, ViewChoice]:
    """``epochs``: at most; as many as fit in ``seconds`` at ``epoch_estimate`` run the schedule.
    The result's model averages the chosen views; its test metrics are that model's, and
    ``single_test_*`` the trained model's alone."""
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    x_fit, x_held, y_fit, y_held = holdout(x, y, HELD_OUT, seed)
    joined = dataclasses.replace(data, x_train=x_fit, y_train=y_fit, x_val=x_held, y_val=y_held)
    settings = config.model_dump()
    expected = min(epochs, int(seconds // epoch_estimate)) if epoch_estimate else epochs
    if settings["training"]["early_stopping"] is None:  # the configuration's own patience wins
        # Not before half the epochs: while the schedule's LR is high, the small held-out part's
        # accuracy wobbles, and a stop there kept a model of the first epoch (a from-scratch final
        # on 1,250 images: best at epoch 1 of 15, stopped at 4, test 0.84 where its search read 0.96).
        settings["training"]["early_stopping"] = {"patience": max(3, expected // 4),
                                                  "start_from_epoch": expected // 2}
    result = fit(TrialConfig.model_validate(settings), joined, epochs=epochs, seed=seed, objective=objective,
                 callbacks=callbacks, seconds=seconds, epoch_estimate=epoch_estimate, jit_compile=jit_compile)
    smoothing, batch = config.regularization.label_smoothing, config.training.batch_size
    choice = choose_views(result.model, x_held, y_held, objective, batch_size=batch, label_smoothing=smoothing)
    if choice.name is not None:
        result.model = with_views(result.model, choice.views)
        if data.x_test is not None:
            probabilities = result.model.predict(data.x_test, batch_size=batch, verbose=0)
            tests = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
            result.metrics.update({f"single_{k}": v for k, v in tests.items()})
            result.metrics["test_accuracy"] = float(scores(probabilities, data.y_test, "val_accuracy").mean())
            result.metrics["test_loss"] = -float(scores(probabilities, data.y_test, "val_loss", smoothing).mean())
    return result, choice
