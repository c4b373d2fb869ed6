"""GPU throughput: training images per second of a ResNet-20 trial (search_spaces/reference/resnet20.yaml,
CIFAR-sized random images) in float32 and mixed precision, with and without XLA.

    KERAS_BACKEND=jax python benchmarks/gpu.py [--steps 200] [--batch 128] [--quick]

It trains through automl's own ``fit`` (the code path of every trial), after one warm-up
epoch that pays for tracing and compilation, so the figures are steady-state speed. Meant for
a lent GPU machine (the device tool has JAX, not TensorFlow); on a CPU it runs too (use
--quick there). Writes benchmarks/results/gpu.json and, unless --quick, its section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, markdown_table, provenance, update_results_md, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))

SPACE = ROOT / "search_spaces" / "reference" / "resnet20.yaml"


class Throughput:
    """Images per second over the epochs after the first (tracing and compilation)."""

    def __init__(self, images_per_epoch: int):
        import keras

        outer = self

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.begin = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.seconds.append(time.perf_counter() - outer.begin)

        self.images, self.seconds, self.callback = images_per_epoch, [], Timer()

    def steady(self) -> float:
        later = self.seconds[1:] or self.seconds
        return self.images / float(np.median(later))


def measure(mixed: bool, xla: bool, steps: int, batch: int, epochs: int) -> dict:
    import keras

    from automl.config import TrialConfig
    from automl.data import make_dataset
    from automl.space import SearchSpace
    from automl.training.fit import fit

    values = SearchSpace.load(str(SPACE)).default()
    config = TrialConfig.model_validate({**values, "training": {**values["training"], "batch_size": batch}})
    rng = np.random.default_rng(0)
    n = steps * batch
    data = make_dataset("random", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n),
                        x_val=rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
                        y_val=rng.integers(0, 10, batch), split_test=False)
    data.y_train[:10] = np.arange(10)  # every class present
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    timer = Throughput(n)
    try:
        result = fit(config, data, epochs=epochs, seed=0, callbacks=[timer.callback], jit_compile=xla)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Keras falls back to no XLA where a layer does not support it (TensorFlow: the augmentation layers)
    compiled = "on" if result.model.jit_compile else ("off (not supported)" if xla else "off")
    return {"precision": "mixed float16" if mixed else "float32", "XLA": compiled,
            "images_per_second": round(timer.steady()), "first_epoch_s": round(timer.seconds[0], 1),
            "params": result.params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    parser.add_argument("--quick", action="store_true", help="a smoke run (CPU): few steps, no RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.epochs = 4, 2
    import keras

    info = machine()
    info["keras_backend"] = keras.backend.backend()
    info["devices"] = devices()
    rows = [measure(mixed, xla, args.steps, args.batch, args.epochs)
            for mixed in (False, True) for xla in (False, True)]
    base = rows[0]["images_per_second"]
    for row in rows:
        row["speed-up"] = f"{row['images_per_second'] / base:.2f}x"
    table = markdown_table(rows, ["precision", "XLA", "images_per_second", "speed-up", "first_epoch_s", "params"])
    print(f"\n{table}\n\ndevices: {info['devices']}")
    print(f"wrote {write_json('gpu', {'rows': rows, 'steps': args.steps, 'batch': args.batch, 'machine': info})}")
    if not args.quick:
        update_results_md("gpu", f"""## GPU throughput (`benchmarks/gpu.py`)

ResNet-20 (`search_spaces/reference/resnet20.yaml`), 32x32x3 images, batch {args.batch}, {args.steps} steps
per epoch; steady-state speed after a warm-up epoch, on {', '.join(info['devices'])}.

{table}

{provenance(info)}
""")


def devices() -> list[str]:
    """The accelerators the Keras backend sees (CPU when there is none)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices()]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    return [keras.backend.backend()]


if __name__ == "__main__":
    main()
