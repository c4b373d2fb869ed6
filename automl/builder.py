"""Build a Keras functional model from a TrialConfig: augmentation -> backbone or stem -> stages -> head."""

from __future__ import annotations

import keras

from automl.blocks import backbone
from automl.blocks.common import Context
from automl.blocks.densenet import densenet_stage
from automl.blocks.inception import inception_stage
from automl.blocks.resnet import resnet_stage
from automl.blocks.vgg import vgg_stage
from automl.config import Augmentation, ModelConfig, ResNetStage, TrialConfig
from automl.errors import ArchitectureError
from automl.model_size import check_size
from automl.training.augmentation import augmentation_layers


def build_model(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int, pixel_scale: float = 1.0
) -> keras.Model:
    """The model of ``config`` for images of ``input_shape`` (H, W, C) and ``num_classes`` classes.

    ``pixel_scale`` maps raw pixel values to [0, 1] inside the model. Raises ArchitectureError
    when the configuration cannot work on that input, or its weights would not fit the memory cap.
    """
    m = config.model
    if len(input_shape) != 3:
        raise ArchitectureError(f"input shape must be (height, width, channels), got {input_shape}")
    check_size(config, input_shape, num_classes, training=False)  # before Keras allocates any kernel
    ctx = Context(
        activation=m.activation,
        initializer=m.initializer,
        batch_norm=m.batch_norm,
        batch_norm_momentum=m.batch_norm_momentum,
        conv_bias=m.conv_bias,
        l1=config.regularization.l1,
        l2=config.regularization.l2,
        input_size=(input_shape[0], input_shape[1]),
    )
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(pixel_scale, name="rescale")(inputs)
    x = _augment(x, config.augmentation, input_shape)
    if m.backbone is not None:
        x = backbone.attach(x, m.backbone)
    for i, conv in enumerate(m.stem):
        x = ctx.conv_bn_act(x, conv.filters, conv.kernel_size, f"stem{i + 1}", strides=conv.strides)
        x = ctx.pool(x, conv.pool, f"stem{i + 1}_pool", size=3, strides=2)
    if m.stages:
        x = _stages(x, m, ctx, config.regularization.stochastic_depth)
    outputs = _head(x, m, ctx, num_classes)
    return keras.Model(inputs, outputs, name="automl")


def _augment(x, aug: Augmentation, input_shape):
    for layer in augmentation_layers(aug, channels=input_shape[-1]):
        x = layer(x)
    return x


def _stages(x, m: ModelConfig, ctx: Context, stochastic_depth: float):
    residual_blocks = sum(s.blocks for s in m.stages if isinstance(s, ResNetStage))
    done = 0
    for i, stage in enumerate(m.stages):
        name = f"stage{i + 1}"
        if stage.family == "vgg":
            x = vgg_stage(x, stage, ctx, name)
        elif stage.family == "inception":
            x = inception_stage(x, stage, ctx, name)
        elif stage.family == "densenet":
            x = densenet_stage(x, stage, ctx, name)
        else:  # drop rate grows linearly with depth (Huang et al. 2016)
            rates = [stochastic_depth * (done + j + 1) / residual_blocks for j in range(stage.blocks)]
            done += stage.blocks
            x = resnet_stage(x, stage, ctx, name, rates)
    last = m.stages[-1]
    if last.family == "densenet" or (isinstance(last, ResNetStage) and last.preact):
        x = ctx.bn_act(x, "post")  # pre-activation networks end un-normalised
    return x


def _head(x, m: ModelConfig, ctx: Context, num_classes: int):
    pooling = {
        "gap": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[m.head.pooling]
    x = pooling(name=f"head_{m.head.pooling}")(x)
    for i, units in enumerate(m.head.dense):
        x = ctx.dense(x, units, f"head_dense{i + 1}", activation=m.activation)
        if m.head.dropout:
            x = keras.layers.Dropout(m.head.dropout, name=f"head_dropout{i + 1}")(x)
    if m.head.dropout and not m.head.dense:
        x = keras.layers.Dropout(m.head.dropout, name="head_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
