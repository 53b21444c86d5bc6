"""Write a network in one deployment format, and load such a file back as a logits function.

ONNX goes through torch's default exporter since 2.9, the torch.export-based one (`dynamo=True`):
the TorchScript-based exporter is deprecated and due for removal, and the torch.export path
handles every network of the zoo, the attention networks' bilinear `F.interpolate` to a
feature map's size included (checked batch 1 and 7 against eager to ~1e-6 relative). It also
shares its graph capture with format=exported, so a network that exports once exports for both.
TorchScript is traced, not scripted: `torch.jit.script` is deprecated and cannot compile the
models' Python type hints, while a trace records the same aten graph for any batch size.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.onnx import _constants as onnx_constants

from ..messages import described

# opsets torch.onnx.export(dynamo=True) writes: from 18 (its first) to this release's newest
ONNX_OPSETS = (18, int(getattr(onnx_constants, "ONNX_MAX_OPSET", 18)))

FORMATS = ("onnx", "torchscript", "exported")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model_torchscript.pt", "exported": "model.pt2"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
MANIFEST = "model.json"  # written beside the files: classes, preprocessing, parity
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
MAX_BATCH = 65536
QUIET_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")

Logits = Callable[[torch.Tensor], torch.Tensor]


class ExportError(RuntimeError):
    """A network that could not be written in a format; the message names the operator if known."""


def missing_onnx_packages() -> list[str]:
    """The packages of the `export` extra that cannot be imported here."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


def _example(in_chans: int, size: int, dynamic_batch: bool) -> tuple[torch.Tensor, Any]:
    # torch.export specialises sizes 0 and 1, so a dynamic batch is traced with 2 images
    x = torch.randn(2 if dynamic_batch else 1, in_chans, size, size)
    if not dynamic_batch:
        return x, None
    return x, ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def write(
    fmt: str,
    model: nn.Module,
    path: Path,
    *,
    in_chans: int,
    size: int,
    dynamic_batch: bool,
    opset: int | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `model` (in eval mode) as `fmt` to `path`; failures become one-line ExportErrors."""
    model = model.eval()
    x, dynamic = _example(in_chans, size, dynamic_batch)
    for name in QUIET_LOGGERS:  # the ONNX optimiser logs every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and exporter chatter; parity is the check
            if fmt == "onnx":
                torch.onnx.export(
                    model,
                    (x,),
                    str(path),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic,
                    opset_version=opset,
                    external_data=False,  # one self-contained file (every zoo net is < 2 GB)
                    verbose=False,
                )
            elif fmt == "torchscript":
                traced = torch.jit.trace(model, x, check_trace=False)
                torch.jit.save(traced, str(path))
            elif fmt == "exported":
                program = torch.export.export(model, (x,), dynamic_shapes=dynamic)
                torch.export.save(program, str(path))
            else:
                raise ValueError(fmt)
    except Exception as err:
        raise ExportError(f"format={fmt}: export failed{_operator(err)}: {described(err)}") from err
    if fmt == "onnx" and metadata:
        set_onnx_metadata(path, metadata)


def onnx_opset(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _operator(err: Exception) -> str:
    found = re.search(r"aten(?:::|\.)\w+(?:\.\w+)?", str(err))
    return f" at operator {found.group(0).replace('.', '::', 1)}" if found else ""


def set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Store key/value strings in the file's metadata_props (class names, preprocessing)."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))


def onnx_metadata(path: Path) -> dict[str, Any]:
    """metadata_props of an ONNX file, JSON values decoded (written by `set_onnx_metadata`)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def load(fmt: str, path: Path, threads: int | None = None) -> Logits:
    """A function images -> logits running the file through its own runtime (no eager model):
    onnxruntime, torch.jit.load, or the ExportedProgram's module."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            return torch.from_numpy(session.run(None, {name: array})[0])

        return run_onnx
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu").eval()
    elif fmt == "exported":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(fmt)

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run_torch
