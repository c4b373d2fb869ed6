"""Nothing lost, nothing left RUNNING: real SIGKILLs, a real torn journal, a real full disk, a
real MLflow failure, a real out-of-memory and two real processes at once."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from automl.errors import SearchStopped
from automl.hpo.settings import SearchSettings
from automl.hpo.storage import load_study, open_storage
from automl.hpo.workers import MAX_DEATHS_IN_A_ROW, Pool

from .conftest import ROOT, SPACES

AUTOML = [sys.executable, "-m", "automl.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
QUICK = str(SPACES / "quick.yaml")
COMPLETE, FAIL, RUNNING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                           optuna.trial.TrialState.RUNNING)


def _runs(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def _quiet_objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


# --- the journal: torn lines and dead trials, at the storage level (no training) --------------


def test_a_torn_last_line_is_cut_off_before_the_next_append_and_every_finished_trial_stays_readable(tmp_path):
    path = tmp_path / "automl.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}"))
    study.optimize(_quiet_objective, n_trials=3)
    params = [t.params for t in study.trials]
    whole = path.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]  # trial 2's end
    with open(path, "r+b") as f:  # that write cut short, as a crash or a full disk leaves it
        f.truncate(len(whole) - len(last) // 2 - 1)
    assert not path.read_bytes().endswith(b"\n")

    again = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}"))
    again.optimize(_quiet_objective, n_trials=2)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # no line glued onto a fragment
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(path)))  # Optuna's own reader, from scratch
    trials = optuna.load_study(study_name="s", storage=plain).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, FAIL, COMPLETE, COMPLETE]
    assert [t.params for t in trials[:3]] == params
    # trial 2, whose end was torn off, was RUNNING with no live owner: failed, and retried as trial 3
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[3]) == 2 and trials[3].params == params[2]


def test_a_trial_whose_process_died_is_failed_and_retried_once_with_its_parameters(tmp_path):
    """A real process takes a trial and is SIGKILLed in it; the next optimize on the journal
    fails it at once (its lock is free) and runs it again with the same parameters."""
    path = tmp_path / "automl.journal"
    optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}"))
    script = (f"import optuna, time\nfrom automl.hpo.storage import load_study\n"
              f"s = load_study('s', 'journal:{path}')\n"
              "def f(t):\n    t.suggest_float('x', 0, 1)\n    print('in', flush=True)\n    time.sleep(600)\n"
              "s.optimize(f, n_trials=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "in\n"
    alive = load_study("s", f"journal:{path}")
    alive.optimize(_quiet_objective, n_trials=1)  # a live owner's trial is left alone
    assert [t.state for t in alive.trials] == [RUNNING, COMPLETE]
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    study = load_study("s", f"journal:{path}")
    study.optimize(_quiet_objective, n_trials=2)
    killed, retried = study.trials[0], [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert killed.state == FAIL
    assert len(retried) == 1 and retried[0].state == COMPLETE and retried[0].params == killed.params
    assert not list((tmp_path / "automl.journal.locks").iterdir())  # no lock file left behind


# --- real searches ----------------------------------------------------------------------------


def _search(*args: str) -> list[str]:
    return [*AUTOML, "search", "--space", QUICK, "--data", "digits", "--epochs", "1", "--pruner", "none", *args]


def _wait_for(proc: subprocess.Popen, text: str) -> list[str]:
    """Read ``proc``'s output until a line containing ``text``; returns the lines read."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"never printed {text!r}:\n{''.join(seen)[-3000:]}")


def _no_run_running(tracking_uri: str, experiment: str) -> list:
    runs = _runs(tracking_uri, experiment)
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    return runs


@pytest.mark.slow
def test_a_search_killed_mid_trial_is_finished_by_the_next_one(tmp_path):
    """kill -9 of `automl search` on the default journal, then the same command: the dead trial
    is failed and retried with its parameters, every MLflow run is closed, the best model tested."""
    command = _search("--trials", "1", "--study", "k")
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _wait_for(proc, "trial 0 (0/1 finished)")
    time.sleep(2)  # into its training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage, tracking = f"journal:{tmp_path}/automl.journal", f"sqlite:///{tmp_path}/mlflow.db"
    assert [t.state for t in load_study("k", storage).trials] == [RUNNING]

    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = load_study("k", storage)
    killed = study.trials[0]
    assert killed.state == FAIL
    retried = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].state == COMPLETE and retried[0].params == killed.params
    assert study.user_attrs["best_test"]["trial"] == study.best_trial.number
    runs = _no_run_running(tracking, "k")
    killed_runs = [r for r in runs if r.data.tags.get("automl.trial") == "0"]
    assert [(r.info.status, r.data.tags["automl.state"]) for r in killed_runs] == [("FAILED", "FAIL")]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FINISHED"] and "test_accuracy" in parents[0].data.metrics


