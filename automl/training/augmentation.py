"""Data augmentation from Keras preprocessing layers.

Per-image layers sit at the model's input (they act only in training, and the saved model
carries them harmlessly); MixUp and CutMix mix images *and* labels, so they run per batch
in the data feed instead.
"""

from __future__ import annotations

import keras

from automl.config import Augmentation
from automl.errors import ArchitectureError


def augmentation_layers(aug: Augmentation, channels: int) -> list[keras.layers.Layer]:
    layers = []
    if aug.flip != "none":
        layers.append(keras.layers.RandomFlip(aug.flip, name="aug_flip"))
    if aug.translate:
        layers.append(keras.layers.RandomTranslation(aug.translate, aug.translate, name="aug_translate"))
    if aug.zoom:
        layers.append(keras.layers.RandomZoom(aug.zoom, name="aug_zoom"))
    if aug.rotation:
        layers.append(keras.layers.RandomRotation(aug.rotation, name="aug_rotation"))
    if aug.contrast:
        layers.append(keras.layers.RandomContrast(aug.contrast, value_range=(0, 1), name="aug_contrast"))
    if aug.randaugment:
        if channels != 3:
            raise ArchitectureError(f"randaugment needs 3-channel images, the data has {channels}")
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 1),
                num_ops=aug.randaugment_ops,
                factor=aug.randaugment_magnitude,
                name="aug_randaugment",
            )
        )
    return layers


def batch_mixers(aug: Augmentation, seed: int | None = None) -> list[keras.layers.Layer]:
    """Layers that take {"images", "labels"} batches with one-hot labels."""
    mixers = []
    if aug.mixup:
        mixers.append(keras.layers.MixUp(alpha=aug.mixup, seed=seed))
    if aug.cutmix:
        mixers.append(keras.layers.CutMix(factor=aug.cutmix, seed=seed))
    return mixers
