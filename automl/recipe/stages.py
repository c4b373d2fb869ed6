"""The stages of the recipe, each ``(tune, seconds) -> StageResult``, in the order they run.

The checks train the space's default configuration; the searches go through ``run_search``
like ``automl search``, on spaces the earlier stages rewrote (written under the tune's folder
and logged to the stage's run, so every change can be read and rerun).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from mlflow.entities import Metric

from automl import plots
from automl.config import TrialConfig
from automl.data import Dataset, subsample
from automl.errors import SpaceError
from automl.export import export_study
from automl.hpo.driver import PARENT_ATTR, run_search
from automl.hpo.results import best_trial
from automl.hpo.settings import SearchSettings
from automl.hpo.storage import load_study
from automl.hpo.trial import MlflowEpochs, describe
from automl.recipe import adjust, budget
from automl.recipe import transfer as transfer_policy
from automl.recipe.checks import Finding, check_initial_loss, check_overfit, lr_range_test
from automl.recipe.final import train_final
from automl.recipe.tune import StageResult, Tune
from automl.space import FixedSuggester, SearchSpace
from automl.space.params import label
from automl.training.progress import EpochPrinter

OPTIMIZER = "training.optimizer.name"
MAX_SWEEPS = 4  # LR range tests per tune: one per kind of optimizer the space offers, the default first
# Adam's variants move the weights by about the learning rate whatever the gradient's scale, so
# they share one good range (AdamW's decoupled decay and Nadam's look-ahead do not shift it).
ADAPTIVE = ("adam", "adamw", "nadam", "adamax")
TOP = 3  # coarse trials whose curves are read and around which the refine space is narrowed


def _result(finding: Finding, **extra) -> StageResult:
    return StageResult(finding.ok, finding.verdict, finding.summary, measured=finding.measured, **extra)


def _default_config(tune: Tune, **values) -> TrialConfig:
    return TrialConfig.model_validate(tune.space.sample(FixedSuggester(values)))


def transfer(tune: Tune, seconds: float) -> StageResult:
    """With a backbone: measure the data's size and likeness to the backbone's data, and start
    the later stages from the table's policy for that cell (they search around it)."""
    spec = _default_config(tune).model.backbone
    reading = transfer_policy.read(spec, tune.data, tune.settings.seed)
    changes, notes = adjust.start_from(tune.space, "model.backbone", reading.policy)
    path = tune.settings.folder / "spaces" / "transfer.yaml"
    _write_space(tune, tune.space.rewritten(changes, str(path)), path, "transfer")
    measured = {"images_per_class": reading.per_class, **{f"probe_cut{p['cut']}_{kind}": p[kind]
                                                          for p in reading.probes for kind in ("pretrained", "random")}}
    return StageResult(True, reading.cell.replace(" and ", "_"), reading.why, changes=notes, measured=measured,
                       outputs={"space": str(path), "policy": reading.policy, "probes": reading.probes})


def sanity(tune: Tune, seconds: float) -> StageResult:
    return _result(check_initial_loss(_default_config(tune), tune.data, seed=tune.settings.seed))


def overfit(tune: Tune, seconds: float) -> StageResult:
    """Memorize a few batches at the default LR; when that diverges (or crawls), try the end of
    the space's LR range in the helpful direction before calling the setup broken."""
    config = _default_config(tune)
    finding = check_overfit(config, tune.data, seed=tune.settings.seed)
    lr_param = next((p for p in tune.space.params if p.name == adjust.LR and p.kind == "float"), None)
    if finding.ok or finding.verdict not in ("diverged", "lr_too_low") or lr_param is None:
        return _result(finding)
    lr = config.training.optimizer.learning_rate
    end = lr_param.spec.range[0 if finding.verdict == "diverged" else 1]
    if math.isclose(end, lr):
        retry = finding
    else:
        retry = check_overfit(_default_config(tune, **{adjust.LR: end}), tune.data, seed=tune.settings.seed)
    if retry.ok:
        return StageResult(True, "healthy", f"At the default LR {lr:g}: {finding.summary} At {end:g}: {retry.summary}",
                           changes=["the LR range test picks the learning rate"], measured=retry.measured)
    direction = "lowest" if finding.verdict == "diverged" else "highest"
    fix = "lower" if finding.verdict == "diverged" else "raise"
    return StageResult(False, finding.verdict, f"{finding.summary} The {direction} learning rate the space allows, "
                       f"{end:g}, fails too ({retry.verdict}): {fix} the learning-rate range of {tune.settings.space}.",
                       measured=finding.measured)


