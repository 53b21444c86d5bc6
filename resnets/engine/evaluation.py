"""Score a checkpoint (or published weights) on a split and write the report.

The model and data are rebuilt from the config stored in the checkpoint; only what the user set
on the command line replaces it. Every file is read with weights_only=True.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import ConfigError, check_renamed
from ..csv_cells import safe_row
from ..data import DataBundle, build_data
from ..data.datasets import FOLDER_DATASETS
from ..data.inference import InferenceFacts, inference_facts
from ..models import build_model_from_config
from ..models.fit import load_state_strictly
from ..models.pretrained import (
    ema_weights,
    parse_spec,
    preprocessing_for,
    pretrained_stats,
    state_from_file,
)
from ..models.summary import count_flops, count_macs
from ..runtime import PRECISIONS, check_runtime
from . import distributed as D
from .checkpoint import CheckpointError
from .logging import TensorBoard
from .metrics import classification_report
from .scored_weights import ScoredWeights, choose_weights, parse_use_ema
from .steps import collect_logits

log = logging.getLogger(__name__)
TTA = ("none", "flip")
CHECKPOINT_GROUPS = ("model", "data", "trainer")


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys a command line set: 'data.split=test' -> 'data.split', '+x=1' -> 'x'."""
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]


def merged_run_config(cfg: DictConfig, stored: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's config with the command line's model/data/trainer settings laid over it."""
    run = OmegaConf.create(OmegaConf.to_container(stored, resolve=True))
    for key in override_keys(overrides):
        if key.split(".")[0] not in CHECKPOINT_GROUPS:
            continue
        # a group choice (data=imagenet) replaces the node; a field (data.split=test) the value
        OmegaConf.update(run, key, OmegaConf.select(cfg, key), merge=False)
    return run


def load_strict(model: nn.Module, weights: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Load every key with matching shapes, or fail naming what does not fit."""
    problems = load_state_strictly(model, weights)
    if problems:
        raise CheckpointError(path, f"does not match model {name!r}: {'; '.join(problems)}")


class Restorable(NamedTuple):
    """What evaluate.py, export.py and predict.py rebuild a network from."""

    source: Path | str  # the checkpoint or weights file, or a torchvision/timm spec
    weights: dict[str, torch.Tensor] | None  # None: published weights, loaded when building
    state: dict | None  # the resnets checkpoint, None for bare or published weights
    run: DictConfig  # stored config with the command line's model/data/trainer laid over it
    scored: ScoredWeights  # raw or EMA, and why


def checkpoint_run(cfg: DictConfig, overrides: Sequence[str]) -> Restorable:
    """The network to score for `ckpt=` or `weights=` in `cfg`, and the weights (`use_ema`).

    The run config is the checkpoint's stored config with the command line's model/data/trainer
    settings laid over it (evaluate.py, export.py and predict.py share this). `weights=` (a state
    dict, `torchvision[:WEIGHTS]` or `timm[:model.tag]`) becomes `model.pretrained` of a run built
    from the command line: the one loader train.py uses; published weights bring their own
    resize and crop unless the command line sets them. Weights are None unless read here.
    """
    check_renamed(cfg.get("model") or {})
    ckpt = Path(cfg.ckpt) if cfg.get("ckpt") else None
    spec = None if ckpt else cfg.get("weights")
    if ckpt is None and not spec:
        raise ConfigError(
            "evaluate.py needs ckpt=PATH (a resnets checkpoint), weights=PATH|torchvision[:WEIGHTS]"
            "|timm[:model.tag] with model= and data=, or sweep=DIR"
        )
    source = ckpt or (Path(spec) if parse_spec(str(spec))[0] == "path" else None)
    parse_use_ema(cfg.get("use_ema", "auto"))  # a bad value stops before the file is read
    weights, state = state_from_file(source, False) if source else (None, None)
    if ckpt is not None and state is None:
        raise CheckpointError(
            ckpt,
            "is a bare state dict, not a resnets checkpoint; "
            "score it with weights=PATH model=NAME data=NAME",
        )
    scored = choose_weights(cfg.get("use_ema", "auto"), state, source or f"weights={spec}")
    if state is not None:
        weights = ema_weights(state, source) if scored.ema else weights
        run = merged_run_config(cfg, OmegaConf.create(state["config"]), overrides)
        # the checkpoint holds the trained weights: the ones training started from are not needed
        run.model.pretrained = None
        return Restorable(source, weights, state, run, scored)
    if OmegaConf.is_missing(cfg.model, "name") or OmegaConf.is_missing(cfg.data, "name"):
        raise ConfigError(f"{spec}: weights= needs model=NAME and data=NAME on the command line")
    run = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run.model.pretrained, run.model.pretrained_ema = str(spec), False
    pre = preprocessing_for(str(run.model.name), str(spec), field="weights")
    if pre is not None and run.data.name in FOLDER_DATASETS:
        # score published weights with their own resize and crop (image files only: in-memory
        # datasets are stored at their size)
        set_here = set(override_keys(overrides))
        for key, value in (("val_resize", pre.resize), ("val_crop", pre.crop)):
            if f"data.{key}" not in set_here:
                run.data[key] = value
    return Restorable(str(spec), None, None, run, scored)


def restore_data(
    run: DictConfig, *, device: torch.device, rank: int = 0, world_size: int = 1
) -> DataBundle:
    """The run's data, validation side (class names, statistics, loaders), on `device`."""
    t = run.trainer
    return build_data(
        run.data,
        batch_size=t.batch_size,
        eval_batch_size=t.get("eval_batch_size") or t.batch_size,
        num_workers=t.workers,
        device=device,
        seed=run.get("seed", 0),
        rank=rank,
        world_size=world_size,
        split=str(run.data.get("split", "val")),
        stats=pretrained_stats(run.model),
    )


def restore_model(
    run: DictConfig,
    weights: dict[str, torch.Tensor] | None,
    source: Path | str,
    facts: InferenceFacts,
) -> nn.Module:
    """The run's network for `facts` (classes, channels, size) with `weights` loaded strictly
    (or, with `run.model.pretrained`, through the pretrained loader, which refuses weights of
    another class count here)."""
    model = build_model_from_config(
        run.model,
        num_classes=facts.num_classes,
        in_chans=facts.in_chans,
        image_size=facts.image_size,
        adapt_head=False,
        pretrained_field="weights",
    )
    if not run.model.get("pretrained"):
        load_strict(model, weights, source, str(run.model.name))
    return model


def restore_model_and_data(
    run: DictConfig,
    weights: dict[str, torch.Tensor] | None,
    source: Path | str,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[nn.Module, DataBundle]:
    """The run's data (`restore_data`) and its network (`restore_model`) on `device`."""
    data = restore_data(run, device=device, rank=rank, world_size=world_size)
    model = restore_model(run, weights, source, inference_facts(data))
    return model.to(device), data


def report_name(cfg: DictConfig, source: Path, split: str, ema: bool) -> str:
    """The report's folder name: the checkpoint's name and every setting that changes the scores,
    so scoring last.pt, or best.pt another way, never overwrites another report."""
    parts = [source.stem]
    parts += [split] if split != "val" else []
    parts += ["ema"] if ema else []
    parts += ["flip"] if cfg.tta == "flip" else []
    # FixRes: scored at another test resolution (data.val_crop on the command line)
    crop = OmegaConf.select(cfg, "data.val_crop")
    parts += [f"{crop}px"] if crop else []
    parts += [str(cfg.precision).replace("-mixed", "")] if str(cfg.precision) != "32" else []
    return "-".join(parts)


def eval_dir_for(
    cfg: DictConfig, source: Path, default_root: Path, split: str, is_run: bool, ema: bool
) -> Path:
    """<run>/eval/<report name>/ for a run's checkpoint; <output dir>/<report name>/ otherwise."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    name = report_name(cfg, source, split, ema)
    if is_run:
        return run_dir_of(source) / "eval" / name
    return default_root / name


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def flip_warning(cfg: DictConfig, run: DictConfig) -> str | None:
    """tta=flip scores mirror images: a network trained without flips never saw them."""
    if cfg.tta != "flip" or OmegaConf.select(run, "data.augment.hflip", default=True):
        return None
    return (
        "tta=flip on a network trained without horizontal flips (data.augment.hflip=false): "
        "mirrored images are new to it (on digits, a mirrored digit is another symbol) and "
        "usually lower accuracy; use tta=none"
    )


def check_eval_precision(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """evaluate.py has one precision field, the top-level `precision`; the trainer's would be
    ignored, so it is refused (for every run of a sweep too, before any is scored)."""
    if "trainer.precision" in override_keys(overrides):
        raise ConfigError(
            f"trainer.precision={OmegaConf.select(cfg, 'trainer.precision')!r} is not an "
            f"evaluate.py setting; use the top-level field: precision=<{'|'.join(PRECISIONS)}>"
        )
    if cfg.precision not in PRECISIONS:
        raise ConfigError(
            f"precision={cfg.precision!r} is not valid; accepted: {', '.join(PRECISIONS)}"
        )


def evaluate_run(
    cfg: DictConfig, overrides: Sequence[str], default_root: Path, *, plots: bool = True
) -> dict:
    """The whole job of `python evaluate.py ckpt=... | weights=...`; returns the metrics written."""
    if cfg.tta not in TTA:
        raise ConfigError(f"tta={cfg.tta!r} is not valid; accepted: {', '.join(TTA)}")
    check_eval_precision(cfg, overrides)
    source, weights, state, run, scored = checkpoint_run(cfg, overrides)
    ckpt = Path(cfg.ckpt) if cfg.ckpt else None
    # training-only settings of the stored config (compile) do not apply to scoring
    check_runtime(
        {**OmegaConf.to_container(run.trainer), "compile": False},
        run.data,
        precision=cfg.precision,
        precision_field="precision",
    )
    info = D.init_distributed(run.trainer)
    split = str(run.data.get("split", "val"))
    warnings = [w for w in (flip_warning(cfg, run),) if w]
    for warning in warnings:
        log.warning(warning)
    t = run.trainer
    model, data = restore_model_and_data(
        run, weights, source, device=info.device, rank=info.rank, world_size=info.world_size
    )
    logits, labels, images_per_s = collect_logits(
        model, data.val, info.device, cfg.precision, cfg.tta, bool(t.get("channels_last", False))
    )
    report = classification_report(logits, labels, data.class_names)
    eval_size = int(run.data.get("val_crop") or data.image_size)
    out = eval_dir_for(cfg, source, default_root, split, is_run=ckpt is not None, ema=scored.ema)
    matrix = report.pop("confusion_matrix")
    metrics = {
        "checkpoint": str(source),
        "model": str(run.model.name),
        "data": str(run.data.name),
        "split": split,
        "use_ema": scored.ema,  # the EMA weights were scored
        "weights": scored.describe(),
        "tta": cfg.tta,
        "precision": cfg.precision,
        **report,
        "images_per_s": images_per_s * info.world_size,
        "num_params": sum(p.numel() for p in model.parameters()),
        "eval_size": eval_size,
        "gmacs": count_macs(model, eval_size, data.in_chans) / 1e9,
        "gflops": count_flops(model, eval_size, data.in_chans) / 1e9,
        "step": int(state["step"]) if state else None,
        "warnings": warnings,
        "report_dir": str(out),
    }
    if info.is_main:
        # beside the run's training curves, so the printed `tensorboard --logdir <run>/tb` shows it
        tb_dir = run_dir_of(ckpt) / "tb" / f"eval-{out.name}" if ckpt is not None else out / "tb"
        _write_report(out, metrics, matrix, data.class_names, plots, tb_dir)
    return metrics


def _write_report(
    out: Path,
    metrics: dict,
    matrix: torch.Tensor,
    class_names: list[str],
    plots: bool,
    tb_dir: Path,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(safe_row(row) for row in metrics["per_class"])
    torch.save(matrix, out / "confusion_matrix.pt")
    pngs = []
    if plots:
        # matplotlib is imported where it draws: train.py's start does not pay for it
        from .plots import confusion_figure, reliability_diagram

        reliability_diagram(metrics["reliability"], metrics["ece"], out / "reliability.png")
        confusion_figure(matrix, class_names, out / "confusion_matrix.png")
        pngs = ["reliability.png", "confusion_matrix.png"]
    tb = TensorBoard(tb_dir)
    step = metrics["step"] or 0
    tb.scalars(
        {
            f"eval/{k}": metrics[k]
            for k in ("top1", "top5", "nll", "ece", "macro_f1", "images_per_s")
        },
        step,
    )
    for png in pngs:
        tb.png(f"eval/{Path(png).stem}", out / png, step)
    tb.close()
    log.info("wrote %s (TensorBoard: tensorboard --logdir %s)", out, tb_dir.parent)


def format_table(metrics: dict) -> str:
    rows = [
        ("checkpoint", metrics["checkpoint"]),
        ("weights", metrics["weights"]),
        (
            "model / data / split",
            f"{metrics['model']} / {metrics['data']} / {metrics['split']} ({metrics['samples']} images)",
        ),
        ("top-1", f"{metrics['top1']:.2f}%"),
        ("top-5", f"{metrics['top5']:.2f}%"),
        ("NLL", f"{metrics['nll']:.4f}"),
        ("ECE (15 bins)", f"{100 * metrics['ece']:.2f}%"),
        ("macro F1", f"{metrics['macro_f1']:.4f}"),
        ("images/s", f"{metrics['images_per_s']:.0f}"),
        ("parameters", f"{metrics['num_params']:,}"),
        ("GMACs / GFLOPs", f"{metrics['gmacs']:.3f} / {metrics['gflops']:.3f} (1 MAC = 2 FLOPs)"),
        ("report", metrics.get("report_dir", "")),
    ]
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)
