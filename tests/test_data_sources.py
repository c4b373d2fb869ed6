"""Data sources: keras.datasets through a fake local cache, image folders and CSV files of images."""

import gzip
import io
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
from PIL import Image

from automl.data import load_dataset
from automl.errors import UserError


def _image(path, size=(5, 6), mode="L", value=None, fmt=None, seed=0):
    """Write an image of size (W, H); pixels random unless ``value`` fills it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    rng = np.random.default_rng(seed)
    pixels = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path, format=fmt)
    return path


def _folder(root, counts, **kwargs):
    """One sub-folder per class; class k's images are filled with pixel value 10*k + i."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _image(root / name / f"{i}.png", value=10 * k + i, **kwargs)
    return root


def _message(spec, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_dataset(str(spec), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- folders of images -------------------------------------------------------------------------------------------


def test_folder_classes_are_sorted_subfolders_and_splits_are_seeded(tmp_path):
    root = _folder(tmp_path / "imgs", {"dog": 10, "cat": 10, "bird": 10})
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    a, b, c = (load_dataset(str(root), seed=s) for s in (0, 0, 1))
    assert a.class_names == ["bird", "cat", "dog"] and a.num_classes == 3
    assert a.input_shape == (6, 5, 1) and a.x_train.dtype == np.uint8 and a.pixel_scale == 1 / 255
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 30 and len(a.x_test) == 6
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    for x, y in ((a.x_train, a.y_train), (a.x_val, a.y_val), (a.x_test, a.y_test)):
        # pixels tell the folder (dog 0-9, cat 10-19, bird 20-29); labels index the sorted names
        np.testing.assert_array_equal(x[:, 0, 0, 0] // 10, [["dog", "cat", "bird"].index(a.class_names[k]) for k in y])


def test_folder_jpeg_uppercase_extensions_nested_and_rgb(tmp_path):
    root = tmp_path / "imgs"
    for i in range(3):
        _image(root / "a" / f"{i}.JPG", fmt="JPEG", seed=i)
        _image(root / "b" / "sub" / f"{i}.Jpeg", fmt="JPEG", seed=10 + i)
        _image(root / "b" / f"{i}.PNG", fmt="PNG", seed=20 + i)
    assert load_dataset(str(root)).input_shape == (6, 5, 1)  # all grayscale: one channel
    _image(root / "a" / "colour.png", mode="RGB", seed=5)
    data = load_dataset(str(root))
    assert data.input_shape == (6, 5, 3) and data.x_train.dtype == np.uint8  # one colour image: all RGB
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 10
    gray = [x for x in np.concatenate([data.x_train, data.x_val, data.x_test]) if (x == x[..., :1]).all()]
    assert len(gray) >= 9  # grayscale images became RGB by repeating their channel


def test_folder_sizes_must_match_unless_image_size_is_given(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 4, "b": 4})
    _image(root / "b" / "big.png", size=(9, 7))
    message = _message(root)
    assert message.startswith(f"{root}: images differ in size")
    assert str(root / "a" / "0.png") in message and str(root / "b" / "big.png") in message and "is 7x9" in message
    assert "--image-size H,W" in message
    data = load_dataset(str(root), image_size=(4, 3))
    assert data.input_shape == (4, 3, 1)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 9


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "imgs"
    for k, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 257 * (100 * k + i), np.uint16)).save(root / name / f"{i}.png")
    data = load_dataset(str(root))
    values = np.concatenate([data.x_train, data.x_val, data.x_test])[:, 0, 0, 0]
    assert data.input_shape == (4, 4, 1) and sorted(values) == [0, 1, 2, 100, 101, 102]


def _bad_folder(root, case):
    if case == "other file":
        root = root.with_suffix(".txt")
        root.write_text("x")
    elif case == "no classes":
        _image(root / "0.png")
    elif case == "one class":
        _folder(root, {"only": 3})
    elif case == "empty class":
        _folder(root, {"a": 3})
        (root / "b").mkdir()
        (root / "b" / "readme.txt").write_text("no images here")
    return root


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file or folder"),
    ("other file", "not a folder of images (one sub-folder per class), a .csv or a .npz file"),
    ("no classes", "no class sub-folders; expected one sub-folder of PNG/JPEG images per class"),
    ("one class", "only one class sub-folder ('only'); classification needs at least 2"),
    ("empty class", "class folder 'b' has no images (.png, .jpg, .jpeg)"),
])
def test_folder_errors_name_the_path(tmp_path, case, expected):
    spec = _bad_folder(tmp_path / "imgs", case)
    assert _message(spec) == f"{spec}: {expected}"


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_folder_corrupt_image_is_named(tmp_path, content):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    (root / "b" / "broken.png").write_bytes(content)
    assert _message(root).startswith(f"{root / 'b' / 'broken.png'}: not a readable PNG/JPEG image (")


def test_truncated_image_is_named(tmp_path):
    root = _folder(tmp_path / "imgs", {"a": 3, "b": 3})
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 5), dtype=np.uint8)).save(buffer, "PNG")
    (root / "a" / "cut.png").write_bytes(buffer.getvalue()[:-30])  # header fine, pixel data cut off
    assert _message(root).startswith(f"{root / 'a' / 'cut.png'}: not a readable PNG/JPEG image")


