"""A checkpoint's network for inference (export.py, predict.py), on the CPU, without its data.

Checkpoints carry their inference facts (`resnets.data.inference`: classes, channels, size, the
validation preprocessing), so the training data is not read. It is read, as before, for older
checkpoints without them, and when `data.*` on the command line changes the data config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from ..data import DataBundle
from ..data.inference import InferenceFacts, inference_facts, stored_facts
from ..engine.evaluation import checkpoint_run, override_keys, restore_data, restore_model
from ..engine.scored_weights import ScoredWeights

CPU = torch.device("cpu")


@dataclass
class Restored:
    model: nn.Module  # in eval mode, on the CPU
    facts: InferenceFacts
    data: DataBundle | None  # None: rebuilt from the checkpoint's facts alone
    run: DictConfig
    source: Path | str
    state: dict | None
    scored: ScoredWeights


def cpu_only(run: DictConfig) -> DictConfig:
    """Exports and predictions run on the CPU: a run that decoded JPEGs on its GPU decodes here
    with the same transforms on the CPU."""
    if run.data.get("gpu_decode"):
        run.data.gpu_decode = False
    return run


def restore_for_inference(cfg: DictConfig, overrides: Sequence[str]) -> Restored:
    source, weights, state, run, scored = checkpoint_run(cfg, overrides)
    run = cpu_only(run)
    facts = stored_facts(state)
    data = None
    if facts is None or any(k.split(".")[0] == "data" for k in override_keys(overrides)):
        data = restore_data(run, device=CPU)
        facts = inference_facts(data)
    model = restore_model(run, weights, source, facts).to(CPU).eval()
    return Restored(model, facts, data, run, source, state, scored)
