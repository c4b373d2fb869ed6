"""What one tune needs to know, gathered from the CLI or the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl import settings as defaults
from automl.hpo.settings import OBJECTIVE_DIRECTIONS
from automl.recipe.budget import STAGES


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
    sampler: str = "tpe"
    pruner: str = "hyperband"
    objective: str = "val_accuracy"
    coarse_epochs: int = 3
    image_size: tuple[int, int] | None = None
    until: str | None = None  # stop after this stage (e.g. lr_range: the checks only)
    verbose: bool = True

    def __post_init__(self):
        self.storage = defaults.storage_url(self.storage)
        self.tracking_uri = defaults.tracking_uri(self.tracking_uri)
        self.out = defaults.out_dir(self.out)
        if self.study is None:
            self.study = f"{Path(self.space).stem}-{Path(self.data).stem}-tune"
        if self.until is not None and self.until not in STAGES:
            raise ValueError(f"until: unknown stage {self.until!r}; stages: {', '.join(STAGES)}")

    @property
    def direction(self) -> str:
        return OBJECTIVE_DIRECTIONS[self.objective]

    @property
    def folder(self) -> Path:
        """Where the tune writes: derived spaces, the final model, its export and the report."""
        return Path(self.out) / self.study
