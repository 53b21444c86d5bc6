"""What a GPU machine should run first: the CUDA-only paths end to end. All skip without CUDA.

python -m pytest -m gpu tests/test_gpu.py -q
"""

from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .helpers import TINY, compose_train, read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CUDA = [*TINY, "trainer.device=cuda", "trainer.compile=false", "trainer.epochs=1"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_steps(tmp_path, precision) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train(
        compose_train([*CUDA, f"trainer.precision={precision}", "trainer.max_steps=12"]), tmp_path
    )
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    metrics = read_metrics(tmp_path)
    assert state["step"] == 12 and metrics["train_loss"] == metrics["train_loss"]  # not NaN
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    if precision == "16-mixed":
        assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] is None


def test_fp16_overflowing_steps_are_skipped_by_the_scaler(tmp_path) -> None:
    """A scale of 2**60 overflows fp16 gradients: the scaler skips those steps and halves the
    scale until they fit; the run neither stops nor writes NaN weights."""
    real = torch.amp.GradScaler
    with mock.patch("torch.amp.GradScaler", functools.partial(real, init_scale=2.0**60)):
        train(
            compose_train([*CUDA, "trainer.precision=16-mixed", "trainer.max_steps=20"]), tmp_path
        )
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 20
    assert state["scaler"]["scale"] < 2.0**60  # backed off at least once: a step was skipped
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_compile_modes_train(tmp_path, mode) -> None:
    overrides = [
        *TINY,
        "trainer.device=cuda",
        "trainer.epochs=1",
        "trainer.compile=true",
        f"trainer.compile_mode={mode}",
        "trainer.precision=bf16-mixed"
        if torch.cuda.is_bf16_supported()
        else "trainer.precision=32",
    ]
    best = train(compose_train(overrides), tmp_path)
    assert read_metrics(tmp_path)["steps"] == 22 and best > 20  # digits: 10 classes


def test_fifty_tensor_loader_steps_never_synchronise(tmp_path) -> None:
    """The tensor loader's augmentation, forward, backward, SGD and EMA update: 50 steps under
    `set_sync_debug_mode("error")`, so any hidden host-device synchronisation raises."""
    from resnets.data.loaders import TensorLoader
    from resnets.engine.ema import EMA
    from resnets.models import build_model

    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50 * 64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    loader = TensorLoader(
        images,
        torch.randint(0, 10, (len(images),), generator=gen),
        batch_size=64,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=device,
        train=True,
        seed=0,
        crop_padding=4,
        hflip=True,
        cutout=8,
    )
    model = build_model("resnet20", num_classes=10).to(device, memory_format=torch.channels_last)
    ema = EMA(model, 0.99, every=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader.set_epoch(0)
    batches = iter(loader)
    next(batches)  # the epoch's start (its one index copy) is outside the checked steps
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, (x, y) in enumerate(batches, start=1):
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % ema.every == 0:
                ema.update_parameters(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step == 49 and torch.isfinite(loss).item()


def test_gpu_decode_end_to_end(imagefolder_root, tmp_path) -> None:
    """nvJPEG batches match the per-sample CPU pipeline; odd files go through the CPU."""
    from resnets.data import build_data

    from .test_cuda_ready import _odd_ilsvrc_files
    from .test_data import data_cfg

    sizes = dict(image_size=32, val_crop=32, val_resize=36)
    cpu = build_data(
        data_cfg(name="imagefolder", root=str(imagefolder_root), **sizes),
        batch_size=4,
        eval_batch_size=6,
    )
    gpu = build_data(
        data_cfg(name="imagefolder", root=str(imagefolder_root), gpu_decode=True, **sizes),
        batch_size=4,
        eval_batch_size=6,
        device="cuda",
    )
    for (a, la), (b, lb) in zip(cpu.val, gpu.val, strict=True):
        assert b.is_cuda and b.shape == a.shape and torch.equal(la, lb.cpu())
        assert (a - b.cpu()).abs().mean() < 0.03  # PIL vs nvJPEG and the GPU resize
    gpu.train.set_epoch(0)
    assert all(x.shape == (4, 3, 32, 32) for x, _ in gpu.train)
    assert gpu.train.cpu_decoded == 0

    odd = tmp_path / "odd"
    _odd_ilsvrc_files(odd)
    bundle = build_data(
        data_cfg(name="imagefolder", root=str(odd), gpu_decode=True, **sizes),
        batch_size=4,
        eval_batch_size=4,
        device="cuda",
    )
    ((x, _),) = list(bundle.val)
    assert x.shape == (4, 3, 32, 32) and bundle.val.cpu_decoded == 2

    run = tmp_path / "run"
    train(
        compose_train(
            [
                *CUDA,
                "data=imagefolder",
                f"data.root={imagefolder_root}",
                "data.gpu_decode=true",
                "data.image_size=32",
                "data.val_crop=32",
                "data.val_resize=36",
                "trainer.batch_size=4",
                "trainer.workers=2",
            ]
        ),
        run,
    )
    assert read_metrics(run)["steps"] == 18 // 4


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_nccl_with_ema_and_accumulation_resume(tmp_path) -> None:
    from .test_distributed import finish, torchrun

    run_dir = tmp_path / "run"
    args = [
        "trainer=ddp",
        *TINY,
        "trainer.device=cuda",
        "trainer.compile=false",
        "trainer.ema_decay=0.9",
        "trainer.accumulate_grad_batches=2",
        "trainer.batch_size=32",
        "trainer.epochs=2",
        f"hydra.run.dir={run_dir}",
    ]
    code, out = finish(torchrun("train.py", [*args, "trainer.max_steps=11"], cwd=tmp_path), 600)
    assert code == 0, out[-4000:]
    first = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert first["step"] == 11 and int(first["ema"]["n_averaged"]) == 11
    code, out = finish(torchrun("train.py", args, cwd=tmp_path), 600)
    assert code == 0, out[-4000:]
    second = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    # 1437 samples / (2 ranks x 32) = 22 micro-batches a rank, 11 steps an epoch
    assert second["step"] == 22 and int(second["ema"]["n_averaged"]) == 22
    assert read_metrics(run_dir)["steps"] == 22
