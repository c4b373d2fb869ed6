"""Optuna storages by URL: relational databases, or a journal file for one machine."""

from __future__ import annotations

import os
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled

from automl.errors import UserError
from automl.hpo.journal import LockedJournalStorage
from automl.preflight import database_refused
from automl.secrets import masked
from automl.settings import local_file

RDB_SCHEMES = ("sqlite:", "postgresql", "mysql")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """``sqlite:///f.db``, ``postgresql://...``, ``mysql://...``, or ``journal:PATH`` / ``PATH.journal``.

    Relational storages get heartbeats (every ``AUTOML_HEARTBEAT_SECONDS``, default 30; dead after
    4 missed), the journal a lock per running trial (see automl/hpo/journal.py), so a trial whose
    worker died is failed and retried once with the same parameters.
    """
    heartbeat = float(os.environ.get("AUTOML_HEARTBEAT_SECONDS", 30))
    if url.startswith(RDB_SCHEMES):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(2, round(4 * heartbeat)),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except Exception as exc:  # SQLAlchemy reports bad URLs and unreachable servers in many ways
            raise database_refused("--storage", url, "cannot open", exc) from None
    path = local_file(url)  # a journal: SQLite went to RDBStorage above
    if path is not None:
        if not path.parent.exists():
            raise UserError(f"--storage {masked(url)}: folder {path.parent} does not exist")
        # A trial whose lock was never taken (its process died as it began) is dead after the grace.
        return LockedJournalStorage(str(path), grace_seconds=max(2.0, 4 * heartbeat))
    raise UserError(
        f"--storage {masked(url)}: unsupported; use sqlite:///FILE.db, postgresql://..., mysql://... or journal:FILE"
    )


def load_study(name: str, url: str) -> optuna.Study:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        there = ", ".join(known) or "none"
        raise UserError(f"--study {name}: no such study in {masked(url)} (studies there: {there})") from None


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail the study's RUNNING trials whose process died, and retry each once (as Optuna does
    before every trial), so a search that starts or ends does not wait for them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def running_trials(study: optuna.Study) -> list[int]:
    """The numbers of the study's RUNNING trials whose process is alive, as far as the storage can
    tell (a dead one stays RUNNING when failing it could not be written, e.g. on a full disk)."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    storage = study._storage  # Optuna's fail_stale_trials reads the same private fields
    dead = set(storage._get_stale_trial_ids(study._study_id)) if is_heartbeat_enabled(storage) else set()
    return [t.number for t in running if t._trial_id not in dead]
