"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through ``keras.datasets``, checking the local cache first.

Keras keeps downloads under ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``). Fashion-MNIST
can also come from Debian's ``dataset-fashion-mnist`` package, copied into that cache. With
``AUTOML_OFFLINE`` set, a data set missing from the cache is an error instead of a download; a failed
download is an error too, with a hint on how to get the files.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from automl.data.dataset import Dataset, make_dataset
from automl.errors import UserError, one_line

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class KerasDataset:
    name: str
    files: tuple[str, ...]  # under the cache's datasets/ folder, as keras.datasets.<name>.load_data() names them
    origin: str  # where Keras downloads from: for the hint
    class_names: tuple[str, ...] | None  # None: read or numbered after loading


KERAS_DATASETS = {
    "mnist": KerasDataset("mnist", ("mnist.npz",), _ORIGIN + "mnist.npz", tuple(str(i) for i in range(10))),
    "fashion_mnist": KerasDataset(
        "fashion_mnist", tuple(f"fashion-mnist/{f}" for f in FASHION_MNIST_FILES), _ORIGIN,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": KerasDataset(
        "cifar10", ("cifar-10-batches-py-target_archive",), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": KerasDataset(
        "cifar100", ("cifar-100-python-target_archive",), "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        None),
}


def offline() -> bool:
    return os.environ.get("AUTOML_OFFLINE", "").strip().lower() in _TRUE


def keras_home() -> str:
    """The Keras home as ``keras.src.backend.config`` picks it, but from the environment now, not at import."""
    if "KERAS_HOME" in os.environ:
        return os.path.expanduser(os.environ["KERAS_HOME"])
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def datasets_dir() -> Path:
    """The folder ``keras.utils.get_file`` caches data sets in (it falls back to /tmp when home is read-only)."""
    home = keras_home()
    try:
        os.makedirs(home, exist_ok=True)  # Keras creates its home at import
    except OSError:
        pass
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "datasets"


@contextmanager
def _keras_home(home: str):
    """Make Keras use ``home``: it reads KERAS_HOME once, at import, into a private module variable."""
    from keras.src.backend import config

    previous = getattr(config, "_KERAS_DIR", None)
    if previous is None or os.path.expanduser(previous) == home:
        yield
        return
    config._KERAS_DIR = home
    try:
        yield
    finally:
        config._KERAS_DIR = previous


def _hint(spec: KerasDataset, cache: Path) -> str:
    if spec.name == "fashion_mnist":
        return ("install it with 'apt-get install dataset-fashion-mnist' (or set AUTOML_FASHION_MNIST_DIR to a folder "
                f"with its four .gz files), or copy those files into {cache / 'fashion-mnist'}")
    return f"download {spec.origin} and save it as {cache / spec.files[0]}"


def _from_debian(cache: Path) -> Path | None:
    """Copy Debian's Fashion-MNIST files into the Keras cache; the folder they came from, or None."""
    source = Path(os.environ.get("AUTOML_FASHION_MNIST_DIR") or DEBIAN_FASHION_MNIST)
    if not all((source / f).is_file() for f in FASHION_MNIST_FILES):
        return None
    target = cache / "fashion-mnist"
    for f in FASHION_MNIST_FILES:
        if not (target / f).is_file():
            try:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / f, target / f)
            except OSError as exc:
                raise UserError(f"fashion_mnist: could not copy {source / f} into {target} ({exc})") from None
    return source


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar100_names(cache: Path) -> list[str] | None:
    """Fine label names from the extracted archive's ``meta`` file (plain lists of bytes)."""
    try:
        with open(cache / "cifar-100-python-target" / "cifar-100-python" / "meta", "rb") as f:
            names = _NoGlobals(f, encoding="bytes").load()[b"fine_label_names"]
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except Exception:  # an unexpected layout: numbered classes instead
        return None


def load_keras_dataset(name: str, seed: int = 0) -> Dataset:
    """A ``keras.datasets`` data set: its own test split, a validation split by ``seed``, uint8 pixels."""
    spec = KERAS_DATASETS[name]
    cache = datasets_dir()
    missing = [cache / f for f in spec.files if not (cache / f).is_file()]
    if missing and name == "fashion_mnist" and _from_debian(cache):
        missing = []
    if missing and offline():
        looked = f"{missing[0]} not found"
        if name == "fashion_mnist":
            looked += f", nor {os.environ.get('AUTOML_FASHION_MNIST_DIR') or DEBIAN_FASHION_MNIST}"
        raise UserError(f"{name}: not in the Keras cache ({looked}) and AUTOML_OFFLINE is set; {_hint(spec, cache)}")

    import keras

    loader = getattr(keras.datasets, name).load_data
    try:
        with _keras_home(str(cache.parent)):
            (x_train, y_train), (x_test, y_test) = loader()
    except Exception as exc:  # network errors come as plain Exception("URL fetch failure ...")
        if missing:
            raise UserError(f"{name}: not in the Keras cache ({missing[0]} not found) and the download failed "
                            f"({one_line(exc)}); {_hint(spec, cache)}") from None
        raise UserError(f"{name}: could not load it from the Keras cache {cache} ({one_line(exc)}); "
                        f"{_hint(spec, cache)}") from None
    class_names = list(spec.class_names) if spec.class_names else None
    if name == "cifar100":
        class_names = _cifar100_names(cache)
        if class_names is None or len(class_names) != int(y_train.max()) + 1:
            class_names = [str(i) for i in range(int(y_train.max()) + 1)]
    return make_dataset(name, x_train, y_train, x_test=x_test, y_test=y_test, seed=seed, pixel_scale=1 / 255,
                        class_names=class_names)
