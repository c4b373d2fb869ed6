"""The recipe's searches: coarse (step 4), then rounds of diagnose (step 5) and refine (step 6)
while they pay (step 7, ``automl.recipe.loop``). Each search goes through ``run_search`` like
``automl search``, on the tune's workers and devices, with the recipe's needs passed as hooks:
its MLflow run nested under the tune's, its first trials, and a speed floor."""

from __future__ import annotations

import math
import time
import warnings

import optuna

from automl.data import Dataset, subsample
from automl.errors import SpaceError
from automl.hpo import records
from automl.hpo.hooks import SearchHooks, SpeedFloor
from automl.hpo.records import TrialRecord
from automl.recipe import adjust, budget, loop
from automl.recipe.outcomes import DiagnoseOutputs, SearchOutputs, StageResult
from automl.recipe.stage import Stage
from automl.space import SearchSpace
from automl.space.params import label

TOP = 3  # trials whose curves are read and around which the next round's space is narrowed


class Coarse(Stage):
    """Many short trials over the whole space, the LR narrowed to the sweeps' band, pruning on."""

    kind, share, search = "coarse", 0.36, True

    def run(self, ctx, seconds):
        epochs = min(ctx.settings.coarse_epochs, ctx.default_config().training.epochs)
        data, subset = search_data(ctx, self.name, seconds, epochs, budget.TRIALS["coarse"])
        return run(ctx, self, ctx.outcomes.lr_range.space, epochs, seconds, data, subset, first_trials=None, round=0)

    def report(self, record, view):
        yield from search_report(record, view, importances=True)


class Diagnose(Stage):
    """Read the curves of the last search's best trials; narrow the space around them and widen
    what they lack, for the next refine round."""

    kind, share = "diagnose", 0.01

    def run(self, ctx, seconds):
        source_name, source = ctx.outcomes.searches()[-1]
        study = ctx.load_search(source.study)
        top = records.ranking(study)[:TOP]
        readings = {}
        for trial in top:
            record = TrialRecord.of(trial)
            planned = record.config["training"]["epochs"]  # when the search ran fewer, it cut the trial short
            verdict, why = adjust.diagnose_curves(record.history, planned if source.epochs < planned else None)
            readings[str(trial.number)] = {"verdict": verdict, "why": why, "value": trial.value}
            if record.mlflow_run_id:
                ctx.tag_run(record.mlflow_run_id, {"automl.diagnosis": verdict, "automl.diagnosis_why": why})
        verdict = adjust.overall_verdict([r["verdict"] for r in readings.values()])
        space = SearchSpace.load(source.space)
        values = [trial_values(space, t.params) for t in top]
        narrowed, widened, notes = adjust.refine_changes(space, values, verdict)
        name = "refine" if self.round == 1 else f"refine-{self.round}"
        path = ctx.settings.folder / "spaces" / f"{name}.yaml"
        try:
            rewritten = space.rewritten({**narrowed, **widened}, str(path))
        except SpaceError as exc:  # a widening the blocks cannot build: refine the narrowed space alone
            rewritten = space.rewritten(narrowed, str(path))
            notes = [n for n in notes if n.split(":")[0] not in widened] + [f"no widening: {exc.message}"]
        written = ctx.write_space(rewritten, name, self.name)
        epochs = (min(3 * source.epochs, ctx.default_config().training.epochs) if source.round == 0
                  else source.epochs)
        if verdict in ("underfit", "undertrained"):
            epochs *= 2
            why = "against underfitting" if verdict == "underfit" else "as the top trials were still learning"
            notes.append(f"epochs: the next round trains up to {epochs} epochs per trial, twice the plan, {why}")
        else:
            notes.append(f"epochs: the next round trains {epochs} epochs per trial")
        said = "; ".join(f"trial {n} {r['verdict']} ({r['why']})" for n, r in readings.items())
        summary = (f"The {len(top)} best {source_name} trials read {said}. Verdict: {verdict}. The next round is "
                   f"seeded with them and narrowed around them.")
        shares = self._replan(ctx, source, top[0], notes) if self.round == 1 and top else None
        return StageResult(True, verdict, summary, changes=notes, outputs=DiagnoseOutputs(
            source=source_name, space=written, epochs=epochs, verdicts=readings, first_trials=values, shares=shares))

    def _replan(self, ctx, source: SearchOutputs, best, notes: list[str]) -> dict[str, float] | None:
        """The budget planned again from the speed the best coarse trial trained at: a trial's
        epochs, with their validation and callbacks, are what the final's will be like, where the
        sweep measured a bare training step."""
        seconds = TrialRecord.of(best).steady_epoch_seconds
        s = ctx.settings
        if not seconds > 0 or (s.workers > 1 and not s.gpus):  # trials that shared the CPUs read slow
            return None
        d = ctx.data
        speed = (source.train_images + source.val_images) / seconds
        final_images = len(d.x_train) + len(d.x_val)
        remaining = ctx.budget.remaining()
        least = budget.least_search_seconds(speed, source.epochs, len(d.x_train), len(d.x_val), ("refine",))
        left = ("refine", "final")
        shares = budget.planned_shares(ctx.budget.usual, speed, final_images, remaining,
                                       ctx.default_config().training.epochs, least, left)
        final = remaining * shares["final"] / sum(shares[k] for k in left)
        notes.append(f"budget: trial {best.number} trained {speed:.0f} images/s, so a final epoch takes about "
                     f"{final_images / speed:.1f} s; of the {remaining:.0f} s left, refine gets "
                     f"{remaining - final:.0f} and final {final:.0f}")
        return shares

    def report(self, record, view):
        from automl import plots

        study = view.searches.get(record.outputs.source)
        if study is None:
            return
        for number, reading in record.outputs.verdicts.items():
            history = TrialRecord.of(study.trials[int(number)]).history
            yield f"- trial {number} ({reading['value']:.4f}): **{reading['verdict']}**, {reading['why']}\n"
            if history:
                yield view.figure(plots.learning_curves(history, f"trial {number}"),
                                  f"curves_{record.outputs.source}_trial_{number}.png",
                                  f"learning curves of {record.outputs.source} trial {number}")


