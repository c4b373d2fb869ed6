"""Optuna storages by URL: relational databases, or a journal file for one machine."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from automl.errors import UserError
from automl.secrets import masked, scrubbed

RDB_SCHEMES = ("sqlite:", "postgresql", "mysql")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """``sqlite:///f.db``, ``postgresql://...``, ``mysql://...``, or ``journal:PATH`` / ``PATH.journal``.

    Relational storages get heartbeats (every ``AUTOML_HEARTBEAT_SECONDS``, default 30; dead after
    4 missed), so a trial whose worker died is failed and retried once with the same parameters.
    """
    if url.startswith(RDB_SCHEMES):
        try:
            heartbeat = float(os.environ.get("AUTOML_HEARTBEAT_SECONDS", 30))
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(2, round(4 * heartbeat)),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except Exception as exc:  # SQLAlchemy reports bad URLs and unreachable servers in many ways
            reason = scrubbed(f"{type(exc).__name__}: {str(exc).splitlines()[0]}", url)
            raise UserError(f"--storage {masked(url)}: cannot open ({reason})") from None
    if url.startswith("journal:") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal:"))
        if not path.parent.exists():
            raise UserError(f"--storage {masked(url)}: folder {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
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
