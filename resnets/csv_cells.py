"""CSV cells that a spreadsheet would run as a formula, neutralised (OWASP's CSV injection rule).

File and class names come from strangers' folders: a file `=HYPERLINK(...).png` or a class folder
`=cmd|calc` would become a live formula when predictions.csv is opened in a spreadsheet. A text
cell starting with = + - @, a tab or a carriage return gets a leading single quote; numbers are
written as they are. Every CSV the package writes goes through `safe_row`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
Row = TypeVar("Row", Mapping[str, Any], Iterable[Any])


def safe_cell(value: Any) -> Any:
    """`value`, or `'value` when it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Mapping[str, Any] | Iterable[Any]) -> Any:
    """A csv.writer row (a sequence) or a csv.DictWriter row (a mapping) with safe cells."""
    if isinstance(row, Mapping):
        return {key: safe_cell(value) for key, value in row.items()}
    return [safe_cell(value) for value in row]
