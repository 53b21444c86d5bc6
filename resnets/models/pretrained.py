"""Start from published or saved weights: `model.pretrained` and `evaluate.py weights=`.

A spec is `torchvision[:WEIGHTS]`, `timm[:model.tag]` or a path. Library weights come through the
libraries' own loaders, so they are read from (and downloaded into) their usual caches: torch hub's
`$TORCH_HOME/hub/checkpoints` for torchvision, the Hugging Face cache for timm. The network then
adapts: a classifier of another class count is re-initialised, another input channel count adapts
the first convolution (timm's `adapt_input_conv` rule), and the stem follows the weights unless the
user forces another one.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import CheckpointError, checked_checkpoint, is_checkpoint, load_weights_file
from ..messages import described
from .errors import ModelError
from .fit import load_state_strictly
from .presets import list_models

log = logging.getLogger(__name__)
HEAD = "fc"  # the classifier's module name in every network of the registry
STEM_PREFIXES = ("conv1.", "bn1.")


class PretrainedError(ModelError):
    """Weights that cannot be found or do not fit: one line naming the spec, the file or the fix."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.field, self.value = "pretrained", None


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were evaluated with (torchvision's transforms / timm's pretrained_cfg)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int
    crop: int
    interpolation: str


@dataclass
class Weights:
    state: dict[str, torch.Tensor]
    source: str  # how messages name it: a path, or the library, tag and cached file
    preprocessing: Preprocessing | None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'torchvision' / 'torchvision:TAG' / 'timm' / 'timm:TAG' / anything else is a path."""
    for library in ("torchvision", "timm"):
        if spec == library:
            return library, None
        if spec.startswith(library + ":"):
            return library, spec.split(":", 1)[1] or None
    return "path", spec


# ----------------------------------------------------------------------------- torchvision
def torchvision_networks() -> list[str]:
    """Our networks that torchvision publishes weights for."""
    import torchvision

    theirs = set(torchvision.models.list_models(module=torchvision.models))
    return [n for n in list_models() if n in theirs]


def _torchvision_enum_member(name: str, tag: str | None, field: str, spec: str):
    import torchvision

    if name not in torchvision_networks():
        raise PretrainedError(
            f"{field}={spec!r}: torchvision has no weights for {name!r}; networks with "
            f"torchvision weights: {', '.join(torchvision_networks())}"
        )
    enum = torchvision.models.get_model_weights(name)
    tags = [*enum.__members__]  # includes DEFAULT
    if tag is None:
        return enum.DEFAULT
    if tag not in tags:
        raise PretrainedError(
            f"{field}={spec!r}: torchvision has no {tag!r} weights for {name}; accepted: "
            f"{', '.join(f'torchvision:{t}' for t in tags)}"
        )
    return enum[tag]


def _torchvision_preprocessing(member) -> Preprocessing:
    t = member.transforms()
    return Preprocessing(
        mean=tuple(t.mean),
        std=tuple(t.std),
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        interpolation=str(t.interpolation.value),
    )


def torchvision_cache_path(member) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(member.url)


def _load_torchvision(member, field: str, spec: str) -> Weights:
    path = torchvision_cache_path(member)
    try:
        # torchvision's own API: torch.hub's cache under $TORCH_HOME, download when absent
        state = member.get_state_dict(progress=False, weights_only=True, map_location="cpu")
    except OSError as err:  # URLError and friends: absent from the cache and no network
        reason = getattr(err, "reason", None) or err
        raise PretrainedError(
            f"{field}={spec!r}: weights file {path.name} is not in the torch hub cache and could "
            f"not be downloaded ({reason}); download {member.url} and place it at {path}"
        ) from err
    except Exception as err:  # a cached file that torch.load cannot read
        raise PretrainedError(
            f"{field}={spec!r}: cached weights file {path} is unreadable "
            f"({described(err)}); "
            "delete it to download it again"
        ) from err
    return Weights(dict(state), f"{spec} ({path})", _torchvision_preprocessing(member))


# ----------------------------------------------------------------------------- timm
def _timm():
    try:
        import timm
    except ImportError as err:
        raise PretrainedError(
            "model.pretrained=timm:... needs timm: pip install 'resnets[timm]'"
        ) from err
    return timm


def timm_networks() -> list[str]:
    """Our networks that timm publishes weights for (timm's own table, no network needed)."""
    timm = _timm()
    return [n for n in list_models() if timm.list_pretrained(f"{n}.*")]


def _timm_tag(name: str, tag: str | None, field: str, spec: str) -> str:
    """`model.tag` for timm: None is the network's default weights, a bare name its default."""
    timm = _timm()
    wanted = tag or name
    try:
        cfg = timm.models.get_pretrained_cfg(wanted)
    except RuntimeError:  # an architecture timm knows, with another tag
        cfg = None
    if cfg is not None and cfg.tag:
        return f"{cfg.architecture}.{cfg.tag}"
    ours = timm.list_pretrained(f"{name}.*")
    if not ours:
        raise PretrainedError(
            f"{field}={spec!r}: timm has no weights for {name!r}; networks with timm weights: "
            f"{', '.join(timm_networks())}"
        )
    raise PretrainedError(
        f"{field}={spec!r}: timm has no weights {wanted!r} for {name}; accepted: "
        f"{', '.join(f'timm:{t}' for t in ours)}"
    )


def _timm_preprocessing(cfg) -> Preprocessing:
    crop = int(cfg.input_size[-1])
    return Preprocessing(
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        resize=math.floor(crop / cfg.crop_pct),  # as timm's transforms_factory
        crop=crop,
        interpolation=str(cfg.interpolation),
    )


def timm_cache_path(tag: str) -> Path:
    """Where timm's hub download keeps the weights of `tag` (Hugging Face cache layout)."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(tag)
    from timm.models._hub import has_hf_hub

    if cfg.hf_hub_id and has_hf_hub():
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(
            repo_id=cfg.hf_hub_id.split("@")[0], repo_type="model"
        )
        return repo / "snapshots" / "main" / (cfg.hf_hub_filename or "model.safetensors")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)


def _load_timm(tag: str, field: str, spec: str) -> Weights:
    from .timm_hub import missing_and_unreachable

    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(tag)
    path = timm_cache_path(tag)
    # absent from the cache with the Hub out of reach: stop now, not after timm's minute of retries
    reason = missing_and_unreachable(cfg)
    if reason is None:
        try:
            # timm's own pretrained loading (its hub download and cache), into timm's own network
            state = timm.create_model(tag, pretrained=True).state_dict()
            return Weights(state, f"timm:{tag}", _timm_preprocessing(cfg))
        except Exception as err:
            reason = described(err)
    if path.parent.parent.name == "snapshots":
        where = (
            f"place it at {path} and write the word main into "
            f"{path.parent.parent.parent / 'refs' / 'main'}"
        )
    else:
        where = f"download {cfg.url} and place it at {path}"
    raise PretrainedError(
        f"{field}={spec!r}: timm weights {path.name} of {tag} are not in the cache and could "
        f"not be downloaded ({reason}); {where}"
    )


# ----------------------------------------------------------------------------- files
def state_from_file(path: Path, use_ema: bool) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Model weights from a resnets checkpoint (its `model`, or `ema`), a bare state dict, or a
    {'state_dict': ...} file; also the checkpoint itself (None for bare weights). One read."""
    raw = load_weights_file(path)
    if is_checkpoint(raw):
        state = checked_checkpoint(Path(path), raw)
        return (ema_weights(state, path) if use_ema else state["model"]), state
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(path, "is neither a resnets checkpoint nor a state dict of tensors")
    if use_ema:
        raise CheckpointError(
            path, "use_ema=true needs a resnets checkpoint; this is a bare state dict"
        )
    return raw, None


def ema_weights(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's EMA weights as a model state dict (or a one-line error without them)."""
    if state.get("ema") is None:
        raise CheckpointError(
            path,
            "use_ema=true but this checkpoint has no EMA weights (trainer.ema_decay was off)",
        )
    return {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}


# ----------------------------------------------------------------------------- one entry point
def preprocessing_for(
    name: str, spec: str | None, field: str = "model.pretrained"
) -> Preprocessing | None:
    """The weights' preprocessing from the libraries' tables alone (no file is read)."""
    if not spec:
        return None
    library, tag = parse_spec(str(spec))
    if library == "torchvision":
        return _torchvision_preprocessing(_torchvision_enum_member(name, tag, field, spec))
    if library == "timm":
        return _timm_preprocessing(
            _timm().models.get_pretrained_cfg(_timm_tag(name, tag, field, spec))
        )
    return None


def load_weights(
    name: str, spec: str, *, use_ema: bool = False, field: str = "model.pretrained"
) -> Weights:
    """Resolve a spec for network `name` to its weights (reading caches, or downloading)."""
    library, tag = parse_spec(str(spec))
    if library == "torchvision":
        return _load_torchvision(_torchvision_enum_member(name, tag, field, spec), field, spec)
    if library == "timm":
        return _load_timm(_timm_tag(name, tag, field, spec), field, spec)
    weights, _ = state_from_file(Path(spec), use_ema)
    return Weights(dict(weights), str(spec), None)


def stem_of(state: dict[str, torch.Tensor]) -> str | None:
    """The stem the weights were trained with: deep (three convs), imagenet (7x7) or cifar (3x3)."""
    if "conv1.0.weight" in state:
        return "deep"
    conv = state.get("conv1.weight")
    if conv is None or conv.ndim != 4:
        return None
    return "imagenet" if conv.shape[-1] == 7 else "cifar" if conv.shape[-1] == 3 else None


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """First-conv weights for another input channel count, as timm does: one channel sums the
    pretrained ones; more repeat them, scaled so the response to a uniform image is kept."""
    base = weight.shape[1]
    if in_chans == base:
        return weight
    dtype, weight = weight.dtype, weight.float()
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_chans / base)
        adapted = weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (base / in_chans)
    return adapted.to(dtype)


def apply_weights(
    model: nn.Module,
    weights: Weights,
    *,
    name: str,
    adapt_head: bool = True,
    reinit_stem: bool = False,
) -> None:
    """Load `weights` into `model` strictly, except for the adaptations the task needs."""
    state = dict(weights.state)
    own = model.state_dict()
    allowed_missing: set[str] = set()
    if reinit_stem:
        dropped = [k for k in state if k.startswith(STEM_PREFIXES)]
        for key in dropped:
            state.pop(key)
        allowed_missing |= {k for k in own if k.startswith(STEM_PREFIXES)}
    first = next((k for k, v in own.items() if v.ndim == 4), None)
    if first is not None and first in state and state[first].ndim == 4:
        theirs, ours = state[first].shape, own[first].shape
        if theirs[1] != ours[1] and (theirs[0], *theirs[2:]) == (ours[0], *ours[2:]):
            state[first] = adapt_input_conv(ours[1], state[first])
            log.info(
                "%s: first convolution %s adapted from %d to %d input channels",
                weights.source,
                first,
                theirs[1],
                ours[1],
            )
    head_keys = [k for k in state if k.startswith(HEAD + ".")]
    if head_keys and not any(k.startswith(HEAD + ".") for k in own):
        for key in head_keys:  # a backbone (include_top=false) has no classifier
            state.pop(key)
    elif f"{HEAD}.weight" in state and f"{HEAD}.weight" in own:
        theirs, ours = state[f"{HEAD}.weight"].shape[0], own[f"{HEAD}.weight"].shape[0]
        if theirs != ours:
            if not adapt_head:
                raise PretrainedError(
                    f"{weights.source}: the weights classify {theirs} classes but the data has "
                    f"{ours}; score them on data with {theirs} classes"
                )
            for key in head_keys:
                state.pop(key)
            allowed_missing |= {k for k in own if k.startswith(HEAD + ".")}
            log.info(
                "%s: classifier re-initialised for %d classes (the weights have %d)",
                weights.source,
                ours,
                theirs,
            )
    problems = load_state_strictly(model, state, allowed_missing)
    if problems:
        raise PretrainedError(
            f"{weights.source}: does not match model {name!r}: {'; '.join(problems)}"
        )
    log.info("loaded weights %s into %s", weights.source, name)


def pretrained_stats(model_cfg) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) the `model` config node's weights expect, or None (random init, or a file)."""
    pre = preprocessing_for(str(model_cfg["name"]), model_cfg.get("pretrained"))
    return None if pre is None else (pre.mean, pre.std)
