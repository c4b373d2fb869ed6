"""The Optuna backend: define-by-run sampling of the space, pruning on per-epoch validation metrics."""

from __future__ import annotations

import os
import socket
import time

import keras
import optuna
from optuna.exceptions import StorageInternalError
from optuna.study import MaxTrialsCallback
from optuna_integration import KerasPruningCallback

from automl.config import TrialConfig
from automl.data import Dataset
from automl.hpo.hooks import SearchHooks
from automl.hpo.journal import StorageWriteError
from automl.hpo.live import Live
from automl.hpo.locks import process_slot
from automl.hpo.records import TrialRecord
from automl.hpo.settings import SearchSettings
from automl.hpo.strategies import make_pruner, make_sampler
from automl.hpo.study import FINISHED, finished_count
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
from automl.space import OptunaSuggester, SearchSpace
from automl.tracking import Tracker

COMPLETE = optuna.trial.TrialState.COMPLETE
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial


class TimeUp(keras.callbacks.Callback):
    """Prunes the running trial once the search's timeout has passed (Optuna's own timeout only
    keeps new trials from starting), unless no trial has completed yet: a search returns a model."""

    def __init__(self, study: optuna.Study, deadline: float):
        super().__init__()
        self.study, self.deadline = study, deadline

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() > self.deadline and self.study.get_trials(deepcopy=False, states=(COMPLETE,)):
            raise optuna.TrialPruned(f"the search's time ran out after epoch {epoch + 1}")


def enqueue_first_trials(first_trials: list[dict] | None, space: SearchSpace, study: optuna.Study) -> None:
    """Known-reasonable first trials of a new study (see trial.first_values), queued in the study,
    so that whichever process asks first runs them."""
    if not study.trials:
        by_name = {p.name: p for p in space.params}
        for values in first_values(first_trials, space):
            study.enqueue_trial({n: OptunaSuggester.stored_value(by_name[n], v) for n, v in values.items()})


def optimize(settings: SearchSettings, space: SearchSpace, data: Dataset, study: optuna.Study, tracker: Tracker,
             parent: str, live: Live, hooks: SearchHooks) -> int:
    """Run trials in this process until the study's target (or the timeout); returns how many ran.
    Of the ``hooks``, this takes the trial callbacks (the search's start queued its first trials)."""
    # A resumed search must not replay the seeded sampler's first suggestions, nor may two
    # processes on one study propose the same ones: each has its own slot (0 when alone).
    expected = settings.trials or 100  # a search bounded by time only: plan for many trials
    seed = settings.sampler_seed
    if seed is None:
        seed = settings.seed + len(study.trials) + 7919 * process_slot(settings.storage, settings.study)
    study.sampler = make_sampler(settings.sampler, seed, expected)
    study.pruner = make_pruner(settings.pruner, settings.epochs)
    guard = FailureGuard.for_search(settings.trials)
    deadline = stop_time(settings, study)
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal ran
        ran += 1
        start = time.perf_counter()
        config = space.sample(OptunaSuggester(trial))
        TrialRecord(worker=WORKER).write(trial)
        pruning = [KerasPruningCallback(trial, settings.objective)] if settings.pruner != "none" else []
        pruning += [TimeUp(study, deadline)] if deadline is not None else []

        def train(config: dict) -> Outcome:
            TrialRecord(config=config).write(trial)  # before training: a dead worker's trial shows what it ran
            return run_trial(settings, data, trial.number, config, tracker, parent, live,
                             finished=finished_count(study), pruned_errors=(optuna.TrialPruned,),
                             pruning=[*pruning, *hooks.callbacks(TrialConfig.model_validate(config))])

        outcome, config, oom_batch = run_trial_or_smaller(space, config, train, live, trial.number)
        record = trial_record(settings, trial.number, outcome, time.perf_counter() - start)
        record.oom_batch_size = oom_batch
        record.write(trial)
        tracker.finish_pending()  # MLflow's turn comes once the study holds the outcome
        if outcome.pruned is not None:
            raise outcome.pruned
        if outcome.state == "FAIL":
            raise TrialFailedInStudy(outcome.reason)
        return outcome.value

    def stop_on_failures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if guard.saw(trial.state.name, TrialRecord.of(trial).fail_reason):
            study.stop()

    callbacks = [stop_on_failures]
    if settings.trials:
        callbacks.append(MaxTrialsCallback(settings.trials, states=FINISHED))
    if deadline is not None:  # Optuna's timeout runs on its own clock, started a moment later: a trial TimeUp
        # pruned must not be followed by another one in that moment
        callbacks.append(lambda study, _: study.stop() if time.perf_counter() > deadline else None)
    freeze_long_lived()
    try:
        study.optimize(
            objective,
            n_trials=settings.recycle,  # a recycled worker process exits after this many
            timeout=None if deadline is None else deadline - time.perf_counter(),
            callbacks=callbacks,
            catch=(TrialFailedInStudy,),
        )
    except AssertionError as exc:  # Optuna's "Should not reach." when the storage cannot record a trial's end
        cause = exc.__context__
        while cause is not None and not isinstance(cause, (StorageWriteError, StorageInternalError)):
            cause = cause.__context__
        if cause is None:
            raise
        if isinstance(cause, StorageInternalError):  # a relational database refused the write
            root = cause.__cause__ or cause
            raise StorageWriteError(f"the study's storage could not record a trial ({type(root).__name__}: "
                                    f"{str(root).splitlines()[0][:200]}); the trials it holds are kept: rerun "
                                    "the same command once it can be written") from None
        raise cause from None
    guard.check()
    return ran


class TrialFailedInStudy(Exception):
    """Raised to Optuna so it records the trial as FAIL (the reason is in its trial record)."""
