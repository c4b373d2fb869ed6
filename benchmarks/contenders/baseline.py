"""The hand-designed baseline: keras.io's "simple MNIST convnet" trained for the whole budget.

    python baseline.py --data split.npz --budget SECONDS --out result.json [--seed 0]

The model and training are the example's (two 3x3 convs with 2x2 pooling, dropout 0.5, Adam,
batch 128); only the epoch count gives way to the wall-clock budget: training stops at the
first epoch end after which another epoch would not fit. As a user would, it scales pixels by the
training images' largest value (digits' are 0-16), and resizes images smaller than the MNIST
28x28 it was written for (8x8 digits leave nothing after its two convolutions and poolings).
The epoch with the best validation accuracy is kept and evaluated once on the test split.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

MNIST_SIDE = 28


def convnet(input_shape: tuple[int, ...], classes: int, pixel_max: float) -> keras.Model:
    small = min(input_shape[:2]) < MNIST_SIDE
    return keras.Sequential([
        keras.Input(shape=input_shape),
        *([keras.layers.Resizing(MNIST_SIDE, MNIST_SIDE)] if small else []),
        keras.layers.Rescaling(1 / pixel_max),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(classes, activation="softmax"),
    ])


class Budget(keras.callbacks.Callback):
    """Records best-so-far validation accuracy against wall time; stops before the budget runs out."""

    def __init__(self, start: float, seconds: float):
        super().__init__()
        self.start, self.seconds, self.curve, self.best = start, seconds, [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.best = max(self.best, float(logs["val_accuracy"]))
        self.curve.append([round(now - self.start, 1), self.best])
        if now - self.start + (now - self.epoch_start) > self.seconds:
            self.model.stop_training = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    split = np.load(args.data)
    x_train, x_val, x_test = (split[k].reshape(*split[k].shape[:3], -1) for k in ("x_train", "x_val", "x_test"))
    classes = int(split["y_train"].max()) + 1
    y_train, y_val, y_test = (keras.utils.to_categorical(split[k], classes) for k in ("y_train", "y_val", "y_test"))
    model = convnet(x_train.shape[1:], classes, float(x_train.max()) or 1.0)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    budget = Budget(start, args.budget)
    best = keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=10**6, restore_best_weights=True)
    history = model.fit(x_train, y_train, batch_size=128, epochs=10**6, validation_data=(x_val, y_val), verbose=0,
                        callbacks=[budget, best])
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    result = {"name": "keras.io simple convnet", "test_accuracy": float(test_accuracy), "trials": 1,
              "epochs": len(history.history["loss"]), "wall_seconds": round(time.perf_counter() - start, 1),
              "curve": budget.curve, "error": None,
              "notes": "keras.io/examples/vision/mnist_convnet, trained until the budget; best epoch by val accuracy"
              + (f"; images resized to {MNIST_SIDE}x{MNIST_SIDE}" if min(x_train.shape[1:3]) < MNIST_SIDE else "")}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
