"""Overhead benchmark: one fixed configuration trained by a plain ``model.fit`` and as ``automl`` trials.

    .venv/bin/python benchmarks/overhead.py [--data digits,fashion_mnist] [--trials 3] [--epochs 3]
        [--subset 1000] [--pruner median] [--out benchmarks/results/overhead.json] [--quick]

The configuration is the default of search_spaces/quick.yaml. Each side runs in a fresh process
(imports, data loading and the MLflow/Optuna set-up are outside every figure) and trains it
``--trials`` times, each time from ``keras.backend.clear_session()`` with seed ``i`` as a search does:

- plain: ``automl.builder.build_model`` (the same architecture), ``compile`` with the same Adam +
  cosine decay (checked equal to what automl builds), categorical cross-entropy and accuracy,
  ``jit_compile="auto"``, then ``model.fit`` on the same arrays, batch size, epochs, shuffling and
  validation data, ``verbose=0``, with only a timing callback.
- automl: ``automl.hpo.driver.run_search`` (what ``automl.search`` runs) with a journal storage and
  a SQLite MLflow store in a temporary folder, a pruner (its callback), the same configuration enqueued
  ``--trials`` times. The timers are wrappers put around automl, Keras, Optuna and MLflow functions
  in that process only (listed in the JSON under ``wrapped``); each region's time is exclusive of the
  regions it contains, so the breakdown adds up to the trial's wall time.

Figures: per-epoch wall (and CPU) seconds from a callback placed last (so an epoch includes the
epoch-end work of automl's own callbacks), first epoch (with graph tracing) against the steady
epochs, and per trial the seconds outside ``model.fit``: automl's are the Optuna objective's wall
time minus ``model.fit``, plus its share of the time between objectives (ask, tell, sampler, gc).

Each target is checked twice: on the wall-time figures it names, and on what automl adds itself
(its per-epoch callbacks against a plain epoch; its seconds outside ``model.fit`` beyond plain
Keras's own clear_session, build and compile), which a busy machine disturbs less. CPU seconds
(``time.process_time``, all threads) are shown beside the wall times for the same reason.

Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = str(ROOT / "search_spaces" / "quick.yaml")
THROUGHPUT_TARGET = 1.05  # automl's steady epoch time / plain's
OUTSIDE_FIT_TARGET = 0.5  # seconds per trial outside model.fit


# --- shared by both sides (runs in the worker processes) ------------------------------------------


def load_data(name: str, subset: int | None, seed: int = 0):
    """The data set as a search loads it; with ``subset``, the first ``subset`` training images and a
    sixth of that of validation and test images (digits, 1,797 images in all, is used whole)."""
    from automl.data import load_dataset

    data = load_dataset(name, seed=seed)
    if subset and name != "digits" and len(data.x_train) > subset:
        small = max(1, subset // 6)
        data.x_train, data.y_train = data.x_train[:subset], data.y_train[:subset]
        data.x_val, data.y_val = data.x_val[:small], data.y_val[:small]
        if data.x_test is not None:
            data.x_test, data.y_test = data.x_test[:small], data.y_test[:small]
    return data


def default_config():
    from automl.space import DefaultSuggester, SearchSpace

    space = SearchSpace.load(SPACE)
    return space.suggest_all(DefaultSuggester()), space.sample(DefaultSuggester())


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall and CPU seconds of each epoch, from its begin to the end of the callbacks before this one."""

        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append({"wall_s": time.perf_counter() - self.start, "cpu_s": time.process_time() - self.cpu})

    return EpochTimer()


# --- plain side -----------------------------------------------------------------------------------


