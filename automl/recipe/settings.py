"""What one tune needs to know, gathered from the CLI or the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl import settings as defaults
from automl.errors import UserError, printable
from automl.hpo.settings import OBJECTIVE_DIRECTIONS


@dataclass
class TuneSettings:
    space: str
    data: str = "digits"
    study: str | None = None  # default: <space>-<data>-tune; its stages' searches are <study>/coarse, /refine
    storage: str | None = None
    tracking_uri: str | None = None
    out: str | None = None
    budget: float = 300.0  # seconds of wall clock for the whole tune
    seed: int = 0
    sampler: str | None = None  # default per backend: tpe (optuna), bayesian (keras-tuner)
    pruner: str = "hyperband"
    objective: str = "val_accuracy"
    coarse_epochs: int = 3
    image_size: tuple[int, int] | None = None
    until: str | None = None  # stop after this stage (e.g. lr_range: the checks only)
    verbose: bool = True
    # The searches' backend and, as for automl search, their worker processes and devices
    # (automl/hpo/workers.py); the checks and the final train in this process.
    backend: str = "optuna"
    workers: int = 1
    recycle: int | None = None
    gpus: list[str] | None = None
    mixed_precision: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        self.storage = defaults.storage_url(self.storage)
        self.tracking_uri = defaults.tracking_uri(self.tracking_uri)
        self.out = defaults.out_dir(self.out)
        if self.study is None:
            self.study = f"{Path(self.space).stem}-{Path(self.data).stem}-tune"
        if self.gpus:
            self.workers = len(self.gpus)
        if self.sampler is None:
            self.sampler = "tpe" if self.backend == "optuna" else "bayesian"
        # what the search stages would refuse, refused before the checks spend the budget
        if self.backend == "optuna":
            from automl.hpo.strategies import PRUNERS, SAMPLERS

            if self.sampler not in SAMPLERS:
                raise UserError(f"--sampler: unknown sampler '{printable(self.sampler)}'; use one of "
                                f"{', '.join(SAMPLERS)}")
            if self.pruner not in PRUNERS:
                raise UserError(f"--pruner: unknown pruner '{printable(self.pruner)}'; use one of {', '.join(PRUNERS)}")
        elif self.workers > 1 or self.recycle is not None:
            raise UserError("--workers, --recycle and --gpus run Optuna workers; the keras-tuner backend runs in one "
                            "process")

    @property
    def direction(self) -> str:
        return OBJECTIVE_DIRECTIONS[self.objective]

    @property
    def folder(self) -> Path:
        """Where the tune writes: derived spaces, the final model, its export and the report."""
        return Path(self.out) / self.study
