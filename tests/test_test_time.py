"""Test-time views: the layers, the held-out choice, and a model that carries them through saving."""

import keras
import numpy as np
import pytest

from automl.saving import load_model
from automl.training.test_time import View, averaged, candidate_views, choose_views

SIDE = 6


def test_a_view_mirrors_and_shifts_images_with_the_edge_pixels_repeated():
    x = np.random.default_rng(0).random((3, 5, 7, 2)).astype("float32")
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
    assert np.array_equal(keras.ops.convert_to_numpy(View(flip=True)(x)), x[:, :, ::-1])
    assert np.array_equal(keras.ops.convert_to_numpy(View(dy=1)(x)), padded[:, 2:7, 1:8])
    assert np.array_equal(keras.ops.convert_to_numpy(View(dx=-1)(x)), padded[:, 1:6, 0:7])
    both = padded[:, :, ::-1][:, 0:5, 2:9]  # mirrored first, then shifted
    assert np.array_equal(keras.ops.convert_to_numpy(View(flip=True, dy=-1, dx=1)(x)), both)


def _left_column_reader(steepness: float) -> keras.Model:
    """Two classes from the sum of an image's left column: class 1 where it is above its mean."""
    inputs = keras.Input((SIDE, SIDE, 1))
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(keras.layers.Flatten()(inputs))
    left = np.zeros((SIDE * SIDE, 2), "float32")
    left[::SIDE] = [-steepness, steepness]
    dense.set_weights([left, np.array([1, -1], "float32") * steepness * SIDE / 2])
    return keras.Model(inputs, outputs)


def _images(n=2000, seed=0):
    x = np.random.default_rng(seed).random((n, SIDE, SIDE, 1)).astype("float32")
    return x, x[:, :, 0, 0].sum(axis=1), x[:, :, -1, 0].sum(axis=1)


@pytest.mark.parametrize("objective", ["val_accuracy", "val_loss"])
def test_views_are_chosen_where_the_held_out_images_say_they_pay(objective):
    # The class is set by both edge columns, the model reads only the left one: its mirror image
    # shows it the right one, and shifts show it neither.
    x, left, right = _images()
    y = (left + right > SIDE).astype(int)
    choice = choose_views(_left_column_reader(2.0), x, y, objective)
    assert choice.name == "mirror" and choice.gain > choice.error > 0
    assert "average 2 views (mirror)" in choice.why and "2,000 held-out" in choice.why


def test_the_image_as_it_is_is_kept_where_no_view_beats_it():
    x, left, _ = _images()
    choice = choose_views(_left_column_reader(50.0), x, (left > SIDE / 2).astype(int), "val_accuracy")
    assert choice.name is None and choice.views == [None] and "no test-time views" in choice.why


def test_a_model_with_views_is_saved_loaded_and_exported_predicting_the_mean_of_its_views(tmp_path):
    x, _, _ = _images(64, seed=1)
    plain = _left_column_reader(2.0)
    views = candidate_views()["mirror+shifts"]
    model = averaged([plain], views)
    expected = np.mean([plain.predict(x if v is None else keras.ops.convert_to_numpy(v(x)), verbose=0)
                        for v in views], axis=0)
    assert np.allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert np.allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    if keras.backend.backend() == "tensorflow":
        loaded.export(str(tmp_path / "saved_model"), format="tf_saved_model", verbose=False)
        assert (tmp_path / "saved_model" / "saved_model.pb").is_file()


def test_a_final_of_several_models_averages_them_and_starts_none_its_time_cannot_train(digits):
    from automl.config import TrialConfig
    from automl.recipe.final import train_final
    from automl.space import SearchSpace

    from .conftest import SPACES

    config = TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())
    started = []

    def callbacks(member):
        started.append(member)
        return []

    trained = train_final(config, digits, epochs=3, seconds=600, seed=0, objective="val_accuracy",
                          callbacks=callbacks, members=2, epoch_estimate=1.0)
    model, metrics = trained.result.model, trained.result.metrics
    assert started == [0, 1] and len(trained.members_held_out) == 2
    assert [layer.name for layer in model.layers if isinstance(layer, keras.Model)] == ["member_1", "member_2"]
    predicted = model.predict(digits.x_test, verbose=0).argmax(axis=1)
    assert metrics["test_accuracy"] == pytest.approx((predicted == digits.y_test).mean())
    assert 0.8 <= metrics["single_test_accuracy"] <= 1.0
    # 10 s an epoch foreseen, 50 s in all: what is left for the second model affords fewer than 8
    alone = train_final(config, digits, epochs=3, seconds=50, seed=0, objective="val_accuracy",
                        callbacks=lambda member: [], members=2, epoch_estimate=10.0)
    assert len(alone.members_held_out) == 1 and "single_test_accuracy" not in alone.result.metrics


def test_a_finals_later_models_leave_room_for_what_building_and_compiling_the_last_one_took(digits, monkeypatch):
    """A member's seconds bound its training only: the next member's are cut by the last one's
    build, compile and evaluation (planted here as 100 s more than it took)."""
    from automl.config import TrialConfig
    from automl.recipe import final
    from automl.space import SearchSpace

    from .conftest import SPACES

    config = TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())
    given, real_fit = [], final.fit

    def slow_to_build(*args, seconds, **kwargs):
        given.append(seconds)
        result = real_fit(*args, seconds=seconds, **kwargs)
        result.seconds += 100.0
        return result

    monkeypatch.setattr(final, "fit", slow_to_build)
    final.train_final(config, digits, epochs=2, seconds=600, seed=0, objective="val_accuracy",
                      callbacks=lambda member: [], members=2, epoch_estimate=1.0)
    assert len(given) == 2 and given[1] <= 600 - 100 < given[0] * 2
