"""The last step: retrain the chosen configuration on train + validation for the final's
seconds, evaluate it once on the test split, and export it as ``automl export`` does."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import optuna
import pandas as pd

from automl.hpo import records
from automl.hpo.records import TrialRecord
from automl.recipe import budget
from automl.recipe.outcomes import DiagnoseOutputs, FinalOutputs, SearchOutputs, StageResult
from automl.recipe.stage import Stage


@dataclass
class Candidates:
    """One search's trials that kept a model, best first."""

    stage: str
    search: SearchOutputs
    trials: list[optuna.trial.FrozenTrial]


@dataclass
class Choice:
    stage: str
    trial: optuna.trial.FrozenTrial
    why: str
    planned: int  # epochs each member's schedule is planned over: the configuration's, or all that fit
    epoch_seconds: float  # a final epoch, foreseen
    affordable: int  # epochs foreseen to fit in the final's seconds
    members: int = 1  # models trained in turn and averaged
    tracing: float = 0.0  # a member's first epoch's extra seconds, foreseen


def epoch_estimate(trial: optuna.trial.FrozenTrial, search: SearchOutputs, final_images: int) -> tuple[float, float]:
    """A final epoch's seconds (over ``final_images``), from the speed the trial trained at on its
    search's part of the data, and the first epoch's extra (tracing)."""
    record = TrialRecord.of(trial)
    seen = search.train_images + search.val_images
    return record.steady_epoch_seconds * final_images / seen, record.first_epoch_extra


def epoch_steadiness(searches: list[Candidates]) -> float:
    """``budget.steadiness`` of the searches' epochs after each trial's first, each over its
    trial's median: how much longer than foreseen a final epoch may take on this host."""
    ratios = []
    for c in searches:
        for t in c.trials:
            times = TrialRecord.of(t).epoch_seconds[1:]
            if len(times) > 1:
                usual = statistics.median(times)
                ratios += [e / usual for e in times]
    return budget.steadiness(ratios)


