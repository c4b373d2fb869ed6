"""Data sets for trials: bundled digits, keras.datasets, image folders, CSV and .npz files; fixed splits."""

from automl.data.dataset import Dataset, make_dataset, subsample, without_test
from automl.data.sources import SOURCES, data_kind, load_dataset

__all__ = ["SOURCES", "Dataset", "data_kind", "load_dataset", "make_dataset", "subsample", "without_test"]
