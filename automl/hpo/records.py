"""What a study keeps, typed: the one module that reads or writes Optuna user attributes by key.

A trial's record (TrialRecord) and what a study was made for (StudyInfo) are dataclasses whose
field names are the attribute keys; every other study attribute has one reader and one writer
below. As with KerasTuner's ``Trial.get_state``/``set_state`` and Optuna's ``_CmaEsAttrKeys``,
every persisted name is in one place, and the keys are those earlier versions wrote, so their
studies still read.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna

COMPLETE = optuna.trial.TrialState.COMPLETE

# The study's own attributes, besides StudyInfo's fields.
PARENT_RUN = "mlflow_parent_run_id"
SEARCH_SETTINGS = "search_settings"
BEST_TEST = "best_test"
SEARCH_DEADLINE = "search_deadline"
TRIAL_HOOKS = "trial_hooks"
LOG_MODEL = "log_model"
CURRENT_SEARCH = "current_search"  # a tune's: the search stage its workers serve now
STAGE_PREFIX = "stage:"  # + a recipe stage's name
SUBSET_PREFIX = "subset:"  # + a recipe stage's name


def _present(value: Any) -> bool:
    return value is not None and value != {} and value != []


@dataclass
class TrialRecord:
    """What a study keeps of a trial besides Optuna's params, value and state: what export,
    ``automl trials``, the recipe and the benchmarks read. A trial writes it piecemeal as it runs
    (its worker, then its configuration, then its outcome): each write sets the fields it holds."""

    config: dict | None = None  # the TrialConfig trained last (after an out-of-memory retry: the smaller)
    model_path: str | None = None  # its best-epoch model; only a completed trial has one
    metrics: dict[str, float] = field(default_factory=dict)  # at the best epoch
    best_epoch: int | None = None
    params: int | None = None  # the model's parameter count
    fit_seconds: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    epochs_run: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch metrics
    trial_seconds: float | None = None  # the whole trial: building, training, saving, logging
    mlflow_run_id: str | None = None
    rss_mb: float | None = None  # the process's resident memory after the trial
    fail_reason: str | None = None  # why it failed or was pruned
    worker: str | None = None  # host:pid of the process that ran it
    oom_batch_size: int | None = None  # the batch size that ran out of memory before a retry with half
    source_trial: int | None = None  # a tune's final trial: the search trial whose configuration it trained
    keras_tuner_trial: str | None = None  # a mirrored KerasTuner trial's id

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial | optuna.Trial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})

    def attrs(self) -> dict[str, Any]:
        """The user attributes to store: the fields that hold something."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if _present(getattr(self, f.name))}

    def write(self, trial: optuna.Trial) -> None:
        for key, value in self.attrs().items():
            trial.set_user_attr(key, value)

    def frozen(self, **trial: Any) -> optuna.trial.FrozenTrial:
        """A finished trial holding this record, for ``study.add_trial``; ``trial``: the other
        arguments of ``optuna.trial.create_trial`` (state, value, params, distributions)."""
        return optuna.trial.create_trial(user_attrs=self.attrs(), **trial)

    @property
    def steady_epoch_seconds(self) -> float:
        """An epoch after the first, which includes tracing: the median of those measured, else
        the mean over the fit; NaN when the trial trained nothing."""
        times = self.epoch_seconds
        if len(times) > 1:
            return float(statistics.median(times[1:]))
        if times:
            return float(times[0])
        if self.fit_seconds is not None and self.epochs_run:
            return self.fit_seconds / self.epochs_run
        return math.nan

    @property
    def first_epoch_extra(self) -> float:
        """What the first epoch took beyond a steady one (tracing); 0 when unknown."""
        if len(self.epoch_seconds) < 2:
            return 0.0
        return self.epoch_seconds[0] - self.steady_epoch_seconds


