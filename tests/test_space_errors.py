"""Every kind of bad space file gets one precise message: FILE:LINE: FIELD: what is wrong."""

import subprocess
import sys

import pytest

from automl.errors import SpaceError
from automl.space import SearchSpace

BASE_STAGE = "  stages:\n    - {family: vgg, filters: 16}\n"


@pytest.mark.parametrize(
    "body, line, field, phrase",
    [
        ("model:\n  stages:\n    - {family: resnext, filters: 16}\n", 3, "model.stages.0.family",
         "unknown family 'resnext'; allowed: 'vgg', 'inception', 'resnet', 'densenet'"),
        ("model:\n  stages:\n    - family: {choice: [vgg, resnext]}\n      filters: 16\n", 3,
         "model.stages.0.family", "unknown family 'resnext'"),
        ("model:\n" + BASE_STAGE + "training:\n  epochs: {int: [10, 2], default: 5}\n", 5,
         "training.epochs.int", "min 10 > max 2"),
        ("model:\n" + BASE_STAGE + "training:\n  optimizer:\n    name: adam\n"
         "    learning_rate: {float: [0, 0.1], log: true, default: 0.01}\n", 7,
         "training.optimizer.learning_rate.float", "log range needs min > 0"),
        ("model:\n" + BASE_STAGE + "training:\n  batch_size: {int: [16, 64], default: 128}\n", 5,
         "training.batch_size.default", "outside the range [16, 64]"),
        ("model:\n" + BASE_STAGE + "  colour: blue\n", 4, "model.colour", "unknown key"),
        ("model:\n" + BASE_STAGE + "training:\n  epochs: {int: [1, 5], default: 2, sampling: log}\n", 5,
         "training.epochs.sampling", "unknown key; a int parameter takes int, default, when, log, step"),
        ("model:\n" + BASE_STAGE + "training:\n  epochs: ten\n", 5, "training.epochs",
         "valid integer"),
        ("model:\n" + BASE_STAGE + "training:\n  optimizer:\n    name: sgd\n"
         "    momentum: {float: [0, 0.9], default: 0.5, when: {optimiser: sgd}}\n", 7,
         "training.optimizer.momentum.when.optimiser", "condition on 'optimiser', which is not a parameter"),
        ("model:\n" + BASE_STAGE + "training:\n  optimizer:\n    name: {choice: [sgd, adam]}\n"
         "    momentum: {float: [0, 0.9], default: 0.5, when: {name: nadam}}\n", 7,
         "training.optimizer.momentum.when", "condition value 'nadam' is not a possible value"),
        ("model:\n" + BASE_STAGE + "training:\n  epochs: 3\n  epochs: 4\n", 6, "training.epochs", "duplicate key"),
        ("model:\n  stages:\n    - {family: vgg, filters: 16\n", 4, None, "invalid YAML"),
        ("model:\n" + BASE_STAGE + "training:\n  optimizer:\n    name: adam\n    momentum: 0.9\n", 7,
         "training.optimizer.momentum", "unknown key"),
        ("model:\n  stages: []\n", 2, "model.stages", "give at least one stage, or a backbone"),
        ("model:\n" + BASE_STAGE + "training:\n  schedule: {name: one_cycle, warmup_epochs: 2}\n", 5,
         "training.schedule.warmup_epochs", "Input should be 0"),
        ("model:\n" + BASE_STAGE + "augmentation:\n  cutmix: {float: [0.0, 2.0], default: 1.0}\n", 5,
         "augmentation.cutmix", "less than or equal to 1"),
        ("model:\n  head:\n    dropout: 0.5\n", 1, "model", "give at least one stage, or a backbone"),
    ],
)
def test_bad_space_names_file_line_and_field(write_space, body, line, field, phrase):
    path = write_space(body)
    with pytest.raises(SpaceError) as info:
        SearchSpace.load(path)
    err = info.value
    assert (err.line, err.field) == (line, field), str(err)
    assert phrase in str(err)
    assert str(err).startswith(f"{path}:{line}: ")
    assert "\n" not in str(err)


def test_error_in_a_branch_only_reached_by_a_non_default_choice(write_space):
    path = write_space(
        """
        model:
          stages:
            - family: {choice: [vgg, resnet]}
              filters: 16
              convs: 2
        """
    )
    with pytest.raises(SpaceError) as info:
        SearchSpace.load(path)
    assert info.value.line == 5 and info.value.field == "model.stages.0.convs"
    assert "model.stages.0.family='resnet'" in str(info.value)


def test_range_end_outside_what_the_model_allows(write_space):
    path = write_space("model:\n  stages: [{family: vgg, filters: 8}]\n  head:\n"
                       "    dropout: {float: [0.0, 1.5], default: 0.2}\n")
    with pytest.raises(SpaceError, match=r":4: model.head.dropout: Input should be less than 1"):
        SearchSpace.load(path)


def test_condition_cycle_is_reported(write_space):
    path = write_space(
        """
        model:
          stages: [{family: vgg, filters: 8}]
          activation: {choice: [relu, gelu], when: {initializer: he_normal}}
          initializer: {choice: [he_normal, glorot_uniform], when: {activation: relu}}
        """
    )
    with pytest.raises(SpaceError, match="conditions form a cycle"):
        SearchSpace.load(path)


def test_unsafe_yaml_tags_are_refused(write_space):
    path = write_space("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpaceError, match=r":1: model: invalid YAML: tag .*python/object/apply.* is not allowed"):
        SearchSpace.load(path)
    path = write_space("model: !!python/name:os.system\n")
    with pytest.raises(SpaceError, match=r":1: invalid YAML: could not determine a constructor"):
        SearchSpace.load(path)


def test_missing_and_empty_files(tmp_path, write_space):
    with pytest.raises(SpaceError, match="cannot read file"):
        SearchSpace.load(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="file is empty"):
        SearchSpace.load(write_space(""))
    with pytest.raises(SpaceError, match="must be a mapping at the top level"):
        SearchSpace.load(write_space("- 1\n- 2\n"))


def test_cli_validate_exit_codes_and_one_line(write_space):
    good = write_space("model:\n  stages: [{family: vgg, filters: 8}]\n", "good.yaml")
    bad = write_space("model:\n  stages: [{family: vgg, filters: -8}]\n", "bad.yaml")
    run = [sys.executable, "-m", "automl.cli", "spaces", "validate"]
    ok = subprocess.run(run + [str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    fail = subprocess.run(run + [str(good), str(bad)], capture_output=True, text=True)
    assert fail.returncode == 2
    assert fail.stderr.strip().splitlines() == [
        f"automl: error: {bad}:2: model.stages.0.filters: Input should be greater than 0"
    ]
    for debug in (["--debug"] + run[3:] + [str(bad)], run[3:] + [str(bad), "--debug"]):
        traced = subprocess.run(run[:3] + debug, capture_output=True, text=True)
        assert "Traceback" in traced.stderr and "SpaceError" in traced.stderr
