"""What one search needs to know, gathered from the CLI or the Python API."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from automl import settings as defaults
from automl.errors import UserError

if TYPE_CHECKING:
    from automl.data import Dataset

OBJECTIVE_DIRECTIONS = {"val_accuracy": "maximize", "val_loss": "minimize"}


@dataclass
class SearchSettings:
    space: str
    data: str = "digits"
    study: str | None = None  # default: <space>-<data>
    storage: str | None = None
    tracking_uri: str | None = None
    out: str | None = None
    backend: str = "optuna"
    sampler: str | None = None  # default per backend: tpe (optuna), bayesian (keras-tuner)
    pruner: str = "hyperband"
    trials: int | None = 20  # None: until the timeout
    timeout: float | None = None
    epochs: int | None = None  # per trial; default: each configuration's training.epochs
    seed: int = 0
    objective: str = "val_accuracy"
    image_size: tuple[int, int] | None = None
    verbose: bool = True
    # Worker processes (automl/hpo/workers.py): how many, trials per process before it is
    # replaced (None: one process runs to the end), the GPUs to pin them to (one worker each).
    workers: int = 1
    recycle: int | None = None
    gpus: list[str] | None = None
    sampler_seed: int | None = None  # a worker's own (default: seed + trials so far)
    mixed_precision: bool = False  # float16 compute, float32 weights (the output layer stays float32)
    jit_compile: bool = False  # XLA-compile every train step
    experiment: str | None = None  # the MLflow experiment; default: the study name
    # The stratified training and validation images the trials rank on, and no test split (a
    # tune's search stage: automl.data.subsample with the search's seed, in every process that
    # runs its trials); None: all the data.
    subset: tuple[int, int] | None = None

    def __post_init__(self):
        self.storage = defaults.storage_url(self.storage)
        self.tracking_uri = defaults.tracking_uri(self.tracking_uri)
        self.out = defaults.out_dir(self.out)
        if self.study is None:
            self.study = f"{Path(self.space).stem}-{Path(self.data).stem}"
        if self.experiment is None:
            self.experiment = self.study
        if self.trials is None and self.timeout is None:
            raise UserError("--trials, --timeout: a search needs a target of finished trials, a time bound, or both")
        if self.gpus:
            self.workers = len(self.gpus)
        if self.pooled and self.backend != "optuna":
            raise UserError("--workers, --recycle and --gpus run Optuna workers; the keras-tuner backend runs in "
                            "one process")
        if self.sampler is None:
            self.sampler = "tpe" if self.backend == "optuna" else "bayesian"

    @property
    def pooled(self) -> bool:
        """Trials run in worker processes rather than in this one."""
        return self.workers > 1 or self.recycle is not None or bool(self.gpus)

    @property
    def direction(self) -> str:
        return OBJECTIVE_DIRECTIONS[self.objective]

    def load_data(self) -> Dataset:
        """The search's data, as every process that runs its trials trains on it."""
        from automl.data import load_dataset, subsample

        data = load_dataset(self.data, seed=self.seed, image_size=self.image_size)
        return subsample(data, *self.subset, seed=self.seed) if self.subset else data

    def trial_dir(self, number: int) -> Path:
        return Path(self.out) / self.study / f"trial-{number}"


# What a worker takes from the study (automl/hpo/workers.py); storage and MLflow come from its
# own command line, so each machine can reach them by its own address.
SHARED = ("space", "data", "study", "experiment", "out", "backend", "sampler", "pruner", "trials", "epochs", "seed",
          "objective", "image_size", "mixed_precision", "jit_compile", "subset")


def shared_settings(settings: SearchSettings) -> dict:
    return {k: v for k, v in dataclasses.asdict(settings).items() if k in SHARED}
