"""A model's size from its configuration and input shape alone, before Keras builds anything.

Bounds on single fields (automl/config.py) cannot stop fields that are each sane but huge
together (a 65,536-wide stage on a 4,096-pixel image); building such a model allocates its
kernels, and training it runs out of memory or never ends. So the builder and the search
refuse, with the part that is too big, any model whose estimate exceeds a cap:

- parameters: every weight, BN's moving statistics included (what ``count_params`` counts);
- training memory: the weights, their gradients and two optimizer moments (4 x 4 bytes a
  parameter), plus every layer's float32 output for one batch, kept for the backward pass.

The cap is the machine's, not the space's (one space runs on a laptop and on a GPU server), so
it is an environment variable: ``AUTOML_MAX_MEMORY_GB``, by default this machine's physical
memory. A model with a pretrained backbone is not estimated: its size is the backbone's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from automl.config import DenseNetStage, InceptionStage, ResNetStage, TrialConfig, VGGStage
from automl.errors import ArchitectureError, ModelTooLarge

MEMORY_CAP_ENV = "AUTOML_MAX_MEMORY_GB"
_FLOAT = 4  # bytes
_TRAINING_COPIES = 4  # weights, gradients and two optimizer moments (Adam's)
_RESNET_EXPANSION = 4  # keep in step with automl/blocks/resnet.py


@dataclass
class SizeEstimate:
    """Parameters and per-sample activation elements, in total and by part (``model.stages.0``...)."""

    params: int = 0
    activations: int = 0  # float32 values one sample leaves for the backward pass
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def training_bytes(self, batch_size: int) -> int:
        return _FLOAT * (_TRAINING_COPIES * self.params + batch_size * self.activations)

    def largest_part(self, batch_size: int) -> str:
        return max(self.parts, key=lambda p: _TRAINING_COPIES * self.parts[p][0] + batch_size * self.parts[p][1])


class _Walker:
    """Follows the builder's layers, tracking the feature map (h, w, c) and what each part adds."""

    def __init__(self, config: TrialConfig, input_shape: tuple[int, int, int]):
        m = config.model
        self.bias = m.conv_bias or not m.batch_norm
        self.batch_norm = m.batch_norm
        self.h, self.w, self.c = input_shape
        self.estimate = SizeEstimate()
        self.part = "model"

    def _add(self, params: int, activations: int) -> None:
        p, a = self.estimate.parts.get(self.part, (0, 0))
        self.estimate.parts[self.part] = (p + params, a + activations)
        self.estimate.params += params
        self.estimate.activations += activations

    def _map(self, channels: int | None = None) -> int:
        return self.h * self.w * (self.c if channels is None else channels)

    def conv(self, filters: int, kernel: int | tuple[int, int], strides: int = 1, channels: int | None = None) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        cin = self.c if channels is None else channels
        self.h, self.w, self.c = math.ceil(self.h / strides), math.ceil(self.w / strides), filters
        self._add(kh * kw * cin * filters + (filters if self.bias else 0), self._map())

    def norm(self) -> None:
        if self.batch_norm:
            self._add(4 * self.c, self._map())  # gamma, beta, moving mean and variance

    def act(self) -> None:
        self._add(0, self._map())

    def conv_bn_act(self, filters: int, kernel, strides: int = 1, channels: int | None = None) -> None:
        self.conv(filters, kernel, strides, channels)
        self.norm()
        self.act()

    def pool(self, kind: str = "max") -> None:
        if kind != "none":
            self.h, self.w = math.ceil(self.h / 2), math.ceil(self.w / 2)
            self._add(0, self._map())

    def se(self, ratio: int) -> None:
        reduced = max(1, self.c // ratio)
        self._add(2 * self.c * reduced + reduced + self.c, self._map())  # two dense layers; the excited map

    def dense(self, inputs: int, units: int) -> None:
        self._add(inputs * units + units, units)


def estimate_size(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> SizeEstimate | None:
    """The size of ``build_model(config, input_shape, num_classes)``; None with a backbone."""
    m = config.model
    if m.backbone is not None:
        return None
    walk = _Walker(config, input_shape)
    walk.act()  # the rescaled input
    for i, conv in enumerate(m.stem):
        walk.part = f"model.stem.{i}"
        walk.conv_bn_act(conv.filters, conv.kernel_size, conv.strides)
        walk.pool(conv.pool)
    for i, stage in enumerate(m.stages):
        walk.part = f"model.stages.{i}"
        if isinstance(stage, VGGStage):
            _vgg(walk, stage)
        elif isinstance(stage, InceptionStage):
            _inception(walk, stage)
        elif isinstance(stage, ResNetStage):
            _resnet(walk, stage)
        else:
            _densenet(walk, stage)
    last = m.stages[-1] if m.stages else None
    if isinstance(last, DenseNetStage) or (isinstance(last, ResNetStage) and last.preact):
        walk.norm()
        walk.act()
    walk.part = "model.head"
    features = walk._map() if m.head.pooling == "flatten" else walk.c
    for units in m.head.dense:
        walk.dense(features, units)
        features = units
    walk.dense(features, num_classes)
    return walk.estimate


def _vgg(walk: _Walker, stage: VGGStage) -> None:
    for _ in range(stage.convs):
        walk.conv_bn_act(stage.filters, 3)
    if stage.se:
        walk.se(stage.se_ratio)
    walk.pool(stage.pool)


def _inception(walk: _Walker, stage: InceptionStage) -> None:
    n = stage.kernel_size
    for widths in stage.module_widths():
        cin = walk.c
        for width in (widths.b1x1, widths.b3x3_reduce, widths.b5x5_reduce, widths.pool_proj):
            walk.conv_bn_act(width, 1, channels=cin)
        if stage.variant == "v1":
            walk.conv_bn_act(widths.b3x3, 3, channels=widths.b3x3_reduce)
            walk.conv_bn_act(widths.b5x5, 5, channels=widths.b5x5_reduce)
        else:  # 1xn + nx1 pairs: one for the 3x3 branch, two for the 5x5
            for width, cin_pair in ((widths.b3x3, widths.b3x3_reduce), (widths.b5x5, widths.b5x5_reduce),
                                    (widths.b5x5, widths.b5x5)):
                walk.conv_bn_act(width, (1, n), channels=cin_pair)
                walk.conv_bn_act(width, (n, 1))
        walk.c = widths.b1x1 + widths.b3x3 + widths.b5x5 + widths.pool_proj
        walk._add(0, walk._map(cin) + walk._map())  # the pooling branch's input and the concatenation
        if stage.se:
            walk.se(stage.se_ratio)
    walk.pool(stage.pool)


def _resnet(walk: _Walker, stage: ResNetStage) -> None:
    filters = max(1, round(stage.filters * stage.width))
    out = filters * _RESNET_EXPANSION if stage.bottleneck else filters
    for i in range(stage.blocks):
        strides, cin = (stage.strides if i == 0 else 1), walk.c
        if stage.preact:
            walk.norm()
            walk.act()
        if stage.bottleneck:
            walk.conv_bn_act(filters, 1, 1 if stage.preact else strides)
            walk.conv_bn_act(filters, 3, strides if stage.preact else 1)
            walk.conv(out, 1)
        else:
            walk.conv_bn_act(filters, 3, strides)
            walk.conv(filters, 3)
        if not stage.preact:
            walk.norm()
        if stage.se:
            walk.se(stage.se_ratio)
        if strides > 1 or cin != out:  # a 1x1 projection shortcut, normalised unless pre-activation
            normed = walk.batch_norm and not stage.preact
            walk._add(cin * out + (out if walk.bias else 0) + (4 * out if normed else 0), walk._map() * (1 + normed))
        walk.act()  # the addition (and, post-activation, its activation)
        if not stage.preact:
            walk.act()


def _densenet(walk: _Walker, stage: DenseNetStage) -> None:
    for _ in range(stage.blocks):
        cin = walk.c
        walk.norm()
        walk.act()
        walk.conv_bn_act(stage.bottleneck_width * stage.growth_rate, 1)
        walk.conv(stage.growth_rate, 3)
        walk.c = cin + stage.growth_rate
        walk.act()  # the concatenation
    if stage.se:
        walk.se(stage.se_ratio)
    if stage.transition:
        walk.norm()
        walk.act()
        walk.conv(max(1, int(walk.c * stage.compression)), 1)
        walk.pool("avg")


def memory_cap_bytes() -> int:
    """``AUTOML_MAX_MEMORY_GB`` in bytes, or this machine's physical memory."""
    given = os.environ.get(MEMORY_CAP_ENV, "").strip()
    if not given:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cap = float(given)
    except ValueError:
        cap = 0.0
    if not (math.isfinite(cap) and cap > 0):
        raise ArchitectureError(f"{MEMORY_CAP_ENV}={given!r}: expected a positive number of GB")
    return int(cap * 1e9)


def check_size(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int,
               training: bool = True) -> SizeEstimate | None:
    """Refuse a model whose weights (``training=False``: building only) or training memory exceed the cap,
    naming its largest part; returns the estimate."""
    size = estimate_size(config, input_shape, num_classes)
    if size is None:
        return None
    batch = config.training.batch_size if training else 0
    need = size.training_bytes(batch) if training else _FLOAT * size.params
    cap = memory_cap_bytes()
    if need > cap:
        h, w, c = input_shape
        what = f"training with batch size {batch} needs" if training else "its weights need"
        raise ModelTooLarge(size.largest_part(batch), f"model too large for {h}x{w}x{c} input: about {size.params:.3g} "
                            f"parameters; {what} about {need / 1e9:.3g} GB, above the {cap / 1e9:.3g} GB cap "
                            f"(set {MEMORY_CAP_ENV} to raise it)")
    return size
