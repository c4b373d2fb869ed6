"""AutoKeras contender: ``autokeras.ImageClassifier`` under a wall-clock budget.

Run it with the AutoKeras venv's python (``autokeras_env.ensure_env``), never the project's: it must
not import ``automl``, and the two environments pin different Keras versions.

    python autokeras_run.py --data split.npz --budget SECONDS --out result.json --workdir DIR [--seed 0]

``split.npz`` holds x_train, y_train, x_val, y_val, x_test, y_test (uint8 images (N,28,28) or
(N,28,28,1), integer labels). The search trains on the train split and validates on the val split;
the best model is evaluated once on the test split. result.json is always written, with ``error``
set when something failed.

The script runs the search in a child process (itself with ``--child``) and keeps the budget in
three layers, because AutoKeras has ``max_trials`` but no time limit:

1. No new trial after the deadline: ``max_trials`` is huge and ``GreedyOracle.populate_space`` is
   wrapped to answer STOPPED once the deadline has passed, which ends KerasTuner's search loop.
2. The running trial stops at the first batch that ends after the deadline: a Keras callback, passed
   through ``fit(callbacks=...)``, sets ``model.stop_training``. Keras still validates that partial
   epoch, and the trial ends as an ordinary COMPLETED trial (a stopped trial does not crash the
   search).
3. A hard limit: a batch or a validation pass can take minutes (AutoKeras' second initial trial is a
   ResNet50 trained from scratch at 224x224), so the parent kills the child at deadline + grace. The
   trial it was running is lost; everything before it is kept.

The callback saves the model (and copies the trial's AutoKeras preprocessing pipeline) whenever the
best val_accuracy so far improves, and writes progress.json (the curve, the trials) at every epoch
and trial end. The parent evaluates that best model once on the test split, whether the search ended
by itself or was killed. With ``objective="val_accuracy"`` this is the model AutoKeras' own
``export_model()`` returns: the best trial's best epoch. An EarlyStopping like the one AutoKeras
inserts itself (val_loss, patience 10, min_delta 1e-4) is passed explicitly, which also makes
AutoKeras skip its post-search "final fit" (retraining the best model), which would overrun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NAME = "AutoKeras ImageClassifier"
PROGRESS = "progress.json"

# Child state. Module-level, not on the callback: KerasTuner deep-copies the callbacks every trial.
STATE: dict = {
    "t0": 0.0,  # time.monotonic() at the parent's start (CLOCK_MONOTONIC is system-wide on Linux)
    "deadline": float("inf"),
    "workdir": None,
    "best": None,  # best val_accuracy so far, over all trials
    "best_dir": None,  # workdir/best_<n>: model.keras + pipeline of that epoch
    "best_trial": None,
    "saves": 0,
    "curve": [],  # [seconds since start, best val_accuracy so far], one per epoch end
    "epochs": 0,  # epochs (or partial epochs) that ended with a validation pass
    "trials": [],  # one row per ended trial
    "running": None,  # the trial in progress
    "deadline_hit_at": None,
    "search_done": False,
    "error": None,
    "traceback": None,
}


def since_start() -> float:
    return round(time.monotonic() - STATE["t0"], 2)


def write_progress() -> None:
    path = Path(STATE["workdir"]) / PROGRESS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: STATE[k] for k in (
        "best", "best_dir", "best_trial", "curve", "epochs", "trials", "running", "deadline_hit_at",
        "search_done", "error", "traceback")}, indent=1))
    os.replace(tmp, path)


def make_deadline_callback():
    import keras

    class Deadline(keras.callbacks.Callback):
        """Stops training at the deadline; records and saves the best-so-far at each epoch end."""

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() >= STATE["deadline"] and not self.model.stop_training:
                STATE["deadline_hit_at"] = STATE["deadline_hit_at"] or since_start()
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            acc = (logs or {}).get("val_accuracy")
            STATE["epochs"] += 1
            running = STATE["running"]
            if running is not None:
                running["epochs"] += 1
            if acc is not None and (STATE["best"] is None or float(acc) > STATE["best"]):
                STATE["best"] = float(acc)
                self._save_best(running)
            if STATE["best"] is not None:
                STATE["curve"].append([since_start(), round(STATE["best"], 6)])
            write_progress()

        def _save_best(self, running):
            # A new folder each time, pointed to by progress.json once complete: a kill mid-save
            # leaves the previous best intact.
            STATE["saves"] += 1
            target = Path(STATE["workdir"]) / f"best_{STATE['saves']}"
            target.mkdir(parents=True)
            self.model.save(target / "model.keras")
            if running is not None and running.get("pipeline"):
                source = Path(running["pipeline"])  # a JSON file in AutoKeras 3.0.0
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / "pipeline")
            old, STATE["best_dir"] = STATE["best_dir"], str(target)
            STATE["best_trial"] = running and running["trial"]
            write_progress()
            if old:
                shutil.rmtree(old, ignore_errors=True)

    return Deadline()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("autokeras", "keras", "keras-tuner", "tensorflow-cpu", "tensorflow", "tensorboard", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def load_split(path: Path) -> dict:
    import numpy as np

    with np.load(path) as z:
        data = {k: z[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    for k in ("x_train", "x_val", "x_test"):
        if data[k].ndim == 4 and data[k].shape[-1] == 1:
            data[k] = data[k][..., 0]  # AutoKeras adds the channel axis itself
    for k in ("y_train", "y_val", "y_test"):
        data[k] = data[k].astype("int64").reshape(-1)
    return data


# ----------------------------------------------------------------------------------------- child


def watch_parent(parent: int, hard_deadline: float) -> None:
    """Die with the parent, and never outlive the hard deadline by much."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent or time.monotonic() > hard_deadline + 30:
            os._exit(3)


