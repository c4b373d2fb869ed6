"""Run the staged tuning recipe: [transfer ->] sanity -> overfit -> lr_range -> coarse -> diagnose ->
refine -> final (transfer: for a space with a trained backbone).

State lives where a search's does: the tune is an Optuna study (``--study``) whose user
attributes hold one record per finished stage, and whose single trial is the final model (so
``automl export`` and ``automl trials`` work on it). A rerun skips the stages with a record and
continues the first without one; the coarse and refine searches are studies of their own
(``<study>/coarse``, ``<study>/refine``) that resume like any search.

MLflow: one top-level run per tune, a child run per stage tagged ``automl.stage``, and under
the coarse and refine stage runs a child run per trial.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna

from automl.data import Dataset, load_dataset
from automl.errors import RecipeStopped
from automl.hpo.driver import PARENT_ATTR, check_backbone
from automl.hpo.live import Live
from automl.hpo.study import open_named_study
from automl.recipe.budget import STAGES, Budget
from automl.recipe.settings import TuneSettings
from automl.secrets import masked_fields
from automl.space import SearchSpace
from automl.tracking import Tracker, flatten

RECORD_PREFIX = "stage:"


@dataclass
class StageResult:
    """What a stage found and decided; stored as the stage's record once it finishes."""

    ok: bool  # False stops the tune: more search cannot fix what was found
    verdict: str
    summary: str  # what was measured and what it means
    changes: list[str] = field(default_factory=list)  # what it changed for the next stages
    measured: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # what later stages and the report read
    run_id: str | None = None  # search stages: the search's parent run


def _reuses_trained_backbone(space: SearchSpace) -> bool:
    """Whether the transfer stage has something to read: an untrained backbone (weights: random)
    is an architecture only, trained from scratch, with no learned features to probe."""
    spec = space.default()["model"].get("backbone")
    return spec is not None and spec.get("weights", "pretrained") != "random"


