"""Early checks of the recipe: initial loss, overfitting a tiny subset, the learning-rate range test.

Each returns a Finding: what was measured, whether it looks healthy, and a sentence that says
what it means, so the tune can stop early with a diagnosis instead of spending its budget.
"""

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
from automl.recipe.budget import steadiness
from automl.training.optimizers import make_optimizer
from automl.training.phases import freeze_as_training_starts

MEMORIZED = 0.999  # the overfit check's batches fitted: every image, but for a rounding
FITS = 0.9  # fitted enough that the model can learn: the overfit check passes


@dataclass
class Finding:
    stage: str
    ok: bool
    verdict: str  # a short code: healthy, unscaled_inputs, diverged, lr_too_low, no_signal, ...
    summary: str  # one or two sentences for the terminal, MLflow and the report
    measured: dict[str, float] = field(default_factory=dict)


def plain(config: TrialConfig) -> TrialConfig:
    """The configuration without regularization or augmentation, on a constant LR: what the
    sanity and overfit checks train, so nothing hides whether the model itself can learn."""
    data = _steady(config)
    data["regularization"] = {}
    data["training"]["optimizer"]["weight_decay"] = None if data["training"]["optimizer"]["name"] != "adamw" else 0.0
    return TrialConfig.model_validate(data)


def swept(config: TrialConfig) -> TrialConfig:
    """What the LR range test trains: the steady configuration with its own weight decay and
    L1/L2 kept. They set how far a step moves the (batch-normalized) weights, so the best rate
    depends on them: Smith (2018) sweeps with the weight decay the training will use."""
    return TrialConfig.model_validate(_steady(config))


def _steady(config: TrialConfig) -> dict:
    """``config``'s fields without dropout, stochastic depth, label smoothing or augmentation, on
    a constant LR to the end: noise that would blur the losses the checks read."""
    data = config.model_dump()
    data["model"]["head"]["dropout"] = 0.0
    data["regularization"].update(stochastic_depth=0.0, label_smoothing=0.0)
    data["augmentation"] = {}
    data["training"]["schedule"] = {"name": "constant"}
    data["training"]["early_stopping"] = None
    return data


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def check_initial_loss(config: TrialConfig, data: Dataset, samples: int = 512, seed: int = 0) -> Finding:
    """Softmax over C classes should start near ln(C): far above means overconfident logits
    (unscaled inputs, a broken head, too large an initialization); far below means a leak."""
    keras.utils.set_random_seed(seed)
    model = build_model(plain(config), data.input_shape, data.num_classes, data.pixel_scale)
    x, y = data.x_train[:samples], data.y_train[:samples]
    probs = model.predict(x, batch_size=128, verbose=0)
    loss = _cross_entropy(probs, y)
    expected = math.log(data.num_classes)
    scaled_max = float(np.max(x)) * data.pixel_scale
    measured = {"initial_loss": loss, "expected_loss": expected, "ratio": loss / expected, "input_max": scaled_max}
    if not math.isfinite(loss) or loss > 2.0 * expected:
        cause = (f"the inputs reach {scaled_max:.4g} after scaling instead of about 1: normalize them "
                 f"(uint8 images, or a pixel scale)" if scaled_max > 10 else
                 "the head or the initialization makes confident predictions before any training")
        return Finding("sanity", False, "unscaled_inputs" if scaled_max > 10 else "overconfident_start",
                       f"Initial loss {loss:.3g} is {loss / expected:.1f}x ln({data.num_classes}) = {expected:.3g}: "
                       f"{cause}.", measured)
    if loss < 0.5 * expected:
        return Finding("sanity", False, "too_low", f"Initial loss {loss:.3g} is far below ln({data.num_classes}) = "
                       f"{expected:.3g} before training: labels may leak into the inputs.", measured)
    return Finding("sanity", True, "healthy", f"Initial loss {loss:.3g} is close to ln({data.num_classes}) = "
                   f"{expected:.3g}, as an untrained softmax classifier should be.", measured)