def ranking(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's COMPLETE trials that kept a model, best first by the study's direction (ties:
    the earlier trial first). The one ranking every "best trial" comes from."""
    kept = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.user_attrs.get("model_path")]
    return sorted(kept, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial that kept a model; None before the first one."""
    ranked = ranking(study)
    return ranked[0] if ranked else None


@dataclass
class StudyInfo:
    """What a study was made for, written when it is created: its identity (a search's space,
    data, objective and backend; a tune's ``kind`` "tune" instead of a backend), which a resumed
    search must match, and what export and predict need to know of the data."""

    space: str | None = None
    data: str | None = None
    objective: str | None = None
    backend: str | None = None
    kind: str | None = None
    input_shape: list[int] | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    pixel_scale: float | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyInfo:
        attrs = study.user_attrs
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})

    def write(self, study: optuna.Study) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                study.set_user_attr(f.name, value)


def parent_run(study: optuna.Study) -> str | None:
    """The MLflow run of the search (or tune) that the study belongs to."""
    return study.user_attrs.get(PARENT_RUN)


def set_parent_run(study: optuna.Study, run_id: str) -> None:
    study.set_user_attr(PARENT_RUN, run_id)


def search_settings(study: optuna.Study) -> dict | None:
    """The settings a worker takes from the search it joins (automl/hpo/settings.py: shared_settings)."""
    return study.user_attrs.get(SEARCH_SETTINGS)


def set_search_settings(study: optuna.Study, settings: dict) -> None:
    study.set_user_attr(SEARCH_SETTINGS, settings)


def best_test(study: optuna.Study) -> dict | None:
    """The one evaluation of the best model on the test split: ``{"trial": n, "test_<metric>": ...}``."""
    return study.user_attrs.get(BEST_TEST)


def set_best_test(study: optuna.Study, value: dict) -> None:
    study.set_user_attr(BEST_TEST, value)


def search_deadline(study: optuna.Study) -> float | None:
    """When (Unix time) the search's time runs out: no trial starts after it; None: no time bound."""
    return study.user_attrs.get(SEARCH_DEADLINE)


def set_search_deadline(study: optuna.Study, unix_time: float | None) -> None:
    study.set_user_attr(SEARCH_DEADLINE, unix_time)


def trial_hooks(study: optuna.Study) -> list[dict]:
    """Specs of the Keras callbacks each trial gets (automl/hpo/hooks.py), in whatever process runs it."""
    return study.user_attrs.get(TRIAL_HOOKS, [])


def set_trial_hooks(study: optuna.Study, specs: list[dict]) -> None:
    study.set_user_attr(TRIAL_HOOKS, specs)


def log_model(study: optuna.Study) -> bool:
    """Whether the process that ends the search logs the best model to its MLflow run."""
    return study.user_attrs.get(LOG_MODEL, True)


def set_log_model(study: optuna.Study, on: bool) -> None:
    study.set_user_attr(LOG_MODEL, on)


def current_search(study: optuna.Study) -> str | None:
    """The search (its study's name) a tune's workers serve now: None before the first, "" once
    the tune's searches are over."""
    return study.user_attrs.get(CURRENT_SEARCH)


def set_current_search(study: optuna.Study, name: str | None) -> None:
    study.set_user_attr(CURRENT_SEARCH, name)


def stage_records(study: optuna.Study) -> dict[str, dict]:
    """A tune's record of each stage it finished, by stage name."""
    return {k.removeprefix(STAGE_PREFIX): v for k, v in study.user_attrs.items() if k.startswith(STAGE_PREFIX)}


def write_stage_record(study: optuna.Study, name: str, record: dict) -> None:
    study.set_user_attr(STAGE_PREFIX + name, record)


def subset_sizes(study: optuna.Study, stage: str) -> list[int] | None:
    """The training and validation images a tune's search stage ranks its trials on."""
    return study.user_attrs.get(SUBSET_PREFIX + stage)


def set_subset_sizes(study: optuna.Study, stage: str, sizes: list[int]) -> None:
    study.set_user_attr(SUBSET_PREFIX + stage, list(sizes))
