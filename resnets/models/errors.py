"""The one error type of the model package: every message names the field, the value and what is accepted."""

from __future__ import annotations

from collections.abc import Sequence


class ModelError(ValueError):
    def __init__(self, field: str, value: object, accepted: Sequence[object] | str) -> None:
        if not isinstance(accepted, str):
            accepted = ", ".join(str(a) for a in accepted)
        super().__init__(f"model.{field}={value!r} is not valid; accepted: {accepted}")
        self.field = field
        self.value = value
