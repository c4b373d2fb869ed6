"""Squeeze-and-Excitation (Hu et al., 2018): reweights channels; attaches to any block's output."""

import keras

from automl.blocks.common import Context


def se_block(x, ratio: int, ctx: Context, name: str):
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = ctx.dense(s, max(1, channels // ratio), f"{name}_reduce", activation=ctx.activation)
    s = ctx.dense(s, channels, f"{name}_expand", activation="sigmoid")
    return keras.layers.Multiply(name=f"{name}_excite")([x, s])