def check_overfit(config: TrialConfig, data: Dataset, batches: int = 8, max_epochs: int = 60,
                  seed: int = 0, callbacks: Sequence[keras.callbacks.Callback] = (),
                  seconds: float | None = None) -> Finding:
    """Train without regularization on ``batches`` batches for ``max_epochs`` (fewer images
    than the batches hold: for as many steps): a healthy setup memorizes them.

    Also compares with validation accuracy: memorized but at chance on unseen data means the
    labels carry no signal about the images (e.g. shuffled against them). ``callbacks`` see the
    training, as in ``lr_range_test``. After ``seconds``, training stops as soon as it fits enough
    of the batches to pass (``FITS``); a model that does not yet goes on to ``max_epochs``, so the
    time never turns a slow host into a failed check.
    """
    keras.utils.set_random_seed(seed)
    cfg = plain(config)
    n = min(len(data.x_train), batches * cfg.training.batch_size)
    x, y = data.x_train[:n], data.y_train[:n]
    # as many optimizer steps as ``batches`` batches get, however few the images (150 in 3 batches)
    max_epochs = max_epochs * batches // math.ceil(n / cfg.training.batch_size)
    # every layer trains, a backbone's too: this checks that the model can learn at all (a frozen
    # backbone under a linear head cannot memorize, yet transfers well)
    model = build_model(cfg, data.input_shape, data.num_classes, data.pixel_scale)
    model.compile(optimizer=make_optimizer(cfg.training.optimizer, cfg.training.optimizer.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, keras.utils.to_categorical(y, data.num_classes), batch_size=cfg.training.batch_size,
                        epochs=max_epochs, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN(), _StopWhenMemorized(seconds), *callbacks]).history
    losses, accuracy = history["loss"], history["accuracy"][-1]
    measured = {"subset": n, "epochs": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
                "train_accuracy": accuracy}
    lr = cfg.training.optimizer.learning_rate
    # Exploded: NaN, growing, or far above the ln(C) an untrained softmax starts at (a first
    # epoch that blew up can leave the units dead and the loss flat but huge).
    finite, start = [v for v in losses if math.isfinite(v)], math.log(data.num_classes)
    if len(finite) < len(losses) or losses[-1] > 3 * losses[0] or (max(finite) > 10 * start and accuracy < FITS):
        peak = "NaN" if len(finite) < len(losses) else f"{max(finite):.3g}"
        return Finding("overfit", False, "diverged",
                       f"The loss exploded (to {peak}; an untrained model starts near ln(C) = {start:.3g}) training "
                       f"on {n} images: the learning rate {lr:g} is too high for this model, or the initialization "
                       f"is bad.", measured)
    if accuracy < FITS:
        slow = losses[-1] > 0.8 * losses[0]
        return Finding("overfit", False, "lr_too_low" if slow else "cannot_overfit",
                       f"After {len(losses)} epochs the model fits only {accuracy:.0%} of {n} training images"
                       + (f" and the loss barely moved ({losses[0]:.3g} to {losses[-1]:.3g}): the learning rate "
                          f"{lr:g} is too low or the initialization is bad." if slow else
                          ": the model is too small or too constrained for this data."), measured)
    _, val_accuracy = model.evaluate(data.x_val, keras.utils.to_categorical(data.y_val, data.num_classes),
                                     verbose=0)
    chance = float(np.max(np.bincount(data.y_val)) / len(data.y_val))
    margin = 3 * math.sqrt(chance * (1 - chance) / len(data.y_val))
    measured.update(val_accuracy=val_accuracy, chance=chance)
    if val_accuracy <= chance + margin:
        return Finding("overfit", False, "no_signal",
                       f"The model memorized {n} training images ({accuracy:.0%}) but is at chance on validation "
                       f"({val_accuracy:.1%} vs {chance:.1%}): the labels carry no signal about the images "
                       f"(shuffled or mismatched?). Stopping instead of spending the budget.", measured)
    timed = seconds is not None and accuracy < MEMORIZED and len(losses) < max_epochs
    short = f", enough to pass when the stage's {seconds:.0f} s were up" if timed else ""
    return Finding("overfit", True, "healthy",
                   f"Memorized {n} training images ({accuracy:.0%}{short}) in {len(losses)} epochs, loss "
                   f"{losses[0]:.3g} to {losses[-1]:.3g}; validation {val_accuracy:.1%} (chance {chance:.1%}).",
                   measured)


class _StopWhenMemorized(keras.callbacks.Callback):
    """Stops at ``MEMORIZED``, or past the ``seconds`` deadline once the batches fit enough to pass."""

    def __init__(self, seconds: float | None = None):
        super().__init__()
        self.deadline = time.monotonic() + seconds if seconds is not None else math.inf

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("accuracy", 0.0)
        if accuracy >= MEMORIZED or (accuracy >= FITS and time.monotonic() > self.deadline):
            self.model.stop_training = True