def lr_range(tune: Tune, seconds: float) -> StageResult:
    """Sweep the LR for each optimizer the space offers; later stages search the union of the bands."""
    param = next((p for p in tune.space.params if p.name == OPTIMIZER), None)
    default = _default_config(tune).training.optimizer.name
    names, kinds = [], set()
    for name in [default] + [c for c in (param.spec.choices if param else []) if c != default]:
        kind = "adam" if name in ADAPTIVE else name
        if kind not in kinds:  # the first of each kind stands for the others
            names.append(name)
            kinds.add(kind)
    sweeps, curves = {}, {}
    for name in names[:MAX_SWEEPS]:
        config = _default_config(tune, **({OPTIMIZER: name} if param else {}))
        sweeps[name] = sweep = lr_range_test(config, tune.data, seed=tune.settings.seed)
        curves[name] = {"lr": _rounded(sweep.learning_rates), "loss": _rounded(sweep.losses),
                        "suggested": sweep.suggested, "band": list(sweep.band), "ok": sweep.finding.ok}
    found = [s for s in sweeps.values() if s.finding.ok]
    path = tune.settings.folder / "spaces" / "coarse.yaml"
    if found:
        band = (min(s.band[0] for s in found), max(s.band[1] for s in found))
        changes, notes = adjust.narrow_lr(tune.space, band, sweeps[default].suggested if sweeps[default].finding.ok
                                          else found[0].suggested)
        coarse = tune.space.rewritten(changes, str(path))
        summary = " ".join(f"{name}: {s.finding.summary}" for name, s in sweeps.items())
        verdict = "healthy"
    else:
        coarse, notes, verdict = tune.space, ["learning rate: the space's own range (no band found)"], "no_decrease"
        summary = "No sweep found a rate where the loss falls; the coarse search keeps the space's LR range."
    _write_space(tune, coarse, path, "lr_range")
    with tempfile.TemporaryDirectory() as tmp:
        plot = plots.save(plots.lr_range(curves), Path(tmp) / "lr_range.png")
        tune.tracker.client.log_artifact(tune.stage_run, str(plot))
    first = sweeps[default].finding.measured
    shares, plan = _plan(tune, first["images_per_second"])
    return StageResult(True, verdict, summary, changes=[*notes, plan], measured=first,
                       outputs={"space": str(path), "curves": curves, "shares": shares})


def _plan(tune: Tune, images_per_second: float) -> tuple[dict[str, float], str]:
    """The budget's shares from the measured speed: time for the final training first."""
    final_images = len(tune.data.x_train) + len(tune.data.x_val)
    remaining = tune.budget.remaining()
    shares = budget.planned_shares(images_per_second, final_images, remaining)
    later = {s: remaining * shares[s] / sum(shares[t] for t in budget.PLANNED) for s in budget.PLANNED}
    epoch = final_images / images_per_second
    return shares, (f"budget: the default model trains {images_per_second:.0f} images/s, so an epoch over the "
                    f"{final_images} images of the final training takes about {epoch:.1f} s; of the {remaining:.0f} "
                    f"s left, coarse gets {later['coarse']:.0f}, refine {later['refine']:.0f} and final "
                    f"{later['final']:.0f}")


