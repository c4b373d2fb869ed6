"""Sampling: only active parameters appear, conditions resolve by scope, seeds reproduce."""

import optuna
import pytest

from automl.cli import main
from automl.config import TrialConfig
from automl.space import FixedSuggester, OptunaSuggester, SearchSpace

from .conftest import SPACES

CONDITIONAL = """
model:
  stages:
    - family: {choice: [vgg, densenet]}
      filters: {int: [8, 32], default: 16, when: {family: vgg}}
      blocks: {int: [2, 6], default: 4, when: {family: densenet}}
      growth_rate: {choice: [12, 24], when: {family: densenet}}
      se: {choice: [false, true]}
      se_ratio: {choice: [4, 8], when: {se: true}}
    - family: resnet
      filters: 32
      when: {training.optimizer.name: sgd}
training:
  optimizer:
    name: {choice: [adam, sgd]}
    momentum: {float: [0.5, 0.99], default: 0.9, when: {name: sgd}}
    nesterov: {choice: [true, false], when: {name: sgd}}
  early_stopping: {choice: [null, {patience: 3}]}
"""


def _random_configs(space, n, seed):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(OptunaSuggester(study.ask())) for _ in range(n)]


def test_only_active_parameters_are_present(write_space):
    space = SearchSpace.load(write_space(CONDITIONAL))
    configs = _random_configs(space, 40, seed=1)
    for config in configs:
        stage = config["model"]["stages"][0]
        assert ("filters" in stage) == (stage["family"] == "vgg")
        assert ("growth_rate" in stage) == ("blocks" in stage) == (stage["family"] == "densenet")
        assert ("se_ratio" in stage) == stage["se"]
        optimizer = config["training"]["optimizer"]
        assert ("momentum" in optimizer) == ("nesterov" in optimizer) == (optimizer["name"] == "sgd")
        # the conditional second stage exists only with SGD
        assert len(config["model"]["stages"]) == (2 if optimizer["name"] == "sgd" else 1)
        TrialConfig.model_validate(config)
    seen = {(c["model"]["stages"][0]["family"], c["training"]["optimizer"]["name"]) for c in configs}
    assert len(seen) == 4
    assert {str(c["training"]["early_stopping"]) for c in configs} == {"None", "{'patience': 3}"}


def test_default_configuration(write_space):
    space = SearchSpace.load(write_space(CONDITIONAL))
    assert space.default() == {
        "model": {"stages": [{"family": "vgg", "filters": 16, "se": False}]},
        "training": {"optimizer": {"name": "adam"}, "early_stopping": None},
    }


def test_conditions_may_name_later_parameters(write_space):
    space = SearchSpace.load(write_space(
        """
        model:
          stages:
            - family: vgg
              filters: 8
              convs: {choice: [1, 3], when: {model.batch_norm: false}}
          batch_norm: {choice: [true, false]}
        """
    ))
    names = [p.name for p in space.params]
    assert names.index("model.batch_norm") < names.index("model.stages.0.convs")
    config = space.sample(FixedSuggester({"model.batch_norm": False, "model.stages.0.convs": 3}))
    assert config["model"]["stages"][0]["convs"] == 3
    assert "convs" not in space.default()["model"]["stages"][0]


def test_fixed_space_is_one_configuration():
    space = SearchSpace.load(SPACES / "reference" / "resnet50.yaml")
    assert space.params == []
    assert _random_configs(space, 3, seed=0) == [space.default()] * 3


def test_cli_sample_is_reproducible(capsys):
    args = ["spaces", "sample", str(SPACES / "quick.yaml"), "--n", "4", "--seed"]
    outputs = []
    for seed in ("7", "7", "8"):
        assert main(args + [seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].count("---") == 3


@pytest.mark.parametrize("argv, message", [
    (["spaces", "sample", "x.yaml", "--n", "0"], "expected a positive integer"),
    (["spaces", "params", "x.yaml", "--input-shape", "32,32", "--classes", "10"], "expected H,W,C"),
])
def test_cli_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_numeric_conditions_compare_by_value(write_space):
    space = SearchSpace.load(write_space(
        """
        model:
          stages: [{family: vgg, filters: 8}]
        augmentation:
          mixup: {float: [0.0, 0.4], step: 0.2, default: 0.0}
          cutmix: {float: [0.0, 1.0], default: 0.5, when: {mixup: 0}}
        """
    ))
    assert space.default()["augmentation"] == {"mixup": 0.0, "cutmix": 0.5}
    assert "cutmix" not in space.sample(FixedSuggester({"augmentation.mixup": 0.2}))["augmentation"]


def test_yaml_anchors_and_merge_keys(write_space):
    space = SearchSpace.load(write_space(
        """
        model:
          stages:
            - &stage {family: resnet, filters: 16, blocks: 2}
            - {<<: *stage, filters: 32}
        """
    ))
    assert space.default()["model"]["stages"] == [
        {"family": "resnet", "filters": 16, "blocks": 2}, {"family": "resnet", "filters": 32, "blocks": 2}
    ]
