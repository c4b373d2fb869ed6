"""Reading a study back: tables of its trials (pandas); the best trial is records.best_trial."""

from __future__ import annotations

import optuna
import pandas as pd

from automl.hpo.live import Live
from automl.hpo.records import TrialRecord, ranking


def trials_frame(study: optuna.Study, varying_only: bool = False) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, test accuracy, reason and the parameters."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params"))
    if frame.empty:
        return frame
    kept = {t.number: TrialRecord.of(t) for t in study.get_trials(deepcopy=False)}
    rows = [kept[n] for n in frame["number"]]
    measured = pd.Series([r.trial_seconds for r in rows], index=frame.index, dtype=float)
    # Optuna's duration when the trial did not say (mirrored KerasTuner trials have no timestamps of their own)
    frame["duration_s"] = measured.fillna(pd.to_timedelta(frame.pop("duration")).dt.total_seconds()).round(1)
    tests = [r.metrics.get("test_accuracy") for r in rows]
    if any(t is not None for t in tests):  # a tune's searches keep the test split for the final model
        frame["test_accuracy"] = tests
    frame["reason"] = [r.fail_reason for r in rows]
    params = [c for c in frame.columns if c.startswith("params_")]
    if varying_only:
        params = [c for c in params if frame[c].astype(str).nunique() > 1]
    frame = frame.rename(columns={c: c.removeprefix("params_") for c in params})
    keep = ["number", "state", "value", "duration_s", "test_accuracy", "reason"] + [c.removeprefix("params_")
                                                                                  for c in params]
    return frame[[c for c in keep if c in frame.columns]]


def top_trials(study: optuna.Study, top: int = 5) -> pd.DataFrame:
    """The best trials (records.ranking) with the parameters that vary, named without their
    section (model., training., ...) to keep the table narrow."""
    frame = trials_frame(study, varying_only=True)
    if frame.empty:
        return frame
    order = [t.number for t in ranking(study)[:top]]
    table = frame.set_index("number", drop=False).loc[order].reset_index(drop=True).drop(columns=["reason"])
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
