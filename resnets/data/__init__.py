"""Datasets and loaders: `build_data(cfg.data, ...)` (resnets.data.factory) returns everything the
trainer needs."""

from .errors import DataError
from .factory import DATASETS, DataBundle, build_data

__all__ = ["DATASETS", "DataBundle", "DataError", "build_data"]
