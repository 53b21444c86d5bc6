"""export.py's job: checkpoint -> files in deployment formats, each checked against eager.

The network and its data are rebuilt exactly as evaluate.py does (`checkpoint_run`,
`restore_model`); each written file is loaded back through its own runtime and must
give the eager logits within `tolerance` on real validation images, or the run exits 1 with the
file kept and marked failed in model.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..data import DataError
from ..engine.evaluation import restore_data
from ..output_paths import MIN_FREE_BYTES, check_output_dir
from . import formats, parity
from .restore import Restored, restore_for_inference

log = logging.getLogger(__name__)
PARITY_DATA = ("auto", "val", "random")
MANIFEST = formats.MANIFEST


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("resnets", "torch", "torchvision", *formats.ONNX_PACKAGES):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = None
    return out


def check_export_config(cfg: DictConfig) -> list[str]:
    """The formats to write; every value is checked before the checkpoint is read."""
    if not cfg.ckpt:
        raise ConfigError("export.py needs ckpt=PATH (a resnets checkpoint)")
    accepted = (*formats.FORMATS, "all")
    if cfg.format not in accepted:
        raise ConfigError(f"format={cfg.format!r} is not valid; accepted: {', '.join(accepted)}")
    if cfg.parity_data not in PARITY_DATA:
        raise ConfigError(
            f"parity_data={cfg.parity_data!r} is not valid; accepted: {', '.join(PARITY_DATA)}"
        )
    if cfg.parity_samples < 1:
        raise ConfigError(
            f"parity_samples={cfg.parity_samples!r} is not valid; accepted: a positive integer"
        )
    if not cfg.tolerance >= 0:
        raise ConfigError(f"tolerance={cfg.tolerance!r} is not valid; accepted: a number >= 0")
    if cfg.latency_repeats < 1:
        raise ConfigError(
            f"latency_repeats={cfg.latency_repeats!r} is not valid; accepted: a positive integer"
        )
    wanted = list(formats.FORMATS) if cfg.format == "all" else [str(cfg.format)]
    if "onnx" in wanted and cfg.opset is not None:
        low, high = formats.ONNX_OPSETS
        if not low <= cfg.opset <= high:
            raise ConfigError(
                f"opset={cfg.opset!r} is not valid; accepted: null (the exporter's default) or "
                f"{low} to {high} (torch.onnx's dynamo exporter)"
            )
    if "onnx" in wanted:
        missing = formats.missing_onnx_packages()
        if missing:
            raise ConfigError(
                f"format={cfg.format} needs {', '.join(formats.ONNX_PACKAGES)}; not installed: "
                f"{', '.join(missing)} (pip install -e '.[export]')"
            )
    return wanted


def export_dir_for(cfg: DictConfig, ckpt: Path, ema: bool) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / ("export-ema" if ema else "export")


def export_checkpoint(cfg: DictConfig, overrides: Sequence[str]) -> tuple[dict, Path]:
    """Write every requested format and model.json; returns (manifest, its path).

    Raises ConfigError/CheckpointError/DataError/ModelError for bad input before writing.
    """
    wanted = check_export_config(cfg)
    restored = restore_for_inference(cfg, overrides)
    pre = restored.facts.preprocessing
    source = Path(restored.source)
    out = export_dir_for(cfg, source, restored.scored.ema)
    # before any work: a writable folder with room for each format (about the checkpoint's size)
    check_output_dir(out, "output_dir", MIN_FREE_BYTES + len(wanted) * source.stat().st_size)
    inputs, parity_data = parity_images(cfg, restored)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest_base(restored)
    manifest_path = out / MANIFEST
    previous = _read_previous(manifest_path, manifest["source"]["sha256"])
    manifest["exports"] = previous.get("exports", {})
    onnx_metadata = {
        "class_names": json.dumps(restored.facts.class_names),
        "preprocessing": json.dumps(pre),
        "architecture": str(restored.run.model.name),
        "source_sha256": manifest["source"]["sha256"],
        "weights": restored.scored.label,
    }
    eager = parity.eager_logits(restored.model)
    for fmt in wanted:
        path = out / formats.FILE_NAMES[fmt]
        entry: dict[str, Any] = {"file": path.name, "format": fmt}
        entry["dynamic_batch"] = bool(cfg.dynamic_batch)
        if fmt == "onnx":
            entry["opset"] = cfg.opset
        manifest["exports"][fmt] = entry
        written = _write_format(cfg, fmt, restored, path, entry, onnx_metadata)
        if written:
            entry.update(_check_format(cfg, fmt, path, eager, inputs, parity_data, pre))
        _write_manifest(manifest_path, manifest)
    return manifest, manifest_path


def parity_progress(fmt: str, total: int) -> Callable[[int], None]:
    """Logs `parity N/M` at each quarter of the images: a slow runtime is not silent."""
    logged = [0]

    def report(done: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter > logged[0]:
            logged[0] = quarter
            log.info("%s: parity %d/%d images", fmt, done, total)

    return report


def _latency(cfg: DictConfig, fmt: str, eager, exported, shape) -> dict:
    """{"latency_ms_per_image": ...} at batch 1 and 32, or {} with `latency=false`."""
    if not cfg.latency:
        log.info("%s: latency not measured (latency=false)", fmt)
        return {}
    log.info("%s: latency at batch 1 and 32 (%d timed calls each)", fmt, cfg.latency_repeats)
    table = parity.latency_table(
        {"eager": eager, fmt: exported},
        shape,
        int(cfg.latency_repeats),
        static_batch=not cfg.dynamic_batch,
    )
    return {"latency_ms_per_image": table}


def parity_images(cfg: DictConfig, restored: Restored) -> tuple[torch.Tensor, str]:
    """(images the exported files are compared on, "val" or "random"). `auto` takes the
    validation images when the data is there and random ones (logged) when it is not."""
    facts, data = restored.facts, restored.data
    shape = (facts.in_chans, *(2 * [int(facts.preprocessing["input_size"])]))
    kind = str(cfg.parity_data)
    if kind != "random" and data is None:
        try:
            data = restore_data(restored.run, device=torch.device("cpu"))
        except DataError as err:
            if kind == "val":
                raise
            log.warning(
                "parity_data=auto: the validation data is not there (%s); random images", err
            )
            kind = "random"
    kind = "val" if kind == "auto" else kind
    loader = data.val if kind == "val" and data is not None else None
    return parity.parity_inputs(loader, int(cfg.parity_samples), shape, cfg.seed), kind


def _write_format(cfg, fmt: str, restored: Restored, path: Path, entry: dict, metadata) -> bool:
    """Write one file; a failed export is recorded in `entry` (the run goes on to the next)."""
    start = time.perf_counter()
    log.info("%s: exporting %s", fmt, path)
    try:
        formats.write(
            fmt,
            restored.model,
            path,
            in_chans=restored.facts.in_chans,
            size=int(restored.facts.preprocessing["input_size"]),
            dynamic_batch=bool(cfg.dynamic_batch),
            opset=cfg.opset,
            metadata=metadata,
        )
    except formats.ExportError as err:
        entry.update(status="failed", failure=str(err))
        log.error("%s", err)
        return False
    entry["export_seconds"] = round(time.perf_counter() - start, 2)
    entry["bytes"] = path.stat().st_size
    log.info("%s: written in %.1f s (%d bytes)", fmt, entry["export_seconds"], entry["bytes"])
    if fmt == "onnx":
        entry["opset"] = formats.onnx_opset(path)
    return True


def _check_format(cfg, fmt, path: Path, eager, inputs, parity_data: str, pre) -> dict[str, Any]:
    """Load the file back through its runtime: parity with eager, latency, pass or fail."""
    exported = formats.load(fmt, path)
    batch = 32 if cfg.dynamic_batch else 1
    log.info("%s: parity on %d %s images", fmt, len(inputs), parity_data)
    report = parity.compare(
        eager,
        exported,
        inputs,
        batch=batch,
        tolerance=float(cfg.tolerance),
        progress=parity_progress(fmt, len(inputs)),
    )
    report["tolerance"] = float(cfg.tolerance)
    report["data"] = parity_data
    report.update(_latency(cfg, fmt, eager, exported, tuple(inputs.shape[1:])))
    if report["passed"]:
        return {"parity": report, "status": "passed"}
    failure = report.get("reason") or (
        f"output {formats.OUTPUT_NAME!r} differs from eager: max abs diff "
        f"{report['max_abs_diff']:.3g} > tolerance {cfg.tolerance:g} "
        f"(top-1 agreement {report['top1_agreement']:.2f}% over {report['samples']} images)"
    )
    return {"parity": report, "status": "failed", "failure": failure}


def _manifest_base(restored: Restored) -> dict:
    run, facts, state = restored.run, restored.facts, restored.state
    pre, source, size = (
        facts.preprocessing,
        Path(restored.source),
        facts.preprocessing["input_size"],
    )
    model_cfg = {
        k: v for k, v in OmegaConf.to_container(run.model, resolve=True).items() if v is not None
    }
    return {
        "architecture": {"name": str(run.model.name), "config": model_cfg},
        "num_classes": facts.num_classes,
        "class_names": list(facts.class_names),
        "input": {
            "shape": ["batch", facts.in_chans, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "name": formats.INPUT_NAME,
        },
        "output": {"name": formats.OUTPUT_NAME, "shape": ["batch", facts.num_classes]},
        "preprocessing": pre,
        "data": {"name": str(run.data.name), "image_size": facts.image_size},
        "source": {
            "checkpoint": str(source.resolve()),
            "sha256": sha256_of(source),
            "step": int(state["step"]) if state else None,
            "use_ema": restored.scored.ema,
            "weights": restored.scored.describe(),
        },
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_previous(path: Path, sha256: str) -> dict:
    """An earlier model.json in the same folder for the same checkpoint keeps its other formats."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return previous if previous.get("source", {}).get("sha256") == sha256 else {}


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)


