"""Reading a study back: the best trial and a table of all trials (pandas)."""

from __future__ import annotations

import optuna
import pandas as pd

from automl.hpo.live import Live


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial that kept a model; None before the first one."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "model_path" in t.user_attrs]
    if not complete:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value)


def trials_frame(study: optuna.Study, varying_only: bool = False) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, test accuracy, reason and the parameters."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    if frame.empty:
        return frame
    frame["duration_s"] = frame.pop("duration").dt.total_seconds().round(1)
    if "user_attrs_trial_seconds" in frame:  # mirrored KerasTuner trials have no timestamps of their own
        frame["duration_s"] = frame["user_attrs_trial_seconds"].fillna(frame["duration_s"]).round(1)
    metrics = frame.get("user_attrs_metrics")
    if metrics is not None:
        tests = [m.get("test_accuracy") if isinstance(m, dict) else None for m in metrics]
        if any(t is not None for t in tests):  # a tune's searches keep the test split for the final model
            frame["test_accuracy"] = tests
    frame["reason"] = frame.get("user_attrs_fail_reason")
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("user_attrs_")])
    params = [c for c in frame.columns if c.startswith("params_")]
    if varying_only:
        params = [c for c in params if frame[c].astype(str).nunique() > 1]
    frame = frame.rename(columns={c: c.removeprefix("params_") for c in params})
    keep = ["number", "state", "value", "duration_s", "test_accuracy", "reason"] + [c.removeprefix("params_")
                                                                                  for c in params]
    return frame[[c for c in keep if c in frame.columns]]


def top_trials(study: optuna.Study, top: int = 5) -> pd.DataFrame:
    """The best complete trials with the parameters that vary, named without their section
    (model., training., ...) to keep the table narrow."""
    frame = trials_frame(study, varying_only=True)
    if frame.empty:
        return frame
    done = frame[frame["state"] == "COMPLETE"]
    done = done.sort_values("value", ascending=study.direction == optuna.study.StudyDirection.MINIMIZE)
    table = done.head(top).drop(columns=["reason"])
    table.columns = [str(c).split(".", 1)[-1] for c in table.columns]
    return table


def print_top_trials(study: optuna.Study, live: Live, top: int = 5) -> None:
    states = pd.Series([t.state.name for t in study.get_trials(deepcopy=False)]).value_counts().to_dict()
    if not states:
        return
    table = top_trials(study, top)
    live.say(f"\ntrials: {', '.join(f'{n} {s.lower()}' for s, n in states.items())}; top {len(table)}:")
    if not table.empty:
        live.say(table.to_string(index=False, max_colwidth=24))
