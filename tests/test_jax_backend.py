"""Model and training code is backend-agnostic Keras 3: the same trial runs on JAX (the GPU path)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import math
    import keras
    from automl.config import TrialConfig
    from automl.data import load_dataset
    from automl.training.fit import fit

    assert keras.backend.backend() == "jax"
    config = TrialConfig.model_validate({
        "model": {"stem": [{"filters": 8}],
                  "stages": [{"family": "resnet", "filters": 8, "blocks": 1, "preact": True, "se": True}]},
        "training": {"epochs": 1, "optimizer": {"name": "adamw"},
                     "schedule": {"name": "inverse_sqrt", "warmup_epochs": 1}},
        "regularization": {"stochastic_depth": 0.1, "label_smoothing": 0.1},
        "augmentation": {"mixup": 0.2},
    })
    result = fit(config, load_dataset("digits"), seed=0)
    assert math.isfinite(result.metrics["val_loss"])
    result.model.save("model.keras")
    print("ok", keras.models.load_model("model.keras").count_params() == result.params)
    """
)


def test_trial_trains_and_saves_on_the_jax_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok True")
