"""Predict with an exported model: raw images in, one JSON line per input out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from automl.errors import UserError, one_line
from automl.export import METADATA
from automl.saving import load_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # decoded by content: only these, whatever a file's name


def load_exported(model_dir: str | Path):
    folder = Path(model_dir)
    if not (folder / "model.keras").is_file() or not (folder / METADATA).is_file():
        raise UserError(f"--model {model_dir}: not an exported model folder (needs model.keras and {METADATA})")
    return load_model(folder / "model.keras"), json.loads((folder / METADATA).read_text())


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as the model takes it: 8-bit gray or RGB as in training (16-bit gray scaled), resized
    (nearest, as keras.utils.load_img did)."""
    from PIL import Image

    from automl.data.image_files import to_8bit

    h, w, channels = shape
    try:
        with Image.open(path, formats=PILLOW_FORMATS) as image:
            image = to_8bit(image, channels)
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.NEAREST)
            return np.asarray(image, dtype="float32").reshape(h, w, -1)
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}; png, jpg, bmp or gif)") from None


def _inputs(paths: list[str], shape: tuple[int, int, int]) -> Iterator[tuple[str, np.ndarray]]:
    for given in paths:
        path = Path(given)
        if path.suffix == ".npz" and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as archive:
                    key = next((k for k in ("x", "x_test", "images") if k in archive.files), None)
                    if key is None:
                        raise UserError(f"{path}: needs an array named x, x_test or images")
                    images = archive[key]
            except UserError:
                raise
            except Exception as exc:  # a broken zip, an object array (no pickles): zipfile, numpy errors
                raise UserError(f"{path}: not a readable .npz file ({one_line(exc)})") from None
            if images.ndim == 3:
                images = images[..., None]
            if images.shape[1:] != shape:
                raise UserError(f"{path}: images are {images.shape[1:]}, the model takes {shape}")
            for i, image in enumerate(images):
                yield f"{path}[{i}]", image
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"{path}: no images (png, jpg, bmp, gif) in this folder")
            yield from _inputs([str(f) for f in files], shape)
        elif path.is_file():
            yield str(path), _read_image(path, shape)
        else:
            raise UserError(f"--input {given}: no such file or folder")


def predict(model_dir: str | Path, inputs: list[str], batch_size: int = 256) -> Iterator[dict]:
    """One record per input image: the predicted class, its index and every class's probability."""
    model, info = load_exported(model_dir)
    shape = tuple(info["input_shape"])
    names = info["class_names"]
    items = list(_inputs(inputs, shape))
    images = np.stack([image for _, image in items]).astype("float32")
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    for (name, _), probs in zip(items, probabilities, strict=True):
        best = int(np.argmax(probs))
        yield {"input": name, "class": names[best], "index": best,
               "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs, strict=True)}}
