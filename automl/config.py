"""TrialConfig: the one source of truth for a trial.

A plain nested dict that validates against these models rebuilds the exact model and
training setup; search spaces are checked against the same models, so a space can only
produce configurations that build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bounds: generous for any real network, yet a typo (10^12 filters, a 10^5 kernel) fails here
# with the field's name rather than as an allocation or a hang; what they allow together is
# bounded by the size estimate (automl/size.py). Floats are finite everywhere (Strict).
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Width = Annotated[int, Field(gt=0, le=65_536)]  # channels or units (VGG16's head: 4,096)
Depth = Annotated[int, Field(gt=0, le=1_000)]  # layers or blocks of one stage (ResNet-1001: 111)
Kernel = Annotated[int, Field(gt=0, le=31)]
Stride = Annotated[int, Field(gt=0, le=16)]
Ratio = Annotated[int, Field(gt=0, le=1_024)]
Epochs = Annotated[int, Field(gt=0, le=100_000)]
EpochsOrZero = Annotated[int, Field(ge=0, le=100_000)]
EpochSpan = Annotated[float, Field(gt=0.0, le=100_000.0)]
EpochSpanOrZero = Annotated[float, Field(ge=0.0, le=100_000.0)]
Batch = Annotated[int, Field(gt=0, le=65_536)]
LearningRate = Annotated[float, Field(gt=0.0, le=10.0)]
Decay = Annotated[float, Field(ge=0.0, le=10.0)]  # weight decay, L1/L2, a minimum LR
Clip = Annotated[float, Field(gt=0.0, le=1e6)]
Epsilon = Annotated[float, Field(gt=0.0, le=1.0)]
Multiplier = Annotated[float, Field(gt=0.0, le=64.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- model -----------------------------------------------------------------------------

Activation = Literal["relu", "elu", "gelu", "selu", "silu", "swish", "leaky_relu", "mish", "tanh"]
Initializer = Literal[
    "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal", "lecun_uniform"
]
Pool = Literal["max", "avg", "none"]


class StemConv(Strict):
    """One convolution of the stem (conv [+BN] + activation), optionally followed by 3x3/2 pooling."""

    filters: Width
    kernel_size: Kernel = 3
    strides: Stride = 1
    pool: Pool = "none"


class _Stage(Strict):
    se: bool = False  # Squeeze-and-Excitation on every block of the stage
    se_ratio: Ratio = 16


class VGGStage(_Stage):
    """n x (conv3x3 [+BN] + activation), then 2x2 pooling."""

    family: Literal["vgg"]
    filters: Width
    convs: Depth = 2
    pool: Pool = "max"


class InceptionModule(Strict):
    """Branch widths of one GoogLeNet-style module (Szegedy et al., table 1)."""

    b1x1: Width
    b3x3_reduce: Width
    b3x3: Width
    b5x5_reduce: Width
    b5x5: Width
    pool_proj: Width


class InceptionStage(_Stage):
    """Inception modules, then 3x3/2 pooling.

    Widths come either from ``modules`` (explicit, one entry per module) or from ``filters``
    (the module's output width, split in GoogLeNet's 3a proportions) repeated ``blocks`` times.
    ``factorized`` replaces the nxn convolutions by 1xn then nx1 (Inception v3).
    """

    family: Literal["inception"]
    variant: Literal["v1", "factorized"] = "v1"
    filters: Width | None = None
    blocks: Depth = 2
    modules: Annotated[list[InceptionModule], Field(max_length=1_000)] | None = None
    kernel_size: Annotated[int, Field(ge=3, le=31)] = 7  # n of the factorized 1xn/nx1 pairs
    pool: Pool = "max"

    def module_widths(self) -> list[InceptionModule]:
        """The widths of each module: ``modules``, or ``filters`` split in GoogLeNet 3a's proportions
        (64, 96>128, 16>32, 32 of 256) ``blocks`` times."""
        if self.modules:
            return list(self.modules)
        f = self.filters
        b1, b3, b5 = max(1, f // 4), max(1, f // 2), max(1, f // 8)
        widths = InceptionModule(b1x1=b1, b3x3_reduce=max(1, b3 * 3 // 4), b3x3=b3, b5x5_reduce=max(1, b5 // 2),
                                 b5x5=b5, pool_proj=max(1, f - b1 - b3 - b5))
        return [widths] * self.blocks

    @model_validator(mode="after")
    def _widths_given(self):
        if (self.filters is None) == (self.modules is None):
            raise ValueError("give either filters (with blocks) or modules")
        return self


class ResNetStage(_Stage):
    """Residual blocks: basic (2 x 3x3) or bottleneck (1x1-3x3-1x1, 4x expansion)."""

    family: Literal["resnet"]
    filters: Width
    blocks: Depth = 2
    bottleneck: bool = False
    preact: bool = False  # ResNet v2: BN-activation before each convolution
    width: Multiplier = 1.0  # wide ResNet multiplier
    strides: Literal[1, 2] = 2  # of the stage's first block


class DenseNetStage(_Stage):
    """Dense block of BN-act-1x1-BN-act-3x3 layers, then a compressing transition layer."""

    family: Literal["densenet"]
    blocks: Depth  # dense layers in the block
    growth_rate: Width = 32
    bottleneck_width: Annotated[int, Field(gt=0, le=64)] = 4  # 1x1 conv width = bottleneck_width * growth_rate
    compression: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    transition: bool = True


Stage = Annotated[
    Union[VGGStage, InceptionStage, ResNetStage, DenseNetStage], Field(discriminator="family")
]
FAMILIES = ("vgg", "inception", "resnet", "densenet")


class Head(Strict):
    pooling: Literal["gap", "max", "flatten"] = "gap"
    dense: Annotated[list[Width], Field(max_length=64)] = []
    dropout: Fraction = 0.0


def _names_application(source: str) -> bool:
    return source[:1].isupper() and "/" not in source and not source.endswith(".keras")


class Backbone(Strict):
    """A trained network whose features feed the model's own stages and head (transfer learning).

    ``source`` names a ``keras.applications`` network (``ResNet50``, ``MobileNetV2``, ...) or is
    the path of a Keras model file or of a folder written by ``automl export``. The backbone's
    stages are its runs of layers at one feature-map resolution; ``cut`` and the freeze policy
    count them from the top.
    """

    source: str
    # pretrained: ImageNet for applications (from the local Keras cache), a file's own weights;
    # random: the same architecture untrained; else the path of a weights file
    weights: str = "pretrained"
    # square side images are resized to; default: their own
    input_size: Annotated[int, Field(gt=0, le=4_096)] | None = None
    cut: Annotated[int, Field(ge=0, le=1_000)] | str = 0  # stages dropped from the top, or the layer kept
    trainable: Literal["head", "top", "all"] = "head"  # which backbone stages train: none, the top ones, all
    trainable_stages: Depth = 1  # with trainable: top
    fine_tune_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # LR multiplier while backbone stages train
    warmup_epochs: EpochsOrZero = 0  # head-only epochs before any backbone stage trains
    unfreeze_every: EpochsOrZero = 0  # progressive: one more stage every this many epochs; 0: all at once

    @property
    def application(self) -> bool:
        """Whether ``source`` names a ``keras.applications`` network (else it is a path)."""
        return _names_application(self.source)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, source: str) -> str:
        if _names_application(source):
            import keras  # only spaces with a backbone pay for the import here

            if not callable(getattr(keras.applications, source, None)):
                raise ValueError(f"{source!r} is not a keras.applications network (e.g. ResNet50, MobileNetV2)")
        elif not (Path(source).is_file() or (Path(source) / "model.keras").is_file()):
            raise ValueError(f"{source}: no such model file, nor a folder with model.keras (as automl export writes)")
        return source


class ModelConfig(Strict):
    activation: Activation = "relu"
    initializer: Initializer = "he_normal"
    batch_norm: bool = True
    # 0.9 (PyTorch's choice) rather than Keras' 0.99: short trials of a few hundred steps would
    # otherwise validate with moving statistics still close to their initial values
    batch_norm_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    conv_bias: bool = False  # biases next to BN are redundant; reference VGG/ResNet keep them
    backbone: Backbone | None = None
    # e.g. [{filters: 64, kernel_size: 7, strides: 2, pool: max}] for large images
    stem: Annotated[list[StemConv], Field(max_length=64)] = []
    # with a backbone, new stages on top of its features (none is fine)
    stages: list[Stage] = Field(default=[], validate_default=True, max_length=64)
    head: Head = Head()

    @field_validator("stages")
    @classmethod
    def _features_given(cls, stages: list, info):
        if not stages and info.data.get("backbone") is None:
            raise ValueError("give at least one stage, or a backbone")
        return stages

    @model_validator(mode="after")
    def _no_stem_with_a_backbone(self):
        if self.backbone is not None and self.stem:
            raise ValueError("a model with a backbone has no stem: the backbone is its first layers")
        return self


# --- training --------------------------------------------------------------------------


class _Optimizer(Strict):
    """Field names are the keyword arguments of the matching ``keras.optimizers`` class."""

    learning_rate: LearningRate = 1e-3
    weight_decay: Decay | None = None  # decoupled, as Keras applies it
    clipnorm: Clip | None = None
    clipvalue: Clip | None = None
    global_clipnorm: Clip | None = None


class SGD(_Optimizer):
    name: Literal["sgd"]
    learning_rate: LearningRate = 0.01
    momentum: Fraction = 0.0
    nesterov: bool = False


class _AdaptiveMoments(_Optimizer):
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: Epsilon = 1e-7


class Adam(_AdaptiveMoments):
    name: Literal["adam"]
    amsgrad: bool = False


class AdamW(_AdaptiveMoments):
    name: Literal["adamw"]
    weight_decay: Decay = 0.004
    amsgrad: bool = False


class Nadam(_AdaptiveMoments):
    name: Literal["nadam"]


class Adamax(_AdaptiveMoments):
    name: Literal["adamax"]


class RMSprop(_Optimizer):
    name: Literal["rmsprop"]
    rho: Fraction = 0.9
    momentum: Fraction = 0.0
    epsilon: Epsilon = 1e-7
    centered: bool = False


class Adagrad(_Optimizer):
    name: Literal["adagrad"]
    initial_accumulator_value: Annotated[float, Field(ge=0.0, le=1e3)] = 0.1
    epsilon: Epsilon = 1e-7


class Adadelta(_Optimizer):
    name: Literal["adadelta"]
    rho: Fraction = 0.95
    epsilon: Epsilon = 1e-7


class Lion(_Optimizer):
    name: Literal["lion"]
    learning_rate: LearningRate = 1e-4
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.99


class Lamb(_AdaptiveMoments):
    name: Literal["lamb"]


Optimizer = Annotated[
    Union[SGD, Adam, AdamW, Nadam, Adamax, RMSprop, Adagrad, Adadelta, Lion, Lamb],
    Field(discriminator="name"),
]


class _Schedule(Strict):
    """Durations are in epochs (fractions allowed); a linear warmup can precede any schedule."""

    warmup_epochs: EpochSpanOrZero = 0.0


class Constant(_Schedule):
    name: Literal["constant"]


class Step(_Schedule):
    name: Literal["step"]
    every_epochs: Epochs = 30
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1


class Exponential(_Schedule):
    name: Literal["exponential"]
    decay_per_epoch: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95


class Cosine(_Schedule):
    name: Literal["cosine"]
    alpha: Fraction = 0.0  # final LR as a fraction of the initial one


class CosineRestarts(_Schedule):
    name: Literal["cosine_restarts"]
    first_epochs: EpochSpan = 10.0
    t_mul: Multiplier = 2.0
    m_mul: Multiplier = 1.0
    alpha: Fraction = 0.0


class Linear(_Schedule):
    name: Literal["linear"]
    end_factor: Fraction = 0.0


class InverseSqrt(_Schedule):
    name: Literal["inverse_sqrt"]
    timescale_epochs: EpochSpan = 1.0  # LR is constant for this long, then ~ 1/sqrt(t)


class OneCycle(_Schedule):
    """learning_rate is the peak; it is reached after pct_start of training."""

    name: Literal["one_cycle"]
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    div_factor: Annotated[float, Field(ge=1.0, le=1e6)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1.0, le=1e9)] = 1e4
    warmup_epochs: Literal[0] = 0  # pct_start is its warm-up


class Plateau(_Schedule):
    """Reduce the LR when validation loss stops improving (Keras ReduceLROnPlateau)."""

    name: Literal["plateau"]
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    patience: Epochs = 5
    min_lr: Decay = 0.0
    warmup_epochs: Literal[0] = 0  # the callback sets the rate itself, so nothing may schedule it


Schedule = Annotated[
    Union[Constant, Step, Exponential, Cosine, CosineRestarts, Linear, InverseSqrt, OneCycle, Plateau],
    Field(discriminator="name"),
]


class EarlyStopping(Strict):
    patience: Epochs = 5
    min_delta: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0
    start_from_epoch: EpochsOrZero = 0  # epochs before it watches (while a schedule's LR is still high)


class Training(Strict):
    epochs: Epochs = 10
    batch_size: Batch = 64
    optimizer: Optimizer = Adam(name="adam")
    schedule: Schedule = Constant(name="constant")
    lr_scaling_batch: Batch | None = None  # linear scaling: lr * batch_size / this
    early_stopping: EarlyStopping | None = None


class Regularization(Strict):
    l1: Decay = 0.0  # on convolution and dense kernels; l1 + l2 = elastic net
    l2: Decay = 0.0
    label_smoothing: Fraction = 0.0
    stochastic_depth: Fraction = 0.0  # drop rate of the last residual block, linear in depth


class Augmentation(Strict):
    """Keras preprocessing layers, active in training only."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    translate: Fraction = 0.0
    zoom: Fraction = 0.0
    rotation: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0  # fraction of a full turn
    contrast: Fraction = 0.0
    randaugment: bool = False
    randaugment_ops: Annotated[int, Field(gt=0, le=16)] = 2
    randaugment_magnitude: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    mixup: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0  # Beta(alpha, alpha); 0 is off
    cutmix: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # Keras CutMix factor; 0 is off


class TrialConfig(Strict):
    model: ModelConfig
    training: Training = Training()
    regularization: Regularization = Regularization()
    augmentation: Augmentation = Augmentation()