# --- CSV files of image paths and labels -------------------------------------------------------------------------


def test_csv_string_labels_relative_paths_and_column_names(tmp_path):
    _folder(tmp_path / "imgs", {"x": 5, "y": 5})
    elsewhere = _image(tmp_path / "other" / "far.png", value=0)
    lines = ["Filename , CLASS,comment"] + [f"imgs/{c}/{i}.png,{c},-" for c in "yx" for i in range(5)]
    lines.append(f"{elsewhere},x,absolute path")
    csv = tmp_path / "data.csv"  # relative paths resolve against the CSV's folder
    csv.write_text("\n".join(lines) + "\n")
    data = load_dataset(str(csv), seed=3)
    assert data.class_names == ["x", "y"] and data.input_shape == (6, 5, 1) and data.pixel_scale == 1 / 255
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 11
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        np.testing.assert_array_equal(x[:, 0, 0, 0] // 10, y)  # "x" images hold 0-4, "y" images 10-14


def test_csv_integer_labels_sort_numerically(tmp_path):
    for i in range(9):
        _image(tmp_path / f"{i}.png", value=i)
    labels = [10, 3, 7] * 3
    (tmp_path / "d.csv").write_text("path,label\n" + "".join(f"{i}.png,{y}\n" for i, y in enumerate(labels)))
    data = load_dataset(str(tmp_path / "d.csv"))
    assert data.class_names == ["3", "7", "10"] and data.num_classes == 3
    x = np.concatenate([data.x_train, data.x_val, data.x_test])[:, 0, 0, 0]
    y = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert all(data.class_names[k] == str(labels[v]) for v, k in zip(x, y, strict=True))


def test_csv_resizes_with_image_size(tmp_path):
    for i in range(6):
        _image(tmp_path / f"{i}.png", size=(5 + i, 6), mode="RGB", seed=i)
    (tmp_path / "d.csv").write_text("image,target\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(6)))
    message = _message(tmp_path / "d.csv")
    assert f"{tmp_path / '0.png'} (line 2) is 6x5, {tmp_path / '1.png'} (line 3) is 6x6" in message
    assert load_dataset(str(tmp_path / "d.csv"), image_size=(8, 8)).input_shape == (8, 8, 3)


def _csv(tmp_path, text):
    for i in range(3):
        _image(tmp_path / f"{i}.png", value=i)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    csv = tmp_path / "d.csv"
    csv.write_text(text)
    return csv


@pytest.mark.parametrize("text, expected", [
    ("", "empty CSV file"),
    ("path,label\n", "empty CSV file; it has a header but no image lines"),
    ("name,kind\n0.png,a\n", "found columns name, kind; expected an image-path column (path/image/filename/file) "
                             "and a label column (label/class/target)"),
    ("path,label\n0.png,a\n\nmissing.png,b\n", "d.csv:4: image file {tmp}/missing.png not found"),
    ("path,label\n0.png,a\n1.png,\n", "d.csv:3: empty 'label' value"),
    ("path,label\n0.png,a\nbad.png,b\n", "d.csv:3: {tmp}/bad.png: not a readable PNG/JPEG image"),
    ("path,label\n0.png,a\n1.png,a\n", "every image has label 'a'; classification needs at least 2 classes"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, text, expected):
    csv = _csv(tmp_path, text)
    message = _message(csv)
    assert message.startswith(str(csv)) and expected.format(tmp=tmp_path) in message


def test_missing_csv_and_bad_image_size(tmp_path):
    assert _message(tmp_path / "none.csv") == f"{tmp_path / 'none.csv'}: no such file"
    assert "--image-size: expected two integers H,W from 1 to 4096" in _message("digits", image_size=(0, 4))


def test_image_size_resizes_array_sources():
    data = load_dataset("digits", image_size=(12, 10))
    assert data.input_shape == (12, 10, 1) and data.x_test.shape[1:] == (12, 10, 1)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() and data.x_train.max() <= 16


# --- keras.datasets through the local Keras cache ----------------------------------------------------------------


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """An empty Keras home and Debian folder; downloads fail (and are recorded) instead of reaching the network."""
    import keras  # noqa: F401  (imported before KERAS_HOME changes: Keras reads it once, at import)
    from keras.src.backend import config
    from keras.src.utils import file_utils

    home, debian = tmp_path / "keras_home", tmp_path / "debian"
    home.mkdir()
    debian.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("AUTOML_FASHION_MNIST_DIR", str(debian))
    monkeypatch.delenv("AUTOML_OFFLINE", raising=False)
    downloads = []

    def no_network(url, filename, *args):
        downloads.append(url)
        open(filename, "wb").close()  # a partial file, as a real failed download leaves
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    # The fake files are small, so their hashes differ from the real ones that load_data() checks.
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)
    keras_dir = config.keras_home()
    yield home / "datasets", debian, downloads
    assert config.keras_home() == keras_dir  # Keras' own setting is restored


def _idx_gz(path, array):
    """An MNIST-format idx file, gzipped: magic, dimensions, then uint8 data."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_the_keras_cache(keras_cache):
    cache, _, downloads = keras_cache
    rng = np.random.default_rng(0)
    cache.mkdir()
    x_train, x_test = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), rng.integers(0, 256, (20, 28, 28), np.uint8)
    np.savez(cache / "mnist.npz", x_train=x_train, y_train=np.arange(60) % 10, x_test=x_test,
             y_test=np.arange(20) % 10)
    a, b = load_dataset("mnist", seed=0), load_dataset("mnist", seed=0)
    assert downloads == []
    assert a.input_shape == (28, 28, 1) and a.x_train.dtype == np.uint8 and a.pixel_scale == 1 / 255
    assert a.class_names == [str(i) for i in range(10)] and a.num_classes == 10
    np.testing.assert_array_equal(a.x_test, x_test[..., None])  # the data set's own test split
    assert len(a.x_train) + len(a.x_val) == 60 and len(a.x_val) == 9
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert load_dataset("mnist", image_size=(14, 14)).input_shape == (14, 14, 1)


def test_fashion_mnist_from_the_debian_folder(keras_cache):
    cache, debian, downloads = keras_cache
    rng = np.random.default_rng(1)
    x_train, x_test = rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    _idx_gz(debian / "train-images-idx3-ubyte.gz", x_train)
    _idx_gz(debian / "train-labels-idx1-ubyte.gz", np.arange(40) % 10)
    _idx_gz(debian / "t10k-images-idx3-ubyte.gz", x_test)
    _idx_gz(debian / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    data = load_dataset("fashion_mnist", seed=2)
    assert downloads == []
    assert sorted(p.name for p in (cache / "fashion-mnist").iterdir()) == sorted(p.name for p in debian.iterdir())
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot" and len(data.class_names) == 10
    assert data.input_shape == (28, 28, 1) and data.x_train.dtype == np.uint8 and data.pixel_scale == 1 / 255
    np.testing.assert_array_equal(data.y_test, np.arange(10))
    np.testing.assert_array_equal(data.x_test[..., 0], x_test)
    for f in debian.iterdir():
        f.unlink()  # now from the Keras cache alone
    np.testing.assert_array_equal(load_dataset("fashion_mnist", seed=2).x_val, data.x_val)


def test_cifar100_archive_and_fine_label_names(keras_cache):
    cache, _, downloads = keras_cache
    rng = np.random.default_rng(2)

    def member(tar, name, obj):
        blob = pickle.dumps(obj, protocol=4)
        info = tarfile.TarInfo(f"cifar-100-python/{name}")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))

    cache.mkdir()
    with tarfile.open(cache / "cifar-100-python-target_archive", "w:gz") as tar:
        for name, n in (("train", 200), ("test", 100)):
            labels = {b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": [i % 20 for i in range(n)]}
            member(tar, name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), **labels})
        member(tar, "meta", {b"fine_label_names": [f"thing{i}".encode() for i in range(100)],
                             b"coarse_label_names": [f"group{i}".encode() for i in range(20)]})
    data = load_dataset("cifar100")
    assert downloads == []
    assert data.input_shape == (32, 32, 3) and data.num_classes == 100 and len(data.x_test) == 100
    assert data.class_names[:2] == ["thing0", "thing1"] and data.x_train.dtype == np.uint8


@pytest.mark.parametrize("name, looked, hint", [
    ("mnist", "{cache}/mnist.npz not found",
     "download https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz and save it as {cache}/mnist.npz"),
    ("fashion_mnist", "{cache}/fashion-mnist/train-labels-idx1-ubyte.gz not found, nor {debian}",
     "install it with 'apt-get install dataset-fashion-mnist' (or set AUTOML_FASHION_MNIST_DIR"),
    ("cifar10", "{cache}/cifar-10-batches-py-target_archive not found",
     "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and save it as "
     "{cache}/cifar-10-batches-py-target_archive"),
    ("cifar100", "{cache}/cifar-100-python-target_archive not found",
     "cifar-100-python.tar.gz and save it as {cache}/cifar-100-python-target_archive"),
])
def test_offline_without_the_files_is_a_user_error(keras_cache, monkeypatch, name, looked, hint):
    cache, debian, downloads = keras_cache
    monkeypatch.setenv("AUTOML_OFFLINE", "1")
    message = _message(name)
    looked, hint = looked.format(cache=cache, debian=debian), hint.format(cache=cache)
    assert message.startswith(f"{name}: not in the Keras cache ({looked}) and AUTOML_OFFLINE is set; ")
    assert hint in message and downloads == []


@pytest.mark.parametrize("name, hint", [("mnist", "mnist.npz"), ("fashion_mnist", "apt-get install")])
def test_failed_download_is_a_user_error(keras_cache, name, hint):
    cache, _, downloads = keras_cache
    message = _message(name)
    assert message.startswith(f"{name}: not in the Keras cache") and "the download failed (" in message
    assert "network disabled in tests" in message and hint in message
    assert downloads and not any(p.is_file() and p.stat().st_size == 0 for p in cache.rglob("*"))