def run_plain(args) -> dict:
    import gc

    import keras
    import numpy as np

    from automl.builder import build_model
    from automl.config import TrialConfig
    from automl.training.optimizers import make_optimizer
    from automl.training.schedules import learning_rate

    data = load_data(args.data, args.subset)
    _, raw = default_config()
    config = TrialConfig.model_validate(raw)
    t, epochs = config.training, args.epochs
    assert t.optimizer.name == "adam" and t.schedule.name == "cosine" and not t.schedule.warmup_epochs
    assert config.regularization.label_smoothing == 0
    assert not config.augmentation.mixup and not config.augmentation.cutmix  # else fit() feeds a PyDataset
    steps = -(-len(data.x_train) // t.batch_size)

    def optimizer():
        schedule = keras.optimizers.schedules.CosineDecay(t.optimizer.learning_rate, steps * epochs,
                                                          alpha=t.schedule.alpha)
        return keras.optimizers.Adam(learning_rate=schedule)

    def described(opt) -> dict:
        return {k: v for k, v in opt.get_config().items() if k != "name"}  # the name is numbered per instance

    same = described(optimizer()) == described(make_optimizer(t.optimizer, learning_rate(t, steps, epochs)))
    assert same, "the plain optimizer differs from automl's"

    collect, collected = gc.collect, []

    def timed_collect(*a, **k):  # clear_session's full collection, timed on its own
        start = time.perf_counter()
        try:
            return collect(*a, **k)
        finally:
            collected.append(time.perf_counter() - start)

    gc.collect = timed_collect
    trials = []
    for i in range(args.trials):
        collected.clear()
        cpu = time.process_time()
        marks = [time.perf_counter()]
        keras.backend.clear_session()
        keras.utils.set_random_seed(i)  # automl: settings.seed (0) + trial number
        marks.append(time.perf_counter())
        model = build_model(config, data.input_shape, data.num_classes, data.pixel_scale)
        marks.append(time.perf_counter())
        model.compile(optimizer=optimizer(), loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"],
                      jit_compile="auto")
        marks.append(time.perf_counter())
        y_train = keras.utils.to_categorical(data.y_train, data.num_classes)
        y_val = keras.utils.to_categorical(data.y_val, data.num_classes)
        marks.append(time.perf_counter())
        timer = epoch_timer()
        fit_cpu = time.process_time()
        history = model.fit(data.x_train, y_train, batch_size=t.batch_size, epochs=epochs, shuffle=True,
                            validation_data=(data.x_val, y_val), callbacks=[timer], verbose=0).history
        marks.append(time.perf_counter())
        fit_cpu = time.process_time() - fit_cpu
        cpu = time.process_time() - cpu
        steps_s = dict(zip(("clear_session", "build", "compile", "data_prep", "model_fit"), np.diff(marks).tolist(),
                           strict=True))
        steps_s["clear_session/gc.collect"] = sum(collected)
        steps_s["clear_session"] -= steps_s["clear_session/gc.collect"]
        trials.append({"trial": i, "wall_s": marks[-1] - marks[0], "regions": steps_s,
                       "outside_fit_s": marks[-1] - marks[0] - steps_s["model_fit"], "outside_fit_cpu_s": cpu - fit_cpu,
                       "epochs": timer.epochs, "history_keys": sorted(history),
                       "val_accuracy": history["val_accuracy"][-1]})
    return {"data": data.describe(), "params": int(model.count_params()), "trials": trials}


# --- automl side: timers around the real code path ----------------------------------------------


MLFLOW_METHODS = ("create_experiment", "get_experiment_by_name", "create_run", "get_run", "update_run", "search_runs",
                  "log_batch", "log_text", "log_artifact", "set_tag", "set_terminated")


class Recorder:
    """Exclusive seconds per region, per trial (or 'between' trials, or 'search' outside the trial loop)."""

    def __init__(self):
        import threading

        self.local = threading.local()
        self.phase = "search"
        self.trial: int | None = None
        self.buckets: dict[str, dict[str, float]] = {"search": {}, "between": {}}
        self.inclusive: dict[str, dict[str, float]] = {"search": {}, "between": {}}
        self.cpu: dict[str, dict[str, float]] = {"search": {}, "between": {}}
        self.calls: dict[str, dict[str, int]] = {"search": {}, "between": {}}
        self.epochs: dict[int, list[dict]] = {}
        self.wrapped: list[str] = []

    def bucket(self) -> str:
        return str(self.trial) if self.phase == "trial" else self.phase

    def stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def region(self, key: str, fn):
        import functools

        rec = self

        @functools.wraps(fn)
        def timed(*a, **k):
            stack = rec.stack()
            in_fit = any(frame[0] == "model_fit" for frame in stack)
            name = f"fit/{key}" if in_fit and key != "model_fit" else key
            if key == "gc.collect" and stack:  # a full collection: say who asked for it
                name = f"{stack[-1][0]}/gc.collect"
            frame = [name, time.perf_counter(), 0.0, time.process_time()]
            stack.append(frame)
            try:
                return fn(*a, **k)
            finally:
                stack.pop()
                dt = time.perf_counter() - frame[1]
                if stack:
                    stack[-1][2] += dt
                b = rec.bucket()
                cpu = time.process_time() - frame[3]  # all threads of the process; inclusive
                for store, value in ((rec.buckets, dt - frame[2]), (rec.inclusive, dt), (rec.cpu, cpu)):
                    store.setdefault(b, {})
                    store[b][name] = store[b].get(name, 0.0) + value
                rec.calls.setdefault(b, {})
                rec.calls[b][name] = rec.calls[b].get(name, 0) + 1

        return timed

    def wrap(self, owner, attr: str, key: str, label: str) -> None:
        setattr(owner, attr, self.region(key, getattr(owner, attr)))
        self.wrapped.append(f"{label} -> {key}")


def instrument(rec: Recorder) -> None:
    import gc
    import types

    import keras
    import optuna
    import optuna.study._optimize as optuna_optimize
    from mlflow import MlflowClient
    from optuna.storages import BaseStorage, JournalStorage
    from optuna_integration import KerasPruningCallback

    import automl.hpo.driver as driver
    import automl.hpo.optuna_backend as backend
    import automl.hpo.trial as trial_module
    import automl.plots as plots
    import automl.tracking as tracking
    import automl.training.fit as fit_module
    from automl.space import SearchSpace

    w = rec.wrap
    # the search around the trial loop
    w(driver, "open_study", "search/open_study", "automl.hpo.driver.open_study")
    w(driver.Tracker, "__init__", "search/mlflow_tracker", "automl.tracking.Tracker.__init__ (MLflow store set-up)")
    w(driver, "begin_search_run", "search/begin_run", "automl.hpo.search_run.begin_search_run")
    w(driver, "end_search_run", "search/end_run", "automl.hpo.search_run.end_search_run")
    w(tracking.Tracker, "log_best_model", "search/log_best_model", "automl.tracking.Tracker.log_best_model")
    w(driver, "print_top_trials", "search/print_top", "automl.hpo.driver.print_top_trials")

    original_optimize = backend.optimize

    def optimize(*a, **k):  # the trial loop: 'between' outside each objective call
        rec.phase = "between"
        try:
            return rec.region("trial_loop", original_optimize)(*a, **k)
        finally:
            rec.phase = "search"

    backend.optimize = optimize
    rec.wrapped.append("automl.hpo.optuna_backend.optimize -> trial_loop (the phase 'between')")

    study_optimize = optuna.Study.optimize

    def optuna_study_optimize(self, func, *a, **k):
        def objective(trial):
            rec.phase, rec.trial = "trial", trial.number
            try:
                return rec.region("objective", func)(trial)
            finally:
                rec.phase = "between"

        return study_optimize(self, objective, *a, **k)

    optuna.Study.optimize = optuna_study_optimize
    rec.wrapped.append("optuna.Study.optimize's objective -> objective (the phase 'trial')")

    # one trial
    w(SearchSpace, "sample", "optuna_sample", "automl.space.SearchSpace.sample (trial.suggest_*)")
    w(optuna.Trial, "set_user_attr", "optuna_set_user_attr", "optuna.Trial.set_user_attr")
    w(backend, "finished_count", "optuna_finished_count", "automl.hpo.optuna_backend.finished_count")
    w(backend, "trial_record", "trial_record", "automl.hpo.trial.trial_record")
    w(keras.backend, "clear_session", "clear_session", "keras.backend.clear_session")
    w(trial_module.TrialConfig, "model_validate", "validate_config", "TrialConfig.model_validate")
    w(tracking.TrialRun, "__init__", "mlflow_start_run",
      "automl.tracking.TrialRun.__init__ (create_run, params, config.yaml)")
    w(tracking.TrialRun, "log_metrics", "mlflow_summary_metrics", "automl.tracking.TrialRun.log_metrics")
    w(tracking.TrialRun, "finish", "mlflow_finish", "automl.tracking.TrialRun.finish (tags, set_terminated)")
    w(tracking, "_log_learning_curves", "mlflow_curves_upload", "automl.tracking._log_learning_curves (log_artifact)")
    w(plots, "learning_curves", "curves_draw", "automl.plots.learning_curves")
    w(plots, "save", "curves_save_png", "automl.plots.save")

    original_fit = trial_module.fit

    def fit(config, data, *, callbacks=(), **kwargs):  # automl's fit(), with the epoch timer placed last
        timer = epoch_timer()
        try:
            return rec.region("fit_setup", original_fit)(config, data, callbacks=[*callbacks, timer], **kwargs)
        finally:
            rec.epochs[rec.trial] = timer.epochs

    trial_module.fit = fit
    rec.wrapped.append("automl.hpo.trial.fit -> fit_setup (fit() besides the regions in it; adds the epoch timer)")
    w(fit_module, "build_model", "build", "automl.training.fit.build_model")
    w(keras.Model, "compile", "compile", "keras.Model.compile")
    w(keras.Model, "fit", "model_fit", "keras.Model.fit")
    w(keras.Model, "evaluate", "evaluate", "keras.Model.evaluate (test set; fit/evaluate is validation)")
    w(keras.Model, "save", "model_save", "keras.Model.save")

    # inside model.fit: automl's callbacks
    w(trial_module.MlflowEpochs, "on_epoch_end", "mlflow_log_epoch", "automl.hpo.trial.MlflowEpochs.on_epoch_end")
    w(KerasPruningCallback, "on_epoch_end", "pruning_report", "optuna_integration.KerasPruningCallback.on_epoch_end")
    w(fit_module.LearningRateLogger, "on_epoch_end", "lr_logger", "automl.training.fit.LearningRateLogger.on_epoch_end")
    w(keras.callbacks.EarlyStopping, "on_epoch_end", "best_epoch", "keras.callbacks.EarlyStopping.on_epoch_end")
    w(keras.callbacks.EarlyStopping, "on_train_end", "best_restore", "keras.callbacks.EarlyStopping.on_train_end")
    w(keras.callbacks.TerminateOnNaN, "on_batch_end", "nan_check", "keras.callbacks.TerminateOnNaN.on_batch_end")

    # every call to the Optuna storage and the MLflow client, by method, wherever it comes from
    for name in sorted(n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))):
        setattr(JournalStorage, name, rec.region(f"optuna_storage.{name}", getattr(JournalStorage, name)))
    rec.wrapped.append("every public method of optuna.storages.JournalStorage -> optuna_storage.<method>")
    for name in MLFLOW_METHODS:
        setattr(MlflowClient, name, rec.region(f"mlflow.{name}", getattr(MlflowClient, name)))
    rec.wrapped.append(f"mlflow.MlflowClient.{{{','.join(MLFLOW_METHODS)}}} -> mlflow.<method>")
    optuna_optimize.gc = types.SimpleNamespace(collect=rec.region("gc_after_trial", gc.collect))
    rec.wrapped.append("gc.collect in optuna.study._optimize (gc_after_trial) -> gc_after_trial")
    gc.collect = rec.region("gc.collect", gc.collect)
    rec.wrapped.append("gc.collect, any caller (clear_session, gc_after_trial...) -> gc.collect")