@dataclass
class LRRange:
    learning_rates: list[float]
    losses: list[float]  # smoothed, per step
    suggested: float
    band: tuple[float, float]
    finding: Finding


def lr_range_test(config: TrialConfig, data: Dataset, min_lr: float = 1e-6, max_lr: float = 10.0,
                  steps: int = 150, seed: int = 0, callbacks: Sequence[keras.callbacks.Callback] = ()) -> LRRange:
    """An exponential LR sweep over ``steps`` batches (Smith 2017): the loss falls fastest a
    little below the rate where it starts to blow up. The configuration's own small weight decay
    and L1/L2 stay on (see ``swept``). ``callbacks`` see the sweep's training: what it trains."""
    keras.utils.set_random_seed(seed)
    cfg = swept(config)
    batch = cfg.training.batch_size
    reps = math.ceil(steps * batch / len(data.x_train))
    x = np.concatenate([data.x_train] * reps)[: steps * batch]
    y = keras.utils.to_categorical(np.concatenate([data.y_train] * reps)[: steps * batch], data.num_classes)
    sweep = keras.optimizers.schedules.ExponentialDecay(min_lr, steps, max_lr / min_lr)
    model = build_model(cfg, data.input_shape, data.num_classes, data.pixel_scale)
    freeze_as_training_starts(model, cfg)
    model.compile(optimizer=make_optimizer(cfg.training.optimizer, sweep), loss="categorical_crossentropy")
    recorder = _BatchLosses()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0, callbacks=[recorder, *callbacks])
    lrs = [min_lr * (max_lr / min_lr) ** (i / steps) for i in range(len(recorder.losses))]
    smooth, best, average = [], math.inf, 0.0
    for i, loss in enumerate(recorder.losses):  # exponential moving average, bias-corrected
        if not math.isfinite(loss):
            break
        average = 0.9 * average + 0.1 * loss
        smooth.append(average / (1 - 0.9 ** (i + 1)))
        best = min(best, smooth[-1])
        if smooth[-1] > 4 * best:  # blown up: the rest of the sweep says nothing
            break
    lrs = lrs[: len(smooth)]
    log_lrs = np.log10(lrs)
    slopes = np.gradient(np.array(smooth), log_lrs) if len(smooth) > 2 else np.zeros(len(smooth))
    lowest = int(np.argmin(smooth))
    steepest = int(np.argmin(slopes[: max(lowest, 1)]))
    suggested = float(min(lrs[steepest], lrs[lowest] / 10)) if lowest > 0 else float(lrs[0])
    band = (suggested / 3, min(suggested * 3, lrs[lowest]))
    measured = {"suggested_lr": suggested, "band_low": band[0], "band_high": band[1],
                "lowest_loss_lr": float(lrs[lowest]), "steps": len(smooth),
                "images_per_second": batch * recorder.batches_per_second(),
                "steadiness": steadiness(recorder.window_seconds())}
    finding = Finding("lr_range", lowest > 0, "healthy" if lowest > 0 else "no_decrease",
                      f"Swept the LR from {min_lr:g} to {max_lr:g} over {steps} batches: the loss falls fastest near "
                      f"{lrs[steepest]:.2g} and is lowest at {lrs[lowest]:.2g}; later stages search "
                      f"[{band[0]:.2g}, {band[1]:.2g}] around {suggested:.2g}.", measured)
    return LRRange([float(v) for v in lrs], [float(v) for v in smooth], suggested, band, finding)


class _BatchLosses(keras.callbacks.Callback):
    """Per-batch losses (Keras reports the running mean of the epoch, so undo the averaging) and
    end times, whose spread after the first batch (which includes tracing) gives the speed."""

    def __init__(self):
        super().__init__()
        self.losses, self.times, self._mean = [], [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {}).get("loss", math.nan))
        self.losses.append((batch + 1) * mean - batch * self._mean)
        self.times.append(time.perf_counter())
        self._mean = mean

    def batches_per_second(self) -> float:
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 1 else math.nan

    def window_seconds(self, batches: int = 10) -> list[float]:
        """The seconds of each run of ``batches`` batches after the first batch."""
        ends = self.times[::batches]
        return np.diff(ends).tolist()
