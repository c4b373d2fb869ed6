"""Layer helpers shared by all block families: one place decides conv/BN/activation details."""

from __future__ import annotations

from dataclasses import dataclass

import keras

from automl.errors import ArchitectureError


@dataclass(frozen=True)
class Context:
    """Model-wide choices every block follows."""

    activation: str = "relu"
    initializer: str = "he_normal"
    batch_norm: bool = True
    batch_norm_momentum: float = 0.9
    conv_bias: bool = False
    l1: float = 0.0
    l2: float = 0.0
    input_size: tuple[int, int] = (0, 0)

    def regularizer(self):
        return keras.regularizers.L1L2(l1=self.l1, l2=self.l2) if (self.l1 or self.l2) else None

    def conv(self, x, filters: int, kernel_size, name: str, strides: int = 1, use_bias: bool | None = None):
        if strides > 1:
            self.check_downsample(x, name)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=self.conv_bias or not self.batch_norm if use_bias is None else use_bias,
            kernel_initializer=self.initializer,
            kernel_regularizer=self.regularizer(),
            name=name,
        )(x)

    def norm(self, x, name: str):
        if not self.batch_norm:
            return x
        return keras.layers.BatchNormalization(momentum=self.batch_norm_momentum, epsilon=1.001e-5, name=name)(x)

    def act(self, x, name: str):
        return keras.layers.Activation(self.activation, name=name)(x)

    def conv_bn_act(self, x, filters: int, kernel_size, name: str, strides: int = 1):
        x = self.conv(x, filters, kernel_size, f"{name}_conv", strides)
        return self.act(self.norm(x, f"{name}_bn"), f"{name}_{self.activation}")

    def bn_act(self, x, name: str):
        return self.act(self.norm(x, f"{name}_bn"), f"{name}_{self.activation}")

    def dense(self, x, units: int, name: str, activation: str | None = None):
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=self.initializer,
            kernel_regularizer=self.regularizer(),
            name=name,
        )(x)

    def pool(self, x, kind: str, name: str, size: int = 2, strides: int = 2):
        if kind == "none":
            return x
        self.check_downsample(x, name)
        layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
        return layer(size, strides=strides, padding="same", name=name)(x)

    def check_downsample(self, x, name: str) -> None:
        height, width = x.shape[1], x.shape[2]
        if height < 2 or width < 2:
            h, w = self.input_size
            raise ArchitectureError(
                f"{name} downsamples a {height}x{width} feature map: too many downsampling steps "
                f"(stem strides, pooling, strided stages) for a {h}x{w} input"
            )
