"""What a run reports: the plain train.log and TensorBoard events (rank 0 only); the progress
bar and lines are the Progress callback (engine/progress.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("resnets")


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Log to `path` while the block runs, unless a handler (Hydra's job log) already writes
    there; the handler goes away afterwards, so in-process runs never log into each other."""
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in root.handlers):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    previous_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous_level)


def silence_file_logs() -> None:
    """Non-zero ranks write nothing and print only warnings: rank 0 speaks for the run."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
        else:
            handler.setLevel(max(handler.level, logging.WARNING))


class TensorBoard:
    """A SummaryWriter that exists only on rank 0; on resume it drops events past the checkpoint."""

    def __init__(self, log_dir: Path | None, purge_step: int | None = None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def image_grid(self, tag: str, images: torch.Tensor, mean, std, step: int) -> None:
        if not self.writer:
            return
        from torchvision.utils import make_grid

        shape = (1, -1, 1, 1)
        pixels = images[:64].detach().float().cpu()
        pixels = pixels * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
        self.writer.add_image(tag, make_grid(pixels.clamp(0, 1), nrow=8), step)

    def png(self, tag: str, path: Path, step: int) -> None:
        if self.writer:
            import numpy as np
            from PIL import Image  # torchvision.io's decoders are deprecated since 0.29

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def text(self, tag: str, text: str) -> None:
        if self.writer:
            self.writer.add_text(tag, f"```\n{text}\n```")

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        if self.writer:
            clean = {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in hparams.items()
            }
            self.writer.add_hparams(clean, dict(metrics), run_name=".")

    def close(self) -> None:
        if self.writer:
            self.writer.close()
