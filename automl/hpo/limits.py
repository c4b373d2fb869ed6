"""Keras callbacks that end a trial for the search's sake rather than its own (see hooks.SpeedFloor)."""

from __future__ import annotations

import time

import keras
import optuna


class TooSlow(keras.callbacks.Callback):
    """Prunes a trial that trains fewer than ``floor`` images per second, measured in its first
    epoch after a few batches (the first include tracing) for a few seconds or to the epoch's
    end. A tune's search stages set the floor from the speed its final training needs: a slower
    configuration could not be the final model, so its trial stops within seconds. Raises
    Optuna's TrialPruned, which both backends record as a pruned trial."""

    SKIPPED, MEASURED = 5, 3.0  # batches before the clock starts; seconds measured at most

    def __init__(self, floor: float, batch_size: int):
        super().__init__()
        self.floor, self.batch_size = floor, batch_size
        self.start: float | None = None
        self.measured: tuple[int, float] | None = None  # batches, seconds
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if self.done or batch < self.SKIPPED:
            return
        now = time.perf_counter()
        if batch == self.SKIPPED:
            self.start = now
        elif self.start is not None:
            self.measured = (batch - self.SKIPPED, now - self.start)
            if now - self.start >= self.MEASURED:
                self._judge()

    def on_epoch_end(self, epoch, logs=None):
        if not self.done and self.measured:
            self._judge()
        self.done = True

    def _judge(self) -> None:
        self.done = True
        batches, seconds = self.measured
        speed = batches * self.batch_size / seconds
        if speed < self.floor:
            raise optuna.TrialPruned(f"trains {speed:.0f} images/s, below the {self.floor:.0f} its final training "
                                     "would need")
