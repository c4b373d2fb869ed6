"""How the recipe reads learning curves and rewrites a space between stages."""

import pytest

from automl.errors import SpaceError
from automl.recipe import adjust
from automl.recipe import budget as plan
from automl.recipe.budget import Budget
from automl.recipe.plan import SHARES
from automl.space import FixedSuggester, SearchSpace

from .conftest import SPACES


@pytest.fixture(scope="module")
def quick() -> SearchSpace:
    return SearchSpace.load(SPACES / "quick.yaml")


def _history(loss, val_loss, acc, val_acc):
    return {"loss": loss, "val_loss": val_loss, "accuracy": acc, "val_accuracy": val_acc}


def test_a_growing_gap_reads_as_overfitting():
    verdict, why = adjust.diagnose_curves(_history([1.0, 0.4, 0.1], [0.9, 0.6, 0.7], [0.7, 0.9, 0.99],
                                                   [0.7, 0.8, 0.8]))
    assert verdict == "overfit" and "gap" in why


def test_rising_validation_loss_reads_as_overfitting():
    verdict, why = adjust.diagnose_curves(_history([1.0, 0.5, 0.3, 0.2], [0.8, 0.5, 0.6, 0.7],
                                                   [0.8, 0.9, 0.9, 0.9], [0.8, 0.9, 0.9, 0.9]))
    assert verdict == "overfit" and "val loss rose" in why


def test_curves_together_at_a_poor_level_read_as_underfitting():
    verdict, _ = adjust.diagnose_curves(_history([2.0, 1.4, 1.35], [1.9, 1.4, 1.35], [0.3, 0.52, 0.55],
                                                 [0.3, 0.52, 0.55]))
    assert verdict == "underfit"


def test_curves_together_while_the_loss_still_falls_fast_read_as_undertrained():
    """A coarse trial's few epochs: it needs longer training, not a bigger model."""
    verdict, why = adjust.diagnose_curves(_history([2.0, 1.6, 1.3], [1.9, 1.6, 1.3], [0.3, 0.45, 0.55],
                                                   [0.3, 0.46, 0.55]))
    assert verdict == "undertrained" and "still falling 19%" in why


def test_flat_curves_of_a_trial_cut_short_read_as_undertrained():
    """A 3-epoch coarse trial of a 15-epoch configuration: its cosine schedule flattened the last
    epoch, yet the configuration never trained its planned epochs, so widening it is the wrong move."""
    flat = _history([2.0, 1.4, 1.35], [1.9, 1.4, 1.35], [0.3, 0.52, 0.55], [0.3, 0.52, 0.55])
    verdict, why = adjust.diagnose_curves(flat, planned=15)
    assert verdict == "undertrained" and "after 3 of the 15 epochs" in why
    assert adjust.diagnose_curves(flat, planned=3)[0] == "underfit"


def test_close_curves_at_a_good_level_are_healthy():
    verdict, _ = adjust.diagnose_curves(_history([0.5, 0.1, 0.05], [0.2, 0.1, 0.09], [0.9, 0.98, 0.99],
                                                 [0.95, 0.98, 0.985]))
    assert verdict == "healthy"


def test_the_majority_verdict_wins_and_a_tie_goes_to_the_best_trial():
    assert adjust.overall_verdict(["healthy", "overfit", "overfit"]) == "overfit"
    assert adjust.overall_verdict(["underfit", "overfit", "healthy"]) == "underfit"


def test_narrowing_the_learning_rate_stays_inside_the_space_range(quick):
    changes, notes = adjust.narrow_lr(quick, (1e-5, 3e-3), 1e-3)
    narrowed = quick.rewritten(changes, "coarse.yaml")
    lr = next(p for p in narrowed.params if p.name == adjust.LR)
    assert lr.spec.range == (1e-4, 3e-3) and lr.spec.log and lr.default == 1e-3
    assert "1e-04" in notes[0] or "0.0001" in notes[0]


