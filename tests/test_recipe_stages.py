"""Each stage of the recipe, the final's choice and the loop's stop rule, with a small fake
context: an in-memory tune study, searches answered by prepared studies, no MLflow."""

import math

import optuna
import pytest

from automl.errors import UserError
from automl.hpo import records
from automl.hpo.hooks import SpeedFloor
from automl.hpo.records import TrialRecord
from automl.recipe import budget, loop
from automl.recipe.budget import Budget
from automl.recipe.context import StageContext
from automl.recipe.outcomes import DiagnoseOutputs, LRRangeOutputs, Outcomes, OverfitOutputs, SearchOutputs, StageRecord
from automl.recipe.plan import SHARES, STAGES, plan, stage_of
from automl.recipe.settings import TuneSettings
from automl.recipe.stages.checks import Overfit, Sanity, remedies
from automl.recipe.stages.final import Candidates, Final, choose_final
from automl.recipe.stages.lr_range import LRRange
from automl.recipe.stages.searches import Coarse, Diagnose, Refine
from automl.space import SearchSpace

from .conftest import SPACES


class FakeContext(StageContext):
    """A stage's context with no MLflow: searches return the prepared study of their name."""

    def __init__(self, tmp_path, data, space=SPACES / "quick.yaml", outcomes=None, prepared=None, budget_s=300.0):
        self.said = []
        settings = TuneSettings(str(space), storage=f"journal:{tmp_path}/j.journal",
                                tracking_uri=f"sqlite:///{tmp_path}/m.db", out=str(tmp_path / "out"), study="t",
                                verbose=False)
        super().__init__(settings=settings, data=data, space=SearchSpace.load(space), outcomes=outcomes or Outcomes(),
                         budget=Budget(budget_s, SHARES), study=optuna.create_study(direction="maximize"),
                         tracker=None, tune_run="tune-run", say=self.said.append, later=["diagnose", "refine", "final"])
        self.prepared = prepared or {}
        self.searched, self.tags, self.logged = [], {}, []

    def log_artifact(self, path):
        self.logged.append(path)

    def log_figure(self, figure, name):
        self.logged.append(name)

    def tag_run(self, run_id, tags):
        self.tags[run_id] = tags

    def run_search(self, settings, data, hooks):
        self.searched.append((settings, data, hooks))
        return self.prepared[settings.study]

    def load_search(self, study):
        return self.prepared[study]


QUICK_DEFAULT = SearchSpace.load(SPACES / "quick.yaml").default()  # trains 15 epochs


def _search(name, trials, direction="maximize"):
    """An in-memory search study: trials as (value, steady epoch seconds, history or None)."""
    study = optuna.create_study(study_name=name, direction=direction)
    records.set_parent_run(study, f"run-of-{name}")
    for number, (value, seconds, history) in enumerate(trials):
        # tracing in the first epoch; the last a quarter slow, as on a busy host: steadiness 0.8
        epochs = [seconds + 5, seconds, seconds, seconds, 1.25 * seconds]
        record = TrialRecord(config=QUICK_DEFAULT, model_path="m.keras", epoch_seconds=epochs,
                             history=history or {}, mlflow_run_id=f"trial-run-{number}", metrics={})
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=value,
                                                  params={"model.head.dropout": 0.1 * number},
                                                  distributions={"model.head.dropout":
                                                                 optuna.distributions.FloatDistribution(0.0, 0.5)},
                                                  user_attrs=record.attrs()))
    return study


def _record(stage, outputs, kind=None, seconds=10.0, ok=True):
    return StageRecord(ok=ok, verdict="healthy", summary="", outputs=outputs, stage=stage,
                       kind=kind or stage.split("-")[0], seconds=seconds)


def _searched(study, epochs=3, train=1_000, val=300, round=0, best=None, again=False, loop_seconds=None):
    return SearchOutputs(study=study, space=str(SPACES / "quick.yaml"), epochs=epochs, train_images=train,
                         val_images=val, best_value=best, round=round, again=again, loop_seconds=loop_seconds)


def _lr_range(speed=50_000.0):
    return _record("lr_range", LRRangeOutputs(space=str(SPACES / "quick.yaml"), curves={}, shares=dict(SHARES),
                                              images_per_second=speed))


# --- the plan ----------------------------------------------------------------------------


