"""Training: schedules, optimizers, the fit loop and its failure modes, on real digits data."""

import math

import keras
import numpy as np
import pytest

from automl.config import Training, TrialConfig
from automl.errors import TrialFailed
from automl.space import SearchSpace
from automl.training.fit import fit
from automl.training.optimizers import OPTIMIZERS, make_optimizer
from automl.training.schedules import learning_rate

from .conftest import SPACES

TINY_MODEL = {"stem": [{"filters": 8}], "stages": [{"family": "vgg", "filters": 16, "convs": 1}]}


def _lr(schedule: dict, steps=10, epochs=10, **training):
    t = Training.model_validate({"optimizer": {"name": "sgd", "learning_rate": 0.1}, "schedule": schedule,
                                 **training})
    lr = learning_rate(t, steps, epochs)
    return lambda step: float(keras.ops.convert_to_numpy(lr(step))) if callable(lr) else lr


def test_constant_and_batch_scaling():
    assert _lr({"name": "constant"})(50) == pytest.approx(0.1)
    assert _lr({"name": "constant", "warmup_epochs": 1})(4) == pytest.approx(0.05)
    assert _lr({"name": "step", "every_epochs": 30})(99) == pytest.approx(0.1)  # no boundary within 10 epochs
    assert _lr({"name": "constant"}, batch_size=512, lr_scaling_batch=256)(0) == pytest.approx(0.2)


def test_step_decay_every_n_epochs():
    lr = _lr({"name": "step", "every_epochs": 3, "factor": 0.1})
    assert [round(lr(s), 6) for s in (0, 29, 31, 61, 95)] == [0.1, 0.1, 0.01, 0.001, 0.0001]


def test_cosine_with_warmup():
    lr = _lr({"name": "cosine", "warmup_epochs": 2, "alpha": 0.1})
    assert lr(0) < 0.01 and lr(10) == pytest.approx(0.05, rel=0.05)
    assert lr(20) == pytest.approx(0.1, rel=1e-3)
    assert lr(100) == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("schedule", [
    {"name": "exponential"}, {"name": "linear"}, {"name": "inverse_sqrt"}, {"name": "step", "every_epochs": 3},
])
def test_linear_warmup_in_front_of_any_schedule(schedule):
    lr = _lr({**schedule, "warmup_epochs": 1})
    assert lr(0) == pytest.approx(0.01, rel=1e-3)  # step 1 of 10 warm-up steps
    assert lr(4) == pytest.approx(0.05, rel=1e-3)
    assert lr(10) == pytest.approx(0.1, rel=1e-3)  # the schedule starts after the warm-up
    assert lr(99) < 0.1


def test_decays():
    assert _lr({"name": "exponential", "decay_per_epoch": 0.5})(20) == pytest.approx(0.025)
    linear = _lr({"name": "linear", "end_factor": 0.0})
    assert linear(50) == pytest.approx(0.05) and linear(100) == pytest.approx(0.0, abs=1e-9)
    inverse = _lr({"name": "inverse_sqrt", "timescale_epochs": 1})
    assert inverse(5) == pytest.approx(0.1) and inverse(40) == pytest.approx(0.05)


def test_cosine_restarts_jump_back_up():
    lr = _lr({"name": "cosine_restarts", "first_epochs": 2, "t_mul": 1.0})
    assert lr(19) < 0.01 and lr(20) == pytest.approx(0.1)


def test_one_cycle_peaks_after_pct_start():
    lr = _lr({"name": "one_cycle", "pct_start": 0.3, "div_factor": 10, "final_div_factor": 100})
    values = [lr(s) for s in range(100)]
    assert values[0] == pytest.approx(0.01, rel=0.05)
    assert int(np.argmax(values)) in (29, 30) and max(values) == pytest.approx(0.1, rel=0.01)
    assert values[-1] < 0.001


def test_plateau_forbids_warmup():
    with pytest.raises(ValueError):
        Training.model_validate({"schedule": {"name": "plateau", "warmup_epochs": 1}})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_with_its_fields(name):
    t = Training.model_validate({"optimizer": {"name": name, "learning_rate": 0.003, "clipnorm": 1.0}})
    optimizer = make_optimizer(t.optimizer, 0.003)
    assert isinstance(optimizer, OPTIMIZERS[name]) and optimizer.clipnorm == 1.0
    assert float(optimizer.learning_rate) == pytest.approx(0.003)