def coarse(tune: Tune, seconds: float) -> StageResult:
    """Many short trials over the whole space, LR narrowed, pruning on."""
    epochs = min(tune.settings.coarse_epochs, _default_config(tune).training.epochs)
    data = _search_data(tune, "coarse", seconds, epochs)
    study = run_search(_search_settings(tune, "coarse", tune.output("lr_range", "space"), epochs, seconds), data)
    return _search_result(tune, study, epochs, data)


def diagnose(tune: Tune, seconds: float) -> StageResult:
    """Read the curves of the best coarse trials; narrow the space around them, widen what they lack."""
    coarse_study = load_study(tune.output("coarse", "study"), tune.settings.storage)
    top = _top_trials(coarse_study)
    verdicts = {}
    for trial in top:
        planned = trial.user_attrs["config"]["training"]["epochs"]  # when coarse ran fewer, it cut the trial short
        verdict, why = adjust.diagnose_curves(trial.user_attrs.get("history", {}),
                                              planned if tune.output("coarse", "epochs") < planned else None)
        verdicts[trial.number] = {"verdict": verdict, "why": why, "value": trial.value}
        if trial.user_attrs.get("mlflow_run_id"):
            tune.tracker.client.set_tag(trial.user_attrs["mlflow_run_id"], "automl.diagnosis", verdict)
            tune.tracker.client.set_tag(trial.user_attrs["mlflow_run_id"], "automl.diagnosis_why", why)
    verdict = adjust.overall_verdict([v["verdict"] for v in verdicts.values()])
    space = SearchSpace.load(tune.output("lr_range", "space"))
    values = [_values(space, t.params) for t in top]
    narrowed, widened, notes = adjust.refine_changes(space, values, verdict)
    path = tune.settings.folder / "spaces" / "refine.yaml"
    try:
        refine = space.rewritten({**narrowed, **widened}, str(path))
    except SpaceError as exc:  # a widening the blocks cannot build: refine the narrowed space alone
        refine = space.rewritten(narrowed, str(path))
        notes = [n for n in notes if n.split(":")[0] not in widened] + [f"no widening: {exc.message}"]
    _write_space(tune, refine, path, "diagnose")
    coarse_epochs = tune.output("coarse", "epochs")
    epochs = min(3 * coarse_epochs, _default_config(tune).training.epochs)
    if verdict in ("underfit", "undertrained"):
        epochs *= 2
        why = "against underfitting" if verdict == "underfit" else "as the top trials were still learning"
        notes.append(f"epochs: refine trains up to {epochs} epochs per trial, twice the plan, {why}")
    else:
        notes.append(f"epochs: refine trains {epochs} epochs per trial")
    readings = "; ".join(f"trial {n} {v['verdict']} ({v['why']})" for n, v in verdicts.items())
    summary = (f"The {len(top)} best coarse trials read {readings}. Verdict: {verdict}. The refine search is seeded "
               f"with them and narrowed around them.")
    return StageResult(True, verdict, summary, changes=notes, outputs={
        "space": str(path), "epochs": epochs, "verdicts": {str(k): v for k, v in verdicts.items()},
        "first_trials": values})


def refine(tune: Tune, seconds: float) -> StageResult:
    """Longer trials in the narrowed space, seeded with the best coarse configurations."""
    planned = tune.output("diagnose", "epochs")
    speed = tune.records["lr_range"]["measured"].get("images_per_second") or math.inf
    smallest = (tune.output("coarse", "train_images"), tune.output("coarse", "val_images"))
    epochs = max(tune.output("coarse", "epochs"),
                 min(planned, budget.affordable_epochs(speed, seconds, budget.TRIALS["refine"], *smallest)))
    if epochs < planned:
        tune.say(f"refine: {epochs} epochs per trial, not {planned}, so that the budget affords "
                 f"{budget.TRIALS['refine']} trials")
    data = _search_data(tune, "refine", seconds, epochs)
    settings = _search_settings(tune, "refine", tune.output("diagnose", "space"), epochs, seconds)
    settings.first_trials = tune.output("diagnose", "first_trials")
    return _search_result(tune, run_search(settings, data), epochs, data)


