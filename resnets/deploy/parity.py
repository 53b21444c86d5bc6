"""Is an exported file the trained network? Logit differences, top-1 agreement and latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch

from .formats import Logits

LATENCY_BATCHES = (1, 32)


def parity_inputs(
    loader: Iterable | None, samples: int, shape: tuple[int, int, int], seed: int
) -> torch.Tensor:
    """The first `samples` validation images as the model sees them (loader given), or that
    many standard-normal images (the scale of normalised pixels)."""
    if loader is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(samples, *shape, generator=generator)
    images, have = [], 0
    for batch, _labels in loader:
        images.append(batch.detach().float().cpu())
        have += len(batch)
        if have >= samples:
            break
    return torch.cat(images)[:samples]


def batched(
    fn: Logits, x: torch.Tensor, batch: int, progress: Callable[[int], None] | None = None
) -> torch.Tensor:
    """`fn` over `x` in chunks of `batch`; `progress(images done)` after each chunk."""
    outputs, done = [], 0
    for part in x.split(batch):
        outputs.append(fn(part))
        done += len(part)
        if progress is not None:
            progress(done)
    return torch.cat(outputs)


def compare(
    eager: Logits,
    exported: Logits,
    inputs: torch.Tensor,
    *,
    batch: int,
    tolerance: float,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Max abs logit difference and top-1 agreement over `inputs`, in chunks of `batch`;
    `progress(images done)` as the exported runtime goes through them."""
    reference = batched(eager, inputs, batch).float()
    candidate = batched(exported, inputs, batch, progress).float()
    if candidate.shape != reference.shape:
        return {
            "samples": len(inputs),
            "max_abs_diff": float("inf"),
            "top1_agreement": 0.0,
            "passed": False,
            "reason": f"output shape {tuple(candidate.shape)} != eager {tuple(reference.shape)}",
        }
    diff = (candidate - reference).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    if not torch.isfinite(candidate).all():
        max_diff = float("inf")
    agree = (candidate.argmax(1) == reference.argmax(1)).float().mean().item()
    return {
        "samples": len(inputs),
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(diff.mean()) if diff.numel() else 0.0,
        "top1_agreement": 100.0 * agree,
        "passed": max_diff <= tolerance,
    }


def latency_table(
    runners: dict[str, Logits],
    shape: tuple[int, int, int],
    repeats: int,
    batches: Iterable[int] = LATENCY_BATCHES,
    static_batch: bool = False,
) -> dict[str, dict[str, float | None]]:
    """{runner: {"batch1": ms/image, "batch32": ms/image}}: the median of `repeats` timed calls
    after one warm-up. The runners take turns call by call, so a busy machine slows them alike.
    A fixed-batch export runs only batch 1."""
    out: dict[str, dict[str, float | None]] = {name: {} for name in runners}
    for batch in batches:
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        active = {
            name: fn
            for name, fn in runners.items()
            if not (static_batch and name != "eager" and batch != 1)
        }
        times: dict[str, list[float]] = {name: [] for name in active}
        for fn in active.values():
            fn(x)  # warm-up: allocations, lazy initialisation
        for _ in range(max(1, repeats)):
            for name, fn in active.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
        for name in runners:
            key = f"batch{batch}"
            out[name][key] = (
                1000.0 * statistics.median(times[name]) / batch if name in times else None
            )
    return out


def eager_logits(model: torch.nn.Module) -> Logits:
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run
