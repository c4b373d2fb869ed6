"""Data sources by name: the spec given to ``--data``."""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path

import numpy as np

from automl.data.dataset import Dataset, make_dataset
from automl.data.image_files import check_image_size, image_csv, image_folder, resize_array
from automl.data.keras_datasets import KERAS_DATASETS, load_keras_dataset
from automl.errors import UserError


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): offline."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return make_dataset("digits", bunch.images.astype("float32"), bunch.target, seed=seed, pixel_scale=1 / 16,
                        class_names=[str(c) for c in bunch.target_names])


def npz(path: str, seed: int = 0) -> Dataset:
    """A NumPy archive with x_train, y_train and optional x_val/y_val, x_test/y_test."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    with archive:
        arrays = {k: archive[k] for k in archive.files}
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise UserError(f"{path}: missing array '{key}' (found: {', '.join(sorted(arrays)) or 'none'})")
    for x_key, y_key in (("x_val", "y_val"), ("x_test", "y_test")):
        if (x_key in arrays) != (y_key in arrays):
            raise UserError(f"{path}: '{x_key}' and '{y_key}' must be given together")
    return make_dataset(
        path,
        arrays["x_train"],
        arrays["y_train"],
        x_val=arrays.get("x_val"),
        y_val=arrays.get("y_val"),
        x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"),
        seed=seed,
    )


SOURCES = {"digits": digits, **{name: partial(load_keras_dataset, name) for name in KERAS_DATASETS}}


def _resized(data: Dataset, image_size: tuple[int, int] | None) -> Dataset:
    if image_size is None or data.input_shape[:2] == image_size:
        return data
    return dataclasses.replace(
        data,
        x_train=resize_array(data.x_train, image_size),
        x_val=resize_array(data.x_val, image_size),
        x_test=None if data.x_test is None else resize_array(data.x_test, image_size),
    )


def load_dataset(spec: str, seed: int = 0, image_size: tuple[int, int] | None = None) -> Dataset:
    """``spec`` is a source name (see SOURCES), a folder of images with one sub-folder per class,
    a .csv file of image paths and labels, or a .npz file. ``image_size=(H, W)`` resizes the images."""
    image_size = check_image_size(image_size)
    if spec in SOURCES:
        return _resized(SOURCES[spec](seed=seed), image_size)
    path = Path(spec)
    if path.is_dir():
        return image_folder(spec, seed=seed, image_size=image_size)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return image_csv(spec, seed=seed, image_size=image_size)
    if suffix == ".npz":
        return _resized(npz(spec, seed=seed), image_size)
    if path.exists():
        raise UserError(f"{spec}: not a folder of images (one sub-folder per class), a .csv or a .npz file")
    if suffix or "/" in spec or os.sep in spec:
        raise UserError(f"{spec}: no such file or folder")
    raise UserError(f"--data: unknown data set '{spec}'; use one of {', '.join(SOURCES)}, "
                    "a folder of images (one sub-folder per class), a .csv or a .npz file")
