"""export.py's job: checkpoint -> files in deployment formats, each checked against eager.

The network and its data are rebuilt exactly as evaluate.py does (`checkpoint_run`,
`restore_model_and_data`); each written file is loaded back through its own runtime and must
give the eager logits within `tolerance` on real validation images, or the run exits 1 with the
file kept and marked failed in model.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..engine.evaluation import checkpoint_run, restore_model_and_data
from ..output_paths import MIN_FREE_BYTES, check_output_dir
from . import formats, parity

log = logging.getLogger(__name__)
PARITY_DATA = ("val", "random")
MANIFEST = formats.MANIFEST


def cpu_only(run: DictConfig) -> DictConfig:
    """Exports and predictions run on the CPU: a run that decoded JPEGs on its GPU decodes here
    with the same transforms on the CPU."""
    if run.data.get("gpu_decode"):
        run.data.gpu_decode = False
    return run


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


def export_dir_for(cfg: DictConfig, ckpt: Path) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / ("export-ema" if cfg.use_ema else "export")


def export_checkpoint(cfg: DictConfig, overrides: Sequence[str]) -> tuple[dict, Path]:
    """Write every requested format and model.json; returns (manifest, its path).

    Raises ConfigError/CheckpointError/DataError/ModelError for bad input before writing.
    """
    wanted = check_export_config(cfg)
    source, weights, state, run = checkpoint_run(cfg, overrides)
    out = export_dir_for(cfg, source)
    # before any work: a writable folder with room for each format (about the checkpoint's size)
    check_output_dir(out, "output_dir", MIN_FREE_BYTES + len(wanted) * source.stat().st_size)
    model, data = restore_model_and_data(cpu_only(run), weights, source, device=torch.device("cpu"))
    model.eval()
    pre = data.eval_preprocessing()
    shape = (data.in_chans, pre["crop"], pre["crop"])
    manifest = _manifest_base(cfg, run, data, pre, source, state)
    manifest_path = out / MANIFEST
    previous = _read_previous(manifest_path, manifest["source"]["sha256"])
    manifest["exports"] = previous.get("exports", {})
    inputs = parity.parity_inputs(
        data.val if cfg.parity_data == "val" else None, int(cfg.parity_samples), shape, cfg.seed
    )
    eager = parity.eager_logits(model)
    onnx_metadata = {
        "class_names": json.dumps(data.class_names),
        "preprocessing": json.dumps(pre),
        "architecture": str(run.model.name),
        "source_sha256": manifest["source"]["sha256"],
    }
    for fmt in wanted:
        path = out / formats.FILE_NAMES[fmt]
        entry: dict[str, Any] = {"file": path.name, "format": fmt}
        entry.update(
            {"dynamic_batch": bool(cfg.dynamic_batch), "opset": cfg.opset}
            if fmt == "onnx"
            else {"dynamic_batch": bool(cfg.dynamic_batch)}
        )
        manifest["exports"][fmt] = entry
        start = time.perf_counter()
        try:
            formats.write(
                fmt,
                model,
                path,
                in_chans=data.in_chans,
                size=pre["crop"],
                dynamic_batch=bool(cfg.dynamic_batch),
                opset=cfg.opset,
                metadata=onnx_metadata,
            )
        except formats.ExportError as err:
            entry.update(status="failed", failure=str(err))
            log.error("%s", err)
            _write_manifest(manifest_path, manifest)
            continue
        entry["export_seconds"] = round(time.perf_counter() - start, 2)
        entry["bytes"] = path.stat().st_size
        if fmt == "onnx":
            entry["opset"] = formats.onnx_opset(path)
        exported = formats.load(fmt, path)
        batch = 32 if cfg.dynamic_batch else 1
        report = parity.compare(
            eager, exported, inputs, batch=batch, tolerance=float(cfg.tolerance)
        )
        report["tolerance"] = float(cfg.tolerance)
        report["data"] = str(cfg.parity_data)
        report["latency_ms_per_image"] = parity.latency_table(
            {"eager": eager, fmt: exported},
            shape,
            int(cfg.latency_repeats),
            static_batch=not cfg.dynamic_batch,
        )
        entry["parity"] = report
        if report["passed"]:
            entry["status"] = "passed"
        else:
            entry["status"] = "failed"
            entry["failure"] = report.get("reason") or (
                f"output {formats.OUTPUT_NAME!r} differs from eager: max abs diff "
                f"{report['max_abs_diff']:.3g} > tolerance {cfg.tolerance:g} "
                f"(top-1 agreement {report['top1_agreement']:.2f}% over {report['samples']} images)"
            )
        _write_manifest(manifest_path, manifest)
    return manifest, manifest_path


def _manifest_base(cfg, run, data, pre, source: Path, state: dict | None) -> dict:
    model_cfg = {
        k: v for k, v in OmegaConf.to_container(run.model, resolve=True).items() if v is not None
    }
    return {
        "architecture": {"name": str(run.model.name), "config": model_cfg},
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "input": {
            "shape": ["batch", data.in_chans, pre["crop"], pre["crop"]],
            "dtype": "float32",
            "layout": "NCHW",
            "name": formats.INPUT_NAME,
        },
        "output": {"name": formats.OUTPUT_NAME, "shape": ["batch", data.num_classes]},
        "preprocessing": pre,
        "data": {"name": str(run.data.name), "image_size": data.image_size},
        "source": {
            "checkpoint": str(source.resolve()),
            "sha256": sha256_of(source),
            "step": int(state["step"]) if state else None,
            "use_ema": bool(cfg.use_ema),
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


def read_manifest(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def format_report(manifest: dict, formats_written: Sequence[str]) -> str:
    """One block per format: file, status, max diff, agreement, latency (eager vs exported)."""
    lines = []
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
        for batch, key in ((1, "batch1"), (32, "batch32")):
            eager = report["latency_ms_per_image"]["eager"][key]
            other = report["latency_ms_per_image"][fmt][key]
            if other is None:
                lines.append(
                    f"  batch {batch}: eager {eager:.3f} ms/image, {fmt} n/a (fixed batch)"
                )
            else:
                lines.append(
                    f"  batch {batch}: eager {eager:.3f} ms/image, {fmt} {other:.3f} ms/image "
                    f"({eager / other:.2f}x)"
                )
        if entry["status"] == "failed":
            lines.append(f"  FAILED: {entry['failure']}")
    return "\n".join(lines)
