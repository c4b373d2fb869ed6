"""Blocks and builder: parameter counts of known networks prove the blocks are right."""

import keras
import pytest

from automl.builder import build_model
from automl.cli import main
from automl.config import TrialConfig
from automl.errors import ArchitectureError
from automl.space import SearchSpace

from .conftest import SPACES

IMAGENET, CIFAR = ((224, 224, 3), 1000), ((32, 32, 3), 10)


def _build(config: dict, shape=(32, 32, 3), classes=10) -> keras.Model:
    return build_model(TrialConfig.model_validate(config), shape, classes)


def _reference(name: str, shape, classes) -> keras.Model:
    return build_model(TrialConfig.model_validate(SearchSpace.load(SPACES / "reference" / f"{name}.yaml").default()),
                       shape, classes)


@pytest.mark.parametrize(
    "name, expected, tolerance, inputs",
    [
        # keras.applications counts with weights=None
        ("vgg16", 138_357_544, 0.01, IMAGENET),
        ("resnet50", 25_636_712, 0.01, IMAGENET),
        ("resnet50v2", 25_613_800, 0.01, IMAGENET),
        ("densenet121", 8_062_504, 0.01, IMAGENET),
        # papers' figures
        ("se_resnet50", 28_100_000, 0.01, IMAGENET),  # Hu et al. 2018: 28.1M
        # Szegedy et al. table 1 sums to about 6.8M; its per-layer figures are rounded and leave out
        # biases; the exact count of that architecture with biases is 7.0M.
        ("googlenet", 6_800_000, 0.03, IMAGENET),
        ("resnet20", 270_000, 0.02, CIFAR),  # He et al. 2015: 0.27M
        ("wrn28_10", 36_500_000, 0.01, CIFAR),  # Zagoruyko & Komodakis 2016: 36.5M
    ],
)
def test_reference_parameter_counts(name, expected, tolerance, inputs):
    params = _reference(name, *inputs).count_params()
    assert abs(params - expected) <= tolerance * expected, f"{name}: {params:,} vs {expected:,}"


