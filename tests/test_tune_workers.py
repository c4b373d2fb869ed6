"""The recipe's searches on a worker pool: ``automl tune --workers 2`` on a real PostgreSQL
storage, joined during its coarse stage by an ``automl worker --study <tune>`` started
separately, as one on another machine would."""

import os
import re
import subprocess
import sys
import time

import pytest

from automl.hpo import records
from automl.hpo.records import TrialRecord
from automl.hpo.storage import load_study

from .conftest import ROOT, SPACES

# one worker runs this module: its tests share one tune (a module fixture), set up once
pytestmark = pytest.mark.xdist_group(name="pooled_tune")

AUTOML = [sys.executable, "-m", "automl.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
BUDGET = 150
STUDY = "pooled"


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, postgres_url):
    work = tmp_path_factory.mktemp("pooled")
    store = ["--storage", postgres_url, "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    start = time.perf_counter()
    tune = subprocess.Popen([*AUTOML, "tune", "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study",
                             STUDY, "--budget", str(BUDGET), "--coarse-epochs", "2", "--workers", "2",
                             *store], cwd=work, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = tune.stdout.readline()  # the tune's study exists once it says what it tunes
    assert first.startswith(f"tune {STUDY}:"), first + tune.communicate()[0]
    # started apart, as on another machine, while the tune runs its checks: it joins the searches
    joined = subprocess.Popen([*AUTOML, "worker", "--study", STUDY, *store, "--quiet"], cwd=work, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rest, _ = tune.communicate(timeout=600)
    wall = time.perf_counter() - start
    joined_output, _ = joined.communicate(timeout=120)
    return {"rc": tune.returncode, "output": first + rest, "wall": wall, "joined": joined,
            "joined_output": joined_output, "storage": postgres_url}


def _trials(storage: str, stage: str):
    return [TrialRecord.of(t) for t in load_study(f"{STUDY}/{stage}", storage).trials]


def test_the_tunes_searches_run_their_trials_in_two_worker_processes(pooled):
    assert pooled["rc"] == 0, pooled["output"][-3000:]
    tune = records.stage_records(load_study(STUDY, pooled["storage"]))
    searches = [name for name, r in tune.items() if r["kind"] in ("coarse", "refine")]
    workers = {t.worker for name in searches for t in _trials(pooled["storage"], name) if t.worker}
    assert len(workers) >= 2, workers
    # the test split waits for the final model: no worker's end of a search evaluated a trial on it
    assert all(records.best_test(load_study(f"{STUDY}/{name}", pooled["storage"])) is None for name in searches)
    assert re.search(r"worker \d+ started \(2 so far", pooled["output"])


def test_a_separately_started_worker_joins_the_running_coarse_stage(pooled):
    assert pooled["joined"].returncode == 0, pooled["joined_output"][-3000:]
    ran = re.search(r"worker (\d+): ran (\d+) trials", pooled["joined_output"])
    assert ran and int(ran.group(2)) >= 1, pooled["joined_output"]
    coarse = _trials(pooled["storage"], "coarse")
    assert any(t.worker and t.worker.endswith(f":{ran.group(1)}") for t in coarse)


def test_the_pooled_tune_keeps_to_its_budget(pooled):
    tune = load_study(STUDY, pooled["storage"])
    spent = sum(r["seconds"] for r in records.stage_records(tune).values())
    assert spent <= 1.05 * BUDGET + 10, spent
