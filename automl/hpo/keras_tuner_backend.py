"""The KerasTuner backend: RandomSearch, BayesianOptimization or Hyperband over the same space.

KerasTuner's oracle proposes the values; our trial runner trains and logs exactly as with
Optuna. Each finished trial is mirrored into the Optuna study, so `automl trials`, `export` and
resuming work the same for both backends.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import keras
import keras_tuner as kt
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.data import Dataset
from automl.errors import UserError
from automl.hpo.live import Live
from automl.hpo.settings import SearchSettings
from automl.hpo.study import finished_count
from automl.hpo.trial import Outcome, freeze_long_lived, run_trial, run_trial_or_smaller, trial_attrs
from automl.space import OptunaSuggester, Param, SearchSpace
from automl.space.params import label
from automl.tracking import Tracker

TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}


def _primitive(choices: list[Any]) -> bool:
    """KerasTuner's Choice takes one primitive type (int, float, str or bool) and no None."""
    kinds = {type(c) for c in choices}
    return len(kinds) == 1 and kinds <= {int, float, str, bool}


class StopAt(keras.callbacks.Callback):
    """Ends training at the first epoch end past ``deadline`` (the search's --timeout). KerasTuner
    cannot prune, so the trial completes with the epochs it had."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() > self.deadline:
            self.model.stop_training = True


class KerasTunerSuggester:
    """Adapter for KerasTuner ``HyperParameters``; conditions become ``conditional_scope``s."""

    def __init__(self, hp: kt.HyperParameters, space: SearchSpace):
        self.hp, self.by_name = hp, {p.name: p for p in space.params}

    def suggest(self, param: Param) -> Any:
        with contextlib.ExitStack() as scopes:
            for c in param.conditions:
                parent = self.by_name.get(c.path)
                if parent is not None:  # conditions on fixed values need no scope
                    labelled = parent.kind == "choice" and not _primitive(parent.spec.choices)
                    values = [label(v) for v in c.values] if labelled else list(c.values)
                    scopes.enter_context(self.hp.conditional_scope(c.path, values))
            return self._value(param)

    def _value(self, param: Param) -> Any:
        spec, hp = param.spec, self.hp
        if param.kind == "int":
            return hp.Int(param.name, *spec.range, step=spec.step, sampling="log" if spec.log else "linear",
                          default=spec.default)
        if param.kind == "float":
            return hp.Float(param.name, *spec.range, step=spec.step, sampling="log" if spec.log else "linear",
                            default=spec.default)
        if _primitive(spec.choices):
            return hp.Choice(param.name, spec.choices, default=spec.default)
        by_label = {label(c): c for c in spec.choices}
        return by_label[hp.Choice(param.name, list(by_label), default=label(spec.default))]


def optuna_trial(space: SearchSpace, values: dict[str, Any], value: float | None, state, attrs: dict):
    """A finished KerasTuner trial as an Optuna trial, for the study that `automl` reads back."""
    params, distributions = {}, {}
    by_name = {p.name: p for p in space.params}
    for name, v in values.items():
        p = by_name[name]
        if p.kind == "int":
            distributions[name] = IntDistribution(*p.spec.range, log=p.spec.log, step=p.spec.step)
        elif p.kind == "float":
            distributions[name] = FloatDistribution(*p.spec.range, log=p.spec.log, step=p.spec.step)
        else:
            distributions[name] = CategoricalDistribution([OptunaSuggester.stored_value(p, c) for c in p.spec.choices])
        params[name] = OptunaSuggester.stored_value(p, v)
    return optuna.trial.create_trial(params=params, distributions=distributions, value=value, state=state,
                                     user_attrs=attrs)


def optimize(settings: SearchSettings, space: SearchSpace, data: Dataset, study: optuna.Study, tracker: Tracker,
             parent: str, live: Live) -> None:
    if settings.sampler not in TUNERS:
        raise UserError(f"--sampler: the keras-tuner backend takes {', '.join(TUNERS)}, not '{settings.sampler}'")
    direction = "max" if settings.direction == "maximize" else "min"
    deadline = time.perf_counter() + settings.timeout if settings.timeout else None

    class Tuner(TUNERS[settings.sampler]):
        def run_trial(self, trial, *args, **kwargs):
            start = time.perf_counter()
            number = len(study.trials)
            values = space.suggest_all(KerasTunerSuggester(trial.hyperparameters, space))
            config = space.materialize(values)
            epochs = trial.hyperparameters.values.get("tuner/epochs")  # Hyperband's budget for this trial

            def train(config: dict) -> Outcome:
                return run_trial(settings, data, number, config, tracker, parent, live,
                                 finished=finished_count(study), epochs=epochs,
                                 pruning=[StopAt(deadline)] if deadline else [])

            outcome, config, retried = run_trial_or_smaller(space, config, train, live, number)
            if deadline and time.perf_counter() > deadline:  # the oracle then stops proposing
                self.oracle.max_trials = len(self.oracle.trials)
            attrs = {"config": config, "keras_tuner_trial": trial.trial_id, **retried,
                     **trial_attrs(settings, number, outcome, time.perf_counter() - start)}
            state = optuna.trial.TrialState.COMPLETE if outcome.state == "COMPLETE" else optuna.trial.TrialState.FAIL
            study.add_trial(optuna_trial(space, values, outcome.value, state, attrs))
            if outcome.state != "COMPLETE":
                raise kt.errors.FailedTrialError(outcome.reason)
            return {settings.objective: outcome.value}

    hyperband = settings.sampler == "hyperband"
    kwargs = {"max_epochs": settings.epochs or 20} if hyperband else {"max_trials": settings.trials}
    tuner = Tuner(
        objective=kt.Objective(settings.objective, direction),
        seed=settings.seed,
        directory=str(settings.trial_dir(0).parent),
        project_name="keras_tuner",
        max_consecutive_failed_trials=max(5, settings.trials // 2),
        **kwargs,
    )
    tuner.oracle.max_trials = settings.trials  # the study's total target, Hyperband included
    # Declare the space up front: Hyperband's oracle samples only declared parameters, and with
    # none it stops before its first trial (RandomSearch would declare them as trials run).
    space.suggest_all(KerasTunerSuggester(tuner.oracle.hyperparameters, space))
    freeze_long_lived()
    tuner.search(verbose=0)
