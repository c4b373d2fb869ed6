"""Search quality at equal budget: automl against the tools users would pick instead.

    .venv/bin/python benchmarks/search_quality.py [--data fashion_mnist] [--budget 900]
                                                  [--contenders tune,tpe,random,keras-tuner,autokeras,baseline]

One after the other, in this one invocation and on the same split, each contender gets the
same wall-clock budget:

- ``tune``: ``automl tune`` with its defaults;
- ``tpe``: ``automl search`` with Optuna TPE and Hyperband pruning;
- ``random``: ``automl search`` with Optuna random sampling, no pruning;
- ``keras-tuner``: KerasTuner Hyperband over the same space (``automl search --backend keras-tuner``);
- ``autokeras``: AutoKeras ``ImageClassifier``, in its own virtual environment
  (benchmarks/contenders/autokeras_env.py says which versions, and why);
- ``baseline``: keras.io's simple MNIST convnet trained for the whole budget.

The automl contenders search ``--space`` (default search_spaces/small_images.yaml). Each
contender's final model is evaluated once on the test split. Writes
benchmarks/results/search_quality.{json,png} and its section of benchmarks/RESULTS.md.
Run it on a quiet machine: it measures wall time. Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` (installed here when missing and run as root).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    ensure_data,
    machine,
    markdown_table,
    provenance,
    update_results_md,
    write_json,
)

CONTENDERS = ("tune", "tpe", "random", "keras-tuner", "autokeras", "baseline")
NAMES = {"tune": "automl tune", "tpe": "automl search (TPE + Hyperband)", "random": "Optuna random, no pruning",
         "keras-tuner": "KerasTuner Hyperband", "autokeras": "AutoKeras ImageClassifier",
         "baseline": "keras.io simple convnet"}
AUTOML = [sys.executable, "-m", "automl.cli"]
STUDY = "bench"
GRACE = 300  # seconds past the budget before a contender is stopped (imports, final evaluation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--budget", type=float, default=900.0, help="wall-clock seconds per contender")
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "small_images.yaml"))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep each contender's files here (default: a temporary folder)")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.contenders.split(",")]
    unknown = set(chosen) - set(CONTENDERS)
    if unknown:
        parser.error(f"--contenders: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    info = machine()
    ensure_data(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        split = write_split(args.data, args.seed, work / "split.npz")
        results = []
        for name in chosen:
            folder = work / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            print(f"\n=== {NAMES[name]}: {args.budget:.0f} s ===", flush=True)
            result = RUNNERS[name](folder, args, split)
            result.update(contender=name, name=NAMES[name])
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
            results.append(result)
    report(results, args, info)


# --- data ---------------------------------------------------------------------------------


def write_split(data: str, seed: int, path: Path) -> Path:
    """automl's own split of ``data`` (the one its contenders see), for the others."""
    from automl.data import load_dataset

    d = load_dataset(data, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_val=d.x_val, y_val=d.y_val, x_test=d.x_test,
             y_test=d.y_test)
    print(f"data {d.describe()}", flush=True)
    return path


# --- contenders ---------------------------------------------------------------------------