def test_the_plan_runs_the_stages_in_the_recipes_order_and_adds_a_round_while_the_loop_goes_on(tmp_path):
    quick = SearchSpace.load(SPACES / "quick.yaml")
    assert [s.name for s in plan(quick, Outcomes())] == [s for s in STAGES if s != "transfer"]
    outcomes = Outcomes()
    outcomes.add(_record("refine", _searched("t/refine", round=1, again=True)))
    outcomes.add(_record("refine-2", _searched("t/refine-2", round=2, again=False)))
    names = [s.name for s in plan(quick, outcomes)]
    assert names[-5:] == ["diagnose", "refine", "diagnose-2", "refine-2", "final"]
    assert stage_of(outcomes.get("refine-2")).round == 2 and isinstance(stage_of(outcomes.get("refine-2")), Refine)


def test_a_record_round_trips_through_the_study_typed(tmp_path):
    study = optuna.create_study()
    record = _record("diagnose-2", DiagnoseOutputs(source="refine", space="s.yaml", epochs=12,
                                                   verdicts={"3": {"verdict": "overfit"}}, first_trials=[{"a": 1}]))
    records.write_stage_record(study, record.stage, record.to_dict())
    back = StageRecord.from_dict(records.stage_records(study)["diagnose-2"])
    assert back == record and isinstance(back.outputs, DiagnoseOutputs)
    with pytest.raises(TypeError, match="DiagnoseOutputs, not SearchOutputs"):
        Outcomes({"diagnose-2": back}).outputs("diagnose-2", SearchOutputs)
    older = {**record.to_dict(), "outputs": {"epochs": 12}}  # as an earlier version wrote it
    with pytest.raises(UserError, match="stage diagnose-2: its record was written by an older automl"):
        StageRecord.from_dict(older)


# --- the loop's stop rule ---------------------------------------------------------------


def test_the_loop_goes_on_only_while_a_round_beats_its_noise_and_time_affords_another():
    assert loop.another_round(gain=0.02, error=0.01, seconds_left=100, round_seconds=40, done=1)[0]
    stop, why = loop.another_round(gain=0.005, error=0.01, seconds_left=100, round_seconds=40, done=1)
    assert not stop and "not more than its noise (0.0100)" in why
    stop, why = loop.another_round(gain=0.02, error=0.01, seconds_left=30, round_seconds=40, done=1)
    assert not stop and "fewer than the 40 s" in why
    assert not loop.another_round(gain=0.02, error=0.01, seconds_left=100, round_seconds=40, done=5)[0]
    assert not loop.another_round(gain=math.nan, error=0.01, seconds_left=100, round_seconds=40, done=1)[0]


def test_a_rounds_noise_is_the_binomial_standard_error_of_its_accuracy():
    assert loop.noise("val_accuracy", 0.9, 400, {}) == pytest.approx(0.015)
    assert loop.noise("val_loss", 0.3, 400, {"val_loss": [0.5, 0.31, 0.3, 0.32]}) == pytest.approx(0.01)


def test_a_round_takes_half_the_loops_time_while_two_fit():
    assert loop.round_seconds(100, 40) == 50 and loop.round_seconds(70, 40) == 70


# --- the final's choice -----------------------------------------------------------------


def _candidates(stage, trials, val=2_000):
    study = _search(f"t/{stage}", [(v, s, None) for v, s in trials])
    return Candidates(stage, _searched(f"t/{stage}", train=8_000, val=val), records.ranking(study))


def test_the_final_configuration_is_the_cheapest_within_one_standard_error():
    # the standard error at 0.90 on 2,000 images is 0.0067: 0.895 is within it, 0.88 is not
    choice = choose_final([_candidates("refine", [(0.90, 12.0), (0.895, 4.0), (0.88, 1.0)]),
                           _candidates("coarse", [(0.85, 1.0)])], 1_000, 60_000, "val_accuracy", 6)
    assert (choice.stage, choice.trial.value) == ("refine", 0.895) and "3.0x as fast per epoch" in choice.why


