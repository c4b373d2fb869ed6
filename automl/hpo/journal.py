"""The journal file storage, made safe for processes that die: Optuna's ``JournalStorage`` over
its ``JournalFileBackend``, plus a liveness rule (Optuna 5's journal has no heartbeat) and an
append that never lands on a torn line.

Liveness: the process running a trial holds an exclusive ``flock`` on ``<journal>.locks/trial-<id>.lock``
from the trial's first heartbeat until its end state is written. The kernel drops the lock when
the process dies, however it dies (SIGKILL, OOM killer, segfault), so "the lock can be taken"
means "its owner is dead", with no pid to be reused and no clock to trust. The storage answers
Optuna's heartbeat interface with that rule, so Optuna's own ``fail_stale_trials`` (run before
every trial and by ``automl`` when a search starts and ends) fails a dead trial and its
``RetryHeartbeatStaleTrialCallback`` retries it once with the same parameters.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.trial import FrozenTrial, TrialState

from automl.errors import SearchStopped
from automl.hpo.locks import try_lock

LOCK_ATTR = "automl:liveness_lock"  # system attr: the lock file a trial's process holds
CHUNK = 1 << 16


class StorageWriteError(SearchStopped):
    """The storage could not record an operation (e.g. the disk is full); nothing was half-written."""


class TornSafeJournalFile(JournalFileBackend):
    """Optuna's journal file backend, whose append first cuts a torn last line off.

    A last line without its newline is a write that never completed (the writer died, or the disk
    filled up mid-write): every reader skips it (``read_logs`` reads only complete lines), so
    removing it changes nothing anyone has seen. Appending after it instead would glue the next
    operation onto the fragment, and every later read would end in ``JSONDecodeError``.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        with get_lock_file(self._lock), open(self._file_path, "r+b", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            complete = _complete_length(f, end)
            try:
                if complete < end:
                    f.truncate(complete)
                f.seek(complete)
                view = memoryview(data)
                while view:
                    view = view[f.write(view):]
                os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):  # else the next append cuts the fragment off
                    f.truncate(complete)
                raise StorageWriteError(f"cannot write the journal {self._file_path} ({exc.strerror}); all it "
                                        "held before is kept: rerun the same command once it can be written") from None


def _complete_length(f, end: int) -> int:
    """The length of the file up to and including its last newline."""
    if end == 0:
        return 0
    f.seek(end - 1)
    if f.read(1) == b"\n":  # the usual case: nothing torn
        return end
    pos = end
    while pos > 0:
        start = max(0, pos - CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


class LockedJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage whose RUNNING trials are known dead when their process's lock is free."""

    def __init__(self, path: str, grace_seconds: float, retries: int = 1):
        super().__init__(TornSafeJournalFile(path))
        self._locks = Path(path + ".locks")
        self._grace = grace_seconds
        with warnings.catch_warnings():  # "experimental" in Optuna since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)
        self._held: dict[int, int] = {}  # trial id -> fd of the lock this process holds for it

    def _lock_name(self, trial_id: int) -> str:
        return f"trial-{trial_id}.lock"

    # --- BaseHeartbeat ----------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat thread calls this as the trial starts (then every interval: nothing to do)."""
        if trial_id in self._held:
            return
        self._locks.mkdir(exist_ok=True)
        fd = try_lock(self._locks / self._lock_name(trial_id))
        if fd is None:  # a checker is looking at it this very moment: the next beat takes it
            return
        self._held[trial_id] = fd
        try:
            self.set_trial_system_attr(trial_id, LOCK_ATTR, self._lock_name(trial_id))
        except StorageWriteError:  # the trial's own next write says so, in the search's thread
            self._release(trial_id)

    def _release(self, trial_id: int) -> None:
        (self._locks / self._lock_name(trial_id)).unlink(missing_ok=True)
        os.close(self._held.pop(trial_id))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if self._is_dead(t)]

    def get_heartbeat_interval(self) -> int:
        return max(1, round(self._grace / 4))  # the lock is taken at the first beat; later beats do nothing

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        return self._retry

    # --- the end of a trial releases its lock -------------------------------------------

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:  # also when the write failed: the trial is over for this process either way
            if state.is_finished() and trial_id in self._held:
                self._release(trial_id)

    def _is_dead(self, trial: FrozenTrial) -> bool:
        name = self._lock_name(trial._trial_id)
        if trial.system_attrs.get(LOCK_ATTR) != name:  # not locked yet (a retry copies its original's attrs)
            started = trial.datetime_start or datetime.datetime.now()
            return (datetime.datetime.now() - started).total_seconds() > self._grace
        if trial._trial_id in self._held:
            return False
        fd = try_lock(self._locks / name)  # (re)created when whoever failed it first removed it
        if fd is None:
            return False
        (self._locks / name).unlink(missing_ok=True)
        os.close(fd)
        return True