class Tune:
    """One tune: its settings, data, study, MLflow runs and budget, shared by the stages."""

    def __init__(self, settings: TuneSettings, data: Dataset | None = None):
        self.settings = settings
        self.live = Live(None, settings.objective, settings.direction, settings.verbose)
        self.space = SearchSpace.load(settings.space)
        self.stages = [s for s in STAGES if s != "transfer" or _reuses_trained_backbone(self.space)]
        self.data: Dataset = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
        check_backbone(self.space, self.data.input_shape)
        identity = {"space": settings.space, "data": settings.data, "objective": settings.objective, "kind": "tune"}
        self.study = open_named_study(settings.study, settings.storage, settings.direction, identity, self.data)
        self.records: dict[str, dict] = {k.removeprefix(RECORD_PREFIX): v for k, v in self.study.user_attrs.items()
                                         if k.startswith(RECORD_PREFIX)}
        if self.records.get("transfer", {}).get("ok"):  # the transfer policy's space is the later stages' base
            self.space = SearchSpace.load(self.output("transfer", "space"))
        self.budget = Budget(settings.budget, sum(r["seconds"] for r in self.records.values()),
                             self.records.get("lr_range", {}).get("outputs", {}).get("shares"))
        self.tracker = Tracker(settings.tracking_uri, settings.study)
        self.top: str = ""
        self.stage_run: str | None = None  # the MLflow run of the check stage in progress
        settings.folder.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        self.live.say(text)

    def output(self, stage: str, key: str) -> Any:
        return self.records[stage]["outputs"][key]

    # --- the stage loop ----------------------------------------------------------------

    def run(self) -> optuna.Study:
        from automl.recipe import stages

        s = self.settings
        self.say(f"tune {s.study}: {self.data.describe()}; budget {s.budget:.0f} s"
                 + (f", {self.budget.spent_before:.0f} s spent before" if self.records else ""))
        self.top = self.tracker.open_parent(
            self.study.user_attrs.get(PARENT_ATTR), name="tune",
            params={k: v for k, v in masked_fields(flatten(dataclasses.asdict(s))).items() if k != "verbose"},
            tags={"automl.kind": "tune", "automl.study": s.study},
        )
        self.study.set_user_attr(PARENT_ATTR, self.top)
        self.tracker.close_stale_children(self.top, alive=())  # stage runs of an interrupted tune
        status = "KILLED"
        try:
            for number, stage in enumerate(self.stages, 1):
                if self.records.get(stage, {}).get("ok"):
                    self.say(f"[{number}/{len(self.stages)}] {stage}: done before; {self.records[stage]['summary']}")
                else:
                    self._run_stage(number, stage, getattr(stages, stage))
                if stage == s.until:
                    break
            status = "FINISHED"
        except Exception:  # RecipeStopped included: the tune run says where it stopped
            status = "FAILED"
            raise
        finally:
            self._close_top(status)
        return self.study

    def _run_stage(self, number: int, stage: str, body) -> None:
        allot = self.budget.allot(stage)
        self.say(f"\n[{number}/{len(self.stages)}] {stage}: {allot:.0f} s of the {self.budget.remaining():.0f} s left")
        start = time.perf_counter()
        if stage in ("coarse", "refine"):  # the search opens (or reopens) its own parent run
            result: StageResult = body(self, allot)
        else:
            with self._check_run(stage) as holder:
                result = body(self, allot)
                holder.append(result)
        seconds = time.perf_counter() - start
        record = {"stage": stage, **dataclasses.asdict(result), "seconds": round(seconds, 2),
                  "budget": round(allot, 2)}
        self._describe_run(result.run_id or self.stage_run, stage, result, seconds)
        self.study.set_user_attr(RECORD_PREFIX + stage, record)
        self.records[stage] = record
        if "shares" in result.outputs:  # the plan, from the speed the stage measured
            self.budget.shares = result.outputs["shares"]
        if stage == "transfer":
            self.space = SearchSpace.load(result.outputs["space"])
        self.say(f"{stage}: {'ok' if result.ok else 'STOP'} ({result.verdict}) in {seconds:.1f} s; {result.summary}")
        for change in result.changes:
            self.say(f"  next: {change}")
        if not result.ok:
            raise RecipeStopped(stage, result.summary)

    @contextmanager
    def _check_run(self, stage: str):
        """The MLflow run of a check stage (sanity, overfit, lr_range, diagnose, final)."""
        self.stage_run = self.tracker.open_parent(None, name=stage, params={}, nest_under=self.top,
                                                  tags={"automl.kind": "stage", "automl.stage": stage})
        holder: list[StageResult] = []
        status = "KILLED"
        try:
            yield holder
            status = "FINISHED" if holder[0].ok else "FAILED"
        except Exception:
            status = "FAILED"
            raise
        finally:
            self.tracker.client.set_terminated(self.stage_run, status)

    def _describe_run(self, run_id: str, stage: str, result: StageResult, seconds: float) -> None:
        client = self.tracker.client
        note = f"**{stage}**: {result.summary}" + "".join(f"\n- {c}" for c in result.changes)
        for key, value in {"automl.stage": stage, "automl.verdict": result.verdict, "automl.ok": str(result.ok),
                           "mlflow.note.content": note}.items():
            client.set_tag(run_id, key, value)
        metrics = {k: v for k, v in result.measured.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        for key, value in {**metrics, "stage_seconds": seconds}.items():
            client.log_metric(run_id, key, float(value))
        client.log_text(run_id, note + "\n", "summary.md")

    def _close_top(self, status: str) -> None:
        final = self.records.get("final", {}).get("measured", {})
        metrics = {k: v for k, v in final.items() if k.startswith("test_")}
        metrics["tune_seconds"] = self.budget.spent()
        if self.records:
            from automl.recipe.report import write_report

            try:
                path = write_report(self.settings.study, self.settings.storage, self.settings.folder / "report.md")
                self.tracker.client.log_artifact(self.top, str(path), "report")
                self.tracker.client.log_artifacts(self.top, str(path.parent / "report_files"), "report/report_files")
                self.say(f"report: {path}")
            except Exception as exc:  # the report must not hide how the tune ended
                self.say(f"(could not write the report: {type(exc).__name__}: {exc})")
        stopped = [r["stage"] for r in self.records.values() if not r["ok"]]
        if stopped:
            self.tracker.client.set_tag(self.top, "automl.stopped_at", stopped[0])
        self.tracker.close_parent(self.top, status, metrics)


def run_tune(settings: TuneSettings, data: Dataset | None = None) -> optuna.Study:
    """Run the tune; ``data``, when given, is ``settings.data`` already loaded."""
    return Tune(settings, data).run()