def run_automl(args) -> dict:
    import optuna

    from automl.hpo.driver import run_search
    from automl.hpo.hooks import SearchHooks
    from automl.hpo.records import TrialRecord
    from automl.hpo.settings import SearchSettings

    data = load_data(args.data, args.subset)
    params, config = default_config()
    rec = Recorder()
    instrument(rec)
    folder = Path.cwd()  # the parent runs this process in a temporary folder (MLflow writes ./mlruns)
    settings = SearchSettings(
        space=SPACE, data=args.data, study=f"overhead-{args.data}", storage=f"journal:{folder}/automl.journal",
        tracking_uri=f"sqlite:///{folder}/mlflow.db", out=str(folder / "out"), trials=args.trials,
        epochs=args.epochs, pruner=args.pruner, seed=0, verbose=False,
    )
    start = time.perf_counter()
    study = run_search(settings, data, SearchHooks(first_trials=[params] * args.trials))
    search_s = time.perf_counter() - start

    trials = []
    for t in sorted(study.trials, key=lambda t: t.number):
        record = TrialRecord.of(t)
        b = rec.buckets.get(str(t.number), {})
        inc = rec.inclusive.get(str(t.number), {})
        fit_s = inc.get("model_fit", 0.0)
        trials.append({
            "trial": t.number, "state": t.state.name, "config_is_default": record.config == config,
            "objective_s": inc.get("objective", 0.0),
            "optuna_start_to_complete_s": (t.datetime_complete - t.datetime_start).total_seconds(),
            "user_attr_trial_seconds": record.trial_seconds,
            "user_attr_fit_seconds": record.fit_seconds,
            "model_fit_s": fit_s,
            "objective_cpu_s": rec.cpu.get(str(t.number), {}).get("objective", 0.0),
            "model_fit_cpu_s": rec.cpu.get(str(t.number), {}).get("model_fit", 0.0),
            "regions": b, "inclusive": inc, "cpu": rec.cpu.get(str(t.number), {}),
            "calls": rec.calls.get(str(t.number), {}),
            "epochs": rec.epochs.get(t.number, []),
            "val_accuracy": record.history.get("val_accuracy", [None])[-1],
        })
    between = rec.buckets["between"]
    loop_s = rec.inclusive["between"].get("trial_loop", 0.0)
    return {"data": data.describe(), "params": TrialRecord.of(study.trials[0]).params,
            "search_s": search_s, "trial_loop_s": loop_s, "between": between, "search": rec.buckets["search"],
            "between_cpu_s": rec.cpu["between"].get("trial_loop", 0.0)
            - sum(rec.cpu.get(str(t.number), {}).get("objective", 0.0) for t in study.trials),
            "search_inclusive": rec.inclusive["search"], "trials": trials, "wrapped": rec.wrapped,
            "optuna_version": optuna.__version__}


