"""What every benchmark shares: timing, machine description, and writing the JSON result."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """benchmarks/results, or $RESNETS_BENCH_RESULTS (the smoke test writes elsewhere)."""
    return Path(os.environ.get("RESNETS_BENCH_RESULTS", DEFAULT_RESULTS))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def median_time(fn: Callable[[], Any], repeats: int, sync: bool = False) -> float:
    """Median wall time of `fn()` over `repeats` calls (CUDA synchronised when `sync`)."""
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each measurement `repeats` times, alternating between them (and reversing the order
    every other round) so that drifts in machine load hit all alike; return the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            samples[name].append(fns[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def write_result(name: str, result: dict[str, Any]) -> Path:
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "machine"}, indent=2))
    return path
