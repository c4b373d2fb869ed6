"""One line per epoch on the terminal: readable in logs and CI, unlike a progress bar."""

import time

import keras


class EpochPrinter(keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = "  ".join(f"{k} {logs[k]:.4g}" for k in ("loss", "accuracy", "val_loss", "val_accuracy",
                                                         "learning_rate") if k in logs)
        print(f"epoch {epoch + 1}/{self.epochs}  {shown}  ({time.perf_counter() - self.start:.1f} s)", flush=True)
