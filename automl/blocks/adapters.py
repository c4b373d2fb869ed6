"""The layers that adapt images to a backbone: kept apart from the backbone's loading so that
the model loader can register them without importing what loads models."""

from __future__ import annotations

import importlib

import keras
from keras import ops

APPLICATION_PIXELS = 255.0  # applications take 0-255 pixels; the models here feed them [0, 1]


@keras.saving.register_keras_serializable(package="automl")
class AdaptChannels(keras.layers.Layer):
    """Repeats a grey channel for a colour backbone, or averages colours for a grey one."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, x):
        if x.shape[-1] == 1:
            return ops.repeat(x, self.channels, axis=-1)
        return ops.mean(x, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="automl")
class ApplicationInput(keras.layers.Layer):
    """[0, 1] pixels to the input a ``keras.applications`` network was trained on."""

    def __init__(self, application: str, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self.preprocess = _application_module(application).preprocess_input

    def call(self, x):
        return self.preprocess(x * APPLICATION_PIXELS)

    def get_config(self):
        return {**super().get_config(), "application": self.application}


def _application_module(name: str):
    return importlib.import_module(getattr(keras.applications, name).__module__)
