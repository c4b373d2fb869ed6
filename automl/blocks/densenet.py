"""DenseNet (Huang et al. 2017): BN-act-1x1-BN-act-3x3 layers whose outputs are concatenated,
then a transition layer that compresses channels and halves the resolution."""

import keras

from automl.blocks.common import Context
from automl.blocks.se import se_block
from automl.config import DenseNetStage


def dense_layer(x, cfg: DenseNetStage, ctx: Context, name: str):
    y = ctx.bn_act(x, f"{name}_0")
    y = ctx.conv(y, cfg.bottleneck_width * cfg.growth_rate, 1, f"{name}_1_conv")
    y = ctx.bn_act(y, f"{name}_1")
    y = ctx.conv(y, cfg.growth_rate, 3, f"{name}_2_conv")
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def transition(x, compression: float, ctx: Context, name: str):
    x = ctx.bn_act(x, name)
    x = ctx.conv(x, max(1, int(x.shape[-1] * compression)), 1, f"{name}_conv")
    return ctx.pool(x, "avg", f"{name}_pool")


def densenet_stage(x, cfg: DenseNetStage, ctx: Context, name: str):
    for i in range(cfg.blocks):
        x = dense_layer(x, cfg, ctx, f"{name}_block{i + 1}")
    if cfg.se:
        x = se_block(x, cfg.se_ratio, ctx, f"{name}_se")
    return transition(x, cfg.compression, ctx, f"{name}_transition") if cfg.transition else x
