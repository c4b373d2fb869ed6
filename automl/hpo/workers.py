"""Many processes on one study: Optuna's own distributed mode, no scheduler of ours.

A worker is ``automl worker --study NAME --storage URL``: it reads the search's settings from
the study, runs trials until the study holds its target of finished trials (or until it has
run ``--recycle K`` trials, then exits so its memory goes back to the system) and logs each
trial as a child of the search's MLflow parent run. Workers may run on any machine that
reaches the storage (PostgreSQL or MySQL across machines; the journal file on one machine).

``automl search --workers N`` (or ``--recycle K``, or ``--gpus 0,1``) keeps N such processes
running on this machine until the target is reached, replacing each recycled one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import optuna

from automl import preflight
from automl.errors import SearchStopped, UserError
from automl.hpo import records
from automl.hpo.settings import SearchSettings
from automl.hpo.storage import load_study, running_trials
from automl.hpo.study import finished_count
from automl.quiet import POOL_ENV

MAX_DEATHS_IN_A_ROW = 3  # then the cause is not one trial: the pool stops


def search_over(study: optuna.Study, trials: int | None) -> str | None:
    """Why the search of ``study`` runs no more trials (its target reached, its time run out), or None."""
    if trials is not None and finished_count(study) >= trials:
        return f"its target of {trials} finished trials is reached"
    deadline = records.search_deadline(study)
    if deadline is not None and time.time() >= deadline:
        return f"its time ran out at {datetime.fromtimestamp(deadline):%H:%M:%S}"
    return None


def worker_settings(study: optuna.Study, storage: str, tracking_uri: str | None, seed: int | None,
                    recycle: int | None, timeout: float | None, verbose: bool) -> SearchSettings:
    """The search's settings as the study keeps them, with this worker's own: its storage and
    MLflow addresses, sampler seed, recycling, and a timeout that ends at the search's deadline."""
    stored = records.search_settings(study)
    if stored is None:
        raise UserError(f"--study {study.study_name}: not a search study (no search settings); start it with "
                        f"automl search or automl study create")
    if stored["backend"] != "optuna":
        raise UserError(f"--study {study.study_name}: workers run Optuna searches; this one is {stored['backend']}")
    deadline = records.search_deadline(study)
    if deadline is not None:
        left = max(deadline - time.time(), 1.0)  # past it, search_over stops the worker first
        timeout = min(timeout, left) if timeout else left
    if stored["trials"] is None and timeout is None:  # a time-bounded search from before deadlines were kept
        raise UserError(f"--study {study.study_name}: this search ends by time but records no deadline; give the "
                        f"worker --timeout")
    if seed is None:  # distinct per machine and process, so workers do not propose the same trials
        seed = int(hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()[:7], 16)
    image_size = tuple(stored["image_size"]) if stored["image_size"] else None
    subset = tuple(stored["subset"]) if stored.get("subset") else None
    # The search's own seed stays: data splits and each trial's training seed do not depend on
    # which worker runs it.
    return SearchSettings(**{**stored, "image_size": image_size, "subset": subset}, storage=storage,
                          tracking_uri=tracking_uri, sampler_seed=seed, recycle=recycle, timeout=timeout,
                          verbose=verbose)


