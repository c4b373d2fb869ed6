"""The final model: the best configuration retrained on train + validation.

A stratified tenth of that is held out for early stopping (the test split stays untouched
until the single evaluation at the end), and training fits its LR schedule into the stage's
time (automl.training.time_budget). Where the time affords more than one model its configuration's
epochs, it trains several and averages them; the held-out part then decides whether predictions
also average test-time views (automl.training.test_time), before that evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from automl.config import TrialConfig
from automl.data import Dataset
from automl.data.dataset import holdout, without_test
from automl.recipe import budget
from automl.training.fit import TrialResult, fit
from automl.training.test_time import ViewChoice, averaged, candidate_views, choose_views, probabilities, scores

HELD_OUT = 0.1


@dataclass
class FinalTraining:
    result: TrialResult  # the first member's training; its model the averaged one, its test_* that model's
    views: ViewChoice
    members_held_out: list[float]  # each member's held-out objective (accuracy or loss), the first's first
    held_out: float  # the averaged model's, views included


def train_final(config: TrialConfig, data: Dataset, *, epochs: int, seconds: float, seed: int, objective: str,
                callbacks: Callable[[int], list[keras.callbacks.Callback]], members: int = 1,
                epoch_estimate: float | None = None, tracing: float = 0.0,
                jit_compile: bool | str = "auto") -> FinalTraining:
    """Train ``members`` models of ``config`` (seeds ``seed``, ``seed + 1``, ...) in turn, each for
    at most ``epochs``, its schedule fitted into its part of ``seconds`` at ``epoch_estimate`` (the
    parts leave room for scoring every member, and for building each as long as the last took); a
    member whose part no longer affords its ``tracing`` and ``budget.MIN_FINAL_EPOCHS`` is not started. The model
    returned averages the members' predictions over the test-time views the held-out part chose;
    its test metrics are that model's, and ``single_test_*`` the first member's alone.
    ``callbacks(i)``: the callbacks of member ``i``."""
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    x_fit, x_held, y_fit, y_held = holdout(x, y, HELD_OUT, seed)
    joined = dataclasses.replace(data, x_train=x_fit, y_train=y_fit, x_val=x_held, y_val=y_held)
    image_seconds = epoch_estimate / len(x_fit) if epoch_estimate else 0.0
    test = 0 if data.x_test is None else len(data.x_test)
    # scoring each member after training comes out of the same seconds, but never half of them
    scoring = min(scoring_seconds(image_seconds, 1, len(x_held), test), seconds / 2 / members)
    start, results, overhead = time.perf_counter(), [], 0.0
    for i in range(members):
        # a member's seconds bound its training; building, compiling and evaluating it come on top,
        # as long as the last member's did
        left = seconds - (time.perf_counter() - start) - scoring * members
        part = left / (members - i) - overhead
        if i and epoch_estimate and part < tracing + budget.MIN_FINAL_EPOCHS * epoch_estimate:
            break
        results.append(_member(config, joined if i == 0 else without_test(joined), epochs, part, seed + i, objective,
                               callbacks(i), epoch_estimate, jit_compile))
        overhead = results[-1].seconds - results[-1].fit_seconds
    result, models = results[0], [r.model for r in results]
    smoothing, batch = config.regularization.label_smoothing, config.training.batch_size
    together = averaged(models, [None])
    choice = choose_views(together, x_held, y_held, objective, batch_size=batch, label_smoothing=smoothing)
    result.model = averaged(models, choice.views)

    def score(model, x, y, objective):
        return float(scores(probabilities(model, x, batch), y, objective, smoothing).mean())

    if result.model is not models[0] and data.x_test is not None:
        tests = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
        result.metrics.update({f"single_{k}": v for k, v in tests.items()})
        predicted = probabilities(result.model, data.x_test, batch)  # once: the views may be many
        result.metrics["test_accuracy"] = float(scores(predicted, data.y_test, "val_accuracy").mean())
        result.metrics["test_loss"] = -float(scores(predicted, data.y_test, "val_loss", smoothing).mean())
    sign = 1 if objective == "val_accuracy" else -1  # scores are minus the loss
    return FinalTraining(result, choice, [sign * score(m, x_held, y_held, objective) for m in models],
                         sign * score(result.model, x_held, y_held, objective))


def scoring_seconds(image_seconds: float, members: int, held_out: int, test: int) -> float:
    """What scoring the trained models takes, at ``budget.EVAL_COST`` of ``image_seconds`` (a
    training image's) per image and model: each member on every candidate view of the held-out part
    and on it as is, twice, and on the test split alone (the first) and averaged, one view foreseen."""
    distinct = 1 + len({v.label for views in candidate_views().values() for v in views if v is not None})
    images = members * ((distinct + 2) * held_out + 2 * test)
    return budget.EVAL_COST * image_seconds * images


def _member(config: TrialConfig, data: Dataset, epochs: int, seconds: float, seed: int, objective: str,
            callbacks: list[keras.callbacks.Callback], epoch_estimate: float | None,
            jit_compile: bool | str) -> TrialResult:
    settings = config.model_dump()
    expected = min(epochs, int(seconds // epoch_estimate)) if epoch_estimate else epochs
    if settings["training"]["early_stopping"] is None:  # the configuration's own patience wins
        # Not before half the epochs: while the schedule's LR is high, the small held-out part's
        # accuracy wobbles, and a stop there kept a model of the first epoch (a from-scratch final
        # on 1,250 images: best at epoch 1 of 15, stopped at 4, test 0.84 where its search read 0.96).
        settings["training"]["early_stopping"] = {"patience": max(3, expected // 4),
                                                  "start_from_epoch": expected // 2}
    return fit(TrialConfig.model_validate(settings), data, epochs=epochs, seed=seed, objective=objective,
               callbacks=callbacks, seconds=seconds, epoch_estimate=epoch_estimate, jit_compile=jit_compile)