class Refine(Stage):
    """A round of longer trials in the space its diagnosis rewrote, seeded with the best trials
    before it; at its end, whether the loop runs another round (``automl.recipe.loop``)."""

    kind, share, search = "refine", 0.30, True
    pot: float = 0.0  # the loop's seconds, all rounds together (see allot)

    def allot(self, ctx, later):
        rounds = ctx.outcomes.rounds()  # the loop's time is fixed as its first round starts
        self.pot = rounds[0][1].loop_seconds if rounds else super().allot(ctx, later)
        left = max(0.0, self.pot - self._loop_spent(ctx))
        return loop.round_seconds(left, self._smallest_round(ctx))

    def run(self, ctx, seconds):
        start = time.perf_counter()
        diagnosed = ctx.outcomes.outputs(self._diagnose_name(), DiagnoseOutputs)
        before = ctx.outcomes.searches()[-1][1]
        planned = diagnosed.epochs
        sizes = (before.train_images, before.val_images)
        epochs = max(ctx.outcomes.outputs("coarse", SearchOutputs).epochs,
                     min(planned, budget.affordable_epochs(_speed(ctx), seconds, budget.TRIALS["refine"], *sizes)))
        if epochs < planned:
            ctx.say(f"{self.name}: {epochs} epochs per trial, not {planned}, so that the budget affords "
                    f"{budget.TRIALS['refine']} trials")
        data, subset = search_data(ctx, self.name, seconds, epochs, budget.TRIALS["refine"], at_least=sizes)
        result = run(ctx, self, diagnosed.space, epochs, seconds, data, subset, first_trials=diagnosed.first_trials,
                     round=self.round)
        if result.ok:
            out = result.outputs
            out.loop_seconds = self.pot
            gain = loop.improvement(before.best_value, out.best_value, ctx.settings.direction == "maximize")
            best = records.best_trial(ctx.load_search(out.study))
            error = loop.noise(ctx.settings.objective, out.best_value, out.val_images, TrialRecord.of(best).history)
            left = self.pot - self._loop_spent(ctx) - (time.perf_counter() - start)
            out.again, out.loop_why = loop.another_round(gain, error, left, self._smallest_round(ctx), self.round)
            result.changes.append(("loop: another round, as " if out.again else "loop: stops, as ") + out.loop_why)
        return result

    def report(self, record, view):
        yield from search_report(record, view, importances=False)
        if record.outputs.loop_why:
            yield f"Loop: {'another round' if record.outputs.again else 'stopped'}: {record.outputs.loop_why}.\n"

    def _diagnose_name(self) -> str:
        return "diagnose" if self.round == 1 else f"diagnose-{self.round}"

    def _loop_spent(self, ctx) -> float:
        """Seconds the loop's finished rounds (and their diagnoses after the first) took."""
        return sum(r.seconds for r in ctx.outcomes.values()
                   if (r.kind == "refine") or (r.kind == "diagnose" and r.stage != "diagnose"))

    def _smallest_round(self, ctx) -> float:
        """The seconds of a round of ``budget.TRIALS['refine']`` trials at the coarse search's
        epochs on the last search's images, at the measured speed."""
        last = ctx.outcomes.searches()[-1][1]
        coarse = ctx.outcomes.outputs("coarse", SearchOutputs)
        per_epoch = (last.train_images + budget.EVAL_COST * last.val_images) / _speed(ctx)
        return budget.TRIALS["refine"] * coarse.epochs * per_epoch


