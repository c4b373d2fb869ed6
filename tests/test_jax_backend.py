"""Model and training code is backend-agnostic Keras 3: the same trial runs on JAX (the GPU path)."""

import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import math
    import keras
    from automl.config import TrialConfig
    from automl.data import load_dataset
    from automl.training.fit import fit
    from automl.training.schedules import learning_rate

    assert keras.backend.backend() == "jax"
    config = TrialConfig.model_validate({
        "model": {"stem": [{"filters": 8}],
                  "stages": [{"family": "resnet", "filters": 8, "blocks": 1, "preact": True, "se": True}]},
        "training": {"epochs": 3, "optimizer": {"name": "adamw"},
                     "schedule": {"name": "inverse_sqrt", "warmup_epochs": 1}},
        "regularization": {"stochastic_depth": 0.1, "label_smoothing": 0.1},
        "augmentation": {"mixup": 0.2},
    })
    digits = load_dataset("digits")
    # a time budget that affords 2 epochs at first sight: the LR is set per epoch, fitted into it
    result = fit(config, digits, seed=0, seconds=2500.0, epoch_estimate=1000.0)
    assert math.isfinite(result.metrics["val_loss"])
    steps = math.ceil(len(digits.x_train) / config.training.batch_size)
    schedule = learning_rate(config.training, steps, 3)
    expected = [float(schedule(e * steps)) for e in (0.75, 1.875, 2.625)]
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(result.history["learning_rate"], expected, strict=True))
    result.model.save("model.keras")
    print("ok", keras.models.load_model("model.keras").count_params() == result.params)
    """
)


def test_trial_trains_and_saves_on_the_jax_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok True")


TRANSFER = textwrap.dedent(
    """
    import math
    import keras
    import numpy as np
    from automl.config import TrialConfig
    from automl.data import load_dataset
    from automl.saving import load_model
    from automl.training.fit import fit

    assert keras.backend.backend() == "jax"
    digits = load_dataset("digits")
    source = {"batch_norm": True, "stages": [{"family": "vgg", "filters": 8, "convs": 1},
                                             {"family": "resnet", "filters": 8, "blocks": 1}]}
    trained = fit(TrialConfig.model_validate({"model": source, "training": {"epochs": 1}}), digits, seed=0)
    trained.model.save("source.keras")
    config = TrialConfig.model_validate({
        "model": {"backbone": {"source": "source.keras", "trainable": "all", "warmup_epochs": 1,
                               "unfreeze_every": 1}},
        "training": {"epochs": 3, "schedule": {"name": "cosine"}},
    })

    class Kernels(keras.callbacks.Callback):  # the bottom stage's kernel after each epoch
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            layer = self.model.get_layer("backbone").get_layer("stage1_conv1_conv")
            self.seen.append(np.array(layer.kernel.numpy()))

    result = fit(config, digits, seed=0, callbacks=[Kernels()])
    before = load_model("source.keras").get_layer("stage1_conv1_conv").kernel.numpy()
    unchanged = [np.array_equal(before, kernel) for kernel in Kernels.seen]
    assert unchanged == [True, True, False], unchanged  # it unfreezes last, in the third epoch
    assert math.isfinite(result.metrics["val_loss"])
    result.model.save("transferred.keras")
    print("ok", load_model("transferred.keras").count_params() == result.params)
    """
)


def test_a_phased_transfer_trains_and_saves_on_the_jax_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", TRANSFER], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok True")