def child(args) -> int:
    STATE.update(t0=args.t0, deadline=args.t0 + args.budget, workdir=str(Path(args.workdir).resolve()))
    threading.Thread(target=watch_parent, args=(os.getppid(), args.t0 + args.budget + args.grace),
                     daemon=True).start()
    try:
        search(args)
    except BaseException as e:  # noqa: BLE001 - handed to the parent through progress.json
        traceback.print_exc()
        STATE["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
        STATE["traceback"] = traceback.format_exc()[-4000:]
        write_progress()
        return 1
    STATE["search_done"] = True
    write_progress()
    return 0


def search(args) -> None:
    data = load_split(Path(args.data))

    import autokeras as ak
    import keras
    from autokeras.engine import tuner as tuner_module
    from autokeras.tuners import greedy
    from keras_tuner.engine import trial as trial_module

    keras.utils.set_random_seed(args.seed)

    populate = greedy.GreedyOracle.populate_space

    def populate_space(self, trial_id):
        if time.monotonic() >= STATE["deadline"]:
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        return populate(self, trial_id)

    greedy.GreedyOracle.populate_space = populate_space

    begin, end = tuner_module.AutoTuner.on_trial_begin, tuner_module.AutoTuner.on_trial_end

    def on_trial_begin(self, trial):
        STATE["running"] = {
            "trial": trial.trial_id, "block_type": trial.hyperparameters.values.get("image_block_1/block_type"),
            "started": since_start(), "epochs": 0, "pipeline": self._pipeline_path(trial.trial_id)}
        write_progress()
        return begin(self, trial)

    def on_trial_end(self, trial):
        out = end(self, trial)
        row = dict(STATE["running"] or {"trial": trial.trial_id})
        row.pop("pipeline", None)
        ended = self.oracle.trials[trial.trial_id]
        message = (ended.message or "").strip().splitlines()
        row.update(status=str(ended.status), ended=since_start(),
                   val_accuracy=None if ended.score is None else float(ended.score),
                   error=message[-1][:300] if message and ended.status != "COMPLETED" else None)
        STATE["trials"].append(row)
        STATE["running"] = None
        write_progress()
        return out

    tuner_module.AutoTuner.on_trial_begin = on_trial_begin
    tuner_module.AutoTuner.on_trial_end = on_trial_end

    clf = ak.ImageClassifier(
        max_trials=args.max_trials,
        objective=args.objective,
        overwrite=True,
        directory=str(Path(args.workdir) / "autokeras"),
        project_name="image_classifier",
        seed=args.seed,
    )
    # Offline, every trial that asks for ImageNet weights fails at once (the download cannot
    # resolve its host). Three such trials in a row would end the search ("Number of consecutive
    # failures exceeded the limit of 3"); ten in a row still ends it, so that a failure every trial
    # has (a broken environment) is not hidden.
    clf.tuner.oracle.max_consecutive_failed_trials = 10
    callbacks = [
        make_deadline_callback(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, min_delta=1e-4),
    ]
    clf.fit(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
            epochs=args.epochs, callbacks=callbacks, verbose=args.verbose)


# ---------------------------------------------------------------------------------------- parent


def evaluate(best_dir: Path, data: dict) -> float:
    """Test accuracy of a saved best model, through its AutoKeras preprocessing pipeline."""
    import autokeras as ak
    import keras
    import numpy as np
    from autokeras import pipeline as pipeline_module

    model = keras.models.load_model(best_dir / "model.keras", custom_objects=ak.CUSTOM_OBJECTS)
    pipeline = pipeline_module.load_pipeline(str(best_dir / "pipeline"))
    x = pipeline.transform_x(data["x_test"])
    y = pipeline.postprocess(model.predict(x, batch_size=256, verbose=0))
    pred = np.asarray(y).reshape(-1).astype("int64")
    return float(np.mean(pred == data["y_test"]))


def parent(args, argv: list[str]) -> int:
    t0 = time.monotonic()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for old in [workdir / "autokeras", workdir / PROGRESS, *workdir.glob("best_*")]:  # a previous run's
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    grace = args.grace if args.grace is not None else min(120.0, max(20.0, 0.05 * args.budget))
    result = {"name": NAME, "test_accuracy": None, "trials": 0, "epochs": 0, "wall_seconds": None,
              "curve": [], "versions": versions(), "error": None, "notes": "", "budget_seconds": args.budget,
              "search_seconds": None, "best_val_accuracy": None, "trial_log": []}
    notes: list[str] = []
    killed = False
    proc = None
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--t0", repr(t0), "--grace", str(grace),
               *argv]
        proc = subprocess.Popen(cmd)
        try:
            rc = proc.wait(timeout=max(1.0, t0 + args.budget + grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = proc.returncode
        result["search_seconds"] = round(time.monotonic() - t0, 2)

        progress_path = workdir / PROGRESS
        progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
        rows = list(progress.get("trials", []))
        running = progress.get("running")
        if running:
            running.pop("pipeline", None)
            rows.append({**running, "status": "KILLED" if killed else "INTERRUPTED", "ended": None,
                         "val_accuracy": None, "error": None})
        result.update(trial_log=rows, trials=sum(r.get("status") == "COMPLETED" for r in rows),
                      epochs=progress.get("epochs", 0), curve=progress.get("curve", []),
                      best_val_accuracy=progress.get("best"))

        notes.append("standard ak.ImageClassifier search space, greedy tuner (initial trials: vanilla CNN; "
                     "ResNet50 from scratch at 224x224; EfficientNetB7 with ImageNet weights, which "
                     "cannot download here)")
        notes.append(f"objective={args.objective}; epochs per trial: "
                     + ("AutoKeras default (up to 1000, EarlyStopping on val_loss, patience 10)"
                        if args.epochs is None else str(args.epochs)))
        notes.append("no trial starts after the deadline; the running one stops at its first batch after it "
                     f"(that epoch is still validated); hard kill at deadline + {grace:.0f} s; no post-search final "
                     "fit: the test model is the epoch with the best val_accuracy")
        if progress.get("deadline_hit_at") is not None:
            notes.append(f"deadline reached during training at {progress['deadline_hit_at']:.0f} s")
        if killed:
            lost = f" (trial {running['trial']}, {running['block_type']})" if running else ""
            notes.append(f"search killed at the hard limit ({result['search_seconds']:.0f} s); "
                         f"the trial it was running is lost{lost}")
        failed = [r for r in rows if r.get("status") == "FAILED"]
        if failed:
            notes.append("failed trials (KerasTuner went on): "
                         + "; ".join(f"{r['trial']} {r.get('block_type')}: {r.get('error')}" for r in failed))

        error = progress.get("error")
        if error is None and not killed and rc != 0:
            error = f"the search process exited with code {rc} without reporting an error (crash or out of memory?)"
        if error is None and not progress:
            error = "the search process wrote no progress (see its output above)"

        best_dir = progress.get("best_dir")
        if best_dir:
            data = load_split(Path(args.data))
            result["test_accuracy"] = evaluate(Path(best_dir), data)
            notes.append(f"test model: trial {progress.get('best_trial')}, val_accuracy {progress.get('best'):.4f}")
        elif error is None:
            error = "no trial finished an epoch within the budget, so there is no model to test"
        if error:
            result["error"] = error + explain(error + "\n" + (progress.get("traceback") or ""))
    except BaseException as e:  # noqa: BLE001 - the orchestrator reads the reason from result.json
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        result["error"] = f"{type(e).__name__}: {first}" + explain(f"{type(e).__name__}: {e}")
        if proc is not None and proc.poll() is None:
            proc.kill()
    result["notes"] = " | ".join(notes)
    result["wall_seconds"] = round(time.monotonic() - t0, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("name", "test_accuracy", "trials", "epochs", "wall_seconds", "error")}))
    return 0 if result["error"] is None else 1


