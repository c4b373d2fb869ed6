"""Searches whose trials run out of memory for real, for tests/test_faults.py: run in a process
of its own (``python -m tests.oom_search FOLDER``), since it limits its own address space.

The space offers batch sizes 64 and 128 of a model whose activations dominate its memory. The
limit (RLIMIT_AS) sits between what a fit at each batch size takes, both measured here, so the
numbers are this host's, allocator and thread count included. It comes only once a search has
run in this process: TensorFlow aborts, rather than raising, when it cannot start a thread, and
the first search also imports, opens and starts everything a search needs (MLflow, the journal).
"""

import math
import re
import resource
import sys
from pathlib import Path

import keras
import numpy as np
import yaml

import automl
import automl.hpo.keras_tuner_backend  # noqa: F401  (imported before any limit, as a search would)
from automl.config import TrialConfig
from automl.data import load_dataset
from automl.hpo.hooks import SearchHooks
from automl.training.fit import fit

HALF = 64
MODEL = {"stages": [{"family": "vgg", "filters": 64, "convs": 1}]}  # 64x64x64 floats an image at full resolution
SPACE = {"model": MODEL, "training": {"epochs": 1, "batch_size": {"choice": [HALF, 2 * HALF], "default": 2 * HALF}}}
SEARCHES = {"optuna": 1, "keras-tuner": 1}  # trials: the default configuration (batch 2 * HALF) first, on both


def address_space(field: str = "VmSize") -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024


def need(batch_size: int, data) -> int:
    """The address space a fit at ``batch_size`` takes at its peak, above what this process holds."""
    keras.backend.clear_session()
    before, peak = address_space(), address_space("VmPeak")
    fit(TrialConfig.model_validate({"model": MODEL, "training": {"epochs": 1, "batch_size": batch_size}}), data)
    if address_space("VmPeak") <= peak:  # VmPeak cannot be reset: an earlier peak would hide this one
        sys.exit(f"batch {batch_size}: the fit stayed below this process's earlier peak; nothing measured")
    return address_space("VmPeak") - before


def main(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", **{f"{x}_{split}": v for split, n in (("train", 2 * HALF), ("val", 16), ("test", 16))
                                      for x, v in (("x", rng.random((n, 64, 64, 1), dtype=np.float32)),
                                                   ("y", np.arange(n) % 2))})
    space, data = folder / "space.yaml", folder / "data.npz"
    space.write_text(yaml.safe_dump(SPACE))
    options = {"sampler": "random", "pruner": "none", "verbose": False, "out": str(folder / "out"),
               "storage": f"journal:{folder}/j.journal", "tracking_uri": f"sqlite:///{folder}/m.db"}
    automl.search(space, data, study="warm", trials=1, hooks=SearchHooks(
        log_model=False, first_trials=[{"training.batch_size": HALF}]), **options)
    loaded = load_dataset(str(data))
    half, full = need(HALF, loaded), need(2 * HALF, loaded)
    if full < 1.3 * half:
        sys.exit(f"batch {2 * HALF} needs {full / 2**20:.0f} MiB, batch {HALF} {half / 2**20:.0f}: too close to "
                 "put a limit between them")
    headroom = math.sqrt(half * full)  # as far from both, by ratio
    print(f"needs {half / 2**20:.0f} and {full / 2**20:.0f} MiB; limit {headroom / 2**20:.0f} MiB above", flush=True)
    for backend, trials in SEARCHES.items():
        keras.backend.clear_session()
        resource.setrlimit(resource.RLIMIT_AS, (address_space() + int(headroom), resource.RLIM_INFINITY))
        automl.search(space, data, study=backend, backend=backend, trials=trials, hooks=SearchHooks(log_model=False),
                      **options)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