def worker(args) -> None:
    result = run_plain(args) if args.side == "plain" else run_automl(args)
    Path(args.result).write_text(json.dumps(result, indent=1))


# --- the parent: runs the sides, summarises, prints -------------------------------------------------


def steady(epochs: list[dict], key: str = "wall_s") -> list[float]:
    return [e[key] for e in epochs[1:]]


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


LABELS = {  # what each region is; unlisted ones are named by their wrapped function (see 'wrapped')
    "objective": "objective + run_trial's own code between the regions below",
    "search/mlflow_tracker": "Tracker(): MLflow store (a new SQLite file: its migrations)",
    "search/end_run": "end_search_run (best model included)", "search/log_best_model": "mlflow.keras.log_model",
    "search/begin_run": "begin_search_run: parent run, enqueue", "search/open_study": "open_study",
    "search/print_top": "print_top_trials",
    "fit_setup": "fit(): optimizer, schedule, one-hot labels, callbacks",
    "build": "build_model", "compile": "model.compile", "clear_session": "keras.backend.clear_session",
    "evaluate": "model.evaluate on the test split", "model_save": "model.save (model.keras)",
    "optuna_sample": "space.sample: trial.suggest_* (enqueued values)", "validate_config": "TrialConfig.model_validate",
    "mlflow_start_run": "TrialRun.__init__ besides MLflow calls (flatten, YAML)",
    "mlflow_finish": "TrialRun.finish besides MLflow calls", "mlflow_curves_upload": "_log_learning_curves besides "
    "the calls below (temp dir)", "curves_draw": "plots.learning_curves (matplotlib figure)",
    "curves_save_png": "plots.save (savefig PNG)", "trial_record": "trial_record", "gc_after_trial": "gc.collect "
    "by Optuna after each trial (gc_after_trial=True)", "trial_loop": "optimize(): sampler, callbacks, Optuna's loop",
    "fit/evaluate": "validation (model.evaluate inside fit)", "fit/mlflow_log_epoch": "MlflowEpochs besides log_batch",
    "fit/pruning_report": "KerasPruningCallback besides storage", "fit/lr_logger": "LearningRateLogger",
    "fit/best_epoch": "EarlyStopping.on_epoch_end (copies the best weights)", "fit/nan_check": "TerminateOnNaN "
    "(every batch)", "fit/best_restore": "EarlyStopping.on_train_end (restores the best weights)",
}