def test_refining_keeps_the_top_choices_and_drops_branches_no_top_trial_took(quick):
    top = [quick.suggest_all(FixedSuggester({"model.stages.0.family": "vgg", "model.stages.1.family": "resnet",
                                             "training.optimizer.name": "adam"}))]
    narrowed, widened, notes = adjust.refine_changes(quick, top, "healthy")
    assert not widened
    refined = quick.rewritten(narrowed, "refine.yaml")
    names = {p.name: p for p in refined.params}
    assert names["model.stages.0.family"].spec.choices == ["vgg"]
    # blocks was only active for resnet, momentum only for sgd: both are gone with their branch
    assert "model.stages.0.blocks" not in names and "training.optimizer.momentum" not in names
    assert "model.stages.1.blocks" in names and "model.stages.1.convs" not in names
    assert any("kept ['adam']" in n for n in notes)


def test_overfitting_widens_regularization_and_adds_mixup(quick):
    top = [quick.suggest_all(FixedSuggester({}))]
    narrowed, widened, notes = adjust.refine_changes(quick, top, "overfit")
    refined = quick.rewritten({**narrowed, **widened}, "refine.yaml")
    names = {p.name: p for p in refined.params}
    assert names["model.head.dropout"].spec.range[1] == pytest.approx(0.7)
    assert names["regularization.l2"].spec.range[1] == pytest.approx(1e-2)
    assert names["augmentation.mixup"].spec.range == (0.0, 0.3)
    assert refined.default()["augmentation"]["mixup"] == 0.0


def test_underfitting_allows_wider_and_deeper_models(quick):
    top = [quick.suggest_all(FixedSuggester({}))]
    _, widened, _ = adjust.refine_changes(quick, top, "underfit")
    refined = quick.rewritten(widened, "refine.yaml")
    names = {p.name: p for p in refined.params}
    assert names["model.stages.1.filters"].spec.choices == [32, 64, 128, 256]
    assert names["model.stages.0.convs"].spec.range == (1, 3)


def test_a_rewrite_that_breaks_the_schema_is_refused(quick):
    with pytest.raises(SpaceError, match="refine.yaml"):
        quick.rewritten({"model.head.dropout": {"float": [0.0, 1.5], "default": 0.2}}, "refine.yaml")


def test_the_budget_carries_over_what_a_stage_leaves():
    kinds = list(SHARES)
    budget = Budget(100.0, SHARES)
    first = budget.allot(kinds[0], kinds[1:])
    budget.spent_before = 50.0  # as if the early stages had taken half the budget
    later = {s: budget.allot(s, kinds[i + 1:]) for i, s in enumerate(kinds) if i >= 3}
    assert first < 5 and later["coarse"] < 0.5 * 100
    budget.spent_before = 10.0
    assert budget.allot("coarse", kinds[kinds.index("coarse") + 1:]) > later["coarse"]



def test_where_an_epoch_is_dear_the_final_training_gets_more_of_the_budget():
    usual = plan.planned_shares(SHARES, images_per_second=50_000, final_images=1_400, remaining=250,
                                final_epochs=15, search_seconds=1.0)  # digits
    assert usual == pytest.approx(SHARES)
    # Fashion-MNIST at 1,500 images/s: the searches cannot do without 17 trials of 3 epochs on 2,000
    # training and 2,000 validation images (a third of the cost each): 91 s
    least = plan.least_search_seconds(1_500, 3, train=51_000, val=9_000)
    assert least == pytest.approx(17 * 3 * (2_000 + 2_000 / 3) / 1_500)
    assert plan.least_search_seconds(1_500, 3, train=1_000, val=200) < least  # all there is, where smaller
    slow = plan.planned_shares(SHARES, images_per_second=1_500, final_images=60_000, remaining=780,
                               final_epochs=15, search_seconds=least)
    planned = sum(slow[s] for s in plan.PLANNED)
    assert planned == pytest.approx(sum(SHARES[s] for s in plan.PLANNED))  # the checks keep theirs
    assert slow["final"] / planned == pytest.approx(600 / 780)  # 15 epochs take 600 s: the searches keep 180
    tight = plan.planned_shares(SHARES, images_per_second=1_500, final_images=60_000, remaining=500,
                                final_epochs=15, search_seconds=least)
    assert tight["final"] / planned == pytest.approx(1 - least / 500)  # the searches keep what they need
    assert slow["coarse"] / slow["refine"] == pytest.approx(SHARES["coarse"] / SHARES["refine"])
    budget = Budget(900, SHARES, spent_before=120, planned=slow)  # the checks took 120 s
    assert budget.allot("coarse", ["diagnose", "refine", "final"]) == pytest.approx(780 * slow["coarse"] / planned,
                                                                                     rel=0.01)


