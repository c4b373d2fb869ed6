"""Fine-tuning a backbone in phases: which of its stages train in which epochs, and at what LR.

A change of what trains needs a fresh compile (Keras fixes the trainable variables of a
compiled step, on every backend), so each phase is one ``model.fit`` call. The LR follows the
configuration's schedule over the whole run, multiplied by ``fine_tune_lr`` while backbone
stages train: a head warm-up runs at the full rate, fine-tuning at about a tenth of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from automl.blocks import backbone
from automl.config import Backbone, TrialConfig
from automl.training.schedules import PhaseSchedule


@dataclass(frozen=True)
class Phase:
    start: int  # its first epoch, 0-based
    end: int  # the epoch count when it ends
    stages: int  # backbone stages that train, counted from the top
    lr_scale: float


def plan(spec: Backbone | None, stages: int, epochs: int) -> list[Phase]:
    """The phases of ``epochs`` epochs on a backbone of ``stages`` stages (one phase without one)."""
    if spec is None:
        return [Phase(0, epochs, 0, 1.0)]
    trained = {"head": 0, "top": min(spec.trainable_stages, stages), "all": stages}[spec.trainable]
    if not trained:
        return [Phase(0, epochs, 0, 1.0)]
    phases = []
    start = min(spec.warmup_epochs, epochs)
    if start:
        phases.append(Phase(0, start, 0, 1.0))
    steps = range(1, trained + 1) if spec.unfreeze_every else [trained]
    for n in steps:
        if start >= epochs:
            break
        end = epochs if n == trained or not spec.unfreeze_every else min(epochs, start + spec.unfreeze_every)
        phases.append(Phase(start, end, n, spec.fine_tune_lr))
        start = end
    return phases


def set_trainable(model: keras.Model, stages: int) -> None:
    """Let the top ``stages`` stages of ``model``'s backbone train and freeze the others. Frozen
    BatchNormalization layers run in inference mode, as Keras does for non-trainable ones."""
    nested = model.get_layer(backbone.NAME)
    found = backbone.stages(nested)
    nested.trainable = True
    for i, stage in enumerate(found):
        train = i >= len(found) - stages
        for layer in stage.layers:
            layer.trainable = train


def freeze_as_training_starts(model: keras.Model, config: TrialConfig) -> None:
    """What trains in the first phase of ``config``'s training: the recipe's LR sweep then measures
    the training the trials start with."""
    spec = config.model.backbone
    if spec is not None:
        set_trainable(model, plan(spec, backbone_stages(model), config.training.epochs)[0].stages)


def backbone_stages(model: keras.Model) -> int:
    return len(backbone.stages(model.get_layer(backbone.NAME)))


def phase_rate(rate, phase: Phase, steps_per_epoch: int):
    """The run's ``rate`` (a float or a schedule) as seen by the fresh optimizer of ``phase``."""
    if not callable(rate):
        return rate * phase.lr_scale  # a float: constant, or for ReduceLROnPlateau to lower
    if phase.start == 0 and phase.lr_scale == 1.0:
        return rate
    return PhaseSchedule(rate, phase.start * steps_per_epoch, phase.lr_scale)
