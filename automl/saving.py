"""Loading the models automl saved: its own layers and LR schedules are registered first."""

from __future__ import annotations

from pathlib import Path


def load_model(path: str | Path, compile: bool = False):
    """The Keras model saved at ``path``; without its optimizer unless ``compile`` (inference,
    evaluation and reuse as a backbone need none, and each compiles its own)."""
    import keras

    # registered on import: the backbone adapters, the LR schedules (a fine-tuning phase's too) and the
    # View layers of a final model's test-time views
    from automl.blocks import adapters  # noqa: F401
    from automl.training import schedules, test_time  # noqa: F401

    return keras.saving.load_model(path, compile=compile)


def load_network(path: str | Path):
    """The trained network saved at ``path``: of a final model that averages several networks or
    test-time views, its first network (what a backbone reuses); else the model itself."""
    from automl.training.test_time import first_member

    return first_member(load_model(path))
