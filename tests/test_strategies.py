"""Samplers and pruners by name, as the CLI takes them."""

import sys

import optuna
import pytest

from automl.errors import UserError
from automl.hpo.strategies import PRUNERS, SAMPLERS, make_pruner, make_sampler


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_drives_a_study(name):
    # gp runs on PyTorch, which the test extra brings (automl[gp]): no skip
    study = optuna.create_study(sampler=make_sampler(name, 0, trials=8))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2 + t.suggest_int("n", 1, 3), n_trials=6)
    assert len(study.trials) == 6 and study.best_value < 3


def test_the_gp_sampler_without_pytorch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without PyTorch gives: ImportError
    with pytest.raises(UserError, match=r"--sampler gp needs PyTorch: pip install 'automl\[gp\]'"):
        make_sampler("gp", 0)


@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_builds(name):
    assert isinstance(make_pruner(name, 5), optuna.pruners.BasePruner)


def test_short_searches_start_tpe_early():
    assert make_sampler("tpe", 0, trials=8)._n_startup_trials == 3
    assert make_sampler("tpe", 0, trials=200)._n_startup_trials == 10


def test_a_search_past_its_timeout_prunes_the_running_trial_once_one_has_completed():
    import time

    from automl.hpo.optuna_backend import TimeUp

    study = optuna.create_study(direction="maximize")
    past = TimeUp(study, deadline=time.perf_counter() - 1)
    past.on_epoch_end(0)  # nothing completed yet: the first trial must finish, late or not
    study.add_trial(optuna.trial.create_trial(value=0.5))
    TimeUp(study, deadline=time.perf_counter() + 60).on_epoch_end(0)  # in time
    with pytest.raises(optuna.TrialPruned, match="time ran out after epoch 3"):
        past.on_epoch_end(2)
