"""Layer table, parameter totals, multiply-adds and FLOPs of a named network.

python -m resnets.models.summary resnet50 --input-size 224 --num-classes 1000 [--depth 2]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ModelError
from .layers import ZeroPadShortcut
from .registry import build_model


@dataclass
class LayerRow:
    name: str  # qualified module name; "name #k" for the k-th call of a module called repeatedly
    kind: str
    output_shape: tuple[int, ...]
    params: int  # of the module and its children, counted at its first call only
    depth: int = 1  # module tree depth (1: the network's direct children)
    macs: int = 0  # multiply-adds of this call, its children's included


def count_flops(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """FLOPs of one forward pass on one image, eval mode, counting a multiply-add as two FLOPs
    (torch.utils.flop_counter's convention): twice the "GFLOPS" of torchvision's model docs,
    which are multiply-adds (see count_macs)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def count_macs(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass on one image: what torchvision's docs and most papers
    call "FLOPs" (ResNet-50 at 224 px: 4.09 G)."""
    return count_flops(model, input_size, in_chans) // 2


def layer_table(
    model: nn.Module, input_size: int, in_chans: int = 3, depth: int | None = None
) -> list[LayerRow]:
    """One row per module call, in execution order (a parent before its children).

    `depth=None`: the leaf modules only, each with its own parameters, so the rows' parameters add
    up to the network's. `depth=N`: every module down to tree depth N (torchinfo's convention),
    each with its subtree's parameters. Identity modules, which compute nothing, are left out.
    """
    rows: list[LayerRow] = []
    open_calls: list[tuple[LayerRow, int]] = []
    counted: set[str] = set()
    hooks = []
    counter = FlopCounterMode(display=False)

    def wanted(name: str, module: nn.Module) -> bool:
        if isinstance(module, nn.Identity):
            return False
        if depth is None:
            return not list(module.children())
        return name.count(".") + 1 <= depth

    for name, module in model.named_modules():
        if not name or not wanted(name, module):
            continue

        def before(mod: nn.Module, _inp, name: str = name) -> None:
            params = 0
            if name not in counted:  # a module called again adds no parameters
                counted.add(name)
                recurse = depth is not None
                params = sum(p.numel() for p in mod.parameters(recurse=recurse))
            row = LayerRow(name, _kind(mod), (), params, name.count(".") + 1)
            rows.append(row)
            open_calls.append((row, counter.get_total_flops()))

        def after(mod: nn.Module, _inp, out) -> None:
            row, flops_before = open_calls.pop()
            row.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            row.macs = (counter.get_total_flops() - flops_before) // 2

        hooks.append(module.register_forward_pre_hook(before))
        hooks.append(module.register_forward_hook(after))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, in_chans, input_size, input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    calls = Counter(r.name for r in rows)
    seen: Counter[str] = Counter()
    for r in rows:
        if calls[r.name] > 1:
            seen[r.name] += 1
            r.name = f"{r.name} #{seen[r.name]}"
    return rows


def _kind(module: nn.Module) -> str:
    """The class name; a residual block also says which shortcut it adds."""
    kind = type(module).__name__
    shortcut = getattr(module, "downsample", None)
    if isinstance(shortcut, ZeroPadShortcut):
        kind += " +A"  # parameter-free: subsample and zero-pad (He et al. 2015, option A)
    elif isinstance(shortcut, nn.Module):
        kind += " +proj"
    return kind


def format_summary(model: nn.Module, input_size: int, in_chans: int = 3, depth: int = 2) -> str:
    rows = layer_table(model, input_size, in_chans, depth)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs = count_macs(model, input_size, in_chans)
    names = ["  " * (r.depth - 1) + r.name for r in rows]
    width = max(len(n) for n in names) + 2
    kind_width = max(len(r.kind) for r in rows) + 2
    header = (
        f"{'layer':<{width}}{'type':<{kind_width}}{'output shape':<18}{'params':>12}{'MACs':>10}"
    )
    lines = [header, "-" * len(header)]
    for name, r in zip(names, rows, strict=True):
        shape = "x".join(str(d) for d in r.output_shape[1:])  # one image: the batch dim is 1
        lines.append(
            f"{name:<{width}}{r.kind:<{kind_width}}{shape:<18}{r.params:>12,}{_si(r.macs):>10}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"rows: modules to depth {depth} (--depth), one per call; +A: shortcut A, "
        "+proj: projection shortcut"
    )
    lines.append(f"total parameters:     {total:,}")
    lines.append(f"trainable parameters: {trainable:,}")
    lines.append(
        f"multiply-adds (MACs): {macs / 1e9:.3f} G per {input_size} px image "
        "(torchvision's docs and most papers call these GFLOPS)"
    )
    lines.append(f"FLOPs:                {2 * macs / 1e9:.3f} G (1 multiply-add = 2 FLOPs)")
    return "\n".join(lines)


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnets.models.summary", description=__doc__)
    parser.add_argument("name", help="a name from resnets.models.list_models()")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument(
        "--depth", type=int, default=2, help="module tree depth to list (1: stages; 2: blocks)"
    )
    args = parser.parse_args(argv)
    try:
        model = build_model(
            args.name, args.num_classes, image_size=args.input_size, in_chans=args.in_chans
        )
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.depth < 1:
        print(f"error: --depth={args.depth} is not valid; accepted: 1 or more", file=sys.stderr)
        return 2
    print(format_summary(model, args.input_size, args.in_chans, args.depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
