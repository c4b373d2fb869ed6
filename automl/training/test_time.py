"""Averaged predictions: test-time augmentation, a model's class probabilities averaged over
fixed views of each image (mirrored, shifted by a pixel), kept only where held-out images say the
average beats the single view by more than its standard error; and ensembles of models.

Views and members live inside the returned Keras model (``View`` layers around the shared
trained models, their outputs averaged), so the saved ``model.keras``, its SavedModel and
``automl predict`` need nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # one pixel each way: a CNN's pooling half-forgives these
AVERAGED = "averaged"  # the name of a model built by ``averaged``


@keras.saving.register_keras_serializable(package="automl")
class View(keras.layers.Layer):
    """One fixed view of a batch of images (N, H, W, C): mirrored left to right, then shifted by
    whole pixels with the edge pixels repeated into the gap."""

    def __init__(self, flip: bool = False, dy: int = 0, dx: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.flip, self.dy, self.dx = flip, dy, dx

    def call(self, x):
        if self.flip:
            x = ops.flip(x, axis=2)
        if self.dy or self.dx:
            h, w, p = x.shape[1], x.shape[2], max(abs(self.dy), abs(self.dx))
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="symmetric")
            x = x[:, p + self.dy:p + self.dy + h, p + self.dx:p + self.dx + w, :]
        return x

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "dy": self.dy, "dx": self.dx}

    @property
    def label(self) -> str:
        parts = (["mirrored"] if self.flip else []) + ([f"shifted ({self.dy:+d}, {self.dx:+d})"]
                                                       if self.dy or self.dx else [])
        return " and ".join(parts) or "as is"


def candidate_views() -> dict[str, list[View | None]]:
    """The view sets tried, by name; ``None`` is the image as it is."""
    shifts = [View(dy=dy, dx=dx) for dy, dx in SHIFTS]
    return {
        "mirror": [None, View(flip=True)],
        "shifts": [None, *shifts],
        "mirror+shifts": [None, View(flip=True), *shifts, *(View(flip=True, dy=dy, dx=dx) for dy, dx in SHIFTS)],
    }


def averaged(models: list[keras.Model], views: list[View | None]) -> keras.Model:
    """One model that averages the probabilities of each of ``models`` on each of ``views`` (the
    weights are shared); the model itself where there is one model and one view."""
    if len(models) == 1 and views == [None]:
        return models[0]
    if len(models) > 1:
        for i, m in enumerate(models):
            m.name = f"member_{i + 1}"  # a Functional model's parts need names of their own
    inputs = keras.Input(models[0].input_shape[1:], name="images")
    outputs = [m(inputs if v is None else v(inputs)) for m in models for v in views]
    return keras.Model(inputs, keras.layers.Average(name="mean")(outputs), name=AVERAGED)


def first_member(model: keras.Model) -> keras.Model:
    """The first trained network inside a model ``averaged`` built (its views and other members
    are for prediction only); any other model, a user's own named alike included, as it is."""
    nested = (layer for layer in model.layers if isinstance(layer, keras.Model))
    return next(nested, model) if model.name == AVERAGED else model


def probabilities(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model``'s class probabilities for ``x``, called batch by batch: ``predict`` would trace a
    function for each of the many short-lived models compared here, and TensorFlow warns of that."""
    return np.concatenate([ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def scores(probabilities: np.ndarray, y: np.ndarray, objective: str, label_smoothing: float = 0.0) -> np.ndarray:
    """Per image, larger is better: 1 where the top class is right (accuracy), or minus the loss."""
    if objective == "val_accuracy":
        return (probabilities.argmax(axis=1) == y).astype(float)
    onehot = keras.utils.to_categorical(y, probabilities.shape[1])
    losses = keras.losses.categorical_crossentropy(onehot, probabilities, label_smoothing=label_smoothing)
    return -np.asarray(ops.convert_to_numpy(losses), dtype=float)


@dataclass
class ViewChoice:
    name: str | None  # the chosen set of ``candidate_views``, None for the single view
    views: list[View | None]
    gain: float  # held-out score, the chosen set's minus the single view's (accuracy, or minus loss)
    error: float  # the standard error of that paired difference
    why: str


def choose_views(model: keras.Model, x: np.ndarray, y: np.ndarray, objective: str, *, batch_size: int = 256,
                 label_smoothing: float = 0.0) -> ViewChoice:
    """The view set whose mean score on (``x``, ``y``), images the model did not train on, beats the
    single view's by the most, and by more than the standard error of the paired difference; else
    the single view. Each distinct view is predicted once; the sets reuse those predictions."""
    sets = candidate_views()
    seen: dict[str, np.ndarray] = {}

    def viewed(v: View | None) -> np.ndarray:
        key = "as is" if v is None else v.label
        if key not in seen:
            seen[key] = probabilities(model if v is None else averaged([model], [v]), x, batch_size)
        return seen[key]

    single = scores(viewed(None), y, objective, label_smoothing)
    best = ViewChoice(None, [None], 0.0, 0.0, "")
    for name, views in sets.items():
        mean = np.mean([viewed(v) for v in views], axis=0)
        d = scores(mean, y, objective, label_smoothing) - single
        error = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
        if d.mean() > error and d.mean() > best.gain:
            best = ViewChoice(name, views, float(d.mean()), error, "")
    if best.name is None:
        best.why = (f"no test-time views: none beat the image as it is on the {len(y):,} held-out images by more "
                    "than a standard error")
    else:
        gain = (f"gain {best.gain:+.4f} accuracy" if objective == "val_accuracy"
                else f"lower the loss by {best.gain:.4f}")
        best.why = (f"predictions average {len(best.views)} views ({best.name}): on the {len(y):,} held-out images "
                    f"they {gain} over the image as it is (standard error {best.error:.4f})")
    return best
