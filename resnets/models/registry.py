"""Named networks: each name is only a set of arguments for `ResNet` (or the attention network)."""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..renamed import RENAMED_MODEL_FIELDS
from . import pretrained as P
from .attention_net import ResidualAttentionNet
from .errors import ModelError, RenamedFieldError
from .presets import ATTENTION_PRESETS, PRESETS, list_models
from .resnet import ResNet, stage_layout

log = logging.getLogger(__name__)
# config fields that say how to initialise and train the network, not what it is
FINETUNE_FIELDS = ("pretrained", "pretrained_ema", "freeze")

_ATTENTION_FIELDS = {"num_classes", "in_chans", "include_top", "drop_rate", "image_size"}


def build_model(
    name: str,
    num_classes: int = 1000,
    *,
    pretrained: str | None = None,
    pretrained_ema: bool = False,
    freeze: Sequence[str] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a named network; `overrides` replace any of its fields (see ResNet's arguments).

    `pretrained`: `torchvision[:WEIGHTS]`, `timm[:model.tag]` or a path (a state dict, or a resnets
    checkpoint whose `model` or, with `pretrained_ema`, `ema` weights are used); the classifier is
    re-initialised when `num_classes` differs. `freeze`: parts (stem, layer1 ...) that stay fixed.
    """
    model = _build_weighted(
        name, num_classes, overrides, pretrained, pretrained_ema, adapt_head=True
    )
    if freeze:
        _freeze(model, name, freeze)
    return model


def _build_weighted(
    name: str,
    num_classes: int,
    overrides: dict[str, Any],
    pretrained: str | None,
    pretrained_ema: bool,
    *,
    adapt_head: bool,
    field: str = "model.pretrained",
) -> nn.Module:
    if not pretrained:
        return _build(name, num_classes, overrides)
    _check_name(name)
    weights = P.load_weights(name, str(pretrained), use_ema=pretrained_ema, field=field)
    reinit_stem = False
    weights_stem = P.stem_of(weights.state)
    if name in PRESETS and weights_stem is not None:
        requested = overrides.get("stem") or PRESETS[name].get("stem", "auto")
        if requested == "auto":
            overrides = {**overrides, "stem": weights_stem}
            log.info("stem=auto kept the %s stem the weights were trained with", weights_stem)
        elif requested != weights_stem:
            reinit_stem = True
            log.warning(
                "model.stem=%s replaces the %s stem of the weights: the stem is re-initialised",
                requested,
                weights_stem,
            )
    model = _build(name, num_classes, overrides)
    P.apply_weights(model, weights, name=name, adapt_head=adapt_head, reinit_stem=reinit_stem)
    return model


def _freeze(model: nn.Module, name: str, parts: Sequence[str]) -> None:
    if not isinstance(model, ResNet):
        raise ModelError("freeze", list(parts), f"[] for {name} (freezing is for ResNet networks)")
    model.freeze(parts)


def _check_name(name: str) -> None:
    if name not in PRESETS and name not in ATTENTION_PRESETS:
        close = difflib.get_close_matches(str(name), list_models(), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}; " if close else ""
        raise ModelError("name", name, f"{hint}all: {', '.join(list_models())}")


def _build(name: str, num_classes: int, overrides: dict[str, Any]) -> nn.Module:
    if name in ATTENTION_PRESETS:
        return _build_attention(name, num_classes, overrides)
    _check_name(name)
    args = {**PRESETS[name], **overrides}
    if "layers" in overrides:
        args.pop("depth", None)  # explicit blocks per stage replace the preset's depth
    _check_known(args, _resnet_fields())
    return ResNet(num_classes=num_classes, **args)


def _build_attention(name: str, num_classes: int, overrides: Mapping[str, Any]) -> nn.Module:
    _check_known(overrides, _ATTENTION_FIELDS)
    args = {k: v for k, v in overrides.items() if k != "image_size"}
    return ResidualAttentionNet(num_classes=num_classes, **ATTENTION_PRESETS[name], **args)


def build_model_from_config(
    model_cfg: Mapping[str, Any],
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    adapt_head: bool = True,
    pretrained_field: str = "model.pretrained",
) -> nn.Module:
    """Build from a `model` config node: `name` plus fields, null meaning the preset's value.

    `adapt_head=False` (scoring published weights) refuses weights of another class count
    instead of re-initialising their classifier."""
    skip = ("name", *FINETUNE_FIELDS)
    fields = {k: v for k, v in dict(model_cfg).items() if k not in skip and v is not None}
    # OmegaConf lists become plain lists so the model never holds config objects
    fields = {
        k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in fields.items()
    }
    if fields.setdefault("in_chans", in_chans) != in_chans:
        raise ModelError(
            "in_chans", fields["in_chans"], f"{in_chans} (the data's channel count) or null"
        )
    fields.setdefault("image_size", image_size)
    name = str(model_cfg["name"])
    model = _build_weighted(
        name,
        num_classes,
        fields,
        model_cfg.get("pretrained"),
        bool(model_cfg.get("pretrained_ema") or False),
        adapt_head=adapt_head,
        field=pretrained_field,
    )
    freeze = model_cfg.get("freeze")
    if freeze:
        _freeze(model, name, list(freeze))
    return model


def check_model_fields(model_cfg: Mapping[str, Any]) -> None:
    """The field checks of `build_model_from_config` (name, known fields, depth/block/layers)
    without building anything: cheap enough to refuse a run before it logs or writes a line."""
    name = str(model_cfg["name"])
    skip = ("name", *FINETUNE_FIELDS, "in_chans", "image_size")
    fields = {k: v for k, v in dict(model_cfg).items() if k not in skip and v is not None}
    if name in ATTENTION_PRESETS:
        _check_known(fields, _ATTENTION_FIELDS)
        return
    _check_name(name)
    args = {**PRESETS[name], **fields}
    if "layers" in fields:
        args.pop("depth", None)
    _check_known(args, _resnet_fields())
    stage_layout(args.get("depth"), args.get("block"), args.get("layers"))


def _resnet_fields() -> set[str]:
    return set(inspect.signature(ResNet.__init__).parameters) - {"self", "num_classes"}


def _check_known(args: Mapping[str, Any], known: set[str]) -> None:
    for key in args:
        if key in RENAMED_MODEL_FIELDS:
            raise RenamedFieldError(key, args[key])
        if key not in known:
            raise ModelError(key, args[key], f"known fields: {', '.join(sorted(known))}")