def explain(text: str) -> str:
    """The cause, where it is one we know."""
    if "invalid value for `units`" in text:
        return (" -- cause: Keras >= 3.13 rejects the NumPy integer AutoKeras 3.0.0 passes to Dense(units=...);"
                " run this with the venv from autokeras_env.ensure_env (Keras 3.12.x)")
    if "No module named 'autokeras'" in text or "No module named 'keras" in text:
        return f" -- cause: {sys.executable} is not the AutoKeras venv; use autokeras_env.ensure_env"
    if "No module named 'tensorboard'" in text:
        return " -- cause: KerasTuner needs tensorboard on the TensorFlow backend; it is missing from the venv"
    if "consecutive failures" in text:
        return " -- cause: KerasTuner ended the search after consecutive failed trials (see trial_log)"
    if "URL fetch failure" in text or "resolve" in text.lower():
        return " -- cause: a download (ImageNet weights) was attempted and this machine has no internet"
    if "KeyboardInterrupt" in text:
        return " -- cause: interrupted"
    return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="AutoKeras ImageClassifier under a wall-clock budget")
    p.add_argument("--data", required=True)
    p.add_argument("--budget", type=float, required=True, help="wall-clock seconds, from the script's start")
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", required=True, help="AutoKeras' project, the best model and progress.json go here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-trials", type=int, default=10_000, help="large: the budget is what stops the search")
    p.add_argument("--epochs", type=int, default=None, help="per trial; default AutoKeras' adaptive epochs")
    p.add_argument("--objective", default="val_accuracy")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds past the budget before the search is killed (default 5%% of it, 20 to 120 s)")
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    return child(args) if args.child else parent(args, argv)


if __name__ == "__main__":
    sys.exit(main())