def final(tune: Tune, seconds: float) -> StageResult:
    """Retrain the best configuration on train + validation, early-stopped on a held-out part;
    evaluate once on the test split; export it as ``automl export`` does."""
    s = tune.settings
    stage, best, choice = _final_choice(tune, seconds)
    config = TrialConfig.model_validate(best.user_attrs["config"])
    planned = _planned_epochs(tune, best)
    epoch, _ = _final_epoch_seconds(tune, stage, best)
    epochs = _final_epochs(tune, stage, best, seconds)
    tune.say(f"final: {choice}; {describe(config)}, up to {planned} epochs on train + validation (about {epoch:.1f} s "
             f"each" + (f"; about {epochs} fit in {seconds:.0f} s, and the LR schedule is fitted into them"
                        if epochs < planned else "") + ")")
    run = _StageEpochs(tune)
    result = train_final(config, tune.data, epochs=planned, seconds=seconds, seed=s.seed, objective=s.objective,
                         callbacks=[MlflowEpochs(run), *([EpochPrinter(planned, "  ")] if s.verbose else [])],
                         epoch_estimate=epoch)
    model_path = s.folder / "final" / "model.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        curves = plots.save(plots.learning_curves(result.history, "final"), Path(tmp) / "learning_curves.png")
        tune.tracker.client.log_artifact(tune.stage_run, str(curves))
    epochs_run = len(result.history["loss"])
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=result.metrics[s.objective],
                                      user_attrs={"config": best.user_attrs["config"], "model_path": str(model_path),
                                                  "metrics": result.metrics, "best_epoch": result.best_epoch,
                                                  "params": result.params, "epochs_run": epochs_run,
                                                  "history": result.history, "source_trial": best.number,
                                                  "mlflow_run_id": tune.stage_run})
    tune.study.add_trial(trial)
    exported = export_study(s.study, s.storage, s.folder / "model")
    tune.tracker.log_best_model(tune.stage_run, str(model_path), best.number)
    tests = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
    test = f"test accuracy {tests['test_accuracy']:.4f}" if "test_accuracy" in tests else "no test split"
    summary = (f"Trained trial {best.number}'s configuration ({result.params:,} params) for {epochs_run} of "
               f"{planned} epochs, best at epoch {result.best_epoch} on the held-out part "
               f"({s.objective} {result.metrics[s.objective]:.4f}); {test}.")
    return StageResult(True, "healthy", f"{summary} Chosen: {choice}.", changes=[f"exported to {exported}/"],
                       measured={**result.metrics, "epochs_run": epochs_run, "best_epoch": result.best_epoch},
                       outputs={"export": str(exported), "model_path": str(model_path), "source_trial": best.number})


# --- helpers ------------------------------------------------------------------------------


class _StageEpochs:
    """The final stage's run as MlflowEpochs expects a trial's: per-epoch metrics."""

    def __init__(self, tune: Tune):
        self.client, self.run_id = tune.tracker.client, tune.stage_run

    def log_epoch(self, epoch: int, logs: dict) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in logs.items()
                                                    if isinstance(v, (int, float))])


def _search_data(tune: Tune, stage: str, seconds: float, epochs: int) -> Dataset:
    """The part of the data a search stage ranks its trials on: as much as its budget affords
    for ``budget.TRIALS[stage]`` trials at the measured speed (refine: at least what coarse had).
    Sized once: a resumed stage keeps its first size, so its trials stay comparable."""
    d, key = tune.data, f"subset:{stage}"
    sizes = tune.study.user_attrs.get(key)
    if sizes is None:
        speed = tune.records["lr_range"]["measured"].get("images_per_second") or math.inf
        sizes = budget.subset_sizes(speed, seconds, epochs, budget.TRIALS[stage], len(d.x_train), len(d.x_val))
        if stage == "refine":
            sizes = (max(sizes[0], tune.output("coarse", "train_images")),
                     max(sizes[1], tune.output("coarse", "val_images")))
        tune.study.set_user_attr(key, list(sizes))
    if sizes[0] < len(d.x_train):
        tune.say(f"{stage}: trials rank on a stratified {sizes[0]} of the {len(d.x_train)} training and "
                 f"{sizes[1]} of the {len(d.x_val)} validation images, so that the budget affords "
                 f"{budget.TRIALS[stage]} of them")
    return subsample(d, *sizes, seed=tune.settings.seed)


