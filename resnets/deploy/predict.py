"""predict.py's job: a checkpoint or an exported model -> top-k classes for image files.

Preprocessing is the checkpoint's validation pipeline (`DataBundle.eval_preprocessing`, also
stored in model.json by export.py), applied through the same torchvision transform that
validation uses, so a file gives the logits evaluate.py computes for it.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..config import ConfigError
from ..csv_cells import safe_row
from ..data.normalize import Normalize, upsample
from ..data.safe_files import FileScan, glob_files, is_regular, walk_files
from ..data.transforms import folder_eval
from ..messages import described
from ..output_paths import check_output_dir
from . import formats
from .formats import MANIFEST

log = logging.getLogger(__name__)
SUFFIX_FORMATS = {".onnx": "onnx", ".pt2": "exported", ".pt": "torchscript"}


class PredictError(ValueError):
    """An exported model that cannot be used (no model.json or metadata beside it)."""


def list_files(pattern: str) -> list[Path]:
    """A file, every file under a folder (recursively), or the files a glob matches; sorted."""
    path = Path(pattern).expanduser()
    if is_regular(path):
        return [path]
    # only regular files, each real file once, links into the folder not followed (safe_files)
    scan = FileScan()
    scan = walk_files(path, path, scan) if path.is_dir() else glob_files(pattern, scan)
    scan.report(f"images={pattern}")
    files = sorted(p for p in scan.files if not p.name.startswith("."))
    if not files:
        raise ConfigError(
            f"images={pattern!r} matches no files; accepted: a file, a folder or a glob"
        )
    return files


def image_transform(pre: dict[str, Any]):
    """PIL image in `pre['mode']` -> normalised CHW tensor, exactly the validation pipeline:
    uint8 geometry, the loaders' normalisation, then (an in-memory dataset stored at another
    size) the loaders' upsampling of the normalised image (resnets.data.inference)."""
    steps = [folder_eval(int(pre["resize"]), int(pre["crop"])), Normalize(pre["mean"], pre["std"])]
    if pre.get("upsample"):  # absent in model.json files written before it was recorded
        steps.append(functools.partial(upsample, size=int(pre["upsample"])))
    return v2.Compose(steps)


