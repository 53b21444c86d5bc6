"""export.py and predict.py: Hydra config in, exit status out (2 bad input, 1 failed check)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from ..config import ConfigError
from ..refused_run import discard_fresh_run_dir


def _hydra_context() -> tuple[list[str], Path]:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return list(hydra_cfg.overrides.task), Path(hydra_cfg.runtime.output_dir)


def _fail(err: Exception, root: Path) -> None:
    # one line, no traceback: the message names the file or field and what is wrong
    print(f"error: {err}", file=sys.stderr)
    discard_fresh_run_dir(root)  # a refused run leaves no folder
    sys.exit(2)


def run_export(cfg: DictConfig) -> int:
    from ..engine.cli import USER_ERRORS
    from .export import export_checkpoint, format_report

    overrides, root = _hydra_context()
    try:
        manifest, manifest_path = export_checkpoint(cfg, overrides)
    except USER_ERRORS as err:
        _fail(err, root)
    written = [f for f in manifest["exports"] if f in _requested(cfg)]
    print(format_report(manifest, written))
    print(f"model.json: {manifest_path}")
    failed = [f for f in written if manifest["exports"][f]["status"] != "passed"]
    for fmt in failed:
        entry = manifest["exports"][fmt]
        print(
            f"error: {fmt}: {entry['failure']}; {manifest_path.parent / entry['file']} is kept "
            "and marked failed in model.json",
            file=sys.stderr,
        )
    if failed:
        sys.exit(1)
    return 0


def _requested(cfg: DictConfig) -> list[str]:
    from .formats import FORMATS

    return list(FORMATS) if cfg.format == "all" else [str(cfg.format)]


def run_predict(cfg: DictConfig) -> int:
    from .predict import PredictError, predict_images

    overrides, root = _hydra_context()
    errors: tuple[type[Exception], ...] = (ConfigError, PredictError)
    if cfg.ckpt:  # an exported model needs none of the network and checkpoint code
        from ..engine.cli import USER_ERRORS

        errors += USER_ERRORS
    try:
        summary = predict_images(cfg, overrides, root)
    except errors as err:
        _fail(err, root)
    if summary["predicted"] == 0:
        print("error: no image could be predicted (every file was skipped)", file=sys.stderr)
        sys.exit(1)
    return 0