def _final_choice(tune: Tune, seconds: float) -> tuple[str, optuna.trial.FrozenTrial, str]:
    """The trial whose configuration the final stage trains, and why.

    From the last search with a complete trial: the best, or, by the one-standard-error rule,
    the cheapest per epoch of those whose validation accuracy is within a standard error of the
    best's (more final epochs are worth more than a difference the validation set cannot tell).
    And if the final's share affords that configuration fewer than ``budget.MIN_FINAL_EPOCHS``
    (a searched winner that is dear on the CPU), the best-ranked trial, refine's first, then
    coarse's, whose configuration it does afford that many epochs, provided the trial makes at
    most ``budget.MORE_ERRORS`` times the errors (or loss) of its search's best: a much worse
    configuration is not rescued by more epochs."""
    ranked = {stage: [t for t in _top_trials(load_study(tune.output(stage, "study"), tune.settings.storage), None)
                      if "model_path" in t.user_attrs] for stage in ("refine", "coarse")}
    stage = next(st for st in ranked if ranked[st])
    best = pick = ranked[stage][0]
    why = "the best"
    if tune.settings.objective == "val_accuracy":
        error = math.sqrt(best.value * (1 - best.value) / tune.output(stage, "val_images"))
        pick = min((t for t in ranked[stage] if t.value >= best.value - error), key=_steady_epoch_seconds)
        if pick.number != best.number:
            speed = _steady_epoch_seconds(best) / _steady_epoch_seconds(pick)
            why = (f"val accuracy {pick.value:.4f}, within one standard error ({error:.4f}) of the best, trial "
                   f"{best.number} ({best.value:.4f}), and {speed:.1f}x as fast per epoch")

    def fits(st: str, t: optuna.trial.FrozenTrial) -> bool:
        return _final_epochs(tune, st, t, seconds) >= min(budget.MIN_FINAL_EPOCHS, _planned_epochs(tune, t))

    def close(st: str, t: optuna.trial.FrozenTrial) -> bool:
        top = ranked[st][0].value
        if tune.settings.objective == "val_accuracy":
            return 1 - t.value <= budget.MORE_ERRORS * (1 - top)
        return t.value <= budget.MORE_ERRORS * top

    if not fits(stage, pick):
        affordable = [(st, t) for st in ranked for t in ranked[st] if close(st, t) and fits(st, t)]
        if affordable:
            dear = f"trial {pick.number} of the {stage} search would get {_final_epochs(tune, stage, pick, seconds)}"
            stage, pick = affordable[0]
            why = f"the best whose final training fits {budget.MIN_FINAL_EPOCHS} epochs in {seconds:.0f} s ({dear})"
    return stage, pick, f"trial {pick.number} of the {stage} search, {why}"


def _planned_epochs(tune: Tune, trial: optuna.trial.FrozenTrial) -> int:
    return max(trial.user_attrs["config"]["training"]["epochs"], tune.output("diagnose", "epochs"))


def _final_epochs(tune: Tune, stage: str, trial: optuna.trial.FrozenTrial, seconds: float) -> int:
    """The epochs foreseen to fit in ``seconds`` (up to the planned ones)."""
    epoch, tracing = _final_epoch_seconds(tune, stage, trial)
    return max(1, min(_planned_epochs(tune, trial), int((budget.FINAL_USE * seconds - tracing) / epoch)))


def _steady_epoch_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's epoch after the first (which includes tracing)."""
    times = trial.user_attrs.get("epoch_seconds") or [trial.user_attrs["fit_seconds"] / trial.user_attrs["epochs_run"]]
    return float(np.median(times[1:])) if len(times) > 1 else times[0]


