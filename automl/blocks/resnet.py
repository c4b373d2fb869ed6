"""Residual blocks (He et al. 2015/2016): basic or bottleneck, post- or pre-activation (v2),
projection shortcuts, width multiplier (wide ResNet) and stochastic depth."""

import keras

from automl.blocks.common import Context
from automl.blocks.se import se_block
from automl.config import ResNetStage

EXPANSION = 4  # bottleneck output = 4 x its inner width


def _residual_branch(x, filters: int, strides: int, bottleneck: bool, preact: bool, ctx: Context, name: str):
    """The convolutions of one block; with ``preact`` the input is already BN-activated."""
    if bottleneck:
        x = ctx.conv(x, filters, 1, f"{name}_1_conv", strides=strides if not preact else 1)
        x = ctx.bn_act(x, f"{name}_1")
        x = ctx.conv(x, filters, 3, f"{name}_2_conv", strides=strides if preact else 1)
        x = ctx.bn_act(x, f"{name}_2")
        x = ctx.conv(x, filters * EXPANSION, 1, f"{name}_3_conv")
        return x if preact else ctx.norm(x, f"{name}_3_bn")
    x = ctx.conv(x, filters, 3, f"{name}_1_conv", strides=strides)
    x = ctx.bn_act(x, f"{name}_1")
    x = ctx.conv(x, filters, 3, f"{name}_2_conv")
    return x if preact else ctx.norm(x, f"{name}_2_bn")


def residual_block(x, filters: int, strides: int, cfg: ResNetStage, ctx: Context, name: str, drop_rate: float):
    out_channels = filters * EXPANSION if cfg.bottleneck else filters
    project = strides > 1 or x.shape[-1] != out_channels
    inner = ctx.bn_act(x, f"{name}_preact") if cfg.preact else x
    if project:
        shortcut = ctx.conv(inner if cfg.preact else x, out_channels, 1, f"{name}_0_conv", strides=strides)
        shortcut = shortcut if cfg.preact else ctx.norm(shortcut, f"{name}_0_bn")
    else:
        shortcut = x
    branch = _residual_branch(inner, filters, strides, cfg.bottleneck, cfg.preact, ctx, name)
    if cfg.se:
        branch = se_block(branch, cfg.se_ratio, ctx, f"{name}_se")
    if drop_rate > 0:  # stochastic depth: drop the whole branch per sample
        branch = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop_path")(branch)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, branch])
    return x if cfg.preact else ctx.act(x, f"{name}_out")


def resnet_stage(x, cfg: ResNetStage, ctx: Context, name: str, drop_rates: list[float]):
    filters = max(1, round(cfg.filters * cfg.width))
    for i in range(cfg.blocks):
        strides = cfg.strides if i == 0 else 1
        x = residual_block(x, filters, strides, cfg, ctx, f"{name}_block{i + 1}", drop_rates[i])
    return x
