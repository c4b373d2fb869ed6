"""VGG (Simonyan & Zisserman, 2014): n x (conv3x3 [+BN] + activation), then pooling."""

from automl.blocks.common import Context
from automl.blocks.se import se_block
from automl.config import VGGStage


def vgg_stage(x, cfg: VGGStage, ctx: Context, name: str):
    for i in range(cfg.convs):
        x = ctx.conv_bn_act(x, cfg.filters, 3, f"{name}_conv{i + 1}")
    if cfg.se:
        x = se_block(x, cfg.se_ratio, ctx, f"{name}_se")
    return ctx.pool(x, cfg.pool, f"{name}_pool")