def label(key: str) -> str:
    base = key.removeprefix("between/").removeprefix("fit/")
    if key in LABELS or base in LABELS:
        return LABELS.get(key) or LABELS[base]
    if base.startswith("mlflow."):
        return f"MLflow client {base.removeprefix('mlflow.')}"
    if base.startswith("optuna_storage."):
        return f"Optuna storage {base.removeprefix('optuna_storage.')}"
    if base.endswith("/gc.collect"):
        return f"gc.collect in {base.removesuffix('/gc.collect')}"
    return ""


def summarise(name: str, plain: dict, auto: dict) -> dict:
    """Per-trial rows of both sides, the breakdowns, and the figures the targets are checked on."""
    n = len(auto["trials"])
    between_s = sum(auto["between"].values())  # ask, tell, sampler, gc: the trial loop outside the objectives
    per_trial = []
    for p, a in zip(plain["trials"], auto["trials"], strict=False):
        callbacks = sum(v for k, v in a["regions"].items() if k.startswith("fit/") and k not in
                        ("fit/evaluate", "fit/best_restore"))
        outside = a["objective_s"] - a["model_fit_s"] + between_s / n
        outside_cpu = a["objective_cpu_s"] - a["model_fit_cpu_s"] + auto["between_cpu_s"] / n
        pe, ae = p["epochs"], a["epochs"]
        per_trial.append({
            "data": name, "trial": a["trial"], "state": a["state"],
            "plain_wall_s": p["wall_s"], "automl_wall_s": a["objective_s"] + between_s / n,
            "plain_fit_s": p["regions"]["model_fit"], "automl_fit_s": a["model_fit_s"],
            "plain_outside_fit_s": p["outside_fit_s"], "automl_outside_fit_s": outside,
            "excess_outside_fit_s": outside - p["outside_fit_s"],
            "plain_outside_fit_cpu_s": p["outside_fit_cpu_s"], "automl_outside_fit_cpu_s": outside_cpu,
            "plain_epoch1_s": pe[0]["wall_s"] if pe else None, "automl_epoch1_s": ae[0]["wall_s"] if ae else None,
            "plain_steady_epoch_s": median(steady(pe)), "automl_steady_epoch_s": median(steady(ae)),
            "automl_callbacks_per_epoch_s": callbacks / max(1, len(ae)),
            "plain_fit_minus_epochs_s": p["regions"]["model_fit"] - sum(e["wall_s"] for e in pe),
            "automl_fit_minus_epochs_s": a["model_fit_s"] - sum(e["wall_s"] for e in ae),
            "unaccounted_s": a["objective_s"] - sum(a["regions"].values()),
        })

    def pooled(side: dict, key: str = "wall_s") -> list[float]:
        return [v for t in side["trials"] for v in steady(t["epochs"], key)]

    def firsts(side: dict) -> list[float]:
        return [t["epochs"][0]["wall_s"] for t in side["trials"] if t["epochs"]]

    complete = [r for r in per_trial if r["state"] == "COMPLETE"]  # a pruned trial skips the test, save...
    later = [r for r in complete if r["trial"] > 0] or complete
    figures = {
        "plain_steady_epoch_median_s": median(pooled(plain)), "automl_steady_epoch_median_s": median(pooled(auto)),
        "plain_steady_epoch_mean_s": mean(pooled(plain)), "automl_steady_epoch_mean_s": mean(pooled(auto)),
        "plain_steady_epoch_cpu_median_s": median(pooled(plain, "cpu_s")),
        "automl_steady_epoch_cpu_median_s": median(pooled(auto, "cpu_s")),
        "plain_epoch1_median_s": median(firsts(plain)), "automl_epoch1_median_s": median(firsts(auto)),
        "automl_outside_fit_first_trial_s": per_trial[0]["automl_outside_fit_s"],
        "automl_outside_fit_later_mean_s": mean(r["automl_outside_fit_s"] for r in later),
        "automl_outside_fit_all_mean_s": mean(r["automl_outside_fit_s"] for r in per_trial),
        "automl_outside_fit_cpu_later_mean_s": mean(r["automl_outside_fit_cpu_s"] for r in later),
        "plain_outside_fit_cpu_later_mean_s": mean(r["plain_outside_fit_cpu_s"] for r in later),
        "plain_outside_fit_later_mean_s": mean(r["plain_outside_fit_s"] for r in later),
        "excess_outside_fit_later_mean_s": mean(r["excess_outside_fit_s"] for r in later),
    }
    for kind in ("median", "mean", "cpu_median"):
        p_, a_ = figures[f"plain_steady_epoch_{kind}_s"], figures[f"automl_steady_epoch_{kind}_s"]
        figures[f"epoch_ratio_{kind}"] = a_ / p_ if p_ and a_ else None
    callbacks = mean(r["automl_callbacks_per_epoch_s"] for r in later)
    figures["automl_callbacks_per_epoch_s"] = callbacks  # measured directly: less noisy than a ratio of two epochs
    figures["callbacks_share_of_plain_epoch"] = callbacks / figures["plain_steady_epoch_median_s"]
    figures["plain_tracing_s"] = figures["plain_epoch1_median_s"] - figures["plain_steady_epoch_median_s"]
    figures["automl_tracing_s"] = figures["automl_epoch1_median_s"] - figures["automl_steady_epoch_median_s"]

    trials = auto["trials"]
    rest = [t for t in trials[1:] if t["state"] == "COMPLETE"] or trials

    plain_rest = plain["trials"][1:] or plain["trials"]
    plain_keys = {"clear_session": "clear_session", "clear_session/gc.collect": "clear_session/gc.collect",
                  "build": "build", "compile": "compile", "fit_setup": "data_prep"}

    def row(key: str, first: float, later_mean: float, scale: float = 1.0) -> dict:
        same = plain_keys.get(key)
        return {"region": key, "what": label(key), "first_trial": first * scale,
                "later_trials": later_mean * scale,
                "plain_later_trials": mean(t["regions"][same] for t in plain_rest) * scale if same else None}

    keys = {k for t in trials for k in t["regions"]}
    outside = [row(k, trials[0]["regions"].get(k, 0.0), mean(t["regions"].get(k, 0.0) for t in rest))
               for k in keys if not k.startswith("fit/") and k != "model_fit"]
    outside += [row(f"between/{k}", v / n, v / n) for k, v in auto["between"].items()]
    outside.sort(key=lambda r: -r["later_trials"])
    outside.append({**row("total outside model.fit", per_trial[0]["automl_outside_fit_s"],
                          mean(r["automl_outside_fit_s"] for r in later)),
                    "plain_later_trials": figures["plain_outside_fit_later_mean_s"]})
    epochs_run = max(1, len(trials[0]["epochs"]))
    in_fit = [row(k, trials[0]["regions"].get(k, 0.0), mean(t["regions"].get(k, 0.0) for t in rest), 1000 / epochs_run)
              for k in keys if k.startswith("fit/")]
    in_fit.sort(key=lambda r: -r["later_trials"])
    search = [{"region": k, "what": label(k), "seconds": v}
              for k, v in sorted(auto["search_inclusive"].items(), key=lambda kv: -kv[1]) if k.startswith("search/")]
    search.append({"region": "run_search", "what": "the whole call, trials included", "seconds": auto["search_s"]})
    return {"per_trial": per_trial, "figures": figures, "outside_fit": outside, "in_fit_ms_per_epoch": in_fit,
            "per_search": search}


