"""What a stage sees of its tune: the settings, the data, the space as the earlier stages left
it, their typed records, the budget, and the few things a stage does to the outside world
(write a space, log a figure, run a search), here so that a unit test can give a stage a small
fake context instead of a whole tune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from automl.config import TrialConfig
from automl.data import Dataset
from automl.hpo.hooks import SearchHooks
from automl.hpo.settings import SearchSettings
from automl.hpo.workers import TunePool
from automl.recipe.budget import Budget
from automl.recipe.outcomes import Outcomes
from automl.recipe.settings import TuneSettings
from automl.space import FixedSuggester, SearchSpace
from automl.tracking import Tracker


@dataclass
class StageContext:
    settings: TuneSettings
    data: Dataset
    space: SearchSpace  # the base space: the user's, or as transfer and overfit rewrote it
    outcomes: Outcomes
    budget: Budget
    study: optuna.Study  # the tune's own study: its records, and the final model as its trial
    tracker: Tracker
    tune_run: str  # the tune's MLflow run, under which searches nest
    say: Callable[[str], None]
    run_id: str | None = None  # this stage's MLflow run (searches open their own)
    later: list[str] = field(default_factory=list)  # the kinds of the stages after this one
    workers: TunePool | None = None  # the tune's worker processes, which run its searches' trials

    def default_config(self, space: SearchSpace | None = None, **values) -> TrialConfig:
        """The space's default configuration, with ``values`` (parameter name -> value) set."""
        return TrialConfig.model_validate((space or self.space).sample(FixedSuggester(values)))

    def write_space(self, space: SearchSpace, name: str, stage: str) -> str:
        """Write ``space`` as ``<tune folder>/spaces/<name>.yaml`` (and log it): a later stage
        loads it, and the user can read or rerun it."""
        path = self.settings.folder / "spaces" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {self.settings.space}, as the {stage} stage of tune {self.settings.study} changed it\n"
                        + space.to_yaml())
        self.log_artifact(path)
        return str(path)

    def log_artifact(self, path: Path) -> None:
        if self.run_id is not None:
            self.tracker.log_artifact(self.run_id, path)

    def log_figure(self, figure, name: str) -> None:
        if self.run_id is not None:
            self.tracker.log_figure(self.run_id, figure, name)

    def epoch_log(self):
        """Where a training of the stage streams its per-epoch metrics (its MLflow run)."""
        return self.tracker.epoch_log(self.run_id)

    def log_model(self, path: Path, trial_number: int) -> None:
        """The stage's model, as an MLflow model of its run."""
        self.tracker.log_best_model(self.run_id, str(path), trial_number)

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags on another run of the tune (a search trial the stage read)."""
        self.tracker.set_tags(run_id, tags)

    def search_settings(self, stage: str, space: str, epochs: int, seconds: float,
                        subset: tuple[int, int] | None = None) -> SearchSettings:
        """A search stage's settings: the tune's storage, sampler, workers and devices, bounded by
        ``seconds`` of wall clock however many workers share them; ``subset``: the training and
        validation images its trials rank on (None: all)."""
        s = self.settings
        return SearchSettings(space=space, data=s.data, study=f"{s.study}/{stage}", storage=s.storage,
                              tracking_uri=s.tracking_uri, out=s.out, backend=s.backend, sampler=s.sampler,
                              pruner=s.pruner, trials=None, timeout=max(seconds, 1.0), epochs=epochs, seed=s.seed,
                              objective=s.objective, image_size=s.image_size, verbose=s.verbose,
                              workers=s.workers, recycle=s.recycle, gpus=s.gpus, mixed_precision=s.mixed_precision,
                              jit_compile=s.jit_compile, experiment=s.study, subset=subset)

    def run_search(self, settings: SearchSettings, data: Dataset, hooks: SearchHooks) -> optuna.Study:
        """Run the search, its trials on the tune's workers when it has some."""
        from automl.hpo.driver import run_search

        hooks.workers = self.workers
        return run_search(settings, data, hooks)

    def load_search(self, study: str) -> optuna.Study:
        from automl.hpo.storage import load_study

        return load_study(study, self.settings.storage)


@dataclass
class ReportView:
    """What a stage's report section reads: the tune's study, its searches, the figures folder."""

    tune: optuna.Study
    searches: dict[str, optuna.Study]  # by stage name
    figures: Path

    def figure(self, fig, name: str, caption: str) -> str:
        from automl import plots

        plots.save(fig, self.figures / name)
        return f"![{caption}]({self.figures.name}/{name})\n"
