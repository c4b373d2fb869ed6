"""One line per epoch on the terminal: readable in logs and CI, unlike a progress bar."""

import time

import keras

SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


class EpochPrinter(keras.callbacks.Callback):
    def __init__(self, epochs: int, prefix: str = ""):
        super().__init__()
        self.epochs, self.prefix = epochs, prefix

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = "  ".join(f"{k} {logs[k]:.4g}" for k in SHOWN if k in logs)
        seconds = time.perf_counter() - self.start
        print(f"{self.prefix}epoch {epoch + 1}/{self.epochs}  {shown}  ({seconds:.1f} s)", flush=True)
