"""Optimizers: a config's fields are exactly the keyword arguments of the Keras class."""

from __future__ import annotations

import keras

OPTIMIZERS = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "adamax": keras.optimizers.Adamax,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "lion": keras.optimizers.Lion,
    "lamb": keras.optimizers.Lamb,
}


def make_optimizer(config, learning_rate) -> keras.optimizers.Optimizer:
    """``learning_rate`` (a float or schedule) replaces the config's base rate."""
    kwargs = config.model_dump(exclude={"name", "learning_rate"}, exclude_none=True)
    return OPTIMIZERS[config.name](learning_rate=learning_rate, **kwargs)
