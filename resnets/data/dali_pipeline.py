"""The DALI graphs of `resnets.data.dali` (imported only once DALI is known to be installed).

Training: the bytes and each image's crop window and flip come in through one external source;
`decoders.image_slice` decodes the window only (device `mixed`: nvJPEG's region-of-interest decode
on the GPU), `resize` takes it to size x size (linear, antialiased: PIL's bilinear filter), and
`crop_mirror_normalize` flips and normalises into NHWC. Validation: decode, resize to the size
torchvision's Resize gives, slice the centre crop at torchvision's offsets, normalise.
"""

from __future__ import annotations

from typing import Any

import torch
from nvidia.dali import fn, pipeline_def, types

DALI_DTYPES = {torch.float32: types.FLOAT, torch.float16: types.FLOAT16}


def build_pipeline(loader: Any):
    """A built pipeline that pulls its inputs from `loader._next_inputs`."""
    on_gpu = loader.device.type == "cuda"
    device_id = (loader.device.index or torch.cuda.current_device()) if on_gpu else None
    decoder = "mixed" if on_gpu else "cpu"
    mean = [255 * m for m in loader.mean]
    std = [255 * s for s in loader.std]
    out = DALI_DTYPES[loader.dtype]
    common = dict(output_type=types.RGB, adjust_orientation=False)  # PIL ignores EXIF rotation

    @pipeline_def(
        batch_size=loader.batch_size,
        num_threads=loader.threads,
        device_id=device_id,
        prefetch_queue_depth=2,
    )
    def train():
        data, anchor, shape, flip = fn.external_source(
            source=loader._next_inputs,
            num_outputs=4,
            batch=True,
            dtype=[types.UINT8, types.FLOAT, types.FLOAT, types.INT32],
        )
        images = fn.decoders.image_slice(
            data,
            anchor,
            shape,
            device=decoder,
            normalized_anchor=False,
            normalized_shape=False,
            axis_names="WH",
            **common,
        )
        images = fn.resize(
            images,
            resize_x=loader.size,
            resize_y=loader.size,
            interp_type=types.INTERP_LINEAR,
            antialias=True,
        )
        return fn.crop_mirror_normalize(
            images, mirror=flip, mean=mean, std=std, dtype=out, output_layout="HWC"
        )

    @pipeline_def(
        batch_size=loader.batch_size,
        num_threads=loader.threads,
        device_id=device_id,
        prefetch_queue_depth=2,
    )
    def val():
        data, width, height, anchor = fn.external_source(
            source=loader._next_inputs,
            num_outputs=4,
            batch=True,
            dtype=[types.UINT8, types.FLOAT, types.FLOAT, types.FLOAT],
        )
        images = fn.decoders.image(data, device=decoder, **common)
        images = fn.resize(
            images,
            resize_x=width,
            resize_y=height,
            interp_type=types.INTERP_LINEAR,
            antialias=True,
        )
        images = fn.slice(
            images,
            anchor,
            [float(loader.size)] * 2,
            normalized_anchor=False,
            normalized_shape=False,
            axis_names="WH",
            out_of_bounds_policy="pad",
        )
        return fn.crop_mirror_normalize(images, mean=mean, std=std, dtype=out, output_layout="HWC")

    pipe = (train if loader.train else val)()
    pipe.build()
    return pipe


def to_torch(batch: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A DALI NHWC batch as an NCHW tensor in channels_last memory (a view, no reordering)."""
    tensor = batch.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tensor.shape(), dtype=dtype, device=device)
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(device))
    else:
        import numpy as np

        out = torch.from_numpy(np.array(tensor))
    return out.permute(0, 3, 1, 2)
