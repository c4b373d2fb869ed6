"""Blocks and builder: parameter counts of known networks prove the blocks are right."""

import math

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


def _trainable(model: keras.Model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


# Exact counts (trainable weights and batch norm's moving statistics alike), against the counts
# of the same networks built independently (keras.applications, below) or the papers' figures.
@pytest.mark.parametrize("name, inputs, total, trainable", [
    ("vgg16", IMAGENET, 138_357_544, 138_357_544),
    ("resnet50", IMAGENET, 25_636_712, 25_583_592),
    ("resnet50v2", IMAGENET, 25_621_608, 25_576_040),
    ("densenet121", IMAGENET, 8_062_504, 7_978_856),
    # Hu et al. 2018 give 28.1M; 28,088,024 trainable is the count of public SE-ResNet-50s (no
    # convolution biases under batch norm, SE with biases): keras's ResNet-50 less its 26,560
    # convolution biases, plus the SE blocks' sum over C of 2 C^2/16 + C/16 + C, 2,530,992.
    ("se_resnet50", IMAGENET, 28_141_144, 28_088_024),
    # Szegedy et al. 2014 table 1 sums to 6.8M: rounded per-layer figures without biases; the
    # table's exact count with biases is checked below against a plain-Keras build of the table.
    ("googlenet", IMAGENET, 6_998_552, 6_998_552),
    # He et al. 2015 give 0.27M for ResNet-20 with zero-padding shortcuts (269,722 trainable);
    # ours projects with 1x1 convolutions + BN at the two downsamplings: 2,752 more.
    ("resnet20", CIFAR, 274_042, 272_474),
    # Zagoruyko & Komodakis 2016 give 36.5M: layer by layer, 36,479,194 trainable (36,454,832 in
    # convolutions, 17,952 in batch norm, 6,410 in the classifier); ours adds a BN after the stem (32).
    ("wrn28_10", CIFAR, 36_497_210, 36_479_226),
])
def test_reference_parameter_counts(name, inputs, total, trainable):
    model = _reference(name, *inputs)
    assert (model.count_params(), _trainable(model)) == (total, trainable)


# keras.applications' own build of the same network, weights=None. ResNet-50 v2 differs by 7,808:
# keras leaves the biases out of the two convolutions of each block that batch norm follows
# (2 x (3x64 + 4x128 + 6x256 + 3x512) = 7,552) and has no batch norm after the stem (4 x 64 = 256),
# where our blocks take biases model-wide (conv_bias) and every stem convolution is conv-BN-ReLU.
@pytest.mark.slow
@pytest.mark.parametrize("name, application, ours_more", [
    ("vgg16", "VGG16", 0),
    ("resnet50", "ResNet50", 0),
    ("resnet50v2", "ResNet50V2", 7_808),
    ("densenet121", "DenseNet121", 0),
])
def test_reference_counts_match_keras_applications(name, application, ours_more):
    keras_count = getattr(keras.applications, application)(weights=None).count_params()
    assert _reference(name, *IMAGENET).count_params() == keras_count + ours_more


def _googlenet_table1() -> keras.Model:
    """GoogLeNet as Szegedy et al. 2014 table 1 lists it (no auxiliary heads), in plain Keras."""
    layers = keras.layers

    def conv(x, filters, size, strides=1):
        return layers.Conv2D(filters, size, strides=strides, padding="same", activation="relu")(x)

    def pool(x, strides=2):
        return layers.MaxPooling2D(3, strides=strides, padding="same")(x)

    inputs = keras.Input((224, 224, 3))
    x = pool(conv(inputs, 64, 7, 2))
    x = pool(conv(conv(x, 64, 1), 192, 3))
    table = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool",
             (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
             (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool",
             (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]
    for row in table:
        if row == "pool":
            x = pool(x)
            continue
        b1, r3, b3, r5, b5, proj = row
        x = layers.Concatenate()([conv(x, b1, 1), conv(conv(x, r3, 1), b3, 3), conv(conv(x, r5, 1), b5, 5),
                                  conv(pool(x, strides=1), proj, 1)])
    x = layers.Dropout(0.4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.Dense(1000, activation="softmax")(x))


def test_googlenet_matches_its_table():
    assert _reference("googlenet", *IMAGENET).count_params() == _googlenet_table1().count_params()


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
