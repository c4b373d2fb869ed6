"""The spaces we ship validate, and what they sample builds on the image sizes they are meant for."""

import optuna
import pytest

from automl.builder import build_model
from automl.cli import main
from automl.config import TrialConfig
from automl.space import OptunaSuggester, SearchSpace

from .conftest import SPACES

READY = ["quick", "small_images", "vgg", "inception", "resnet", "densenet", "se_resnet", "full"]
REFERENCE = ["vgg16", "resnet50", "resnet50v2", "densenet121", "se_resnet50", "googlenet", "resnet20", "wrn28_10"]


def test_every_shipped_file_exists_and_validates(capsys):
    files = [SPACES / f"{n}.yaml" for n in [*READY, "transfer"]] + [SPACES / "reference" / f"{n}.yaml"
                                                                     for n in REFERENCE]
    assert main(["spaces", "validate", *map(str, files)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)
    assert SearchSpace.load(SPACES / "full.yaml").params  # searchable
    assert all(not SearchSpace.load(SPACES / "reference" / f"{n}.yaml").params for n in REFERENCE)


@pytest.mark.parametrize("name", READY)
def test_sampled_configurations_build(name):
    space = SearchSpace.load(SPACES / f"{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    shapes = [(28, 28, 1), (32, 32, 3)] + ([(8, 8, 1)] if name == "quick" else [])
    for i in range(3):
        config = TrialConfig.model_validate(space.sample(OptunaSuggester(study.ask())))
        model = build_model(config, shapes[i % len(shapes)], 10)
        assert model.output_shape == (None, 10)