def run(command: list[str], folder: Path, budget: float, python_path: bool = True) -> tuple[float, float, str]:
    """Run a contender's command in ``folder``; returns (start wall clock, seconds, error or "")."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if python_path:
        env["PYTHONPATH"] = str(ROOT)
    start, clock = time.time(), time.perf_counter()
    with open(folder / "output.log", "w") as log:
        try:
            done = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=budget + GRACE)
            error = "" if done.returncode == 0 else f"exit code {done.returncode} (see {folder}/output.log)"
        except subprocess.TimeoutExpired:
            error = f"still running {GRACE} s past the budget: stopped"
    return start, time.perf_counter() - clock, error


def automl_tune(folder: Path, args, split: Path) -> dict:
    from automl.hpo import records
    from automl.hpo.records import TrialRecord

    start, seconds, error = run([*AUTOML, "tune", "--space", args.space, "--data", args.data, "--budget",
                                 str(args.budget), "--study", STUDY, "--seed", str(args.seed), "--quiet"],
                                folder, args.budget)
    storage = f"journal:{folder}/automl.journal"
    tune = _study(STUDY, storage)
    stages = records.stage_records(tune) if tune else {}
    searches = [_study(f"{STUDY}/{name}", storage) for name, r in stages.items() if r["kind"] in ("coarse", "refine")]
    trials = [t for s in searches if s for t in s.trials]
    final = tune.trials[0] if tune and tune.trials else None
    curve = _curve(trials, start)
    metrics = TrialRecord.of(final).metrics if final else {}
    if final:
        curve.append([round(final.datetime_complete.timestamp() - start, 1), metrics["val_accuracy"]])
    return {"test_accuracy": metrics.get("test_accuracy"), "trials": len(trials),
            # the final's first model on the image as it is, where it averages several or test-time
            # views; None where it does neither
            "single_test_accuracy": metrics.get("single_test_accuracy"),
            "epochs": _epochs(trials) + (TrialRecord.of(final).epochs_run if final else 0),
            "wall_seconds": round(seconds, 1), "curve": curve, "error": error or None,
            "notes": "the last point is the final model's accuracy on its held-out tenth"}


def automl_search(*extra: str):
    def runner(folder: Path, args, split: Path) -> dict:
        start, seconds, error = run([*AUTOML, "search", "--space", args.space, "--data", args.data, "--trials",
                                     "100000", "--timeout", str(args.budget), "--study", STUDY, "--seed",
                                     str(args.seed), "--quiet", *extra], folder, args.budget)
        from automl.hpo import records

        study = _study(STUDY, f"journal:{folder}/automl.journal")
        trials = study.trials if study else []
        best = records.best_trial(study) if study else None
        tested = (records.best_test(study) or {}) if study else {}
        return {"test_accuracy": tested.get("test_accuracy") if best and tested.get("trial") == best.number else None,
                "trials": len(trials), "epochs": _epochs(trials), "wall_seconds": round(seconds, 1),
                "curve": _curve(trials, start), "error": error or None,
                "notes": "the best trial by validation accuracy, evaluated on the test split"}

    return runner


def external(script: str, python_for):
    """A contender that runs in a Python of its own on the .npz split, writing result.json."""

    def runner(folder: Path, args, split: Path) -> dict:
        try:
            python = python_for()
        except Exception as exc:  # e.g. AutoKeras's environment cannot be installed
            return {"test_accuracy": None, "trials": 0, "epochs": 0, "wall_seconds": 0.0, "curve": [],
                    "error": f"{type(exc).__name__}: {exc}"}
        out = folder / "result.json"
        command = [str(python), str(ROOT / "benchmarks" / "contenders" / script), "--data", str(split), "--budget",
                   str(args.budget), "--out", str(out), "--seed", str(args.seed)]
        if script == "autokeras_run.py":
            command += ["--workdir", str(folder)]
        _, seconds, error = run(command, folder, args.budget, python_path=False)
        if not out.exists():
            return {"test_accuracy": None, "trials": 0, "epochs": 0, "wall_seconds": round(seconds, 1), "curve": [],
                    "error": error or "wrote no result.json"}
        result = json.loads(out.read_text())
        result["wall_seconds"] = round(seconds, 1)
        return result

    return runner


def _autokeras_python() -> Path:
    from contenders.autokeras_env import ensure_env

    return ensure_env(ROOT)


RUNNERS = {
    "tune": automl_tune,
    "tpe": automl_search("--sampler", "tpe", "--pruner", "hyperband"),
    "random": automl_search("--sampler", "random", "--pruner", "none"),
    "keras-tuner": automl_search("--backend", "keras-tuner", "--sampler", "hyperband"),
    "autokeras": external("autokeras_run.py", _autokeras_python),
    "baseline": external("baseline.py", lambda: Path(sys.executable)),
}


def _study(name: str, storage: str) -> optuna.Study | None:
    from automl.hpo.storage import load_study

    try:
        return load_study(name, storage)
    except Exception:  # the contender stopped before it made the study
        return None


def _accuracy(trial: optuna.trial.FrozenTrial) -> float | None:
    """A finished trial's validation accuracy: its value, or a pruned trial's best epoch."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return trial.value
    if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
        return max(trial.intermediate_values.values())
    return None


def _curve(trials: list[optuna.trial.FrozenTrial], start: float) -> list[list[float]]:
    """Best-so-far validation accuracy at each trial's end, in seconds since the contender started."""
    ended = sorted((t.datetime_complete.timestamp() - start, a) for t in trials
                   if t.datetime_complete and (a := _accuracy(t)) is not None)
    curve, best = [], 0.0
    for seconds, accuracy in ended:
        best = max(best, accuracy)
        curve.append([round(seconds, 1), best])
    return curve


def _epochs(trials: list[optuna.trial.FrozenTrial]) -> int:
    from automl.hpo.records import TrialRecord

    return sum(TrialRecord.of(t).epochs_run or 0 for t in trials)


# --- report -------------------------------------------------------------------------------


def report(results: list[dict], args, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payload = {"budget": args.budget, "data": args.data, "space": str(Path(args.space).relative_to(ROOT))
               if Path(args.space).is_relative_to(ROOT) else args.space, "machine": info, "results": results}
    write_json("search_quality", payload)
    figure, axes = plt.subplots(figsize=(8, 5))
    for r in results:
        if r["curve"]:
            seconds, accuracy = zip(*r["curve"], strict=True)
            axes.step(seconds, accuracy, where="post", marker=".", label=r["name"])
    axes.set(xlabel="wall time (s)", ylabel="best validation accuracy so far",
             title=f"{args.data}, {args.budget:.0f} s each")
    axes.set_ylim(bottom=max(0.0, min((r["curve"][0][1] for r in results if r["curve"]), default=0.0) - 0.02))
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.savefig(ROOT / "benchmarks" / "results" / "search_quality.png", dpi=110, bbox_inches="tight")

    rows = [{"contender": r["name"],
             "test accuracy": f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-",
             "trials": r["trials"], "epochs": r["epochs"], "wall s": r["wall_seconds"],
             "note": r.get("error") or r.get("notes", "")} for r in results]
    table = markdown_table(rows, ["contender", "test accuracy", "trials", "epochs", "wall s", "note"])
    print("\n" + table)
    update_results_md("search_quality", f"""## Search quality at equal budget (`benchmarks/search_quality.py`)

{args.data}, {args.budget:.0f} s of wall clock per contender, one after the other; the automl
contenders search `{payload['space']}`. Test accuracy is each contender's final model, evaluated once.

{table}

![best validation accuracy so far against wall time](results/search_quality.png)

{provenance(info)}
""")


if __name__ == "__main__":
    main()
