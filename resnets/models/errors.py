"""The one error type of the model package: every message names the field, the value and what is accepted."""

from __future__ import annotations

from collections.abc import Sequence

from ..renamed import RENAMED_MODEL_FIELDS, renamed_message


class ModelError(ValueError):
    def __init__(self, field: str, value: object, accepted: Sequence[object] | str) -> None:
        if not isinstance(accepted, str):
            accepted = ", ".join(str(a) for a in accepted)
        super().__init__(f"model.{field}={value!r} is not valid; accepted: {accepted}")
        self.field = field
        self.value = value


class RenamedFieldError(ModelError):
    """A field given by the name it had before (resnets.renamed): one line naming the new one."""

    def __init__(self, old: str, value: object) -> None:
        new = RENAMED_MODEL_FIELDS[old]
        ValueError.__init__(self, f"{renamed_message(old)} (model.{new}={value!r})")
        self.field = old
        self.value = value
