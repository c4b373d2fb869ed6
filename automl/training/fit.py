"""Train one configuration on one data set: the body of every trial."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from automl.builder import build_model
from automl.config import TrialConfig
from automl.data import Dataset
from automl.errors import TrialFailed
from automl.model_size import check_size
from automl.training import phases
from automl.training.augmentation import batch_mixers
from automl.training.optimizers import make_optimizer
from automl.training.schedules import learning_rate
from automl.training.time_budget import TimeBudget

OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}


@dataclass
class TrialResult:
    model: keras.Model
    history: dict[str, list[float]]  # per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate
    best_epoch: int  # 1-based; the model holds this epoch's weights
    metrics: dict[str, float]  # the best epoch's metrics, plus test_* when there is a test split
    seconds: float  # the whole call: build, compile, fit, evaluate
    fit_seconds: float  # model.fit alone
    params: int = field(default=0)
    epoch_seconds: list[float] = field(default_factory=list)  # the first includes tracing


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the optimizer's current learning rate (schedules included) into the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class BestEpoch(keras.callbacks.EarlyStopping):
    """EarlyStopping, with the best weights kept, over all the ``fit`` calls of a phased training:
    it starts watching once, and ``restore`` puts the best epoch's weights back after the last."""

    def __init__(self, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.watching = False

    def on_train_begin(self, logs=None):
        if not self.watching:
            super().on_train_begin(logs)
            self.watching = True

    def on_train_end(self, logs=None):
        pass

    def restore(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class MixedBatches(keras.utils.PyDataset):
    """Shuffled batches passed through MixUp/CutMix, which need one-hot labels per batch."""

    def __init__(self, x, y, batch_size: int, mixers, seed: int | None):
        super().__init__()
        self.x, self.y, self.batch_size, self.mixers = x, y, batch_size, mixers
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        batch = {"images": self.x[idx], "labels": self.y[idx]}
        for mixer in self.mixers:
            batch = mixer(batch)
        return keras.ops.convert_to_numpy(batch["images"]), keras.ops.convert_to_numpy(batch["labels"])

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def fit(
    config: TrialConfig,
    data: Dataset,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    objective: str = "val_accuracy",
    seed: int | None = None,
    verbose: int = 0,
    jit_compile: bool | str = "auto",
    seconds: float | None = None,
    epoch_estimate: float | None = None,
) -> TrialResult:
    """Build, compile and train ``config``; keep the best epoch's weights (by ``objective``).

    ``epochs`` overrides the configuration's budget (the search decides it). ``seconds`` bounds
    the training (see TimeBudget; ``epoch_estimate``: the seconds of an epoch after the first):
    a single-phase run's LR schedule is fitted into them. Raises TrialFailed when the loss
    becomes NaN, and ArchitectureError when the model cannot fit the input.
    """
    start = time.perf_counter()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    t = config.training
    epochs = epochs or t.epochs
    check_size(config, data.input_shape, data.num_classes)  # weights and this batch size's activations
    model = build_model(config, data.input_shape, data.num_classes, data.pixel_scale)
    steps = math.ceil(len(data.x_train) / t.batch_size)
    rate = learning_rate(t, steps, epochs)
    spec = config.model.backbone
    y_train = keras.utils.to_categorical(data.y_train, data.num_classes)
    y_val = keras.utils.to_categorical(data.y_val, data.num_classes)
    mixers = batch_mixers(config.augmentation, seed)
    if mixers:
        train, fit_kwargs = MixedBatches(data.x_train, y_train, t.batch_size, mixers, seed), {}
    else:
        train, fit_kwargs = data.x_train, {"y": y_train, "batch_size": t.batch_size, "shuffle": True}

    best = BestEpoch(
        monitor=objective,
        mode=OBJECTIVES[objective],
        patience=t.early_stopping.patience if t.early_stopping else epochs,
        min_delta=t.early_stopping.min_delta if t.early_stopping else 0.0,
        start_from_epoch=t.early_stopping.start_from_epoch if t.early_stopping else 0,
    )
    timer = EpochTimer()
    own = [LearningRateLogger(), keras.callbacks.TerminateOnNaN(), best, timer]
    if t.schedule.name == "plateau":
        s = t.schedule
        own.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=s.factor, patience=s.patience,
                                                     min_lr=s.min_lr))
    planned = phases.plan(spec, phases.backbone_stages(model) if spec else 0, epochs)
    if seconds is not None:
        # Phases split the planned epochs among them: their schedule keeps its epochs, and only stops in time.
        fitted = callable(rate) and len(planned) == 1
        budget = TimeBudget(seconds, epoch_estimate, rate if fitted else None, steps, epochs)
        own.append(budget)
        if fitted:
            rate = budget.rate_at(0)  # a float, for the budget to set epoch by epoch
    history: dict[str, list[float]] = {}
    fit_start = time.perf_counter()
    for phase in planned:
        if spec is not None:
            phases.set_trainable(model, phase.stages)
        model.compile(
            optimizer=make_optimizer(t.optimizer, phases.phase_rate(rate, phase, steps)),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.regularization.label_smoothing),
            metrics=["accuracy"],
            jit_compile=jit_compile,  # XLA: True compiles the train step, "auto" lets Keras decide
        )
        done = model.fit(
            train,
            validation_data=(data.x_val, y_val),
            initial_epoch=phase.start,
            epochs=phase.end,
            callbacks=own + list(callbacks),
            verbose=verbose,
            **fit_kwargs,
        ).history
        for key, values in done.items():
            history.setdefault(key, []).extend(values)
        if model.stop_training:  # early stopping, NaN, a deadline or pruning's stop
            break
    best.restore()
    fit_seconds = time.perf_counter() - fit_start
    losses = history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        epoch = next(i for i, v in enumerate(losses) if not math.isfinite(v)) + 1
        raise TrialFailed("nan_loss", f"training loss became NaN or infinite in epoch {epoch}")

    # the epoch whose weights EarlyStopping restored; the last where it stopped before it started watching
    best_index = best.best_epoch if best.best_weights is not None else len(losses) - 1
    metrics = {k: float(v[best_index]) for k, v in history.items()}
    if data.x_test is not None:
        y_test = keras.utils.to_categorical(data.y_test, data.num_classes)
        test = model.evaluate(data.x_test, y_test, batch_size=t.batch_size, verbose=0, return_dict=True)
        metrics.update({f"test_{k}": float(v) for k, v in test.items()})
    return TrialResult(model, {k: [float(x) for x in v] for k, v in history.items()}, best_index + 1,
                       metrics, time.perf_counter() - start, fit_seconds, model.count_params(), timer.seconds)
