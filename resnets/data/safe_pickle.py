"""Read CIFAR's pickled batches without letting the file run code.

`pickle.load` imports and calls whatever a file names, so a downloaded `data_batch_1` could run
any command. The real batches hold only dicts, lists, bytes/str, numbers and numpy arrays of
numeric dtype; this unpickler admits exactly what rebuilding those needs and refuses the rest.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex


def _numeric(dtype: Any) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
        raise pickle.UnpicklingError(
            f"refused: a numpy array of dtype {dtype} (data arrays are numeric)"
        )
    return dtype


def _safe_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"refused: rebuilding {cls!r} (only numpy.ndarray)")
    return _reconstruct(cls, shape, typecode)


def _safe_scalar(dtype: Any, *data: Any) -> Any:
    return scalar(_numeric(dtype), *data)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _frombuffer(buf, _numeric(dtype), shape, order)


def _latin1(text: Any, encoding: str = "utf-8") -> bytes:
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused: _codecs.encode other than str to latin1 bytes")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("refused: bytes() with arguments (only b'' is pickled so)")
    return b""


_NUMPY_CORE = ("numpy.core", "numpy._core")
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): lambda *args: _numeric(np.dtype(*args)),
    ("_codecs", "encode"): _latin1,
    # protocol 2 writes an empty bytes (a 0-image batch's data) as a call of bytes()
    **{(module, "bytes"): _empty_bytes for module in ("__builtin__", "builtins")},
    **{(f"{core}.multiarray", "_reconstruct"): _safe_reconstruct for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _safe_scalar for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _safe_frombuffer for core in _NUMPY_CORE},
}


class DataPickleUnpickler(pickle.Unpickler):
    """Python 2 batches (the official files) load with bytes keys via encoding="bytes"."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refused: it would import and call {module}.{name} on loading, so it could run "
                "code (a data batch holds only dicts, lists, bytes, str and numeric numpy arrays)"
            )
        return found


def _check_plain(value: Any, depth: int = 0) -> None:
    """What came out holds only the admitted types (a dtype's __setstate__ cannot sneak objects in)."""
    if depth > 20:
        raise pickle.UnpicklingError("refused: nested deeper than a data batch ever is")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, depth + 1)
            _check_plain(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)
    elif isinstance(value, (np.ndarray, np.generic)):
        _numeric(value.dtype)
    elif not isinstance(value, (bytes, str, int, float, type(None))):
        raise pickle.UnpicklingError(f"refused: a {type(value).__name__} (not plain data)")


def load_data_pickle(path: Path) -> Any:
    """Unpickle a dataset file that may come from a stranger; UnpicklingError if it is not data."""
    with open(path, "rb") as f:
        value = DataPickleUnpickler(f, encoding="bytes").load()
    _check_plain(value)
    return value
