"""The KerasTuner backend: its random, Bayesian or Hyperband oracle over the same space.

KerasTuner's oracle proposes the values; our trial runner trains and logs exactly as with
Optuna. Each finished trial is mirrored into the Optuna study, so `automl trials`, `export` and
resuming work the same for both backends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import keras
import keras_tuner as kt
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.config import TrialConfig
from automl.data import Dataset
from automl.errors import UserError
from automl.hpo.hooks import SearchHooks
from automl.hpo.live import Live
from automl.hpo.records import TrialRecord
from automl.hpo.settings import SearchSettings
from automl.hpo.study import finished_count
from automl.hpo.trial import (
    FailureGuard,
    Outcome,
    first_values,
    freeze_long_lived,
    run_trial,
    run_trial_or_smaller,
    stop_time,
    trial_record,
)
from automl.space import OptunaSuggester, Param, SearchSpace
from automl.space.params import label
from automl.tracking import Tracker

ORACLES = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
           "hyperband": kt.oracles.HyperbandOracle}
STATES = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED,
          "FAIL": optuna.trial.TrialState.FAIL}


def _primitive(choices: list[Any]) -> bool:
    """KerasTuner's Choice takes one primitive type (int, float, str or bool) and no None."""
    kinds = {type(c) for c in choices}
    return len(kinds) == 1 and kinds <= {int, float, str, bool}


class StopAt(keras.callbacks.Callback):
    """Ends training at the first epoch end past ``deadline`` (the search's --timeout). KerasTuner
    has no pruner to tell, so the trial completes with the epochs it had."""

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

    @staticmethod
    def stored_value(param: Param, value: Any) -> Any:
        """How KerasTuner holds ``value`` of ``param`` (mapping choices by their label)."""
        if param.kind == "choice" and not _primitive(param.spec.choices):
            return label(value)
        return value

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


def mirrored(space: SearchSpace, values: dict[str, Any], value: float | None, state: optuna.trial.TrialState,
             record: TrialRecord) -> optuna.trial.FrozenTrial:
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
    return record.frozen(params=params, distributions=distributions, value=value, state=state)


def oracle_class(sampler: str, first: list[dict]) -> type[kt.Oracle]:
    """KerasTuner's oracle for ``sampler``, serving the ``first`` values (KerasTuner's, by parameter
    name) before its own proposals. It keeps its own bookkeeping values (Hyperband's budget)."""

    class FirstTrialsFirst(ORACLES[sampler]):
        def populate_space(self, trial_id):
            proposed = super().populate_space(trial_id)
            if first and proposed["status"] == kt.engine.trial.TrialStatus.RUNNING:
                own = {k: v for k, v in proposed["values"].items() if k.startswith("tuner/")}
                proposed["values"] = {**first.pop(0), **own}
            return proposed

    return FirstTrialsFirst


def optimize(settings: SearchSettings, space: SearchSpace, data: Dataset, study: optuna.Study, tracker: Tracker,
             parent: str, live: Live, hooks: SearchHooks) -> None:
    """Run trials until the study's target (or the timeout). Of the ``hooks``, this takes the first
    trials (run before the oracle's own, on a new study) and the trial callbacks; a trial one of
    them prunes is mirrored as PRUNED and is a failed trial to the oracle, which then learns
    nothing from it."""
    if settings.sampler not in ORACLES:
        raise UserError(f"--sampler: the keras-tuner backend takes {', '.join(ORACLES)}, not '{settings.sampler}'")
    direction = "max" if settings.direction == "maximize" else "min"
    deadline = stop_time(settings, study)
    guard = FailureGuard.for_search(settings.trials)
    by_name = {p.name: p for p in space.params}
    first = [{n: KerasTunerSuggester.stored_value(by_name[n], v) for n, v in values.items()}
             for values in first_values(hooks.first_trials, space)][len(study.trials):]  # a resumed search: the rest

    class Tuner(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            start = time.perf_counter()
            number = len(study.trials)
            values = space.suggest_all(KerasTunerSuggester(trial.hyperparameters, space))
            config = space.materialize(values)
            epochs = trial.hyperparameters.values.get("tuner/epochs")  # Hyperband's budget for this trial

            def train(config: dict) -> Outcome:
                limits = [StopAt(deadline)] if deadline is not None else []
                return run_trial(settings, data, number, config, tracker, parent, live,
                                 finished=finished_count(study), epochs=epochs, pruned_errors=(optuna.TrialPruned,),
                                 pruning=[*limits, *hooks.callbacks(TrialConfig.model_validate(config))])

            outcome, config, oom_batch = run_trial_or_smaller(space, config, train, live, number)
            record = trial_record(settings, number, outcome, time.perf_counter() - start)
            record.config, record.keras_tuner_trial, record.oom_batch_size = config, trial.trial_id, oom_batch
            study.add_trial(mirrored(space, values, outcome.value, STATES[outcome.state], record))
            tracker.finish_pending()  # MLflow's turn comes once the study holds the outcome
            stop = guard.saw(outcome.state, outcome.reason)
            if stop or (deadline is not None and time.perf_counter() > deadline):  # the oracle then stops proposing
                self.oracle.max_trials = len(self.oracle.trials)
            if outcome.state != "COMPLETE":
                raise kt.errors.FailedTrialError(outcome.reason)
            return {settings.objective: outcome.value}

    hyperband = settings.sampler == "hyperband"
    budget = {"max_epochs": settings.epochs or 20} if hyperband else {"max_trials": settings.trials}
    # Our guard stops on failed trials in a row, not KerasTuner's, which counts pruned ones too.
    oracle = oracle_class(settings.sampler, first)(objective=kt.Objective(settings.objective, direction),
                                                   seed=settings.seed, max_consecutive_failed_trials=sys.maxsize,
                                                   **budget)
    tuner = Tuner(oracle, directory=str(settings.trial_dir(0).parent), project_name="keras_tuner")
    tuner.oracle.max_trials = settings.trials  # the study's total target, Hyperband included
    # Declare the space up front: Hyperband's oracle samples only declared parameters, and with
    # none it stops before its first trial (RandomSearch would declare them as trials run).
    space.suggest_all(KerasTunerSuggester(tuner.oracle.hyperparameters, space))
    freeze_long_lived()
    tuner.search(verbose=0)
    guard.check()
