"""Run the staged tuning recipe (``automl.recipe.plan``).

State lives where a search's does: the tune is an Optuna study (``--study``) that keeps one
typed record per finished stage (``automl.recipe.outcomes``), and whose single trial is the
final model (so ``automl export`` and ``automl trials`` work on it). A rerun skips the stages
with a record and continues the first without one; the searches are studies of their own
(``<study>/coarse``, ``<study>/refine``, ``<study>/refine-2``, ...) that resume like any search.

MLflow: one top-level run per tune, a child run per stage tagged ``automl.stage``, and under
each search's stage run a child run per trial.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager

import optuna

from automl.data import Dataset, load_dataset
from automl.errors import RecipeStopped
from automl.hpo import records
from automl.hpo.driver import check_backbone
from automl.hpo.live import Live
from automl.hpo.settings import SearchSettings
from automl.hpo.study import open_named_study
from automl.hpo.workers import TunePool
from automl.recipe.budget import Budget
from automl.recipe.context import StageContext
from automl.recipe.outcomes import Outcomes, OverfitOutputs, StageRecord, TransferOutputs
from automl.recipe.plan import SHARES, plan
from automl.recipe.report import write_report
from automl.recipe.settings import TuneSettings
from automl.recipe.stage import Stage
from automl.secrets import masked_fields
from automl.space import SearchSpace
from automl.tracking import Tracker, flatten


class Tune:
    """One tune: its settings, data, study, MLflow runs and budget; runs the plan's stages."""

    def __init__(self, settings: TuneSettings, data: Dataset | None = None):
        self.settings = settings
        self.live = Live(None, settings.objective, settings.direction, settings.verbose)
        self.user_space = SearchSpace.load(settings.space)
        self.data: Dataset = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
        check_backbone(self.user_space, self.data.input_shape)
        identity = {"space": settings.space, "data": settings.data, "objective": settings.objective, "kind": "tune"}
        self.study = open_named_study(settings.study, settings.storage, settings.direction, identity, self.data)
        self.outcomes = Outcomes({name: StageRecord.from_dict(record)
                                  for name, record in records.stage_records(self.study).items()})
        self.budget = Budget(settings.budget, SHARES, spent_before=self.outcomes.seconds(),
                             planned=self.outcomes.shares())
        self.tracker = Tracker(settings.tracking_uri, settings.study)
        self.top = ""
        self.workers: TunePool | None = None  # started for the first search stage, kept until the last
        settings.folder.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        self.live.say(text)

    def base_space(self) -> SearchSpace:
        """The space the next stage starts from: the user's, as transfer and overfit rewrote it."""
        space = self.user_space
        for stage in ("transfer", "overfit"):
            record = self.outcomes.get(stage)
            if record and record.ok and isinstance(record.outputs, (TransferOutputs, OverfitOutputs)) \
                    and record.outputs.space:
                space = SearchSpace.load(record.outputs.space)
        return space

    def run(self) -> optuna.Study:
        s = self.settings
        self.say(f"tune {s.study}: {self.data.describe()}; budget {s.budget:.0f} s"
                 + (f", {self.budget.spent_before:.0f} s spent before" if self.outcomes.records else ""))
        self.top = self.tracker.open_parent(
            records.parent_run(self.study), name="tune",
            params={k: v for k, v in masked_fields(flatten(dataclasses.asdict(s))).items() if k != "verbose"},
            tags={"automl.kind": "tune", "automl.study": s.study},
        )
        records.set_parent_run(self.study, self.top)
        self.tracker.close_stale_children(self.top, alive=())  # stage runs of an interrupted tune
        status = "KILLED"
        try:
            self._start_workers()
            number = 0
            while (stage := self._next(number)) is not None:
                number += 1
                stages = plan(self.user_space, self.outcomes)
                if stage.name in self.outcomes:
                    done = self.outcomes.get(stage.name)
                    self.say(f"[{number}/{len(stages)}] {stage.name}: done before; {done.summary}")
                else:
                    self._run_stage(number, stage, stages)
                if stage.kind == s.until and not self._loop_goes_on(stage, number):
                    break
            status = "FINISHED"
        except Exception:  # RecipeStopped included: the tune run says where it stopped
            status = "FAILED"
            raise
        finally:
            self._stop_workers()
            self._close_top(status)
        return self.study

    def _start_workers(self) -> None:
        """The tune's worker processes, when it has some and a search is still to run: started as
        the tune starts, so that their framework start-up (10 to 50 s on a busy 2-core machine) is
        over when the first search begins; they wait, idle, until it does, and stop before the final."""
        s = self.settings
        pooled = s.workers > 1 or s.recycle is not None or bool(s.gpus)
        if pooled and any(stage.search and stage.name not in self.outcomes
                          for stage in plan(self.user_space, self.outcomes)):
            settings = SearchSettings(space=s.space, data=s.data, study=s.study, storage=s.storage,
                                      tracking_uri=s.tracking_uri, out=s.out, trials=None, timeout=s.budget,
                                      seed=s.seed, verbose=s.verbose, workers=s.workers, recycle=s.recycle,
                                      gpus=s.gpus)
            self.workers = TunePool(settings, self.study, self.say)
            self.workers.start()

    def _workers_for(self, stage: Stage) -> TunePool | None:
        """The tune's workers for a search stage; none for the others (stopped before the final)."""
        if stage.kind == "final":
            self._stop_workers()
        return self.workers if stage.search else None

    def _stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def _next(self, done: int) -> Stage | None:
        """The plan's stage after the first ``done``; the plan grows as the loop decides."""
        stages = plan(self.user_space, self.outcomes)
        return stages[done] if done < len(stages) else None

    def _loop_goes_on(self, stage: Stage, done: int) -> bool:
        """Whether ``stage`` is a refine round after which the loop runs another (--until refine
        stops after the loop, not after its first round)."""
        after = self._next(done)
        return stage.kind == "refine" and after is not None and after.kind == "diagnose"

    def _run_stage(self, number: int, stage: Stage, stages: list[Stage]) -> None:
        later = stages[stages.index(next(s for s in stages if s.name == stage.name)) + 1:]
        ctx = StageContext(settings=self.settings, data=self.data, space=self.base_space(), outcomes=self.outcomes,
                           budget=self.budget, study=self.study, tracker=self.tracker, tune_run=self.top,
                           say=self.say, later=[s.kind for s in later], workers=self._workers_for(stage))
        allot = stage.allot(ctx, later)
        self.say(f"\n[{number}/{len(stages)}] {stage.name}: {allot:.0f} s of the {self.budget.remaining():.0f} s left")
        start = time.perf_counter()
        if stage.search:  # the search opens (or reopens) its own run under the tune's
            result = stage.run(ctx, allot)
        else:
            with self._stage_run(stage, ctx) as holder:
                result = stage.run(ctx, allot)
                holder.append(result)
        seconds = time.perf_counter() - start
        record = StageRecord(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)},
                             stage=stage.name, kind=stage.kind, seconds=round(seconds, 2), budget=round(allot, 2))
        self._describe(record.run_id or ctx.run_id, record)
        records.write_stage_record(self.study, stage.name, record.to_dict())
        self.outcomes.add(record)
        if shares := self.outcomes.shares():  # the plan, from the speed the stages measured
            self.budget.shares = shares
        self.say(f"{stage.name}: {'ok' if record.ok else 'STOP'} ({record.verdict}) in {seconds:.1f} s; "
                 f"{record.summary}")
        for change in record.changes:
            self.say(f"  next: {change}")
        if not record.ok:
            raise RecipeStopped(stage.name, record.summary)

    @contextmanager
    def _stage_run(self, stage: Stage, ctx: StageContext):
        """The MLflow run of a stage that is not a search."""
        ctx.run_id = self.tracker.open_parent(None, name=stage.name, params={}, nest_under=self.top,
                                              tags={"automl.kind": "stage", "automl.stage": stage.name})
        holder: list = []
        status = "KILLED"
        try:
            yield holder
            status = "FINISHED" if holder[0].ok else "FAILED"
        except Exception:
            status = "FAILED"
            raise
        finally:
            self.tracker.end_run(ctx.run_id, status)

    def _describe(self, run_id: str, record: StageRecord) -> None:
        note = f"**{record.stage}**: {record.summary}" + "".join(f"\n- {c}" for c in record.changes)
        metrics = {k: float(v) for k, v in record.measured.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)}
        self.tracker.describe(run_id, {"automl.stage": record.stage, "automl.verdict": record.verdict,
                                       "automl.ok": str(record.ok)}, {**metrics, "stage_seconds": record.seconds}, note)

    def _close_top(self, status: str) -> None:
        final = self.outcomes.get("final")
        metrics = {k: v for k, v in (final.measured if final else {}).items() if k.startswith("test_")}
        metrics["tune_seconds"] = self.budget.spent()
        if self.outcomes.records:
            try:
                path = write_report(self.settings.study, self.settings.storage, self.settings.folder / "report.md")
                self.tracker.log_artifact(self.top, path, "report")
                self.tracker.log_artifacts(self.top, path.parent / "report_files", "report/report_files")
                self.say(f"report: {path}")
            except Exception as exc:  # the report must not hide how the tune ended
                self.say(f"(could not write the report: {type(exc).__name__}: {exc})")
        stopped = [r.stage for r in self.outcomes.values() if not r.ok]
        if stopped:
            self.tracker.set_tags(self.top, {"automl.stopped_at": stopped[0]})
        self.tracker.close_parent(self.top, status, metrics)


def run_tune(settings: TuneSettings, data: Dataset | None = None) -> optuna.Study:
    """Run the tune; ``data``, when given, is ``settings.data`` already loaded."""
    return Tune(settings, data).run()