def test_optimizer_specific_fields_pass_through():
    sgd = make_optimizer(Training.model_validate(
        {"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}}).optimizer, 0.1)
    assert sgd.momentum == 0.9 and sgd.nesterov
    adamw = make_optimizer(Training.model_validate(
        {"optimizer": {"name": "adamw", "weight_decay": 0.05, "beta_2": 0.99}}).optimizer, 0.1)
    assert adamw.weight_decay == 0.05 and adamw.beta_2 == 0.99


def _config(**sections) -> TrialConfig:
    return TrialConfig.model_validate({"model": TINY_MODEL, **sections})


@pytest.mark.slow
def test_quick_space_default_reaches_90_percent_on_digits(digits):
    config = TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())
    result = fit(config, digits, seed=0)
    assert result.metrics["test_accuracy"] >= 0.90
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert len(result.history["loss"]) == config.training.epochs
    rates = result.history["learning_rate"]  # cosine decay: the logged rate falls every epoch
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))


def test_best_epoch_weights_are_kept(digits):
    config = _config(training={"epochs": 4, "optimizer": {"name": "adam", "learning_rate": 0.05}})
    result = fit(config, digits, seed=1)
    best = result.best_epoch - 1
    assert result.history["val_accuracy"][best] == max(result.history["val_accuracy"])
    y_val = keras.utils.to_categorical(digits.y_val, digits.num_classes)
    _, accuracy = result.model.evaluate(digits.x_val, y_val, verbose=0)
    assert accuracy == pytest.approx(result.history["val_accuracy"][best], abs=1e-6)


def test_nan_loss_fails_the_trial_with_a_reason(digits):
    # the largest rate the schema allows, and an L2 penalty that makes each step multiply the weights by -199
    config = _config(training={"epochs": 3, "optimizer": {"name": "sgd", "learning_rate": 10.0}},
                     model={**TINY_MODEL, "batch_norm": False}, regularization={"l2": 10.0})
    with pytest.raises(TrialFailed) as info:
        fit(config, digits, seed=0)
    assert info.value.reason == "nan_loss" and "epoch 1" in info.value.detail


def test_early_stopping_and_plateau(digits):
    config = _config(training={"epochs": 12, "optimizer": {"name": "sgd", "learning_rate": 1e-9},
                               "schedule": {"name": "plateau", "patience": 1, "factor": 0.5},
                               "early_stopping": {"patience": 2}})
    result = fit(config, digits, seed=0, objective="val_loss")
    epochs = len(result.history["loss"])
    assert epochs < 12
    assert result.history["learning_rate"][-1] < result.history["learning_rate"][0]


def test_early_stopping_waits_for_its_start_epoch(digits):
    # min_delta 1: no epoch ever counts as an improvement, so patience 1 stops one epoch after watching starts
    def run(epochs, **stopping):
        config = _config(training={"epochs": epochs, "early_stopping": {"patience": 1, "min_delta": 1.0, **stopping}})
        return fit(config, digits, seed=0)

    assert len(run(6).history["loss"]) == 2
    result = run(6, start_from_epoch=3)
    assert len(result.history["loss"]) == 5 and result.best_epoch == 4  # epochs 1-3 neither stop nor count
    result = run(2, start_from_epoch=3)  # done before it watched: the last epoch is the model
    assert result.best_epoch == 2 and result.metrics["val_accuracy"] == result.history["val_accuracy"][-1]