def test_a_final_the_budget_cannot_train_long_enough_gives_way_to_one_it_can():
    # 6x the 10,000 images a trial saw: 12 s/epoch there is 72 s in the final; epochs foreseen in the
    # 0.8 of its 400 s the searches' steadiness leaves, less 5 s of tracing and the scoring of the
    # held-out tenth (12 passes over 6,000 images at a third of 72 s per 60,000: 28.8 s): 3; at 8 s/epoch, 6
    choice = choose_final([_candidates("refine", [(0.91, 12.0), (0.86, 11.0)]),
                           _candidates("coarse", [(0.88, 8.0), (0.87, 2.0)])], 400, 60_000, "val_accuracy", 6)
    assert (choice.stage, choice.trial.value) == ("coarse", 0.87)
    assert f"fits {budget.MIN_FINAL_EPOCHS} epochs" in choice.why and "refine search would get 3" in choice.why
    assert choice.epoch_seconds == pytest.approx(2.0 * 6)
    # time, not the configuration's 15 epochs, bounds it: its schedule runs over the 25 that fit (4.8 s
    # of scoring at 12 s per 60,000 images)
    assert choice.planned == choice.affordable == (0.8 * 400 - 5 - 4.8) // 12


def test_a_final_short_of_time_plans_the_configurations_epochs_and_says_how_many_fit():
    choice = choose_final([_candidates("refine", [(0.91, 12.0)])], 700, 60_000, "val_accuracy", 6)
    assert (choice.planned, choice.affordable) == (15, (0.8 * 700 - 5 - 28.8) // 72)


def test_a_final_whose_time_affords_several_times_the_configurations_epochs_trains_that_many_models():
    # 12 s a final epoch; besides its epochs each model pays 5 s of tracing and 4.8 s scoring the
    # held-out tenth: (0.8 * 1,000 - 9.8) // 12 = 65 epochs fit; 800 // (9.8 + 15 * 12) = 4 models of
    # the 15 named, each (200 - 9.8) // 12 = 15
    choice = choose_final([_candidates("refine", [(0.91, 2.0)])], 1_000, 60_000, "val_accuracy", 6)
    assert (choice.affordable, choice.members, choice.planned) == (65, 4, 15)
    many = choose_final([_candidates("refine", [(0.91, 2.0)])], 1_000, 60_000, "val_accuracy", 30)
    assert (many.members, many.planned) == (2, 32)  # the diagnosis asked for 30 epochs a model
    # 20 s a trial outside its training (building, compiling, saving), and 10,000 test images scored
    # twice a model (1.3 s more each): 800 // (31.1 + 180) = 3 models
    dear = _candidates("refine", [(0.91, 2.0)])
    dear.trials[0].user_attrs.update(trial_seconds=30.0, fit_seconds=10.0)
    assert choose_final([dear], 1_000, 60_000, "val_accuracy", 6, test_images=10_000).members == 3


def test_the_searches_epoch_times_say_how_steady_the_host_ran():
    from automl.recipe.stages.final import epoch_steadiness

    steady = epoch_steadiness([_candidates("refine", [(0.91, 12.0), (0.9, 3.0)])])
    assert steady == pytest.approx(0.8)  # the slowest tenth of epochs took 1.25x the usual


def test_a_much_worse_configuration_is_not_rescued_by_more_final_epochs():
    # 0.60 makes 3.3x the errors of 0.88, the best of its search: the dear winner stays
    choice = choose_final([_candidates("refine", [(0.91, 12.0)]), _candidates("coarse", [(0.88, 8.0), (0.60, 1.0)])],
                          400, 60_000, "val_accuracy", 6)
    assert (choice.stage, choice.trial.value) == ("refine", 0.91) and choice.why.endswith("the best")


def test_the_final_chooses_from_the_last_round_of_the_loop():
    choice = choose_final([_candidates("refine-2", [(0.93, 1.0)]), _candidates("refine", [(0.95, 1.0)])],
                          1_000, 10_000, "val_accuracy", 6)
    assert choice.stage == "refine-2"


# --- the checks, on real digits ---------------------------------------------------------


def test_sanity_reads_the_initial_loss(tmp_path, digits):
    result = Sanity().run(FakeContext(tmp_path, digits), 10)
    assert result.ok and result.measured["ratio"] == pytest.approx(1.0, abs=0.3)


def test_overfit_tries_another_optimizer_then_a_larger_model_before_it_stops(write_space):
    space = SearchSpace.load(write_space("""
        model:
          stem: [{filters: 4, kernel_size: 3}]
          stages: [{family: vgg, filters: {choice: [2, 64], default: 2}, convs: {int: [1, 2], default: 1}}]
        training:
          optimizer:
            name: {choice: [sgd, adam], default: sgd}
            learning_rate: {float: [1.0e-4, 1.0], log: true, default: 0.05}
    """))
    tries = remedies(space, "cannot_overfit")
    assert [values for _, values in tries] == [
        {"training.optimizer.name": "adam", "training.optimizer.learning_rate": 1e-3},
        {"model.stages.0.filters": 64, "model.stages.0.convs": 2}]
    assert [what for what, _ in remedies(space, "diverged")] == ["learning rate 0.0001, the space's lowest",
                                                                 "optimizer adam at lr 0.001"]
    assert len(remedies(space, "lr_too_low")) == 3
    assert remedies(space, "no_signal") == []


def test_a_model_too_small_to_memorize_continues_from_the_larger_one_the_space_offers(tmp_path, digits,
                                                                                      write_space):
    space = write_space("""
        model:
          batch_norm: false
          stem: [{filters: 2, kernel_size: 3}]
          stages: [{family: vgg, filters: {choice: [1, 64], default: 1}, convs: 1}]
          head: {dropout: 0.0}
        training:
          batch_size: 64
          optimizer: {name: adam, learning_rate: 0.003}
    """)
    ctx = FakeContext(tmp_path, digits, space=space)
    result = Overfit().run(ctx, 60)
    assert result.ok, result.summary
    assert [t["verdict"] for t in result.outputs.tried] == ["healthy"]
    assert isinstance(result.outputs, OverfitOutputs) and result.outputs.space.endswith("overfit.yaml")
    assert SearchSpace.load(result.outputs.space).default()["model"]["stages"][0]["filters"] == 64


def test_lr_range_narrows_the_coarse_space_and_plans_the_budget(tmp_path, digits):
    ctx = FakeContext(tmp_path, digits)
    result = LRRange().run(ctx, 30)
    out = result.outputs
    assert isinstance(out, LRRangeOutputs) and out.images_per_second > 0 and set(out.curves) == {"adam", "sgd"}
    lr = next(p for p in SearchSpace.load(out.space).params if p.name == "training.optimizer.learning_rate")
    assert lr.spec.range[0] >= 1e-4 and lr.spec.range != (1e-4, 1e-1)
    assert sum(out.shares.values()) == pytest.approx(sum(SHARES.values()))
    assert "lr_range.png" in ctx.logged


# --- the searches, answered by prepared studies -----------------------------------------


def test_coarse_searches_the_narrowed_space_with_the_recipes_hooks(tmp_path, digits):
    outcomes = Outcomes({"lr_range": _lr_range()})
    ctx = FakeContext(tmp_path, digits, outcomes=outcomes, prepared={"t/coarse": _search("t/coarse", [
        (0.8, 1.0, None), (0.9, 1.0, None)])})
    result = Coarse().run(ctx, 60)
    settings, data, hooks = ctx.searched[0]
    assert (settings.trials, settings.timeout, settings.epochs) == (None, 60, 3)
    assert hooks.nest_under == "tune-run" and hooks.tags == {"automl.stage": "coarse"} and not hooks.log_model
    assert [type(c) for c in hooks.trial_callbacks] == [SpeedFloor] and hooks.first_trials is None
    out = result.outputs
    assert (out.best_trial, out.best_value, out.round) == (1, 0.9, 0) and result.run_id == "run-of-t/coarse"
    assert records.subset_sizes(ctx.study, "coarse") == [len(data.x_train), len(data.x_val)]


def _coarse_done(outcomes, best=0.80):
    outcomes.add(_record("coarse", _searched("t/coarse", epochs=2, train=1_000, val=300, best=best)))


def test_diagnose_reads_the_last_search_and_doubles_epochs_for_undertrained_curves(tmp_path, digits):
    outcomes = Outcomes({"lr_range": _lr_range()})
    _coarse_done(outcomes)
    still_learning = {"loss": [1.0, 0.6], "val_loss": [0.9, 0.6], "accuracy": [0.6, 0.8], "val_accuracy": [0.6, 0.8]}
    ctx = FakeContext(tmp_path, digits, outcomes=outcomes, prepared={"t/coarse": _search("t/coarse", [
        (0.8, 1.0, still_learning), (0.7, 1.0, still_learning)])})
    result = Diagnose().run(ctx, 5)
    out = result.outputs
    assert result.verdict == "undertrained" and out.source == "coarse"
    assert out.epochs == 12  # 3 x the coarse's 2, doubled
    assert out.first_trials[0] == {"model.head.dropout": 0.0} and out.space.endswith("refine.yaml")
    assert ctx.tags["trial-run-0"]["automl.diagnosis"] == "undertrained"


@pytest.mark.parametrize("epoch_seconds, final_part", [(1.0, None), (10.0, 15 * 1_437 / 130)])
def test_the_first_diagnosis_plans_the_budget_again_from_the_speed_the_best_coarse_trial_trained_at(
        tmp_path, digits, epoch_seconds, final_part):
    outcomes = Outcomes({"lr_range": _lr_range()})
    _coarse_done(outcomes)  # trials saw 1,000 training and 300 validation images
    ctx = FakeContext(tmp_path, digits, outcomes=outcomes, prepared={"t/coarse": _search("t/coarse", [
        (0.8, epoch_seconds, None), (0.7, 1.0, None)])})
    shares = Diagnose().run(ctx, 5).outputs.shares
    final = shares["final"] / (shares["final"] + shares["refine"])
    if final_part is None:  # 1,300 images/s: 15 final epochs over digits' 1,437 take 17 s of 300: the usual share
        assert final == pytest.approx(SHARES["final"] / (SHARES["final"] + SHARES["refine"]))
    else:  # 130 images/s: 15 epochs take 166 s, which leaves refine the 99 s its 5 trials need
        assert final == pytest.approx(final_part / ctx.budget.remaining(), rel=0.02)
    assert Diagnose(2).run(ctx, 5).outputs.shares is None  # later rounds keep the plan
    ctx.settings.workers = 2  # two trials at a time on the same CPUs: each read half the speed
    assert Diagnose().run(ctx, 5).outputs.shares is None


def _refine_ctx(tmp_path, digits, round_best, coarse_best=0.80, val=300):
    outcomes = Outcomes({"lr_range": _lr_range()})
    _coarse_done(outcomes, coarse_best)
    outcomes.add(_record("diagnose", DiagnoseOutputs(source="coarse", space=str(SPACES / "quick.yaml"), epochs=6,
                                                     verdicts={}, first_trials=[{"model.head.dropout": 0.1}])))
    study = _search("t/refine", [(round_best, 1.0, None)])
    return FakeContext(tmp_path, digits, outcomes=outcomes, prepared={"t/refine": study}, budget_s=600)


def test_a_refine_round_that_beat_the_search_before_it_by_more_than_its_noise_asks_for_another(tmp_path, digits):
    ctx = _refine_ctx(tmp_path, digits, round_best=0.90)  # +0.10 on 300 images: noise 0.017
    stage = Refine()
    seconds = stage.allot(ctx, [])
    result = stage.run(ctx, seconds)
    out = result.outputs
    assert ctx.searched[0][2].first_trials == [{"model.head.dropout": 0.1}]
    assert out.round == 1 and out.again and "more than its noise" in out.loop_why
    assert out.loop_seconds == pytest.approx(seconds * 2, rel=0.01)  # the first round took half the loop's time


def test_a_refine_round_within_its_noise_stops_the_loop(tmp_path, digits):
    ctx = _refine_ctx(tmp_path, digits, round_best=0.805)
    result = Refine().run(ctx, 100)
    assert not result.outputs.again and "not more than its noise" in result.outputs.loop_why
    assert any(c.startswith("loop: stops") for c in result.changes)


class _Epochs:
    def __init__(self):
        self.epochs = []

    def log_epoch(self, epoch, logs):
        self.epochs.append(epoch)


def _final_context(tmp_path, digits):
    from automl.hpo.study import open_named_study

    outcomes = Outcomes({"lr_range": _lr_range()})
    _coarse_done(outcomes)
    prepared = {"t/coarse": _search("t/coarse", [(0.9, 0.5, None), (0.8, 0.5, None)])}
    ctx = FakeContext(tmp_path, digits, outcomes=outcomes, prepared=prepared)
    ctx.study = open_named_study("t", ctx.settings.storage, "maximize", {"space": "s", "kind": "tune"}, digits)
    ctx.run_id, ctx.epochs, ctx.models = "final-run", _Epochs(), []
    ctx.epoch_log = lambda: ctx.epochs
    ctx.log_model = lambda path, number: ctx.models.append((path, number))
    return ctx


def test_the_final_trains_the_chosen_configuration_tests_it_once_and_exports_it(tmp_path, digits):
    ctx = _final_context(tmp_path, digits)
    epochs, logged = ctx.epochs, ctx.models
    result = Final().run(ctx, 20)
    out = result.outputs
    assert (out.source_stage, out.source_trial) == ("coarse", 0) and "trial 0 of the coarse search" in result.summary
    final = ctx.study.trials
    assert len(final) == 1 and TrialRecord.of(final[0]).source_trial == 0
    assert 0.9 <= result.measured["test_accuracy"] <= 1.0 and epochs.epochs[:2] == [0, 1]
    assert logged == [(ctx.settings.folder / "final" / "model.keras", 0)]
    assert (tmp_path / "out" / "t" / "model" / "automl.json").is_file()


def test_a_final_whose_held_out_part_chose_views_is_tested_and_exported_with_them(tmp_path, digits, monkeypatch):
    from automl.recipe import final
    from automl.saving import load_model
    from automl.training.test_time import View, ViewChoice

    mirror = ViewChoice("mirror", [None, View(flip=True)], 0.01, 0.001, "predictions average 2 views (mirror)")
    monkeypatch.setattr(final, "choose_views", lambda *args, **kwargs: mirror)
    result = Final().run(_final_context(tmp_path, digits), 20)
    assert result.measured["test_time_views"] == 2 and "average 2 views (mirror)" in result.summary
    exported = load_model(tmp_path / "out" / "t" / "model" / "model.keras")
    assert any(isinstance(layer, View) for layer in exported.layers)
    predicted = exported.predict(digits.x_test, verbose=0).argmax(axis=1)
    assert result.measured["test_accuracy"] == pytest.approx((predicted == digits.y_test).mean())
    assert 0.9 <= result.measured["single_test_accuracy"] <= 1.0
    assert f"(one model on the image as it is: {result.measured['single_test_accuracy']:.4f})" in result.summary


def test_a_search_with_no_completed_trial_is_one_report_line_not_optuna_warnings(tmp_path, caplog):
    from types import SimpleNamespace

    from automl.recipe.context import ReportView
    from automl.recipe.stages.searches import search_report

    tune, coarse = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    coarse.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={}, distributions={}))
    view = ReportView(tune=tune, searches={"coarse": coarse}, figures=tmp_path)
    optuna.logging.enable_propagation()
    try:
        parts = list(search_report(SimpleNamespace(stage="coarse"), view, importances=True))
    finally:
        optuna.logging.disable_propagation()
    assert parts == ["(no parameter importances: no trial completed)\n"]
    assert not [r for r in caplog.records if r.name.startswith("optuna") and r.levelno >= 30], caplog.text


