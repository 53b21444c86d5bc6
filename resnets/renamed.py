"""Config fields renamed since the first release, the one table of them.

An old name given now (command line, a YAML, `build_model(**overrides)`) is refused with one line
naming the new one; the config stored inside an older checkpoint is translated silently on
reading, so its weights still evaluate, export, fine-tune and resume. A leaf module (standard
library and OmegaConf only): the checkpoint reader, the config schema and the models use it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

# model.<old> -> model.<new>: names that meant something else to users of timm and torchvision
RENAMED_MODEL_FIELDS: dict[str, str] = {
    "base_width": "base_channels",  # timm/torchvision's base_width is the per-group bottleneck width
    # timm's stem_width is the deep stem's convolutions only; this one set every stage's width
    "stem_width": "base_channels",
    "dropout": "drop_rate",  # dropout before the classifier (timm's drop_rate)
    "block_dropout": "inner_dropout",  # dropout between a block's two convs (Wide ResNet)
    # read like timm's drop_block_rate (DropBlock); it is plain dropout inside a block
    "block_drop_rate": "inner_dropout",
    "drop_path": "drop_path_rate",  # stochastic depth of the last block (timm's drop_path_rate)
}


def renamed_message(old: str) -> str:
    return f"model.{old} was renamed to model.{RENAMED_MODEL_FIELDS[old]}"


def renamed_fields_set(model: Mapping[str, Any]) -> list[str]:
    """The old names that `model` (a model config node or keyword arguments) gives a value."""
    return [old for old in RENAMED_MODEL_FIELDS if model.get(old) is not None]


def upgrade_model_fields(model: MutableMapping[str, Any]) -> None:
    """Move old-named values to the new names in place (a stored config); drop the old keys."""
    for old, new in RENAMED_MODEL_FIELDS.items():
        if old not in model:
            continue
        value = model.pop(old)
        if value is not None and model.get(new) is None:
            model[new] = value


def upgrade_stored_config(text: str) -> str:
    """A checkpoint's stored config (YAML) with renamed model fields under their new names."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.create(text))
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not any(old in model for old in RENAMED_MODEL_FIELDS):
        return text
    upgrade_model_fields(model)
    return OmegaConf.to_yaml(OmegaConf.create(config))
