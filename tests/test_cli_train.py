"""`automl train`: the main job until the search driver lands; exit codes for bad input."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

from automl.data import load_dataset

from .conftest import SPACES


def _automl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "automl.cli", *args], capture_output=True, text=True, cwd=cwd)


def _error_lines(stderr: str) -> list[str]:
    """Our own lines: TensorFlow's C++ start-up notices on machines without CUDA are not ours."""
    return [line for line in stderr.splitlines() if line.startswith("automl:") or "Traceback" in line]


def test_train_writes_model_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    proc = _automl("train", "--space", str(SPACES / "quick.yaml"), "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stdout and "test accuracy" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["training"]["optimizer"]["name"] == "adam"
    model = keras.models.load_model(out / "model.keras")
    assert model.output_shape == (None, 10)
    # the reported test accuracy is the saved model's on the test split (digits, seed 0), and it learned:
    # quick.yaml's default configuration is past 0.8 after 2 epochs, where chance is 0.1
    test = load_dataset("digits", seed=0)
    predicted = np.argmax(model.predict(test.x_test, verbose=0), axis=1)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predicted == test.y_test), abs=1e-6)
    assert metrics["best_epoch"] in (1, 2) and metrics["test_accuracy"] >= 0.8


@pytest.mark.parametrize("args, message", [
    (["--space", "missing.yaml"], "missing.yaml: cannot read file"),
    (["--space", str(SPACES / "quick.yaml"), "--data", "nope.npz"], "nope.npz: no such file"),
    (["--space", str(SPACES / "reference" / "resnet50.yaml")], "downsamples a 1x1 feature map"),
])
def test_train_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = _automl("train", *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("automl: error: ") and message in lines[0]


def test_train_on_a_folder_of_images_resized(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    proc = _automl("train", "--space", str(SPACES / "quick.yaml"), "--data", str(tmp_path / "images"),
                   "--image-size", "8,8", "--epochs", "1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8x8x3, 2 classes" in proc.stdout