def run_worker(study_name: str, storage: str, tracking_uri: str | None = None, seed: int | None = None,
               recycle: int | None = None, timeout: float | None = None, gpu: str | None = None,
               verbose: bool = True) -> tuple[int, str | None]:
    """Run trials of ``study_name`` in this process; returns how many it ran and, when it ran
    none because the search was over already, why."""
    if gpu is not None:
        pin_gpu(gpu)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(study_name, storage)
    over = search_over(study, (records.search_settings(study) or {}).get("trials"))
    if over:
        return 0, over
    settings = worker_settings(study, storage, tracking_uri, seed, recycle, timeout, verbose)
    # before Keras loads, and before this worker takes a trial it could not record
    preflight.check_destinations(settings.out, settings.tracking_uri, settings.storage)
    from automl.data import without_test
    from automl.hpo.hooks import SearchHooks, from_specs
    from automl.hpo.live import Live
    from automl.hpo.optuna_backend import optimize
    from automl.hpo.search_run import end_search_run
    from automl.space import SearchSpace
    from automl.tracking import Tracker

    space = SearchSpace.load(settings.space)
    data = settings.load_data()
    live = Live(settings.trials, settings.objective, settings.direction, settings.verbose)
    tracker = Tracker(settings.tracking_uri, settings.experiment, create=False)
    parent = records.parent_run(study)
    tracker.reopen_parent(parent)
    hooks = SearchHooks(trial_callbacks=from_specs(records.trial_hooks(study)))  # the rest is the starter's
    status, ran = "KILLED", 0
    try:
        with precision(settings):
            ran = optimize(settings, space, without_test(data), study, tracker, parent, live, hooks)
        status = "FINISHED"
        return ran, None
    except Exception:
        status = "FAILED"
        raise
    finally:  # the last worker out closes the parent run (and the runs of trials whose worker died)
        recycled = settings.recycle is not None and ran >= settings.recycle
        final = not recycled or search_over(study, settings.trials) is not None
        end_search_run(settings, study, tracker, parent, status, live, data, final=final)


def follow_tune(tune_name: str, storage: str, tracking_uri: str | None = None, seed: int | None = None,
                recycle: int | None = None, timeout: float | None = None, gpu: str | None = None,
                verbose: bool = True) -> int:
    """Serve a tune's search stages one after another: join each search the tune records as its
    current one (coarse, refine, each round of the loop) until its deadline, then wait for the
    next, until the tune's searches are over (or ``recycle`` trials, or ``timeout`` seconds, or
    the local tune that started this worker is gone). Returns how many trials it ran. Framework
    and data stay loaded between the stages, so the start-up is paid once."""
    if gpu is not None:
        pin_gpu(gpu)
    tune = load_study(tune_name, storage)
    owner = os.environ.get(POOL_ENV)
    end = time.monotonic() + timeout if timeout else None
    served, ran = set(), 0
    while (current := records.current_search(tune)) != "":
        if current and current not in served:
            served.add(current)
            left = end - time.monotonic() if end else None
            done, _ = run_worker(current, storage, tracking_uri, seed, recycle and recycle - ran, left, None, verbose)
            ran += done
        if (recycle and ran >= recycle) or (end and time.monotonic() > end) or \
                (owner and os.getppid() != int(owner)):
            break
        time.sleep(0.5)
    return ran


