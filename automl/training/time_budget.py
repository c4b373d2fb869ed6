"""Training that must end within a number of seconds (the tune's final training)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras


class TimeBudget(keras.callbacks.Callback):
    """Stops training when another epoch like the last one would not fit in ``seconds``. The
    first epoch runs whatever the budget; it includes tracing, so ``estimate`` (seconds of a
    later epoch), when known, stands in for its length.

    Given the run's LR ``schedule`` (a Keras schedule over ``epochs`` epochs of ``steps`` steps),
    it also fits the schedule into the seconds: before each epoch, the epochs still affordable at
    the last epoch's pace share out what is left of the schedule. A slow host then compresses the
    schedule's end instead of cutting it off at a high LR, and a host as fast as planned runs it
    as planned. The optimizer must then have a plain float LR: it is set once per epoch, to the
    schedule's value half-way through the epoch's share, because JAX's trainer reads the
    optimizer's state afresh only when an epoch starts (as Keras's LearningRateScheduler does).
    """

    def __init__(self, seconds: float, estimate: float | None = None, schedule=None, steps: int = 1,
                 epochs: int = 1, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.seconds, self.estimate, self.clock = seconds, estimate, clock
        self.schedule, self.steps, self.epochs = schedule, steps, epochs
        self.start: float | None = None
        self.pace = estimate  # seconds an epoch takes, as last measured
        self.done = 0.0  # epochs of the schedule run so far
        self.share = 1.0  # epochs of the schedule the current epoch runs

    def rate_at(self, epochs: float) -> float:
        return float(keras.ops.convert_to_numpy(self.schedule(epochs * self.steps)))

    def on_train_begin(self, logs=None):  # once: a phased training calls fit once per phase
        if self.start is None:
            self.start = self.epoch_start = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.clock()
        if self.schedule is None:
            return
        left = self.epochs - self.done
        affordable = math.inf
        if self.pace:
            affordable = (self.seconds - (self.epoch_start - self.start)) // self.pace
        self.share = left / max(1, min(math.ceil(left - 1e-9), affordable))
        self.model.optimizer.learning_rate = self.rate_at(self.done + self.share / 2)

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.pace = now - self.epoch_start
        if epoch == 0 and self.estimate is not None:
            self.pace = min(self.pace, self.estimate)
        if self.schedule is not None:
            self.done += self.share
            if self.done >= self.epochs - 1e-6:  # the schedule has run its course
                self.model.stop_training = True
        if now - self.start + self.pace > self.seconds:
            self.model.stop_training = True
