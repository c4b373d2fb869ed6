"""The recipe's early checks catch planted faults with the right diagnosis, on real digits."""

import dataclasses
import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from automl.config import TrialConfig
from automl.data import make_dataset
from automl.recipe.checks import check_initial_loss, check_overfit, lr_range_test, plain
from automl.space import SearchSpace

from .conftest import SPACES


@pytest.fixture(scope="module")
def quick() -> TrialConfig:
    return TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())


def test_plain_strips_regularization(quick):
    config = quick.model_dump()
    config["regularization"] = {"l2": 1e-3, "label_smoothing": 0.1}
    config["augmentation"] = {"mixup": 0.2}
    stripped = plain(TrialConfig.model_validate(config))
    assert stripped.regularization.l2 == 0 and stripped.augmentation.mixup == 0
    assert stripped.training.schedule.name == "constant" and stripped.model.head.dropout == 0


class _Trained(keras.callbacks.Callback):
    """What a check trains: its optimizer's weight decay, and whether its loss has a weight penalty."""

    def on_train_begin(self, logs=None):
        self.weight_decay = self.model.optimizer.weight_decay
        self.penalized = bool(self.model.losses)


def test_lr_sweep_keeps_the_configurations_weight_decay_and_l2_and_the_checks_do_not(quick, digits):
    config = quick.model_dump()
    config["training"]["optimizer"] = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4}
    config["regularization"] = {"l2": 1e-5, "label_smoothing": 0.1}
    config["model"]["head"]["dropout"] = 0.3
    config = TrialConfig.model_validate(config)
    sweep, overfit = _Trained(), _Trained()
    lr_range_test(config, digits, steps=10, callbacks=[sweep])
    check_overfit(config, digits, batches=1, max_epochs=1, callbacks=[overfit])
    assert sweep.weight_decay == pytest.approx(1e-4) and sweep.penalized  # as the trials will train
    assert overfit.weight_decay == 0 and not overfit.penalized
    sanity = plain(config)  # what check_initial_loss builds
    assert sanity.training.optimizer.weight_decay == 0 and sanity.regularization.l2 == 0


def test_initial_loss_is_near_ln_c_on_healthy_data(quick, digits):
    finding = check_initial_loss(quick, digits)
    assert finding.ok and finding.verdict == "healthy"
    assert abs(finding.measured["initial_loss"] - math.log(10)) < 0.5 * math.log(10)


def test_raw_0_255_inputs_without_normalization_are_caught(quick):
    bunch = load_digits()
    raw = make_dataset("raw", (bunch.images * 255 / 16).astype("float32"), bunch.target)  # float: scale 1
    finding = check_initial_loss(quick, raw)
    assert not finding.ok and finding.verdict == "unscaled_inputs"
    assert finding.measured["ratio"] > 2 and "normalize" in finding.summary


def test_overfit_memorizes_a_tiny_subset(quick, digits):
    finding = check_overfit(quick, digits)
    assert finding.ok and finding.measured["train_accuracy"] >= 0.99
    assert finding.measured["val_accuracy"] > 0.5


def test_far_too_high_learning_rate_diverges_in_the_overfit_stage(quick, digits):
    config = quick.model_dump()
    config["model"]["batch_norm"] = False
    config["training"]["optimizer"] = {"name": "sgd", "learning_rate": 10.0}  # the schema's largest
    config["regularization"]["l2"] = 10.0  # so each step multiplies the weights by -199
    finding = check_overfit(TrialConfig.model_validate(config), digits)
    assert not finding.ok and finding.verdict == "diverged" and "too high" in finding.summary


def test_shuffled_labels_are_memorized_but_carry_no_signal(quick):
    bunch = load_digits()
    labels = np.random.default_rng(0).permutation(bunch.target)
    shuffled = make_dataset("shuffled", bunch.images.astype("float32"), labels, pixel_scale=1 / 16)
    finding = check_overfit(quick, shuffled)
    assert not finding.ok and finding.verdict == "no_signal"
    assert finding.measured["train_accuracy"] >= 0.9 and "no signal" in finding.summary


def test_lr_range_test_finds_a_band_below_divergence(quick, digits):
    result = lr_range_test(quick, digits)
    assert result.finding.ok
    low, high = result.band
    assert 1e-4 < low < result.suggested <= high < 1.0  # Adam on digits: around 1e-3
    assert len(result.learning_rates) == len(result.losses) > 50
    assert min(result.losses) < 0.5 * result.losses[0]


def test_overfit_stops_once_it_fits_enough_to_pass_when_its_time_is_up(quick, digits):
    finding = check_overfit(quick, digits, seconds=0)
    assert finding.ok and finding.verdict == "healthy"
    assert 0.9 <= finding.measured["train_accuracy"] < 0.999 and "enough to pass" in finding.summary
    assert finding.measured["epochs"] < check_overfit(quick, digits).measured["epochs"]


def test_overfit_on_fewer_images_than_its_batches_hold_trains_as_many_steps(quick):
    """40 images are one batch of 64: 2 epochs of 4 batches become up to 8 epochs of one (fewer
    once memorized: even shuffled labels, on so few images)."""
    bunch = load_digits()
    labels = np.random.default_rng(0).permutation(bunch.target)
    shuffled = make_dataset("few", bunch.images.astype("float32"), labels, pixel_scale=1 / 16)
    few = dataclasses.replace(shuffled, x_train=shuffled.x_train[:40], y_train=shuffled.y_train[:40])
    assert quick.training.batch_size == 64
    finding = check_overfit(quick, few, batches=4, max_epochs=2)
    assert finding.measured["subset"] == 40 and 2 < finding.measured["epochs"] <= 8, finding
