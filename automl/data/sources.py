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
from automl.errors import UserError, one_line


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
    except Exception as exc:  # a broken zip, or not an archive at all (np.load raises several types)
        raise UserError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: a single .npy array, not a .npz archive of named arrays")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise UserError(f"{path}: array '{key}' holds Python objects; save numeric arrays") from None
                raise UserError(f"{path}: array '{key}' is unreadable ({one_line(exc)})") from None
            except Exception as exc:  # a damaged member: zipfile, zlib and EOF errors
                raise UserError(f"{path}: array '{key}' is unreadable ({one_line(exc)})") from None
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


def data_kind(spec: str) -> str:
    """What ``spec`` names: a source in SOURCES, a folder, a csv or an npz file; checks only that it
    exists, reading nothing, so a command can refuse a bad ``--data`` before its slow imports."""
    if spec in SOURCES:
        return "source"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".npz"):
        if not path.is_file():
            raise UserError(f"{spec}: no such file")
        return suffix[1:]
    if path.exists():
        raise UserError(f"{spec}: not a folder of images (one sub-folder per class), a .csv or a .npz file")
    if suffix or "/" in spec or os.sep in spec:
        raise UserError(f"{spec}: no such file or folder")
    raise UserError(f"--data: unknown data set '{spec}'; use one of {', '.join(SOURCES)}, "
                    "a folder of images (one sub-folder per class), a .csv or a .npz file")


def load_dataset(spec: str, seed: int = 0, image_size: tuple[int, int] | None = None) -> Dataset:
    """``spec`` is a source name (see SOURCES), a folder of images with one sub-folder per class,
    a .csv file of image paths and labels, or a .npz file. ``image_size=(H, W)`` resizes the images."""
    image_size = check_image_size(image_size)
    kind = data_kind(spec)
    if kind == "source":
        return _resized(SOURCES[spec](seed=seed), image_size)
    if kind == "folder":
        return image_folder(spec, seed=seed, image_size=image_size)
    if kind == "csv":
        return image_csv(spec, seed=seed, image_size=image_size)
    return _resized(npz(spec, seed=seed), image_size)