def format_report(manifest: dict, formats_written: Sequence[str]) -> str:
    """One block per format: file, status, max diff, agreement, latency (eager vs exported)."""
    lines = [f"weights: {manifest['source'].get('weights', 'raw')}"]
    for fmt in formats_written:
        entry = manifest["exports"][fmt]
        lines.append(f"{fmt}: {entry['file']}  [{entry['status']}]")
        report = entry.get("parity")
        if report is None:
            lines.append(f"  {entry.get('failure', '')}")
            continue
        lines.append(
            f"  max abs logit diff {report['max_abs_diff']:.3g} (tolerance {report['tolerance']:g}), "
            f"top-1 agreement {report['top1_agreement']:.2f}% over {report['samples']} "
            f"{report['data']} images"
        )
        latency = report.get("latency_ms_per_image")
        if latency is None:
            lines.append("  latency not measured (latency=false)")
        else:
            lines += _latency_lines(fmt, latency)
        if entry["status"] == "failed":
            lines.append(f"  FAILED: {entry['failure']}")
    return "\n".join(lines)


def _latency_lines(fmt: str, latency: dict) -> list[str]:
    lines = []
    for batch, key in ((1, "batch1"), (32, "batch32")):
        eager, other = latency["eager"][key], latency[fmt][key]
        if other is None:
            lines.append(f"  batch {batch}: eager {eager:.3f} ms/image, {fmt} n/a (fixed batch)")
        else:
            lines.append(
                f"  batch {batch}: eager {eager:.3f} ms/image, {fmt} {other:.3f} ms/image "
                f"({eager / other:.2f}x)"
            )
    return lines
