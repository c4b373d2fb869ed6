"""Image files as data: a folder with one sub-folder per class, or a CSV of image paths and labels.

Both read PNG/JPEG files with Pillow into one uint8 NHWC array: 1 channel when every image is
grayscale, else RGB; all images must share one size unless ``image_size=(H, W)`` resizes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from automl.data.dataset import Dataset, make_dataset
from automl.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# What Pillow may decode: without a list it tries every format it knows by content, whatever the
# file's name (an EPS file named .png reaches Ghostscript)
PILLOW_FORMATS = ("PNG", "JPEG")
PATH_COLUMNS = ("path", "image", "filename", "file")
LABEL_COLUMNS = ("label", "class", "target")
MAX_SIDE = 4096  # of a resized image: 10^5 x 10^5 would ask for 10 GB an image
GRAY_MODES = ("1", "L", "LA", "I", "F")  # and the 16-bit "I;16..." modes


def check_image_size(image_size) -> tuple[int, int] | None:
    """None or two positive integers (H, W)."""
    if image_size is None:
        return None
    try:
        h, w = image_size
        valid = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in (h, w))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise UserError(f"--image-size: expected two integers H,W from 1 to {MAX_SIDE}, got {image_size!r}")
    return int(h), int(w)


def _is_gray(mode: str) -> bool:
    return mode in GRAY_MODES or mode.startswith("I;")


def to_8bit(image, channels: int):
    """A Pillow image as mode L (channels=1) or RGB (channels=3); 16-bit gray is scaled, not clipped."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        pixels = np.asarray(image, dtype="float64")
        if pixels.size and pixels.max() > 255:
            pixels = pixels / 257.0  # 16-bit range to 8-bit
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")


def read_images(files: Sequence[Path], source: str, image_size: tuple[int, int] | None = None,
                lines: Sequence[int] | None = None) -> np.ndarray:
    """Read image files into a uint8 (N, H, W, C) array.

    ``source`` (the folder or CSV file) starts the messages of errors about the set as a whole;
    errors about one file name it, and its CSV line where ``lines`` are given.
    """
    from PIL import Image

    def where(i: int) -> str:
        return f"{source}:{lines[i]}: {files[i]}" if lines is not None else str(files[i])

    def unreadable(i: int, exc: Exception) -> UserError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return UserError(f"{where(i)}: not a readable PNG/JPEG image ({reason})")

    sizes, gray = [], True  # first pass: headers only (Pillow opens lazily)
    for i, file in enumerate(files):
        try:
            with Image.open(file, formats=PILLOW_FORMATS) as image:
                sizes.append((image.height, image.width))
                gray = gray and _is_gray(image.mode)
        except Exception as exc:  # Pillow raises many types for corrupt files
            raise unreadable(i, exc) from None
    if image_size is None:
        for i, size in enumerate(sizes):
            if size != sizes[0]:
                name = (lambda j: f"{files[j]} (line {lines[j]})") if lines is not None else (lambda j: str(files[j]))
                raise UserError(f"{source}: images differ in size: {name(0)} is {sizes[0][0]}x{sizes[0][1]}, "
                                f"{name(i)} is {size[0]}x{size[1]} (HxW); resize them all with --image-size H,W")
    h, w = image_size or sizes[0]
    channels = 1 if gray else 3
    out = np.empty((len(files), h, w, channels), np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file, formats=PILLOW_FORMATS) as image:
                image = to_8bit(image, channels)
                if (image.height, image.width) != (h, w):
                    image = image.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(image).reshape(h, w, channels)
        except Exception as exc:
            raise unreadable(i, exc) from None
    return out


