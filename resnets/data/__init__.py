"""Datasets and loaders: `build_data(cfg.data, ...)` (resnets.data.factory) returns everything the
trainer needs."""

from .datasets import dataset_names
from .errors import DataError
from .factory import LOADERS, DataBundle, build_data

__all__ = ["LOADERS", "DataBundle", "DataError", "build_data", "dataset_names"]
