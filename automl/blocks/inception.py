"""Inception modules: v1 (GoogLeNet, Szegedy et al. 2014) and v3-style factorized (1xn then nx1)."""

import keras

from automl.blocks.common import Context
from automl.blocks.se import se_block
from automl.config import InceptionModule, InceptionStage


def _factorized(x, filters: int, n: int, ctx: Context, name: str):
    x = ctx.conv_bn_act(x, filters, (1, n), f"{name}_1x{n}")
    return ctx.conv_bn_act(x, filters, (n, 1), f"{name}_{n}x1")


def inception_module(x, w: InceptionModule, variant: str, n: int, ctx: Context, name: str):
    b1 = ctx.conv_bn_act(x, w.b1x1, 1, f"{name}_1x1")
    b3 = ctx.conv_bn_act(x, w.b3x3_reduce, 1, f"{name}_3x3_reduce")
    b5 = ctx.conv_bn_act(x, w.b5x5_reduce, 1, f"{name}_5x5_reduce")
    if variant == "v1":
        b3 = ctx.conv_bn_act(b3, w.b3x3, 3, f"{name}_3x3")
        b5 = ctx.conv_bn_act(b5, w.b5x5, 5, f"{name}_5x5")
    else:  # nxn as 1xn + nx1; the 5x5 branch becomes two such pairs (Szegedy et al. 2015, fig. 6)
        b3 = _factorized(b3, w.b3x3, n, ctx, f"{name}_a")
        b5 = _factorized(_factorized(b5, w.b5x5, n, ctx, f"{name}_b1"), w.b5x5, n, ctx, f"{name}_b2")
    bp = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = ctx.conv_bn_act(bp, w.pool_proj, 1, f"{name}_pool_proj")
    return keras.layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])


def inception_stage(x, cfg: InceptionStage, ctx: Context, name: str):
    for i, widths in enumerate(cfg.module_widths()):
        block = f"{name}_block{i + 1}"
        x = inception_module(x, widths, cfg.variant, cfg.kernel_size, ctx, block)
        if cfg.se:
            x = se_block(x, cfg.se_ratio, ctx, f"{block}_se")
    return ctx.pool(x, cfg.pool, f"{name}_pool", size=3, strides=2)
