"""What a caller adds to a search without changing what the search is (SearchSettings): the MLflow
run it logs under, its first trials, and Keras callbacks for every trial.

As with KerasTuner's ``on_trial_begin``/``on_trial_end`` and Optuna's ``optimize(callbacks=...)``,
a caller's concerns (a tune's stages) stay out of the settings that every search shares. Both
backends honour every hook; trial callbacks travel as specs through the study
(``records.set_trial_hooks``), so that worker processes build the same callbacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from automl.errors import UserError

if TYPE_CHECKING:
    import keras
    import optuna

    from automl.config import TrialConfig
    from automl.hpo.settings import SearchSettings


@dataclass
class SpeedFloor:
    """Prunes a trial that trains fewer than ``images_per_second`` in its first epoch (see
    limits.TooSlow): a tune's search stages set it from the speed their final training needs."""

    images_per_second: float
    KIND: ClassVar[str] = "speed_floor"  # its name in a study

    def __post_init__(self):
        if not self.images_per_second > 0:
            raise UserError(f"SpeedFloor: images_per_second must be positive, got {self.images_per_second!r}")

    def callback(self, config: TrialConfig) -> keras.callbacks.Callback:
        from automl.hpo.limits import TooSlow

        return TooSlow(self.images_per_second, config.training.batch_size)


TRIAL_CALLBACKS = {kind.KIND: kind for kind in (SpeedFloor,)}


def to_specs(callbacks: list[SpeedFloor]) -> list[dict]:
    """Trial callbacks as the plain dicts a study stores."""
    return [{"kind": c.KIND, **dataclasses.asdict(c)} for c in callbacks]


def from_specs(specs: list[dict]) -> list[SpeedFloor]:
    """The trial callbacks that ``to_specs`` stored."""
    callbacks = []
    for spec in specs:
        kind = TRIAL_CALLBACKS.get(spec.get("kind"))
        if kind is None:
            raise UserError(f"the study asks for a trial callback this version does not know: {spec!r}")
        callbacks.append(kind(**{k: v for k, v in spec.items() if k != "kind"}))
    return callbacks


class Workers(Protocol):
    """Worker processes a caller keeps across its searches (automl.hpo.workers.TunePool)."""

    def serve(self, study: optuna.Study, settings: SearchSettings) -> None:
        """Run ``study``'s trials on the workers until the search is over."""


@dataclass
class SearchHooks:
    run_name: str | None = None  # the parent MLflow run's name (default: search-<backend>)
    nest_under: str | None = None  # the MLflow run the parent run nests under (a tune's run)
    tags: dict[str, str] = field(default_factory=dict)  # extra tags on the parent run
    log_model: bool = True  # log the best model to the parent run at the end
    first_trials: list[dict] | None = None  # parameter values of the first trials (default: the space's default)
    trial_callbacks: list[SpeedFloor] = field(default_factory=list)  # each trial, in any process, gets their callbacks
    # Worker processes the caller keeps across its searches (a tune's TunePool): they run this
    # search's trials instead of a pool of its own, so their start-up is paid once.
    workers: Workers | None = None

    def callbacks(self, config: TrialConfig) -> list[keras.callbacks.Callback]:
        """The Keras callbacks of one trial that trains ``config``."""
        return [c.callback(config) for c in self.trial_callbacks]