@contextmanager
def precision(settings: SearchSettings):
    """The Keras dtype policy of this process while its trials run: mixed_float16 if asked for."""
    import keras

    before = keras.mixed_precision.global_policy()
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def pin_gpu(gpu: str) -> None:
    """Before any framework starts: this process sees one GPU and grows its memory as needed."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # JAX


class Pool:
    """Keeps ``settings.workers`` worker processes running until the study reaches its target or
    the search's deadline passes; then waits for the running ones, whose own deadline (the
    study's) prunes their trials as in a single process."""

    def __init__(self, settings: SearchSettings, study: optuna.Study, say):
        self.settings, self.study, self.say = settings, study, say
        self.procs: dict[subprocess.Popen, str | None] = {}
        self.started = 0
        self.deaths, self.finished_at_death = 0, -1  # workers dead in a row, trials finished at the last death
        self.gpus = list(settings.gpus or [])

    def run(self) -> None:
        try:
            while True:
                self._reap()
                if search_over(self.study, self.settings.trials):
                    if not self.procs:
                        return
                else:
                    while len(self.procs) < self.settings.workers:
                        self._start()
                time.sleep(0.5)
        except BaseException:  # Ctrl-C or workers dying: stop the others, whose trials end as failed
            self._stop_all()
            raise

    def _command(self, gpu: str | None) -> list[str]:
        s = self.settings
        # storage and tracking URI travel in the environment (see _environment): a command line is public
        command = [sys.executable, "-m", "automl.cli", "worker", "--study", s.study,
                   "--seed", str(s.seed + 7919 * (self.started + 1))]
        if s.recycle:
            command += ["--recycle", str(s.recycle)]
        if gpu is not None:
            command += ["--gpu", gpu]
        return command + ([] if s.verbose else ["--quiet"])

    def _environment(self) -> dict[str, str]:
        """The URLs a worker reads when it has no flag (automl/settings.py), where only its own user
        can read them: they may hold a password."""
        s = self.settings
        return {**os.environ, "AUTOML_STORAGE": s.storage, "AUTOML_TRACKING_URI": s.tracking_uri,
                POOL_ENV: str(os.getpid())}

    def _start(self) -> None:
        busy = set(self.procs.values())
        gpu = next((g for g in self.gpus if g not in busy), None)  # one worker per GPU
        proc = subprocess.Popen(self._command(gpu), env=self._environment())
        self.started += 1
        self.procs[proc] = gpu
        self.say(f"worker {proc.pid} started ({self.started} so far{f', GPU {gpu}' if gpu else ''})")

    def _reap(self) -> None:
        """Forget the workers that exited; a dead one is replaced (its trial is failed and retried
        by the next worker to start a trial), unless workers keep dying with no trial finishing."""
        for proc in [p for p in self.procs if p.poll() is not None]:
            del self.procs[proc]
            if proc.returncode in (130, -signal.SIGINT):  # Ctrl-C reached the worker first
                raise KeyboardInterrupt
            if proc.returncode == 2:  # bad input: every new worker would refuse it the same way
                raise SearchStopped(f"worker {proc.pid} exited with code 2; see its output above")
            if proc.returncode != 0:
                self._died(proc)

    def _died(self, proc: subprocess.Popen) -> None:
        code = proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        finished = finished_count(self.study)
        self.deaths = self.deaths + 1 if finished == self.finished_at_death else 1
        self.finished_at_death = finished
        if self.deaths >= MAX_DEATHS_IN_A_ROW:
            raise SearchStopped(f"{self.deaths} workers died in a row with no trial finished in between (the last, "
                                f"{proc.pid}, {how}); see their output above")
        self.say(f"worker {proc.pid} {how}; a new worker takes its place (a trial it was running is retried)")

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


class TunePool(Pool):
    """A tune's workers, kept across its search stages: each is ``automl worker --study <tune>``
    (``follow_tune``), started once; ``serve`` points them at one search until its time is up."""

    def __init__(self, settings: SearchSettings, tune: optuna.Study, say):
        """``settings``: the tune's (its study, storage, MLflow, workers, GPUs, recycling, seed)."""
        super().__init__(settings, tune, say)
        self.tune = tune

    def start(self) -> None:
        """Start the workers ahead of the first search: they wait for it (``follow_tune``)."""
        records.set_current_search(self.tune, None)
        while len(self.procs) < self.settings.workers:
            self._start()

    def serve(self, study: optuna.Study, settings: SearchSettings) -> None:
        """Run ``study``'s trials on the workers until its deadline, then until its running
        trials end (its deadline prunes them at their next epoch end)."""
        self.study = study  # whose finished trials tell a worker's death from a streak of them
        records.set_current_search(self.tune, study.study_name)
        try:
            while not search_over(study, settings.trials):
                self._reap()
                while len(self.procs) < self.settings.workers:
                    self._start()
                time.sleep(0.5)
            while running_trials(study) and self.procs:
                self._reap()
                time.sleep(0.5)
        except BaseException:  # Ctrl-C or workers dying: stop the others, whose trials end as failed
            self.close()
            raise

    def close(self) -> None:
        """The tune's searches are over: its workers stop."""
        records.set_current_search(self.tune, "")
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._stop_all()
