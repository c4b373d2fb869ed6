"""Data sources by name: the spec given to ``--data``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from automl.data.dataset import Dataset, make_dataset
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


SOURCES = {"digits": digits}


def load_dataset(spec: str, seed: int = 0) -> Dataset:
    """``spec`` is a source name (see SOURCES) or a path to a .npz file."""
    if spec in SOURCES:
        return SOURCES[spec](seed=seed)
    if spec.endswith(".npz"):
        return npz(spec, seed=seed)
    raise UserError(f"--data: unknown data set '{spec}'; use one of {', '.join(SOURCES)} or a .npz file")