def _batches_fit_trains_on(monkeypatch, config, digits) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(source images, images, labels) of every batch the feed gave Keras during ``fit``."""
    from automl.training.fit import MixedBatches

    seen, feed = [], MixedBatches.__getitem__

    def recorded(self, i):
        images, labels = feed(self, i)
        seen.append((self.x[self.order[i * self.batch_size:(i + 1) * self.batch_size]], images, labels))
        return images, labels

    monkeypatch.setattr(MixedBatches, "__getitem__", recorded)
    fit(config, digits, seed=0)
    assert seen, "fit did not train on the mixed feed"
    return seen


def _soft_labels(labels: np.ndarray) -> np.ndarray:
    """Rows that mix two classes (a one-hot row has a single 1)."""
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    return labels.max(axis=1) < 1 - 1e-6


def test_mixup_trains_on_blends_of_two_images_weighted_as_their_labels(monkeypatch, digits):
    config = _config(training={"epochs": 1, "batch_size": 64}, augmentation={"mixup": 0.4})
    for source, images, labels in _batches_fit_trains_on(monkeypatch, config, digits):
        mixed = _soft_labels(labels)
        assert mixed.mean() > 0.5  # only pairs of one class stay one-hot
        flat, own = images.reshape(len(images), -1), source.reshape(len(source), -1)
        tolerance = 1e-4 * np.abs(own).max()
        for i in np.flatnonzero(mixed):  # w * its own image + (1 - w) * another of the batch, w a label weight
            blends = [w * own[i] + (1 - w) * own for w in labels[i][labels[i] > 0]]
            assert min(np.abs(flat[i] - blend).max(axis=1).min() for blend in blends) <= tolerance


def test_cutmix_trains_on_patches_of_another_image(monkeypatch, digits):
    config = _config(training={"epochs": 1, "batch_size": 64}, augmentation={"cutmix": 1.0})
    patched = 0
    for source, images, labels in _batches_fit_trains_on(monkeypatch, config, digits):
        mixed = _soft_labels(labels)  # fewer than with mixup: a patch rounded to no pixel mixes nothing
        for i in np.flatnonzero(mixed):  # each pixel its own image's or the other's
            own = np.isclose(images[i], source[i], atol=1e-6)
            other = np.isclose(images[i][None], source, atol=1e-6)
            assert (own | other).reshape(len(source), -1).all(axis=1).any()
            patched += not own.all()
    assert patched > len(digits.x_train) / 5


def test_regularizers_and_augmentation_train(digits):
    config = _config(
        training={"epochs": 2},
        regularization={"l1": 1e-5, "l2": 1e-4, "label_smoothing": 0.1},
        augmentation={"flip": "horizontal", "translate": 0.1, "rotation": 0.05, "zoom": 0.1, "contrast": 0.1,
                      "mixup": 0.2, "cutmix": 1.0},
    )
    result = fit(config, digits, seed=0)
    assert math.isfinite(result.history["loss"][-1])
    names = {layer.name for layer in result.model.layers}
    assert {"aug_flip", "aug_translate", "aug_rotation", "aug_zoom", "aug_contrast"} <= names
    # augmentation is training-only: inference is deterministic
    x = digits.x_test[:8]
    np.testing.assert_allclose(result.model.predict(x, verbose=0), result.model.predict(x, verbose=0))


def test_randaugment_needs_colour_images():
    from automl.builder import build_model
    from automl.errors import ArchitectureError

    config = _config(augmentation={"randaugment": True})
    with pytest.raises(ArchitectureError, match="3-channel"):
        build_model(config, (8, 8, 1), 10)
    assert build_model(config, (16, 16, 3), 10).get_layer("aug_randaugment")


def test_saved_model_with_custom_schedule_reloads(digits, tmp_path):
    config = _config(training={"epochs": 1, "schedule": {"name": "inverse_sqrt", "warmup_epochs": 1}})
    result = fit(config, digits, seed=0)
    path = tmp_path / "model.keras"
    result.model.save(path)
    loaded = keras.models.load_model(path)
    x = digits.x_test[:16]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)
    assert type(loaded.optimizer.learning_rate) is not float


def test_mixed_precision_and_xla_train_and_leave_the_policy_as_it_was(digits):
    from automl.hpo.settings import SearchSettings
    from automl.hpo.workers import precision

    config = TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())
    with precision(SearchSettings(space="quick.yaml", mixed_precision=True)):
        result = fit(config, digits, epochs=2, jit_compile=True, seed=0)
    convs = [layer for layer in result.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "float16" for layer in convs)
    assert result.model.layers[-1].compute_dtype == "float32"  # softmax in float32
    assert result.metrics["val_accuracy"] > 0.5
    assert keras.mixed_precision.global_policy().name == "float32"
