"""Layer table, parameter totals and FLOPs of a named network.

python -m resnets.models.summary resnet50 --input-size 224 --num-classes 1000
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ModelError
from .registry import build_model


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def count_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """FLOPs of one forward pass on one image (a multiply-add counts as two), eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def layer_table(model: nn.Module, input_size: int, in_chans: int = 3) -> list[LayerRow]:
    """One row per leaf module that runs, in execution order, with its own parameters."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def record(mod: nn.Module, _inp, out, name: str = name) -> None:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
                own = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append(LayerRow(name, type(mod).__name__, shape, own))

            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return rows


def format_summary(model: nn.Module, input_size: int, in_chans: int = 3) -> str:
    rows = layer_table(model, input_size, in_chans)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = count_flops(model, input_size, in_chans)
    width = max(len(r.name) for r in rows) + 2
    lines = [f"{'layer':<{width}}{'type':<22}{'output shape':<24}{'params':>12}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        shape = "x".join(str(d) for d in r.output_shape)
        lines.append(f"{r.name:<{width}}{r.kind:<22}{shape:<24}{r.params:>12,}")
    lines.append("-" * len(lines[0]))
    lines.append(f"total parameters:     {total:,}")
    lines.append(f"trainable parameters: {trainable:,}")
    # Papers quote multiply-adds as "FLOPs"; flop_counter counts a multiply-add as two FLOPs.
    lines.append(f"GFLOPs ({input_size} px):    {flops / 1e9:.3f}  ({flops / 2e9:.3f} GMACs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnets.models.summary", description=__doc__)
    parser.add_argument("name", help="a name from resnets.models.list_models()")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--in-chans", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        model = build_model(
            args.name, args.num_classes, image_size=args.input_size, in_chans=args.in_chans
        )
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(model, args.input_size, args.in_chans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