@pytest.mark.parametrize("final_seconds, measured, ending", [
    (88.0, {"epochs_run": 9, "planned_epochs": 9, "best_epoch": 9}, "budget."),
    (60.0, {"epochs_run": 6, "planned_epochs": 12, "best_epoch": 3},
     "budget: the final converged, stopped early at epoch 6 of the 12 planned, as its held-out part had not "
     "improved since epoch 3."),
    (60.0, {"epochs_run": 9, "planned_epochs": 9, "best_epoch": 9},
     "budget: the final trained its 9 planned epochs faster than foreseen."),
    (60.0, {"epochs_run": 3, "planned_epochs": 15, "best_epoch": 3},
     "budget: the final's time stopped it at epoch 3 of the 15 planned, still improving, and what was left "
     "afforded no other model: its costs were foreseen too low."),
])
def test_the_report_says_how_much_of_its_budget_the_tune_used_and_why_it_left_time(final_seconds, measured, ending):
    from automl.recipe.outcomes import FinalOutputs
    from automl.recipe.report import budget_use

    final = StageRecord(ok=True, verdict="healthy", summary="", outputs=FinalOutputs("", "", "coarse", 0),
                        stage="final", kind="final", seconds=final_seconds, budget=90.0, measured=measured)
    outcomes = Outcomes({"lr_range": _lr_range(), "final": final})  # lr_range took 10 s: a 100 s budget
    assert budget_use(outcomes) == f"Stages took {10 + final_seconds:.0f} s of the 100 s " + ending
    assert budget_use(Outcomes({"lr_range": _lr_range()})) == "Stages took 10 s in all."
    final.measured["tune_budget"] = 110.0  # as the tune knew it: the stages' own times miss what ran between them
    assert budget_use(outcomes).startswith(f"Stages took {10 + final_seconds:.0f} s of the 110 s budget")
