"""The terminal shows automl's lines only: no framework start-up noise, a failed trial in one
line, Ctrl-C in one line; and the filter never swallows a line that is not known noise."""

import itertools
import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from automl import quiet

from .conftest import ROOT, SPACES

AUTOML = [sys.executable, "-m", "automl.cli"]
# As a user's shell has it: no TF_CPP_MIN_LOG_LEVEL (which does not silence TF 2.21's start-up anyway).
ENV = {k: v for k, v in {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}.items()
       if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.DEBUG_ENV, quiet.FILTERED_ENV, quiet.POOL_ENV)}

# Captured from TensorFlow 2.21 and XLA on this machine (and a GPU one), byte for byte.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796218978.013083    3985 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    "will not be used.",
    "E0000 00:00:1796218992.203416    3985 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1733152123.408101   12345 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1733152123.512345   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered",
    "I1202 13:56:16.303000   12345 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use available "
    "CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "WARNING:tensorflow:5 out of the last 17 calls to <function TensorFlowTrainer._make_function.<locals>."
    "multi_step_on_iterator at 0x7f5cca5f63e0> triggered tf.function retracing. Tracing is expensive and the "
    "excessive number of tracings could be due to (1) creating @tf.function repeatedly in a loop, (2) passing "
    "tensors with different shapes, (3) passing Python objects instead of tensors. For (1), please define your "
    "@tf.function outside of the loop. For (2), @tf.function has reduce_retracing=True option that can avoid "
    "unnecessary retracing. For (3), please refer to https://www.tensorflow.org/guide/function"
    "#controlling_retracing and https://www.tensorflow.org/api_docs/python/tf/function for  more details.",
]
NEWS = [
    "automl: error: space.yaml:3: model.stem: field required",
    "E0000 00:00:1733152123.512345   12345 bfc_allocator.cc:485] Allocator (GPU_0_bfc) ran out of memory trying to "
    "allocate 7.45GiB",
    "F1202 13:56:16.303000   12345 check.cc:12] Check failed: ptr != nullptr",
    "Traceback (most recent call last):",
    "Segmentation fault",
    "W0000 00:00:1733152123.512345   12345 data_loader.cc:12] The input pipeline stalled for 30 s",
    "WARNING:tensorflow:Your input ran out of data; interrupting training.",
]


def test_the_filter_drops_known_framework_noise_and_passes_every_other_line():
    lines = [line for pair in itertools.zip_longest(NOISE, NEWS) for line in pair if line is not None]
    done = subprocess.run([sys.executable, "-I", quiet.__file__], input="\n".join(lines) + "\nno newline at the end",
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines() == [line for line in lines if line not in NOISE] + ["no newline at the end"]


@pytest.mark.slow
def test_the_framework_start_up_prints_nothing_but_debug_shows_it():
    """spaces params imports the framework and builds a model on its device: stderr stays empty.
    (The search below covers training, worker processes and Ctrl-C.)"""
    params = [*AUTOML, "spaces", "params", str(SPACES / "quick.yaml"), "--input-shape", "8,8,1", "--classes", "10"]
    done = subprocess.run(params, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "params: " in done.stdout
    assert done.stderr == ""
    shown = subprocess.run([*params, "--debug"], env=ENV, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0
    assert [line for line in shown.stderr.splitlines() if quiet.is_noise(line)]  # --debug: nothing is filtered


FAILING_SPACE = """\
# stride 4 leaves 2x2 after the stem: the second stage's pooling cannot downsample a 1x1 map
model:
  stem:
    - {filters: 16, kernel_size: 3, strides: {choice: [1, 2, 4], default: 4}}
  stages:
    - {family: vgg, filters: 16, convs: 1}
    - {family: vgg, filters: 16, convs: 1}
training:
  epochs: 3
  batch_size: 64
  optimizer: {name: adam, learning_rate: 2.0e-3}
"""


@pytest.mark.slow
def test_a_failed_trial_is_one_line_and_ctrl_c_of_workers_one_more(tmp_path):
    """Two worker processes; the first trial (the space's default) fails; once another trains,
    Ctrl-C, as a terminal sends it to the whole process group. A third of the random trials fail
    too: 20 trials make the failure guard's limit 10 in a row, out of chance's reach."""
    (tmp_path / "space.yaml").write_text(FAILING_SPACE)
    proc = subprocess.Popen([*AUTOML, "search", "--space", "space.yaml", "--trials", "20", "--workers", "2",
                             "--sampler", "random"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, failed = [], False
    for line in proc.stdout:
        seen.append(line)
        failed = failed or line.startswith("trial 0 FAIL (architecture: stage2_pool downsamples a 1x1 feature map")
        if failed and " epoch 1/3 " in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=300)
    output = "".join(seen) + rest
    assert failed, output[-3000:]
    assert proc.returncode == 130, err
    assert err == "automl: interrupted\n"  # neither Optuna's tracebacks nor the workers' own lines
    assert "Traceback" not in output

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("space-digits")
    [run] = client.search_runs([experiment.experiment_id], "tags.`automl.trial` = '0'")
    traceback = client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))
    text = open(traceback).read()
    assert text.startswith("Traceback (most recent call last):") and "ArchitectureError: stage2_pool" in text