def run(ctx, stage: Stage, space: str, epochs: int, seconds: float, data: Dataset, subset: tuple[int, int],
        first_trials: list[dict] | None, round: int) -> StageResult:
    """Run the search of ``stage`` on ``data`` (``subset``: the sizes it was drawn with) and
    summarize it."""
    speed = _speed(ctx)
    final_images = len(ctx.data.x_train) + len(ctx.data.x_val)
    between = [k for k in ctx.later if k != "final"]
    steady = ctx.outcomes.lr_range.steadiness
    floor = budget.speed_floor(speed, ctx.budget.final_after(seconds, between), final_images, steady)
    ctx.say(f"{stage.name}: trials slower than {floor:.0f} images/s are pruned (the final training could not "
            f"afford {budget.MIN_FINAL_EPOCHS} epochs of them; the host ran its sweep at {steady:.0%} steadiness)")
    hooks = SearchHooks(run_name=stage.name, nest_under=ctx.tune_run, tags={"automl.stage": stage.name},
                        log_model=False, first_trials=first_trials, trial_callbacks=[SpeedFloor(floor)])
    # the subset even where it is all the data: subsample leaves the test split out in every process
    study = ctx.run_search(ctx.search_settings(stage.name, space, epochs, seconds, subset), data, hooks)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = {state.lower(): states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")}
    outputs = SearchOutputs(study=study.study_name, space=space, epochs=epochs, train_images=len(data.x_train),
                            val_images=len(data.x_val), round=round)
    run_id = records.parent_run(study)
    tally = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    best = records.best_trial(study)
    if best is None:
        return StageResult(False, "no_complete_trial", f"{len(states)} trials ({tally}) and none completed: see the "
                           f"failure reasons with automl trials --study {study.study_name}.", measured=counts,
                           outputs=outputs, run_id=run_id)
    from automl.config import TrialConfig
    from automl.hpo.trial import describe

    record = TrialRecord.of(best)
    outputs.best_trial, outputs.best_value = best.number, best.value
    part = f" on {len(data.x_train)} training images" if len(data.x_train) < len(ctx.data.x_train) else ""
    summary = (f"{len(states)} trials of {epochs} epochs{part} ({tally}); best {ctx.settings.objective} "
               f"{best.value:.4f} by trial {best.number}: {describe(TrialConfig.model_validate(record.config))}.")
    measured = {**counts, f"best_{ctx.settings.objective}": best.value, **record.metrics}
    return StageResult(True, "healthy", summary, measured=measured, outputs=outputs, run_id=run_id)


def search_data(ctx, stage: str, seconds: float, epochs: int, trials: int,
                at_least: tuple[int, int] | None = None) -> tuple[Dataset, tuple[int, int]]:
    """The part of the data a search stage ranks its trials on, and the sizes asked of
    ``subsample`` for it (which its workers ask again): as much as its budget affords for
    ``trials`` trials at the measured speed (and ``at_least`` what the search before it had).
    Sized once: a resumed stage keeps its first size, so its trials stay comparable."""
    d = ctx.data
    sizes = records.subset_sizes(ctx.study, stage)
    if sizes is None:
        sizes = budget.subset_sizes(_speed(ctx), seconds, epochs, trials, len(d.x_train), len(d.x_val))
        if at_least:
            sizes = (max(sizes[0], at_least[0]), max(sizes[1], at_least[1]))
        records.set_subset_sizes(ctx.study, stage, list(sizes))
    if sizes[0] < len(d.x_train):
        ctx.say(f"{stage}: trials rank on a stratified {sizes[0]} of the {len(d.x_train)} training and "
                f"{sizes[1]} of the {len(d.x_val)} validation images, so that the budget affords {trials} of them")
    return subsample(d, *sizes, seed=ctx.settings.seed), (int(sizes[0]), int(sizes[1]))


def search_report(record, view, importances: bool):
    """The search's top trials, its parameter importances (coarse), and the history of all the
    tune's searches (after the last one)."""
    study = view.searches.get(record.stage)
    if study is None:
        return
    from automl.hpo.results import top_trials

    parts = []  # made before yielding: a suspended generator must not hold the warnings filter
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("always", UserWarning)
        # Optuna's plots only warn on the terminal where no trial completed: say it here instead
        done = [s for s in view.searches.values() if _completed(s)]
        if record.stage == list(view.searches)[-1] and done:  # one history for all, after the last
            ax = optuna.visualization.matplotlib.plot_optimization_history(
                done, target_name=records.StudyInfo.of(view.tune).objective or "objective")
            parts.append(view.figure(ax.figure, "optimization_history.png", "optimization history"))
        if importances and not _completed(study):
            parts.append("(no parameter importances: no trial completed)\n")
        elif importances:
            try:
                ax = optuna.visualization.matplotlib.plot_param_importances(study)
                parts.append(view.figure(ax.figure, f"param_importances_{record.stage}.png",
                                         f"parameter importances ({record.stage})"))
            except (RuntimeError, ValueError) as exc:  # e.g. fewer than two complete trials
                parts.append(f"(no parameter importances: {exc})\n")
    if any("less than 2 trials" in str(w.message) for w in caught):
        parts.append("Some parameter values were tried fewer than twice: read the importances as rough.\n")
    yield from parts
    table = top_trials(study)
    if not table.empty:
        yield f"Top trials of `{study.study_name}`:\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n"


def _completed(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def trial_values(space: SearchSpace, stored: dict) -> dict:
    """A trial's parameter values as the space writes them (Optuna stores mapping choices as labels)."""
    values = {}
    for param in space.params:
        if param.name in stored:
            value = stored[param.name]
            if param.kind == "choice":
                value = next((c for c in param.spec.choices if label(c) == label(value) or label(c) == value), value)
            values[param.name] = value
    return values


def _speed(ctx) -> float:
    return ctx.outcomes.lr_range.images_per_second or math.inf