def choose_final(searches: list[Candidates], seconds: float, final_images: int, objective: str,
                 min_epochs: int, test_images: int = 0) -> Choice:
    """The trial whose configuration the final stage trains, for how many epochs, and why.

    From the last search with a complete trial (``searches`` latest first): the best, or, by the
    one-standard-error rule, the cheapest per epoch of those whose validation accuracy is within a
    standard error of the best's (more final epochs are worth more than a difference the
    validation set cannot tell). And if the final's ``seconds`` afford that configuration fewer
    than ``budget.MIN_FINAL_EPOCHS`` (a searched winner that is dear on the CPU), the best-ranked
    trial of the latest search whose configuration it does afford that many, provided it makes at
    most ``budget.MORE_ERRORS`` times the errors (or loss) of its search's best: a much worse
    configuration is not rescued by more epochs. ``min_epochs``: the epochs the last diagnosis
    planned (a configuration's own may be more).

    Time, not the configuration's epoch count, bounds the final: where its seconds afford several
    times the configuration's epochs, it trains that many models of them and averages them (time
    past the epochs a configuration is known to need is worth more as another member than as a
    longer schedule); else one model's schedule is planned over all the epochs it affords. Each
    member also pays again what its trial took outside training (building, compiling), its
    tracing, and its scoring on the held-out part and the ``test_images``.
    Epochs are foreseen in the share of the seconds that the searches' epoch times say a slow
    patch of the host leaves (``epoch_steadiness``)."""
    searches = [c for c in searches if c.trials]
    first = searches[0]
    best = pick = first.trials[0]
    why = "the best"
    steady = epoch_steadiness(searches)

    def named(t) -> int:
        return max(TrialRecord.of(t).config["training"]["epochs"], min_epochs)

    def costs(c: Candidates, t) -> tuple[float, float, float]:
        """A final epoch of ``t``'s configuration, its tracing, and all a model pays besides its
        epochs: that tracing, what its trial took outside training (building, compiling), and scoring."""
        from automl.recipe.final import HELD_OUT, scoring_seconds

        epoch, tracing = epoch_estimate(t, c.search, final_images)
        record = TrialRecord.of(t)
        outside = max(0.0, (record.trial_seconds or 0.0) - (record.fit_seconds or 0.0))
        scoring = scoring_seconds(epoch / final_images, 1, round(HELD_OUT * final_images), test_images)
        return epoch, tracing, tracing + outside + scoring

    def affordable(c: Candidates, t) -> int:
        epoch, _, extra = costs(c, t)
        return max(1, int((steady * seconds - extra) / epoch))

    if objective == "val_accuracy":
        error = math.sqrt(best.value * (1 - best.value) / first.search.val_images)
        pick = min((t for t in first.trials if t.value >= best.value - error),
                   key=lambda t: TrialRecord.of(t).steady_epoch_seconds)
        if pick.number != best.number:
            speed = TrialRecord.of(best).steady_epoch_seconds / TrialRecord.of(pick).steady_epoch_seconds
            why = (f"val accuracy {pick.value:.4f}, within one standard error ({error:.4f}) of the best, trial "
                   f"{best.number} ({best.value:.4f}), and {speed:.1f}x as fast per epoch")

    def fits(c: Candidates, t) -> bool:
        return affordable(c, t) >= min(budget.MIN_FINAL_EPOCHS, named(t))

    def close(c: Candidates, t) -> bool:
        top = c.trials[0].value
        if objective == "val_accuracy":
            return 1 - t.value <= budget.MORE_ERRORS * (1 - top)
        return t.value <= budget.MORE_ERRORS * top

    chosen = first
    if not fits(first, pick):
        options = [(c, t) for c in searches for t in c.trials if close(c, t) and fits(c, t)]
        if options:
            dear = f"trial {pick.number} of the {first.stage} search would get {affordable(first, pick)}"
            chosen, pick = options[0]
            why = f"the best whose final training fits {budget.MIN_FINAL_EPOCHS} epochs in {seconds:.0f} s ({dear})"
    epoch, tracing, extra = costs(chosen, pick)
    usable = steady * seconds
    members = max(1, int(usable // (extra + named(pick) * epoch)))
    each = max(named(pick), int((usable / members - extra) / epoch))
    return Choice(chosen.stage, pick, f"trial {pick.number} of the {chosen.stage} search, {why}", each, epoch,
                  affordable(chosen, pick), members, tracing)


def _members(trained, choice: Choice) -> str:
    held = trained.members_held_out
    if choice.members == 1:
        return ""
    if len(held) == 1:
        return f"time for 1 of the {choice.members} models planned; "
    each = ", ".join(f"{v:.4f}" for v in held)
    short = f" (time for {len(held)} of the {choice.members} planned)" if len(held) < choice.members else ""
    return f"{len(held)} models{short} trained in turn score {each} on it, averaged {trained.held_out:.4f}; "


class Final(Stage):
    kind, share = "final", 0.20

    def run(self, ctx, seconds):
        from automl.config import TrialConfig
        from automl.export import export_study
        from automl.hpo.trial import MlflowEpochs, describe
        from automl.hpo.workers import precision
        from automl.recipe.final import train_final
        from automl.training.progress import EpochPrinter

        s = ctx.settings
        final_images = len(ctx.data.x_train) + len(ctx.data.x_val)
        searches = [Candidates(name, out, records.ranking(ctx.load_search(out.study)))
                    for name, out in reversed(ctx.outcomes.searches())]
        diagnoses = [r.outputs for r in ctx.outcomes.values() if isinstance(r.outputs, DiagnoseOutputs)]
        choice = choose_final(searches, seconds, final_images, s.objective, diagnoses[-1].epochs if diagnoses else 1,
                              0 if ctx.data.x_test is None else len(ctx.data.x_test))
        best = choice.trial
        source = TrialRecord.of(best)
        config = TrialConfig.model_validate(source.config)
        members = f"{choice.members} models of " if choice.members > 1 else ""
        fitted = (f"; about {choice.affordable} fit in {seconds:.0f} s, and the LR schedule is fitted into them"
                  if choice.affordable < choice.planned else "")
        ctx.say(f"final: {choice.why}; {describe(config)}, {members}up to {choice.planned} epochs on train + "
                f"validation (about {choice.epoch_seconds:.1f} s each{fitted})")
        epochs = MlflowEpochs(ctx.epoch_log())

        def callbacks(member: int) -> list:
            shown = [EpochPrinter(choice.planned, f"  model {member + 1}: " if choice.members > 1 else "  ")]
            return ([epochs] if member == 0 else []) + (shown if s.verbose else [])

        with precision(s):
            trained = train_final(config, ctx.data, epochs=choice.planned, seconds=seconds, seed=s.seed,
                                  objective=s.objective, callbacks=callbacks, members=choice.members,
                                  epoch_estimate=choice.epoch_seconds, tracing=choice.tracing,
                                  jit_compile=s.jit_compile or "auto")
        result, views = trained.result, trained.views
        model_path = s.folder / "final" / "model.keras"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        result.model.save(model_path)
        from automl import plots

        ctx.log_figure(plots.learning_curves(result.history, "final"), "learning_curves.png")
        epochs_run = len(result.history["loss"])
        record = TrialRecord(config=source.config, model_path=str(model_path), metrics=result.metrics,
                             best_epoch=result.best_epoch, params=result.params, epochs_run=epochs_run,
                             history=result.history, source_trial=best.number, mlflow_run_id=ctx.run_id,
                             fit_seconds=result.fit_seconds, epoch_seconds=list(result.epoch_seconds))
        ctx.study.add_trial(record.frozen(state=optuna.trial.TrialState.COMPLETE, value=result.metrics[s.objective]))
        exported = export_study(s.study, s.storage, s.folder / "model")
        ctx.log_model(model_path, best.number)
        tests = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
        test = f"test accuracy {tests['test_accuracy']:.4f}" if "test_accuracy" in tests else "no test split"
        if "single_test_accuracy" in result.metrics:
            test += f" (one model on the image as it is: {result.metrics['single_test_accuracy']:.4f})"
        summary = (f"Trained trial {best.number}'s configuration ({result.params:,} params) for {epochs_run} of "
                   f"{choice.planned} epochs, best at epoch {result.best_epoch} on the held-out part "
                   f"({s.objective} {result.metrics[s.objective]:.4f}); {_members(trained, choice)}"
                   f"{views.why}; {test}.")
        return StageResult(True, "healthy", f"{summary} Chosen: {choice.why}.", changes=[f"exported to {exported}/"],
                           measured={**result.metrics, "epochs_run": epochs_run, "best_epoch": result.best_epoch,
                                     "planned_epochs": choice.planned, "test_time_views": len(views.views),
                                     "members": len(trained.members_held_out), "tune_budget": ctx.budget.total},
                           outputs=FinalOutputs(export=str(exported), model_path=str(model_path),
                                                source_stage=choice.stage, source_trial=best.number))

    def report(self, record, view):
        from automl import plots

        final = records.best_trial(view.tune)
        if final is None:
            return
        kept = TrialRecord.of(final)
        yield pd.DataFrame([kept.metrics]).T.rename(columns={0: "value"}).to_markdown(floatfmt=".4f") + "\n"
        if kept.history:
            yield view.figure(plots.learning_curves(kept.history, "final"), "curves_final.png",
                              "learning curves of the final model (validation: the held-out part)")