def test_cli_params_last_line(capsys):
    assert main(["spaces", "params", str(SPACES / "reference" / "resnet20.yaml"),
                 "--input-shape", "32,32,3", "--classes", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"params: {_reference('resnet20', *CIFAR).count_params()}"
    assert any(line.startswith("stage3") for line in lines)


def test_too_many_downsamplings_for_the_input(capsys):
    stages = [{"family": "vgg", "filters": 8, "convs": 1}] * 4
    with pytest.raises(ArchitectureError, match=r"stage4_pool downsamples a 1x1 feature map.*8x8 input"):
        _build({"model": {"stages": stages}}, shape=(8, 8, 1))
    assert _build({"model": {"stages": stages[:3]}}, shape=(8, 8, 1)).output.shape == (None, 10)


def test_cli_params_bad_shape_exits_2(capsys):
    code = main(["spaces", "params", str(SPACES / "reference" / "resnet50.yaml"),
                 "--input-shape", "8,8,1", "--classes", "10"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "downsamples a 1x1 feature map" in err[0]


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("stage", [
    {"family": "vgg", "filters": 16},
    {"family": "inception", "filters": 32, "blocks": 2},
    {"family": "resnet", "filters": 16, "blocks": 2},
    {"family": "densenet", "blocks": 3, "growth_rate": 8},
])
def test_squeeze_excitation_attaches_to_every_family(stage):
    plain = _build({"model": {"stages": [stage]}})
    se = _build({"model": {"stages": [{**stage, "se": True, "se_ratio": 4}]}})
    excites = [layer for layer in se.layers if layer.name.endswith("_excite")]
    assert excites and not [layer for layer in plain.layers if layer.name.endswith("_excite")]
    expected = {"vgg": 1, "inception": 2, "resnet": 2, "densenet": 1}[stage["family"]]
    assert len(excites) == expected
    reduce = se.get_layer(excites[0].name.replace("_excite", "_reduce"))
    assert reduce.units == max(1, excites[0].input[0].shape[-1] // 4)


def test_inception_factorized_uses_1xn_and_nx1():
    model = _build({"model": {"stages": [{"family": "inception", "variant": "factorized", "filters": 64,
                                          "blocks": 1, "kernel_size": 5}]}})
    kernels = {layer.kernel_size for layer in _layers(model, keras.layers.Conv2D)}
    assert kernels == {(1, 1), (1, 5), (5, 1)}
    v1 = _build({"model": {"stages": [{"family": "inception", "filters": 64, "blocks": 1}]}})
    assert {(1, 1), (3, 3), (5, 5)} == {layer.kernel_size for layer in _layers(v1, keras.layers.Conv2D)}
    assert v1.get_layer("stage1_block1_concat").output.shape[-1] == 64


def test_resnet_variants():
    stage = {"family": "resnet", "filters": 16, "blocks": 2, "strides": 1}
    basic = _build({"model": {"stages": [stage]}})
    bottleneck = _build({"model": {"stages": [{**stage, "bottleneck": True}]}})
    assert bottleneck.get_layer("stage1_block2_add").output.shape[-1] == 64
    assert basic.get_layer("stage1_block2_add").output.shape[-1] == 16
    wide = _build({"model": {"stages": [{**stage, "width": 4}]}})
    assert wide.get_layer("stage1_block1_add").output.shape[-1] == 64
    # post-activation blocks end in an activation after the addition; pre-activation ones do not
    assert "stage1_block1_out" in [layer.name for layer in basic.layers]
    preact = _build({"model": {"stages": [{**stage, "preact": True}]}})
    names = [layer.name for layer in preact.layers]
    assert "stage1_block1_out" not in names and "stage1_block1_preact_bn" in names and "post_bn" in names


def test_stochastic_depth_grows_linearly_with_depth():
    model = _build({
        "model": {"stages": [{"family": "resnet", "filters": 8, "blocks": 2, "strides": 1},
                             {"family": "resnet", "filters": 16, "blocks": 2}]},
        "regularization": {"stochastic_depth": 0.2},
    })
    drops = [layer for layer in model.layers if layer.name.endswith("_drop_path")]
    assert [round(d.rate, 3) for d in drops] == [0.05, 0.1, 0.15, 0.2]
    assert all(d.noise_shape == (None, 1, 1, 1) for d in drops)


def test_densenet_growth_and_compression():
    model = _build({"model": {"stem": [{"filters": 16}],
                              "stages": [{"family": "densenet", "blocks": 4, "growth_rate": 12,
                                          "compression": 0.5}]}})
    assert model.get_layer("stage1_block4_concat").output.shape[-1] == 16 + 4 * 12
    assert model.get_layer("stage1_transition_conv").output.shape[-1] == (16 + 4 * 12) // 2
    assert model.get_layer("stage1_transition_pool").output.shape[1:3] == (16, 16)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (30, 17, 3), (64, 64, 3)])
def test_any_input_size_and_channels(shape):
    model = _build({"model": {"stem": [{"filters": 8, "kernel_size": 3}],
                              "stages": [{"family": "vgg", "filters": 8}, {"family": "resnet", "filters": 8}],
                              "head": {"pooling": "flatten", "dense": [16], "dropout": 0.3}}}, shape, 3)
    assert model.input_shape == (None, *shape) and model.output_shape == (None, 3)


def test_raw_pixels_are_scaled_inside_the_model():
    model = build_model(TrialConfig.model_validate({"model": {"stages": [{"family": "vgg", "filters": 4}]}}),
                        (8, 8, 1), 2, pixel_scale=1 / 255)
    assert model.layers[1].name == "rescale" and model.layers[1].scale == pytest.approx(1 / 255)


def test_model_wide_choices_reach_every_layer():
    model = _build({"model": {"activation": "gelu", "initializer": "glorot_uniform", "batch_norm": False,
                              "stages": [{"family": "vgg", "filters": 8}]},
                    "regularization": {"l1": 1e-5, "l2": 1e-4}})
    convs = _layers(model, keras.layers.Conv2D)
    assert not _layers(model, keras.layers.BatchNormalization)
    assert all(c.use_bias for c in convs)  # without BN the convolutions need their biases
    assert all(isinstance(c.kernel_initializer, keras.initializers.GlorotUniform) for c in convs)
    assert all(c.kernel_regularizer.l1 == pytest.approx(1e-5) for c in convs)
    assert {layer.activation.__name__ for layer in _layers(model, keras.layers.Activation)} == {"gelu"}
