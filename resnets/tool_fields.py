"""evaluate.py, export.py and predict.py refuse training settings they would not read.

Their schemas (resnets.config: EvalConfig, ExportConfig, PredictConfig) hold only what each tool
reads. A training field on their command line (`trainer.epochs=5`, `seed=1`, `optim.lr=0.1`)
would stop at Hydra's composition with a multi-line struct error; this check runs first and
says in one line that the field is a training setting, with what the tool accepts instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import fields

from .config import EvalConfig, ExportConfig, PredictConfig, TrainConfig

TOOL_SCHEMAS = {"evaluate.py": EvalConfig, "export.py": ExportConfig, "predict.py": PredictConfig}


def _names(schema) -> set[str]:
    return {f.name for f in fields(schema)}


def _trainer_fields(schema) -> set[str]:
    trainer = next((f for f in fields(schema) if f.name == "trainer"), None)
    return _names(trainer.default_factory) if trainer is not None else set()


def training_field_message(tool: str, override: str) -> str | None:
    """One line when `override` (`key=value`, `+key=value`, `~key`) sets a training field that
    `tool` does not read; None for anything else (Hydra judges it)."""
    if override.startswith("-") or ("=" not in override and not override.startswith("~")):
        return None  # a flag (-m, --cfg job) or a bare word
    key = override.split("=", 1)[0].lstrip("+~")
    schema = TOOL_SCHEMAS[tool]
    if tool == "evaluate.py" and key == "trainer.precision":  # the one setting under another name
        from .runtime import PRECISIONS

        value = override.split("=", 1)[1] if "=" in override else None
        return (
            f"trainer.precision={value!r} is not an evaluate.py setting; use the top-level "
            f"field: precision=<{'|'.join(PRECISIONS)}>"
        )
    head, _, rest = key.partition(".")
    if head == "trainer":
        if rest and rest in _trainer_fields(schema):
            return None
    elif head in _names(schema) or head == "hydra" or head not in _names(TrainConfig):
        return None  # the tool's own field, Hydra's, or a typo Hydra names
    accepted = sorted(n for n in _names(schema) if n not in ("model", "data", "trainer"))
    accepted += ["model.*", "data.*", *sorted(f"trainer.{n}" for n in _trainer_fields(schema))]
    return (
        f"{override.lstrip('+~')} is a training setting that {tool} does not read; "
        f"accepted: {', '.join(accepted)}"
    )


def refuse_training_fields(tool: str, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and one line on stderr at the first training field in `argv`."""
    for override in sys.argv[1:] if argv is None else argv:
        message = training_field_message(tool, override)
        if message:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
