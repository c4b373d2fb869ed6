"""Data sets for trials: bundled digits, .npz files; fixed train/validation/test splits."""

from automl.data.dataset import Dataset, make_dataset
from automl.data.sources import SOURCES, load_dataset

__all__ = ["SOURCES", "Dataset", "load_dataset", "make_dataset"]
