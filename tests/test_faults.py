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

from automl.hpo.storage import load_study, open_storage

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


@pytest.mark.slow
def test_two_searches_started_together_in_a_fresh_folder_both_work_on_different_configurations(tmp_path):
    procs = [subprocess.Popen(_search("--trials", "2", "--quiet"), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
    study = load_study("quick-digits", f"journal:{tmp_path}/automl.journal")
    configs = [json.dumps(t.params, sort_keys=True) for t in study.trials]
    assert len(configs) >= 2 and len(set(configs)) == len(configs)  # neither ran what the other ran
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
        assert first.data.tags["automl.fail_reason"].startswith("oom: ResourceExhaustedError")
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
