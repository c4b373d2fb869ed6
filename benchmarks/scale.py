"""Memory and scale: RSS per trial over a 100-trial search with and without worker recycling,
trials per minute with 1 and 2 local workers, and the storage overhead per trial on the
journal file, SQLite and PostgreSQL. Prints tables, writes benchmarks/results/scale.json and
its section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/scale.py [--quick]

Run it on a quiet machine: it measures wall time. PostgreSQL rows need the server binaries
(see tests/postgres.py); they are skipped with the reason otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, markdown_table, provenance, update_results_md, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))  # tests/postgres.py starts the throw-away server

SPACE = str(ROOT / "search_spaces" / "quick.yaml")
AUTOML = [sys.executable, "-m", "automl.cli"]


def search(folder: Path, *args: str) -> float:
    """Run ``automl search`` in ``folder``; returns the wall seconds."""
    start = time.perf_counter()
    subprocess.run([*AUTOML, "search", "--space", SPACE, "--data", "digits", "--quiet", *args], cwd=folder,
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def finished(folder: Path, study: str = "quick-digits") -> list[optuna.trial.FrozenTrial]:
    from automl.hpo.storage import load_study
    from automl.hpo.study import FINISHED

    return load_study(study, f"journal:{folder}/automl.journal").get_trials(states=FINISHED)


def throughput(trials: int, epochs: int) -> list[dict]:
    rows = []
    for label, extra in (("1 process (in-process)", []), ("2 workers", ["--workers", "2"])):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = search(Path(tmp), "--trials", str(trials), "--epochs", str(epochs), *extra)
            done = len(finished(Path(tmp)))
        rows.append({"run": label, "trials": done, "seconds": round(seconds, 1),
                     "trials_per_minute": round(60 * done / seconds, 2)})
    return rows


def storage_overhead(trials: int, epochs: int) -> list[dict]:
    """What the storage costs a trial, without training: ask, the attributes a trial sets, one
    intermediate value per epoch, tell."""
    from automl.hpo.records import TrialRecord
    from automl.hpo.storage import open_storage
    from tests.postgres import postgres_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as pg:
        urls = {"journal file": f"journal:{tmp}/bench.journal", "SQLite": f"sqlite:///{tmp}/bench.db",
                "PostgreSQL": pg}
        for name, url in urls.items():
            if url.startswith("skip: "):
                rows.append({"storage": name, "ms_per_trial": None, "note": url})
                continue
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(study_name="bench", storage=open_storage(url), direction="maximize")
            start = time.perf_counter()
            for _ in range(trials):
                trial = study.ask()
                trial.suggest_float("lr", 1e-4, 1e-1, log=True)
                trial.suggest_categorical("family", ["vgg", "resnet"])
                TrialRecord(config={"model": {"stages": [{"family": "vgg", "filters": 32}]}}).write(trial)
                for epoch in range(epochs):
                    trial.report(0.5 + epoch / 100, epoch)
                    trial.should_prune()
                TrialRecord(model_path="m.keras", metrics={"val_accuracy": 0.9}, worker="host:1",
                            history={"val_accuracy": [0.5 + epoch / 100 for epoch in range(epochs)]}).write(trial)
                study.tell(trial, 0.9)
            rows.append({"storage": name, "ms_per_trial": round(1000 * (time.perf_counter() - start) / trials, 1)})
    return rows


def memory(trials: int, recycle: int) -> list[dict]:
    from automl.hpo.records import TrialRecord

    rows = []
    for label, extra in (("in-process", []), (f"recycled every {recycle}", ["--recycle", str(recycle)])):
        with tempfile.TemporaryDirectory() as tmp:
            search(Path(tmp), "--trials", str(trials), "--epochs", "1", *extra)
            done = sorted(finished(Path(tmp)), key=lambda t: t.datetime_complete)
            kept = [TrialRecord.of(t) for t in done]
            rss = [r.rss_mb for r in kept if r.rss_mb]
            workers = {r.worker for r in kept}
        slope = float(np.polyfit(np.arange(len(rss)), rss, 1)[0]) if len(rss) > 2 else None
        rows.append({"run": label, "trials": len(done), "processes": len(workers), "rss_first_mb": rss[0],
                     "rss_last_mb": rss[-1], "rss_max_mb": max(rss), "growth_mb_per_trial": round(slope, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer trials (a smoke run, not for figures)")
    args = parser.parse_args()
    n = 4 if args.quick else 1
    info = machine()
    results = {
        "throughput": throughput(trials=24 // n, epochs=2),
        "storage_overhead": storage_overhead(trials=200 // n, epochs=5),
        "memory": memory(trials=100 // n, recycle=10 // n),
        "machine": info,
    }
    sections = {"throughput": "Trials per minute on digits (2 epochs per trial)",
                "storage_overhead": "Storage overhead per trial (ask, attributes, 5 reports, tell; no training)",
                "memory": "Resident memory over a search on digits (1 epoch per trial)"}
    tables = {name: markdown_table(results[name], list(results[name][0])) for name in sections}
    for name, title in sections.items():
        print(f"\n## {title}\n\n{tables[name]}")
    print(f"\nwrote {write_json('scale', results)}")
    if not args.quick:
        body = "\n\n".join(f"### {title}\n\n{tables[name]}" for name, title in sections.items())
        update_results_md("scale", f"## Memory and scale (`benchmarks/scale.py`)\n\n{body}\n\n{provenance(info)}\n")


if __name__ == "__main__":
    main()
