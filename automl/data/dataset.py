"""Dataset: train/validation/test arrays of raw images, split once by a seed.

Images keep their stored values (uint8 0-255, digits 0-16, ...); ``pixel_scale`` maps them to
[0, 1] and becomes the model's first layer, so exported models take raw pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from automl.errors import UserError

# ImageNet-21k has 21,841 classes; a label far above this is a mistake (a label of 10^9 once
# asked for a 7.45 GiB one-hot array)
MAX_CLASSES = 100_000


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    pixel_scale: float = 1.0
    class_names: list[str] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def describe(self) -> str:
        test = 0 if self.x_test is None else len(self.x_test)
        h, w, c = self.input_shape
        return (f"{self.name}: {h}x{w}x{c}, {self.num_classes} classes, "
                f"{len(self.x_train)} train / {len(self.x_val)} val / {test} test")


def as_images(x: np.ndarray, source: str, field: str = "images") -> np.ndarray:
    """(N, H, W) or (N, H, W, C) to NHWC; uint8 stays uint8 (4x less memory), the rest float32.
    Pixels must be finite numbers: a NaN would otherwise pass for a learning rate too high."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise UserError(f"{source}: {field} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"{source}: {field} must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype == np.uint8:
        return x
    x = x.astype("float32")
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise UserError(f"{source}: {field} has NaN or infinite pixel values in {len(bad)} images "
                        f"(the first is image {bad[0]})")
    return x


def default_pixel_scale(x: np.ndarray) -> float:
    """uint8 images are 0-255; float images are taken as already in [0, 1]."""
    return 1.0 / 255.0 if np.asarray(x).dtype == np.uint8 else 1.0


def check_labels(y: np.ndarray, n: int, source: str, field: str, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{source}: {field} must be a vector of class indices, got shape {y.shape}")
    if y.dtype.kind not in "iuf":
        raise UserError(f"{source}: {field} must hold integer class indices, got dtype {y.dtype}")
    if len(y) != n:
        raise UserError(f"{source}: {field} has {len(y)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):  # NaN and infinity fail here too
            raise UserError(f"{source}: {field} must hold integer class indices")
        if len(y) and np.abs(y).max() > MAX_CLASSES:  # before the cast, which would wrap around
            raise UserError(f"{source}: {field} has label {y.max():.0f}; labels are class indices 0 to "
                            f"{MAX_CLASSES - 1}")
        y = y.astype("int64")
    if len(y) and y.min() < 0:
        raise UserError(f"{source}: {field} has negative label {int(y.min())}")
    if len(y) and y.max() >= MAX_CLASSES:
        raise UserError(f"{source}: {field} has label {int(y.max())}; labels are class indices 0 to "
                        f"{MAX_CLASSES - 1}")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise UserError(f"{source}: {field} has label {int(y.max())}, out of range for {num_classes} classes")
    return y.astype("int64")


def holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Split off ``fraction`` of the samples, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split  # 2-3 s to import: only when data is split

    counts = np.bincount(y)
    classes, held = int((counts > 0).sum()), math.ceil(fraction * len(y))
    stratifiable = counts[counts > 0].min() >= 2 and classes <= held <= len(y) - classes
    return train_test_split(x, y, test_size=held, random_state=seed, stratify=y if stratifiable else None)


def without_test(data: Dataset) -> Dataset:
    """What trials see: they rank on validation, and the test split waits for the chosen model."""
    return replace(data, x_test=None, y_test=None)


def subsample(data: Dataset, train: int, val: int, seed: int) -> Dataset:
    """Stratified ``train`` and ``val`` images of ``data``, and no test split: what a quick
    search trains and ranks on (the test split waits for the final model)."""

    def part(x: np.ndarray, y: np.ndarray, n: int):
        return (x, y) if n >= len(y) else holdout(x, y, n / len(y), seed)[1::2]

    x_train, y_train = part(data.x_train, data.y_train, train)
    x_val, y_val = part(data.x_val, data.y_val, val)
    return without_test(replace(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val))


def make_dataset(
    name: str,
    x_train,
    y_train,
    *,
    x_val=None,
    y_val=None,
    x_test=None,
    y_test=None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    split_test: bool = True,
    pixel_scale: float | None = None,
    class_names: list[str] | None = None,
) -> Dataset:
    """Validate arrays and make the missing splits by seed (test first, then validation)."""
    pixel_scale = default_pixel_scale(x_train) if pixel_scale is None else pixel_scale
    x_train = as_images(x_train, name, "x_train")
    y_train = check_labels(y_train, len(x_train), name, "y_train")
    num_classes = int(y_train.max()) + 1  # validation and test labels must be classes seen in training
    if len(np.unique(y_train)) < 2:
        raise UserError(f"{name}: y_train has a single class; classification needs at least 2")
    if x_test is None and split_test:
        x_train, x_test, y_train, y_test = holdout(x_train, y_train, test_fraction, seed)
    elif x_test is not None:
        x_test = as_images(x_test, name, "x_test")
        y_test = check_labels(y_test, len(x_test), name, "y_test", num_classes)
    if x_val is None:
        x_train, x_val, y_train, y_val = holdout(x_train, y_train, val_fraction, seed)
    else:
        x_val = as_images(x_val, name, "x_val")
        y_val = check_labels(y_val, len(x_val), name, "y_val", num_classes)
    for split, x in (("x_val", x_val), ("x_test", x_test)):
        if x is not None and x.shape[1:] != x_train.shape[1:]:
            raise UserError(f"{name}: {split} images are {x.shape[1:]}, x_train images are {x_train.shape[1:]}")
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{name}: {len(class_names)} class names for {num_classes} classes")
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, num_classes, pixel_scale, class_names)