def resize_array(x: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize NHWC images (bilinear), keeping their dtype: for sources that come as arrays."""
    from PIL import Image

    h, w = image_size
    if x.shape[1:3] == (h, w):
        return x
    out = np.empty((len(x), h, w, x.shape[3]), x.dtype)
    for i, image in enumerate(x):
        if x.dtype == np.uint8 and x.shape[3] in (1, 3):
            plane = image[..., 0] if x.shape[3] == 1 else image
            out[i] = np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, -1)
            continue
        for c in range(x.shape[3]):  # other channel counts and float images: one channel at a time
            plane = image[..., c] if x.dtype == np.uint8 else image[..., c].astype(np.float32)
            out[i, ..., c] = np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BILINEAR))
    return out


def _image_dataset(name: str, x: np.ndarray, labels: np.ndarray, class_names: list[str], seed: int) -> Dataset:
    return make_dataset(name, x, labels, seed=seed, pixel_scale=1 / 255, class_names=class_names)


def image_folder(path: str, seed: int = 0, image_size: tuple[int, int] | None = None) -> Dataset:
    """A folder with one sub-folder of PNG/JPEG images per class; class names = sorted sub-folder names."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: no such folder")
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{path}: no class sub-folders; expected one sub-folder of PNG/JPEG images per class")
    if len(classes) == 1:
        raise UserError(f"{path}: only one class sub-folder ('{classes[0].name}'); classification needs at least 2")
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        found = sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(class_dir).parts))
        if not found:
            raise UserError(f"{path}: class folder '{class_dir.name}' has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    x = read_images(files, path, image_size)
    return _image_dataset(path, x, np.array(labels, "int64"), [d.name for d in classes], seed)


def _column(columns: list[str], accepted: Sequence[str]) -> str | None:
    by_name = {str(c).strip().lower(): c for c in columns}
    return next((by_name[n] for n in accepted if n in by_name), None)


def image_csv(path: str, seed: int = 0, image_size: tuple[int, int] | None = None) -> Dataset:
    """A CSV file with an image-path column and a label column; relative paths are from the CSV's folder.

    Labels are strings (class names = sorted unique strings) or integers (class names = their str,
    in numeric order; the class index is the position in that order).
    """
    import pandas as pd

    csv = Path(path)
    if not csv.is_file():
        raise UserError(f"{path}: no such file")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty CSV file; expected a header line and one line per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())})") from None
    columns = list(table.columns)
    path_col, label_col = _column(columns, PATH_COLUMNS), _column(columns, LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise UserError(f"{path}: found columns {', '.join(map(str, columns))}; expected an image-path column "
                        f"({'/'.join(PATH_COLUMNS)}) and a label column ({'/'.join(LABEL_COLUMNS)})")
    files, values, lines = [], [], []
    for row, (file, value) in enumerate(zip(table[path_col], table[label_col], strict=True)):
        line = row + 2  # line 1 is the header; blank lines are kept as rows, so numbers match the file
        file, value = file.strip(), value.strip()
        if not file and not value and not any(str(v).strip() for v in table.iloc[row]):
            continue  # a blank line
        for column, text in ((path_col, file), (label_col, value)):
            if not text:
                raise UserError(f"{path}:{line}: empty '{column}' value")
        image = Path(file).expanduser()
        image = image if image.is_absolute() else csv.parent / image
        if not image.is_file():
            raise UserError(f"{path}:{line}: image file {image} not found")
        files.append(image)
        values.append(value)
        lines.append(line)
    if not files:
        raise UserError(f"{path}: empty CSV file; it has a header but no image lines")
    if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
        numbers = [int(v) for v in values]
        classes = sorted(set(numbers))
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[n] for n in numbers]
        class_names = [str(c) for c in classes]
    else:
        class_names = sorted(set(values))
        index = {c: i for i, c in enumerate(class_names)}
        labels = [index[v] for v in values]
    if len(class_names) < 2:
        raise UserError(f"{path}: every image has label '{class_names[0]}'; classification needs at least 2 classes")
    x = read_images(files, path, image_size, lines=lines)
    return _image_dataset(path, x, np.array(labels, "int64"), class_names, seed)