def read_image(path: Path, mode: str) -> Image.Image:
    """Decode fully now (a truncated file fails here, not later) and convert like ImageFolder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-with-transparency notes from PIL
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)


def skip_reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image PIL can read"
    if isinstance(err, Image.DecompressionBombError):
        return f"too large ({err})"
    return f"unreadable or corrupt ({described(err)})"


class ImageFiles(Dataset):
    """(tensor or None, reason) per file, so one bad file never stops the rest."""

    def __init__(self, files: Sequence[Path], pre: dict[str, Any]) -> None:
        self.files, self.mode, self.transform = list(files), pre["mode"], image_transform(pre)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, self.transform(read_image(self.files[i], self.mode)), ""
        except Exception as err:  # any decoder failure is a skipped file, reported by name
            return i, None, skip_reason(err)


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, reason) for i, x, reason in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


class Classifier:
    """Class names, preprocessing and a logits function, from a checkpoint or an exported file."""

    def __init__(
        self, class_names: list[str], pre: dict[str, Any], logits, batch: int | None, weights: str
    ):
        self.class_names, self.preprocessing, self.logits = class_names, pre, logits
        self.fixed_batch = batch  # an export without a dynamic batch takes this many images
        self.weights = weights  # which weights: "EMA weights (use_ema=auto: ...)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch:
            return torch.cat([self.logits(x) for x in images.split(self.fixed_batch)])
        return self.logits(images)


def from_checkpoint(cfg: DictConfig, overrides: Sequence[str]) -> Classifier:
    # only this path imports the network code; an exported file needs none of it
    from .parity import eager_logits
    from .restore import restore_for_inference

    restored = restore_for_inference(cfg, overrides)
    facts = restored.facts
    return Classifier(
        list(facts.class_names),
        dict(facts.preprocessing),
        eager_logits(restored.model),
        None,
        restored.scored.describe(),
    )


def from_exported(path: Path) -> Classifier:
    """An exported file run by its own runtime; model.json beside it (or, for ONNX, the file's
    metadata) gives preprocessing and class names, so no network code is involved."""
    if not path.is_file():
        raise PredictError(f"model_file={str(path)!r}: no such file")
    fmt = SUFFIX_FORMATS.get(path.suffix)
    if fmt is None:
        raise PredictError(
            f"model_file={str(path)!r}: unknown suffix {path.suffix!r}; accepted: "
            f"{', '.join(SUFFIX_FORMATS)} (files written by export.py)"
        )
    manifest_path = path.parent / MANIFEST
    dynamic, weights = True, "the weights export.py wrote (recorded in its model.json)"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            names, pre = list(manifest["class_names"]), dict(manifest["preprocessing"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PredictError(
                f"{manifest_path}: not a model.json written by export.py ({err})"
            ) from err
        entry = next(
            (e for e in manifest.get("exports", {}).values() if e.get("file") == path.name), {}
        )
        if entry.get("status") == "failed":
            log.warning(
                "%s is marked failed in %s: %s", path.name, manifest_path, entry.get("failure")
            )
        dynamic = bool(entry.get("dynamic_batch", True))
        source = manifest.get("source", {})
        weights = source.get("weights") or ("EMA" if source.get("use_ema") else "raw") + " weights"
    elif fmt == "onnx":
        meta = _onnx_metadata(path)
        if "class_names" not in meta or "preprocessing" not in meta:
            raise PredictError(
                f"model_file={str(path)!r}: no model.json beside it and no class names or "
                "preprocessing in its ONNX metadata (export it with export.py)"
            )
        names, pre = list(meta["class_names"]), dict(meta["preprocessing"])
        weights = f"{meta.get('weights', 'raw')} weights (ONNX metadata)"
    else:
        raise PredictError(
            f"model_file={str(path)!r}: no {MANIFEST} beside it (written by export.py)"
        )
    try:
        logits = formats.load(fmt, path)
    except Exception as err:
        raise PredictError(
            f"model_file={str(path)!r}: cannot be loaded as {fmt} ({described(err)})"
        ) from err
    return Classifier(names, pre, logits, None if dynamic else 1, weights)


def _onnx_metadata(path: Path) -> dict[str, Any]:
    try:
        return formats.onnx_metadata(path)
    except Exception as err:
        raise PredictError(
            f"model_file={str(path)!r}: not a readable ONNX file ({described(err)})"
        ) from err


def check_predict_config(cfg: DictConfig) -> None:
    if bool(cfg.ckpt) == bool(cfg.model_file):
        raise ConfigError(
            "predict.py needs exactly one of ckpt=PATH (a resnets checkpoint) or "
            "model_file=PATH (a file written by export.py)"
        )
    if not cfg.images:
        raise ConfigError("predict.py needs images=PATH_OR_GLOB (a file, a folder or a glob)")
    for name in ("topk", "batch_size"):
        if cfg[name] is not None and cfg[name] < 1:
            raise ConfigError(f"{name}={cfg[name]!r} is not valid; accepted: a positive integer")
    if cfg.workers < 0:
        raise ConfigError(f"workers={cfg.workers!r} is not valid; accepted: 0 or more")


def predict_images(cfg: DictConfig, overrides: Sequence[str], default_root: Path) -> dict:
    """Classify every file; print the table, write predictions.csv (and skipped.csv)."""
    from tqdm import tqdm

    check_predict_config(cfg)
    # before any image is read: the folder predictions.csv goes to is usable
    out = check_output_dir(cfg.output_dir or default_root, "output_dir")
    files = list_files(str(cfg.images))
    if cfg.ckpt:
        classifier = from_checkpoint(cfg, overrides)
    else:
        classifier = from_exported(Path(cfg.model_file))
    n_classes = len(classifier.class_names)
    if cfg.topk is not None and cfg.topk > n_classes:
        raise ConfigError(
            f"topk={cfg.topk} is not valid; accepted: 1 to {n_classes} (the model's classes)"
        )
    topk = int(cfg.topk or min(5, n_classes))
    loader = DataLoader(
        ImageFiles(files, classifier.preprocessing),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.workers),
        collate_fn=_collate,
    )
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    bar = tqdm(total=len(files), unit="image", disable=not cfg.progress or None, leave=False)
    for indices, images, bad in loader:
        skipped += [(files[i], reason) for i, reason in bad]
        if images is not None:
            probs = torch.softmax(classifier(images).float(), dim=1)
            top_p, top_i = probs.topk(topk, dim=1)
            for i, p, c in zip(indices, top_p.tolist(), top_i.tolist(), strict=True):
                rows.append(
                    {
                        "file": files[i],
                        "top": [(classifier.class_names[k], q) for k, q in zip(c, p, strict=True)],
                    }
                )
        bar.update(len(indices) + len(bad))
    bar.close()
    csv_path = write_predictions(out, rows, skipped, topk)
    print(format_predictions(rows, skipped, files))
    print(
        f"predicted {len(rows)} of {len(files)} files, skipped {len(skipped)}; "
        f"predictions: {csv_path}; weights: {classifier.weights}"
    )
    return {
        "predicted": len(rows),
        "skipped": len(skipped),
        "csv": csv_path,
        "weights": classifier.weights,
    }


def write_predictions(
    out: Path, rows: list[dict], skipped: list[tuple[Path, str]], topk: int
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    header = ["file", "predicted", "probability"]
    for k in range(1, topk + 1):
        header += [f"top{k}_class", f"top{k}_probability"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            name, p = row["top"][0]
            flat = [v for pair in row["top"] for v in (pair[0], f"{pair[1]:.6f}")]
            writer.writerow(safe_row([str(row["file"]), name, f"{p:.6f}", *flat]))
    with open(out / "skipped.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reason"])
        writer.writerows(safe_row([str(file), reason]) for file, reason in skipped)
    return path


def format_predictions(rows: list[dict], skipped: list[tuple[Path, str]], files: list[Path]) -> str:
    """file | top-k "class (probability%)" per row, then the skipped files with their reasons."""
    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path()

    def name(file: Path) -> str:
        try:
            return str(file.relative_to(root))
        except ValueError:
            return str(file)

    width = max([len("file"), *(len(name(r["file"])) for r in rows)])
    lines = [f"{'file':<{width}}  top classes (probability)"]
    for row in rows:
        tops = ", ".join(f"{c} ({100 * p:.1f}%)" for c, p in row["top"])
        lines.append(f"{name(row['file']):<{width}}  {tops}")
    for file, reason in skipped:
        lines.append(f"skipped {name(file)}: {reason}")
    return "\n".join(lines)