def _final_epoch_seconds(tune: Tune, stage: str, best: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """A final epoch's seconds (over train + validation), from the speed the best trial of
    ``stage`` trained at on its part of the data, and the first epoch's extra (tracing)."""
    steady = _steady_epoch_seconds(best)
    seen = tune.output(stage, "train_images") + tune.output(stage, "val_images")
    first = (best.user_attrs.get("epoch_seconds") or [steady])[0]
    return steady * (len(tune.data.x_train) + len(tune.data.x_val)) / seen, first - steady


def _search_settings(tune: Tune, stage: str, space: str, epochs: int, seconds: float) -> SearchSettings:
    """A search stage's settings. Its trials must train fast enough for the final stage to afford
    their configuration (``budget.speed_floor``): slower ones are pruned within seconds."""
    s = tune.settings
    speed = tune.records["lr_range"]["measured"].get("images_per_second")
    floor = speed and budget.speed_floor(speed, tune.budget.final_after(stage, seconds),
                                         len(tune.data.x_train) + len(tune.data.x_val))
    if floor:
        tune.say(f"{stage}: trials slower than {floor:.0f} images/s are pruned (the final training could not "
                 f"afford {budget.MIN_FINAL_EPOCHS} epochs of them)")
    return SearchSettings(space=space, data=s.data, study=f"{s.study}/{stage}", storage=s.storage,
                          tracking_uri=s.tracking_uri, out=s.out, sampler=s.sampler, pruner=s.pruner, trials=None,
                          timeout=max(seconds, 1.0), epochs=epochs, seed=s.seed, objective=s.objective,
                          image_size=s.image_size, verbose=s.verbose, experiment=s.study, nest_under=tune.top,
                          run_name=stage, run_tags={"automl.stage": stage}, log_model=False,
                          min_images_per_second=floor or None)


def _search_result(tune: Tune, study: optuna.Study, epochs: int, data: Dataset) -> StageResult:
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = {state.lower(): states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")}
    best = best_trial(study)
    outputs = {"study": study.study_name, "epochs": epochs, "train_images": len(data.x_train),
               "val_images": len(data.x_val)}
    run_id = study.user_attrs[PARENT_ATTR]
    tally = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    if best is None:
        return StageResult(False, "no_complete_trial", f"{len(states)} trials ({tally}) and none completed: see the "
                           f"failure reasons with automl trials --study {study.study_name}.", measured=counts,
                           outputs=outputs, run_id=run_id)
    objective = tune.settings.objective
    config = TrialConfig.model_validate(best.user_attrs["config"])
    part = f" on {len(data.x_train)} training images" if len(data.x_train) < len(tune.data.x_train) else ""
    summary = (f"{len(states)} trials of {epochs} epochs{part} ({tally}); best {objective} {best.value:.4f} by trial "
               f"{best.number}: {describe(config)}.")
    measured = {**counts, f"best_{objective}": best.value, **best.user_attrs.get("metrics", {})}
    return StageResult(True, "healthy", summary, measured=measured, outputs={**outputs, "best_trial": best.number},
                       run_id=run_id)


def _top_trials(study: optuna.Study, top: int | None = TOP) -> list[optuna.trial.FrozenTrial]:
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=reverse)[:top]


def _values(space: SearchSpace, stored: dict) -> dict:
    """A trial's parameter values as the space writes them (Optuna stores mapping choices as labels)."""
    values = {}
    for param in space.params:
        if param.name in stored:
            value = stored[param.name]
            if param.kind == "choice":
                value = next((c for c in param.spec.choices if label(c) == label(value) or label(c) == value), value)
            values[param.name] = value
    return values


def _write_space(tune: Tune, space: SearchSpace, path: Path, stage: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {tune.settings.space}, as the {stage} stage of tune {tune.settings.study} changed it\n"
                    + space.to_yaml())
    tune.tracker.client.log_artifact(tune.stage_run, str(path))


def _rounded(values: list[float]) -> list[float]:
    return [float(f"{v:.5g}") for v in values]