def targets(summaries: dict) -> list[dict]:
    """Each target twice: as measured (wall time, noisy on a busy machine) and from what automl adds itself."""
    rows = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    for name, s in summaries.items():
        f = s["figures"]
        ratio, own = f["epoch_ratio_median"], 1 + f["callbacks_share_of_plain_epoch"]
        rows.append({"data": name, "target": f"steady epoch time automl / plain <= {THROUGHPUT_TARGET:.2f}",
                     "value": f"{ratio:.3f} (median of wall times; mean {f['epoch_ratio_mean']:.3f}, "
                              f"CPU time {f['epoch_ratio_cpu_median']:.3f})",
                     "result": verdict(ratio <= THROUGHPUT_TARGET)})
        rows.append({"data": name, "target": f"1 + automl's callbacks per epoch / plain epoch <= "
                                             f"{THROUGHPUT_TARGET:.2f}",
                     "value": f"{own:.3f} ({1000 * f['automl_callbacks_per_epoch_s']:.0f} ms per epoch, "
                              f"plain epoch {f['plain_steady_epoch_median_s']:.2f} s)",
                     "result": verdict(own <= THROUGHPUT_TARGET)})
        later, excess = f["automl_outside_fit_later_mean_s"], f["excess_outside_fit_later_mean_s"]
        rows.append({"data": name, "target": f"seconds outside model.fit per trial <= {OUTSIDE_FIT_TARGET}",
                     "value": f"{later:.2f} s (CPU {f['automl_outside_fit_cpu_later_mean_s']:.2f} s; trials after the "
                              f"first; the first {f['automl_outside_fit_first_trial_s']:.2f} s)",
                     "result": verdict(later <= OUTSIDE_FIT_TARGET)})
        rows.append({"data": name, "target": f"... beyond plain Keras's own (clear_session, build, compile) <= "
                                             f"{OUTSIDE_FIT_TARGET}",
                     "value": f"{excess:.2f} s (plain Keras {f['plain_outside_fit_later_mean_s']:.2f} s)",
                     "result": verdict(excess <= OUTSIDE_FIT_TARGET)})
    return rows