def test_steadiness_is_the_median_pieces_time_over_the_slowest_tenths():
    assert plan.steadiness([1.0] * 20) == 1.0
    assert plan.steadiness([1.0] * 16 + [1.25] * 4) == pytest.approx(0.8)  # a fifth a quarter slow
    assert plan.steadiness([1.0] * 19 + [9.0]) == 1.0  # one hiccup in twenty is not the host
    assert plan.steadiness([1.0] * 12 + [5.0] * 8) == plan.LEAST_STEADY  # never below
    assert plan.steadiness([1.0, 1.0, 1.0]) == plan.LEAST_STEADY  # too few pieces to say


def test_searches_rank_on_a_subset_that_affords_their_trials():
    assert plan.subset_sizes(50_000, 60, 3, 12, train=1_221, val=216) == (1_221, 216)  # all of it fits
    train, val = plan.subset_sizes(1_500, 210, 3, 12, train=51_000, val=9_000)
    assert 2_000 < train < 51_000 and val == max(plan.MIN_VAL, round(9_000 * train / 51_000))
    # as many training images as 12 trials afford, with validation in the split's proportion
    seconds_per_trial = 3 * train * (1 + plan.EVAL_COST * 9_000 / 51_000) / 1_500
    assert seconds_per_trial == pytest.approx(210 / 12, rel=0.01)
    assert plan.subset_sizes(100, 10, 3, 12, train=51_000, val=9_000) == (plan.MIN_TRAIN, plan.MIN_VAL)


def test_refine_trials_get_the_epochs_their_budget_affords():
    # 4,435 + 2,000/3 images an epoch at 992 images/s: 5.1 s; 5 trials in 136 s afford 5 epochs
    assert plan.affordable_epochs(992, 136, 5, train=4_435, val=2_000) == 5


def test_searches_prune_configurations_the_final_could_not_afford():
    # a 305 s final over 60,000 images needs 8 x 60,000 / 305 = 1,574 images/s for 8 epochs; on a host
    # of 0.85 steadiness a trial's first seconds read up to 15% slow, and the final's epochs take 15%
    # longer: the floor is the same
    assert plan.speed_floor(2_200, 305, 60_000, 0.85) == pytest.approx(1_574, rel=0.01)
    assert plan.speed_floor(2_200, 305, 60_000, 1.0) == plan.speed_floor(2_200, 305, 60_000, 0.85)
    # a budget too small even for the default configuration: only trials slower than 85% of it go
    assert plan.speed_floor(2_200, 60, 60_000, 0.85) == pytest.approx(0.85 * 2_200)
    budget = Budget(900, SHARES)
    later = sum(SHARES[s] for s in ("diagnose", "refine", "final"))
    assert budget.final_after(300, ["diagnose", "refine"]) == pytest.approx((900 - 300) * SHARES["final"] / later,
                                                                             rel=0.01)
    assert budget.final_after(300, []) == pytest.approx(600, rel=0.01)


@pytest.mark.parametrize("floor, pruned", [(1e9, True), (1.0, False)])
def test_a_trial_slower_than_the_floor_is_pruned_in_its_first_epoch(digits, floor, pruned):
    import optuna

    from automl.config import TrialConfig
    from automl.hpo.limits import TooSlow
    from automl.training.fit import fit

    config = TrialConfig.model_validate(SearchSpace.load(SPACES / "quick.yaml").default())
    slow = TooSlow(floor, config.training.batch_size)
    if pruned:
        with pytest.raises(optuna.TrialPruned, match=r"trains \d+ images/s, below the 1000000000"):
            fit(config, digits, epochs=3, callbacks=[slow])
    else:
        assert len(fit(config, digits, epochs=2, callbacks=[slow]).history["loss"]) == 2
    assert slow.measured is not None and slow.measured[0] > 0
