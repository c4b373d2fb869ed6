"""The pruners really prune: a search where some configurations cannot learn stops them early.

The trials run in a fixed order (the search's first trials, as a tune's refine stage seeds
them), so which ones a pruner sees, and when, does not hang on the sampler: a learning rate of
1e-7 leaves a trial at chance, where 3e-3 learns digits within an epoch.
"""

import pytest
from mlflow import MlflowClient

from automl.hpo.driver import run_search
from automl.hpo.hooks import SearchHooks
from automl.hpo.settings import SearchSettings

LEARNS, HOPELESS = 3e-3, 1e-7
EPOCHS = 3
# Without batch norm (whose moving statistics lag behind in a short trial and make validation
# noisy), this network is past 0.9 validation accuracy after one epoch at 3e-3 and stays at
# chance (0.1) at 1e-7.
SPACE = f"""
model:
  batch_norm: false
  stem: [{{filters: 16, kernel_size: 3}}]
  stages: [{{family: vgg, filters: 32, convs: 1}}]
  head: {{pooling: flatten}}
training:
  epochs: {EPOCHS}
  batch_size: 32
  optimizer:
    name: adam
    learning_rate: {{choice: [3.0e-3, 1.0e-7], default: 3.0e-3}}
"""
# MedianPruner(n_startup_trials=4, n_warmup_steps=1): the first four trials complete and set the
# median (three learners and a hopeless one: a learner's value); the fifth, hopeless, falls below
# it at its second epoch, the first the pruner checks.
MEDIAN_ORDER = [LEARNS, LEARNS, HOPELESS, LEARNS, HOPELESS]


def _search(tmp_path, write_space, pruner: str, order: list[float], study: str) -> tuple[list[str], list[int]]:
    """Runs the search (as ``--epochs 3``, the resource Hyperband divides); returns its trials'
    states and the epochs each trial's MLflow run recorded."""
    settings = SearchSettings(
        space=str(write_space(SPACE)), data="digits", study=study, pruner=pruner, trials=len(order), epochs=EPOCHS,
        storage=f"journal:{tmp_path}/automl.journal", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        out=str(tmp_path / "out"), verbose=False)
    hooks = SearchHooks(log_model=False, first_trials=[{"training.optimizer.learning_rate": lr} for lr in order])
    trials = run_search(settings, hooks=hooks).trials
    assert [t.params["training.optimizer.learning_rate"] for t in trials] == order
    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
    epochs = {int(r.data.tags["automl.trial"]): len(client.get_metric_history(r.info.run_id, "val_accuracy"))
              for r in runs if "automl.trial" in r.data.tags}
    return [t.state.name for t in trials], [epochs[t.number] for t in trials]


@pytest.mark.slow
def test_the_median_pruner_stops_a_hopeless_trial_at_its_first_check(tmp_path, write_space):
    states, epochs = _search(tmp_path, write_space, "median", MEDIAN_ORDER, "median")
    assert states == ["COMPLETE"] * 4 + ["PRUNED"]
    assert epochs == [EPOCHS] * 4 + [2]


@pytest.mark.slow
def test_without_a_pruner_the_same_trials_all_run_every_epoch(tmp_path, write_space):
    states, epochs = _search(tmp_path, write_space, "none", MEDIAN_ORDER, "median")
    assert states == ["COMPLETE"] * len(MEDIAN_ORDER)
    assert epochs == [EPOCHS] * len(MEDIAN_ORDER)


@pytest.mark.slow
def test_hyperband_stops_trials_below_the_best_of_their_bracket(tmp_path, write_space):
    # HyperbandPruner(min_resource=1, max_resource=3, reduction_factor=3) has two brackets and
    # places a trial in one by a hash of the study's name and the trial's number: in study
    # "hyperband-6", trials 0-2 fall in the bracket that decides at the second epoch, where only
    # the best of fewer than three trials goes on.
    states, epochs = _search(tmp_path, write_space, "hyperband", [LEARNS, HOPELESS, HOPELESS], "hyperband-6")
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]
    assert epochs == [EPOCHS, 2, 2]