# quick.yaml with Adam alone: one LR sweep, not two, before the coarse search
TUNE_SPACE = """
model:
  stem: [{filters: 32, kernel_size: 3}]
  stages:
    - {family: vgg, filters: {choice: [16, 32], default: 32}, convs: {int: [1, 2], default: 2}}
    - {family: vgg, filters: {choice: [32, 64], default: 64}, convs: {int: [1, 2], default: 2}}
training:
  epochs: 15
  optimizer:
    name: adam
    learning_rate: {float: [1.0e-4, 1.0e-1], log: true, default: 2.0e-3}
"""


@pytest.mark.slow
def test_a_tune_killed_in_its_coarse_search_is_finished_by_the_next_one(tmp_path, write_space):
    """kill -9 of `automl tune` while its coarse search trains trial 0 leaves that trial, its run,
    the coarse stage's run and the tune's run RUNNING; the same command again fails the trial,
    retries it once with its parameters, closes every run and finishes. (A budget of 60 s: the
    checks take about 20 of them and coarse gets enough of the rest that its speed floor does not
    prune the retried default configuration on a busy host.)"""
    space = write_space(TUNE_SPACE, "adam.yaml")
    command = [*AUTOML, "tune", "--space", str(space), "--data", "digits", "--budget", "60", "--coarse-epochs", "1",
               "--until", "coarse"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    storage, tracking = f"journal:{tmp_path}/automl.journal", f"sqlite:///{tmp_path}/mlflow.db"
    study = "adam-digits-tune"
    _wait_for(proc, "trial 0 (0 finished)")
    for _ in range(240):  # its run opened, its training begins
        if any(r.info.run_name == "trial-0" for r in _runs(tracking, study)):
            break
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [t.state for t in load_study(f"{study}/coarse", storage).trials] == [RUNNING]
    left = {r.info.run_name for r in _runs(tracking, study) if r.info.status == "RUNNING"}
    assert left == {"tune", "coarse", "trial-0"}

    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "lr_range: done before" in rerun.stdout and "coarse: ok" in rerun.stdout
    coarse = load_study(f"{study}/coarse", storage)
    killed = coarse.trials[0]
    assert killed.state == FAIL and not coarse.get_trials(states=(RUNNING,))
    retried = [t for t in coarse.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].state.is_finished() and retried[0].params == killed.params
    runs = {r.info.run_name: r for r in _no_run_running(tracking, study)}
    assert (runs["trial-0"].info.status, runs["trial-0"].data.tags["automl.state"]) == ("FAILED", "FAIL")
    assert runs["tune"].info.status == "FINISHED"
    # the coarse stage's run: reopened by the search that resumed it, closed as it ended, and not
    # marked failed for the interruption it came through
    assert runs["coarse"].info.status == "FINISHED" and runs["coarse"].data.tags["automl.ok"] == "True"
    assert "automl.state" not in runs["coarse"].data.tags and "automl.fail_reason" not in runs["coarse"].data.tags


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_replaced_and_the_search_goes_on(tmp_path):
    """`automl search --workers 2` on the journal, one worker SIGKILLed in a trial: the pool
    starts another, the dead trial is failed and retried, the search reaches its target."""
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(_search("--trials", "2", "--workers", "2", "--study", "w"), cwd=tmp_path, env=ENV,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    storage, tracking = f"journal:{tmp_path}/automl.journal", f"sqlite:///{tmp_path}/mlflow.db"
    victim = None
    for _ in range(600):
        workers = {f"{socket.gethostname()}:{pid}": int(pid)
                   for pid in re.findall(r"worker (\d+) started", log.read_text())}
        if (tmp_path / "automl.journal").exists():
            running = load_study("w", storage).get_trials(deepcopy=False, states=(RUNNING,))
            victim = next((t for t in running if t.user_attrs.get("worker") in workers), None)
        if victim is not None:
            time.sleep(1)  # into its training
            os.kill(workers[victim.user_attrs["worker"]], signal.SIGKILL)
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no worker started a trial:\n{log.read_text()[-3000:]}")
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "killed by SIGKILL; a new worker takes its place (a trial it was running is retried)" in log.read_text()

    study = load_study("w", storage)
    killed = study.trials[victim.number]
    assert killed.state == FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == COMPLETE and retried[0].params == killed.params
    assert len([t for t in study.trials if t.state == COMPLETE]) >= 2
    runs = _no_run_running(tracking, "w")
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]


def _dying_workers(tmp_path) -> dict:
    """The environment of a search whose pool workers SIGKILL themselves as a trial's training
    starts (tests/dying_worker/sitecustomize.py), each adding its pid to the file ``fits`` first."""
    return {**ENV, "PYTHONPATH": f"{ROOT / 'tests' / 'dying_worker'}:{ROOT}",
            "AUTOML_TEST_FITS": str(tmp_path / "fits")}


@pytest.mark.slow
def test_workers_that_keep_dying_stop_the_search_in_one_line(tmp_path):
    """Every worker SIGKILLs itself as its trial's training starts: the pool replaces the dead
    until MAX_DEATHS_IN_A_ROW have died with no trial finished, then stops the search with exit
    code 1 (SearchStopped) and one line saying why; nothing is left RUNNING."""
    done = subprocess.run(_search("--trials", "2", "--workers", "2", "--study", "d"), cwd=tmp_path,
                          env=_dying_workers(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    why = [line for line in done.stderr.splitlines() if line.startswith("automl:")]
    assert len(why) == 1 and re.fullmatch(
        rf"automl: {MAX_DEATHS_IN_A_ROW} workers died in a row with no trial finished in between \(the last, \d+, "
        r"killed by SIGKILL\); see their output above", why[0]), done.stderr[-3000:]
    assert done.stderr.rstrip().endswith(why[0])
    # Stopped at the third death: two replaced, none started after it (two workers at a time)
    assert len(re.findall(r"worker \d+ started", done.stdout)) == MAX_DEATHS_IN_A_ROW + 1, done.stdout
    assert done.stdout.count("killed by SIGKILL; a new worker takes its place") == MAX_DEATHS_IN_A_ROW - 1
    fits = (tmp_path / "fits").read_text().split()  # one per worker that reached a training; the fourth may have
    assert MAX_DEATHS_IN_A_ROW <= len(fits) == len(set(fits)) <= MAX_DEATHS_IN_A_ROW + 1

    study = load_study("d", f"journal:{tmp_path}/automl.journal")
    assert not study.get_trials(states=(RUNNING,)) and not study.get_trials(states=(COMPLETE,))
    failed = {str(t.number) for t in study.get_trials(states=(FAIL,))}
    assert len(failed) >= MAX_DEATHS_IN_A_ROW
    runs = _no_run_running(f"sqlite:///{tmp_path}/mlflow.db", "d")
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]
    trial_runs = {r.data.tags["automl.trial"]: r.info.status for r in runs if "automl.trial" in r.data.tags}
    assert len(trial_runs) >= MAX_DEATHS_IN_A_ROW and set(trial_runs) <= failed
    assert set(trial_runs.values()) <= {"FAILED", "KILLED"}  # KILLED: the fourth, stopped by Ctrl-C


class _StandInPool(Pool):
    """The search's pool with stand-ins for its workers, real processes all: the i-th one started
    SIGKILLs itself at once when ``fates[i]`` is "die", or records a finished trial in the study
    and exits 0 (as a recycled worker does) when it is "finish"."""

    FINISH = ("import os, sys, optuna\nfrom automl.hpo.storage import open_storage\n"
              "study = optuna.load_study(study_name=sys.argv[1], storage=open_storage(os.environ['AUTOML_STORAGE']))\n"
              "study.add_trial(optuna.trial.create_trial(value=0.5))\n")

    def __init__(self, settings, study, fates: list[str], said: list[str]):
        super().__init__(settings, study, said.append)
        self.fates = fates

    def _command(self, gpu):
        if self.fates[self.started] == "die":
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        return [sys.executable, "-c", self.FINISH, self.settings.study]


def test_workers_dying_between_finished_trials_do_not_stop_the_pool(tmp_path):
    """Four deaths, never MAX_DEATHS_IN_A_ROW (3) without a trial finished in between: the pool
    replaces each and reaches the target. (The rule on real automl workers: the test above.)"""
    settings = SearchSettings(space=QUICK, study="p", trials=2, storage=f"journal:{tmp_path}/automl.journal",
                              tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", out=str(tmp_path / "out"))
    study = optuna.create_study(study_name="p", storage=open_storage(settings.storage))
    said: list[str] = []
    pool = _StandInPool(settings, study, ["die", "die", "finish", "die", "die", "finish"], said)
    pool.run()
    assert pool.started == 6 and len(study.get_trials(states=(COMPLETE,))) == 2
    assert len([line for line in said if "killed by SIGKILL; a new worker takes its place" in line]) == 4

    said.clear()
    pool = _StandInPool(settings, study, ["finish", "die", "die", "die", "finish"], said)
    pool.settings.trials = 4
    with pytest.raises(SearchStopped, match=rf"^{MAX_DEATHS_IN_A_ROW} workers died in a row with no trial finished"):
        pool.run()
    assert pool.started == 4 and len(study.get_trials(states=(COMPLETE,))) == 3


@pytest.mark.slow
def test_two_searches_started_together_in_a_fresh_folder_both_work_on_different_configurations(tmp_path):
    """Twice: in a fresh folder (MLflow's tables made once), then on the study that made, where each
    process's sampler would start from the same seed (the trials so far) but for its own slot."""
    for trials in (2, 4):
        procs = [subprocess.Popen(_search("--trials", str(trials), "--sampler", "random", "--quiet"), cwd=tmp_path,
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        for proc in procs:
            output, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, output[-3000:]
        study = load_study("quick-digits", f"journal:{tmp_path}/automl.journal")
        configs = [json.dumps(t.params, sort_keys=True) for t in study.trials]
        assert len(configs) >= trials and len(set(configs)) == len(configs)  # neither ran what the other ran
    runs = _no_run_running(f"sqlite:///{tmp_path}/mlflow.db", "quick-digits")
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1  # one search, one parent run


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs, mounted for the test (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_search_in_one_line_and_keeps_the_journal_whole(tmp_path, tiny_disk):
    journal = tiny_disk / "automl.journal"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(_search("--trials", "3", "--study", "full", "--storage", f"journal:{journal}"),
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):  # trial 0 recorded, then the disk fills up (another program's file)
        if journal.exists() and load_study("full", f"journal:{journal}").get_trials(states=(COMPLETE,)):
            break
        time.sleep(0.5)
    with open(tiny_disk / "filler", "wb", buffering=0) as filler:
        with pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 4096)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "AssertionError" not in err
    assert lines[-1].startswith(f"automl: cannot write the journal {journal} (No space left on device)")

    content = journal.read_bytes()
    assert content.endswith(b"\n") and all(json.loads(line) for line in content.splitlines())
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    assert optuna.load_study(study_name="full", storage=plain).trials[0].state == COMPLETE
    runs = _no_run_running(tracking, "full")
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]


@pytest.mark.slow
def test_mlflow_failing_mid_trial_neither_fails_the_trial_nor_loses_its_run(tmp_path):
    """The MLflow database's folder made immutable (chattr +i, which binds root too) while trial 0
    trains, then writable again: the trial completes, one line per failure, and its run is
    finished with its metrics once MLflow answers again."""
    track = tmp_path / "track"
    track.mkdir()
    tracking = f"sqlite:///{track}/mlflow.db"
    proc = subprocess.Popen(_search("--trials", "2", "--study", "t", "--tracking-uri", tracking), cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, "trial 0 (0/2 finished)")
    if subprocess.run(["chattr", "+i", str(track)], capture_output=True).returncode != 0:
        proc.kill()
        pytest.skip("chattr +i is not supported on this file system")
    try:
        _wait_for(proc, "trial 0 COMPLETE")
    finally:
        subprocess.run(["chattr", "-i", str(track)], check=True)
    output, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if line.startswith("automl: warning: MLflow")]
    assert warnings and "Traceback" not in err
    study = load_study("t", f"journal:{tmp_path}/automl.journal")
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]
    assert (tmp_path / study.trials[0].user_attrs["model_path"]).is_file()
    runs = _no_run_running(tracking, "t")
    trial0 = [r for r in runs if r.data.tags.get("automl.trial") == "0"]
    assert [(r.info.status, r.data.tags["automl.state"]) for r in trial0] == [("FINISHED", "COMPLETE")]
    assert "val_accuracy" in trial0[0].data.metrics and "best_val_accuracy" in trial0[0].data.metrics


@pytest.mark.parametrize("backend", ["optuna", "keras-tuner"])
def test_the_study_records_a_trial_before_mlflow_finishes_its_run(tmp_path, monkeypatch, write_space, backend):
    """MLflow's part of a trial's end (its plot, its retries when the tracking store is in trouble)
    comes after the study holds the outcome: a process killed in between loses no finished trial."""
    import automl

    storage, seen = f"journal:{tmp_path}/j.journal", []
    real = MlflowClient.set_terminated

    def set_terminated(client, run_id, status=None, end_time=None):
        trials = [t for t in load_study("first", storage).trials
                  if t.user_attrs.get("mlflow_run_id") == run_id and "metrics" in t.user_attrs]
        seen.append(len(trials))
        return real(client, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", set_terminated)
    space = write_space("""
        model:
          stem: [{filters: 8, kernel_size: 3}]
          stages: [{family: vgg, filters: 8, convs: 1}]
        training:
          epochs: 1
        """)
    study = automl.search(space, "digits", study="first", trials=1, backend=backend, verbose=False, storage=storage,
                          tracking_uri=f"sqlite:///{tmp_path}/m.db", out=str(tmp_path / "out"))
    assert study.trials[0].state == COMPLETE
    assert seen[0] == 1  # the trial's run was the first one finished, and the study held its record then


# --- out of memory ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="measures address space in /proc (Linux)")
def test_a_trial_out_of_memory_for_real_is_retried_once_with_half_the_batch_by_either_backend(tmp_path):
    """tests/oom_search.py limits its own address space between what one model takes at batch
    64 and at 128, then searches with each backend: TensorFlow cannot allocate at 128."""
    from .oom_search import HALF, SEARCHES

    done = subprocess.run([sys.executable, "-m", "tests.oom_search", str(tmp_path)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    tracking = f"sqlite:///{tmp_path}/m.db"
    for backend, trials in SEARCHES.items():
        study = load_study(backend, f"journal:{tmp_path}/j.journal")
        assert [t.state for t in study.trials] == [COMPLETE] * trials
        retried = [t for t in study.trials if "oom_batch_size" in t.user_attrs]
        assert len(retried) == 1 and retried[0].user_attrs["oom_batch_size"] == 2 * HALF, done.stdout
        assert retried[0].user_attrs["config"]["training"]["batch_size"] == HALF
        runs = _no_run_running(tracking, backend)
        first, second = sorted((r for r in runs if r.data.tags.get("automl.trial") == str(retried[0].number)),
                               key=lambda r: r.info.start_time)
        assert (first.info.status, first.data.tags["automl.state"], first.data.params["training.batch_size"]) == (
            "FAILED", "FAIL", str(2 * HALF))
        reason = first.data.tags["automl.fail_reason"]  # TF's first line, and the one naming the allocation
        assert reason.startswith("oom: ResourceExhaustedError")
        assert f"OOM when allocating tensor with shape[{2 * HALF}," in reason
        traceback = MlflowClient(tracking).download_artifacts(first.info.run_id, "traceback.txt", str(tmp_path))
        assert f"OOM when allocating tensor with shape[{2 * HALF}," in Path(traceback).read_text()  # TF's own words
        assert (second.info.status, second.data.tags["automl.state"], second.data.params["training.batch_size"]) == (
            "FINISHED", "COMPLETE", str(HALF))


@pytest.mark.slow
def test_out_of_memory_with_a_fixed_batch_size_fails_the_trial_alone(tmp_path, monkeypatch, write_space):
    """Planted: with no batch size to halve there is no retry, and that decision (and the search
    going on) needs no real allocation failure, nor the process and measurements one takes."""
    import automl
    from automl.hpo import trial as trial_module

    real_fit = trial_module.fit

    def fit_with_little_memory(config, data, **kwargs):
        if config.model.stages[0].filters == 16:
            raise MemoryError("planted: no memory for 16 filters")
        return real_fit(config, data, **kwargs)

    monkeypatch.setattr(trial_module, "fit", fit_with_little_memory)
    space = write_space(
        """
        model:
          stem: [{filters: 8, kernel_size: 3}]
          stages: [{family: vgg, filters: {choice: [16, 8], default: 16}, convs: 1}]
        training:
          epochs: 1
        """
    )
    study = automl.search(space, "digits", study="oom", trials=1, sampler="random", verbose=False,
                          storage=f"journal:{tmp_path}/j.journal", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                          out=str(tmp_path / "out"))
    first = study.trials[0]  # the default configuration: 16 filters, no batch size to halve
    assert first.state == FAIL and first.user_attrs["fail_reason"].startswith("oom: MemoryError")
    assert "oom_batch_size" not in first.user_attrs
    assert study.trials[-1].state == COMPLETE
