"""Data: bundled digits, .npz files, seeded splits and clear errors for bad arrays."""

import numpy as np
import pytest

from automl.data import load_dataset
from automl.errors import UserError


def test_digits_splits_are_fixed_by_seed_and_disjoint():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.input_shape == (8, 8, 1) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    assert a.x_train.min() == 0.0 and a.x_train.max() == 16.0 and a.pixel_scale == 1 / 16  # raw pixels
    assert a.class_names == [str(i) for i in range(10)]
    rows = {x.tobytes() for x in a.x_test}
    assert not rows & {x.tobytes() for x in a.x_train}
    assert set(np.unique(a.y_val)) == set(range(10))  # stratified


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_given_splits(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 12, 10), dtype=np.uint8)
    y = np.arange(60) % 3
    data = load_dataset(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:9], y_test=y[:9],
                             x_val=x[:6], y_val=y[:6]))
    assert data.input_shape == (12, 10, 1) and data.num_classes == 3
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (60, 6, 9)
    assert data.x_train.dtype == np.uint8 and data.pixel_scale == 1 / 255


def test_npz_splits_what_is_missing(tmp_path):
    x = np.zeros((100, 4, 4, 3), "float32")
    data = load_dataset(_npz(tmp_path, x_train=x, y_train=np.arange(100) % 2))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 100 and len(data.x_test) == 20


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((4, 2, 2))}, "missing array 'y_train'"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.array([0, 1, 0])}, "y_train has 3 labels for 4 images"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.zeros(4, int)}, "single class"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.array([0, 1, -1, 0])}, "negative label -1"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.array([0, 1, 1, 0]), "x_test": np.zeros((2, 2, 2)),
      "y_test": np.array([0, 5])}, "y_test has label 5, out of range for 2 classes"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.array([0, 1, 1, 0]), "x_val": np.zeros((2, 2, 2))},
     "'x_val' and 'y_val' must be given together"),
    ({"x_train": np.zeros((4, 2, 2)), "y_train": np.array([0, 1, 1, 0]), "x_test": np.zeros((2, 3, 3)),
      "y_test": np.array([0, 1])}, "x_test images are (3, 3, 1), x_train images are (2, 2, 1)"),
    ({"x_train": np.zeros(4), "y_train": np.array([0, 1, 1, 0])}, "x_train must have shape"),
])
def test_npz_errors_name_the_file_and_problem(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(UserError) as info:
        load_dataset(path)
    assert str(info.value).startswith(path) and message in str(info.value)


def test_unknown_sources(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(UserError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(UserError, match="not a readable .npz file"):
        load_dataset(str(bad))


def test_a_subsample_is_stratified_and_keeps_no_test_split():
    from automl.data import subsample

    data = load_dataset("digits", seed=0)
    part = subsample(data, 500, 100, seed=0)
    assert (len(part.x_train), len(part.y_train), len(part.x_val)) == (500, 500, 100)
    assert part.x_test is None and part.num_classes == data.num_classes
    assert np.bincount(part.y_train).min() >= 45  # about 50 of each of the 10 classes
    assert subsample(data, 10**6, 10**6, seed=0).x_train is data.x_train  # nothing to cut