def table(rows: list[dict], floatfmt: str = ".3f") -> str:
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", floatfmt=floatfmt)


def run_side(side: str, data: str, args, folder: Path) -> dict:
    result = folder / f"{side}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", data, "--trials",
               str(args.trials), "--epochs", str(args.epochs), "--pruner", args.pruner, "--result", str(result)]
    if args.subset:
        command += ["--subset", str(args.subset)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "AUTOML_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {side} side on {data} failed:\n{done.stderr[-4000:]}")
    print(f"  {side}: {time.perf_counter() - start:.0f} s (process)", flush=True)
    return json.loads(result.read_text())


def machine() -> dict:
    """benchmarks/common.py's machine record, with the load average when the run started (another
    process's load shows in wall times)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine as common_machine

    info = common_machine()
    try:
        info["versions"]["optuna-integration"] = metadata.version("optuna-integration")
    except metadata.PackageNotFoundError:
        pass
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def results_md(results: dict, summaries: dict) -> str:
    from common import provenance

    epochs = [{"data": n, "plain steady epoch (s)": f"{f['plain_steady_epoch_median_s']:.3f}",
               "automl steady epoch (s)": f"{f['automl_steady_epoch_median_s']:.3f}",
               "ratio (wall)": f"{f['epoch_ratio_median']:.3f}", "ratio (CPU)": f"{f['epoch_ratio_cpu_median']:.3f}",
               "automl callbacks (ms/epoch)": f"{1000 * f['automl_callbacks_per_epoch_s']:.0f}",
               "plain outside fit (s)": f"{f['plain_outside_fit_later_mean_s']:.2f}",
               "automl outside fit (s)": f"{f['automl_outside_fit_later_mean_s']:.2f}"}
              for n, s in summaries.items() for f in [s["figures"]]]
    top = [{"data": n, "region": r["region"], "what": r["what"], "s per trial": f"{r['later_trials']:.3f}"}
           for n, s in summaries.items() for r in s["outside_fit"][:6]]
    s = results["settings"]
    return "\n\n".join([
        "## Overhead per trial (`benchmarks/overhead.py`)",
        provenance(results["machine"]) + f" Load average at the start: {results['machine']['load_average_at_start']}.",
        f"The default configuration of search_spaces/quick.yaml, {s['trials']} trials of {s['epochs']} epochs per "
        f"side and data set (larger data sets cut to {s['subset']} training images); trials after the first.",
        table(epochs), table(top), table(results["targets"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits,fashion_mnist", help="comma-separated data sets")
    parser.add_argument("--trials", type=int, default=3, help="trials per side and data set (default 3)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--subset", type=int, default=1000,
                        help="training images of larger data sets (validation and test: a sixth each); 0: all")
    parser.add_argument("--pruner", default="median",
                        help="the automl side's pruner (default median: its callback reports every epoch like "
                             "hyperband's, and it prunes none of the first 4 trials; hyperband prunes some of these "
                             "identical trials after one epoch). Pruned trials are left out of the per-trial means")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.json"))
    parser.add_argument("--quick", action="store_true",
                        help="2 trials of 2 epochs, 500 images (a smoke run; RESULTS.md is left alone)")
    parser.add_argument("--side", choices=("plain", "automl"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return worker(args)
    if args.quick:
        args.trials, args.epochs, args.subset = 2, 2, 500
    if args.trials < 2 or args.epochs < 2:
        parser.error("--trials and --epochs must be at least 2 (the first of each is the cold one)")

    results = {"machine": machine(), "settings": {"space": "search_spaces/quick.yaml (default configuration)",
               "trials": args.trials, "epochs": args.epochs, "subset": args.subset, "pruner": args.pruner,
               "storage": "journal file", "tracking": "MLflow on SQLite"}, "data": {}}
    summaries = {}
    for name in [d.strip() for d in args.data.split(",") if d.strip()]:
        print(f"{name}: {args.trials} trials x {args.epochs} epochs per side", flush=True)
        with tempfile.TemporaryDirectory(prefix="automl-overhead-") as tmp:
            plain = run_side("plain", name, args, Path(tmp))
            auto = run_side("automl", name, args, Path(tmp))
        summaries[name] = summarise(name, plain, auto)
        results["data"][name] = {"dataset": plain["data"], "plain": plain,
                                 "automl": {k: v for k, v in auto.items() if k != "wrapped"},
                                 "summary": summaries[name]}
        results["wrapped"] = auto["wrapped"]

    per_trial = [r for s in summaries.values() for r in s["per_trial"]]
    print("\n## Per trial (seconds; automl wall = Optuna objective + its share of ask/tell/gc)\n")
    shown = ("data", "trial", "state", "plain_wall_s", "automl_wall_s", "plain_fit_s", "automl_fit_s",
             "plain_outside_fit_s", "automl_outside_fit_s", "plain_outside_fit_cpu_s", "automl_outside_fit_cpu_s",
             "plain_epoch1_s", "automl_epoch1_s", "plain_steady_epoch_s", "automl_steady_epoch_s")
    print(table([{k.removesuffix("_s").replace("outside_fit", "outside"): r[k] for k in shown} for r in per_trial]))
    worst = max(abs(r["unaccounted_s"]) for r in per_trial)
    print(f"\n(automl's regions add up to each objective's wall time within {worst * 1000:.1f} ms)")
    same = [(n, p["val_accuracy"], a["val_accuracy"]) for n in summaries for p, a in
            zip(results["data"][n]["plain"]["trials"], results["data"][n]["automl"]["trials"], strict=False)]
    differ = [x for x in same if x[2] is not None and abs(x[1] - x[2]) > 1e-4]  # None: pruned
    print("(the last epoch's val_accuracy is the same on both sides in every trial: the same training)" if not differ
          else f"(WARNING: the last epoch's val_accuracy differs between the sides: {differ})")
    print("\n## Epochs (seconds; steady = epochs after the first, median)\n")
    print(table([{"data": n, "side": side, "epoch1": f[f"{side}_epoch1_median_s"],
                  "steady": f[f"{side}_steady_epoch_median_s"], "steady_mean": f[f"{side}_steady_epoch_mean_s"],
                  "steady_cpu": f[f"{side}_steady_epoch_cpu_median_s"], "tracing": f[f"{side}_tracing_s"],
                  "ratio": f["epoch_ratio_median"] if side == "automl" else None,
                  "ratio_mean": f["epoch_ratio_mean"] if side == "automl" else None,
                  "ratio_cpu": f["epoch_ratio_cpu_median"] if side == "automl" else None}
                 for n, s in summaries.items() for f in [s["figures"]] for side in ("plain", "automl")]))
    for n, s in summaries.items():
        print(f"\n## {n}: automl seconds outside model.fit per trial, by region (exclusive)\n")
        shown = [r for r in s["outside_fit"] if max(r["first_trial"], r["later_trials"]) >= 0.001]
        print(table(shown))
        print(f"({len(s['outside_fit']) - len(shown)} regions under 1 ms left out; all are in the JSON)")
        print(f"\n## {n}: automl's regions inside model.fit (ms per epoch, exclusive)\n")
        shown = [{k: v for k, v in r.items() if k != "plain_later_trials"} for r in s["in_fit_ms_per_epoch"]
                 if max(r["first_trial"], r["later_trials"]) >= 0.1]
        print(table(shown, ".1f"))
        print(f"({len(s['in_fit_ms_per_epoch']) - len(shown)} regions under 0.1 ms left out)")
        print(f"\n## {n}: once per search (seconds, inclusive; not in the per-trial figures)\n")
        print(table(s["per_search"], ".2f"))
    results["targets"] = targets(summaries)
    print("\n## Targets\n")
    print(table(results["targets"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")
    if not args.quick:  # a smoke run's figures stay out of RESULTS.md
        from common import RESULTS_MD, update_results_md

        update_results_md("overhead", results_md(results, summaries))
        print(f"wrote its section of {RESULTS_MD}")


if __name__ == "__main__":
    main()
