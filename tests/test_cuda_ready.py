"""CUDA-only paths checked on the CPU: what the collectives send, rank agreement on failure,
RNG restore on fewer devices, refused combinations, the loader's device generators."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from resnets.engine import distributed as D
from resnets.engine import loop
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.ema import EMA
from resnets.engine.setup import scaled_optim
from resnets.engine.trainer import Trainer, train

from .helpers import TINY, compose_train


def _pretend_distributed(sent: list[torch.Tensor]):
    """Collectives that record what they would send, on a one-process 'group'."""
    dist = D.dist
    return mock.patch.multiple(
        dist,
        is_available=lambda: True,
        is_initialized=lambda: True,
        broadcast=lambda tensor, src=0, **_: sent.append(tensor),
        all_reduce=lambda tensor, op=None, **_: None,
        broadcast_object_list=lambda objs, src=0, **_: None,
    )


def test_ema_broadcast_sends_only_the_modules_buffers(tmp_path) -> None:
    """NCCL can send device tensors only: AveragedModel's host counter n_averaged must stay out."""
    trainer = Trainer(compose_train([*TINY, "trainer.ema_decay=0.9", "trainer.epochs=1"]), tmp_path)
    trainer._setup()
    trainer.events = mock.MagicMock()
    sent: list[torch.Tensor] = []
    with _pretend_distributed(sent):
        loop.validate_and_save(trainer, epoch_time=1.0, seen=1, finished_epoch=True)
    expected = [*trainer.model.buffers(), *trainer.ema.module.buffers()]
    assert {id(t) for t in sent} == {id(t) for t in expected}
    assert len(sent) == len(expected)
    assert all(id(t) != id(trainer.ema.n_averaged) for t in sent)


def _weights_sequence(model: nn.Module, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
        for _ in range(n)
    ]


@pytest.mark.parametrize("every", [1, 3])
def test_ema_every_k_steps_matches_the_formula(every) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9, every=every)
    reference = AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(0.9**every), use_buffers=True
    )
    expected = None
    for step, weights in enumerate(_weights_sequence(model, 10), start=1):
        weights["1.num_batches_tracked"] = torch.tensor(step)
        model.load_state_dict(weights)
        if step % every:
            continue
        ema.update_parameters(model)
        reference.update_parameters(model)
        w = {k: v.double() for k, v in weights.items() if k != "1.num_batches_tracked"}
        d = 0.9**every
        expected = w if expected is None else {k: d * expected[k] + (1 - d) * w[k] for k in w}
    assert int(ema.n_averaged) == 10 // every and ema.n_averaged.device.type == "cpu"
    got = ema.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key].double(), value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[key], reference.module.state_dict()[key])
    assert int(got["1.num_batches_tracked"]) == 10 // every * every  # copied, not averaged
    # the checkpoint layout is AveragedModel's: evaluate.py and old checkpoints read it unchanged
    assert set(ema.state_dict()) == set(reference.state_dict())


@pytest.mark.slow
def test_ema_every_counts_updates_in_training_and_is_refused_at_zero(tmp_path) -> None:
    overrides = [*TINY, "trainer.ema_decay=0.9", "trainer.ema_every=3", "trainer.max_steps=7"]
    train(compose_train(overrides), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 7 and int(state["ema"]["n_averaged"]) == 2  # steps 3 and 6
    from resnets.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"trainer\.ema_every=0 is not valid; accepted: a positive"
    ):
        Trainer(compose_train([*TINY, "trainer.ema_every=0"]), tmp_path / "x")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_with_ema_validate_save_and_resume(tmp_path) -> None:
    from .test_distributed import finish, torchrun

    run_dir = tmp_path / "run"
    args = [
        "trainer=ddp",
        *TINY,
        "trainer.ema_decay=0.9",
        "trainer.epochs=2",
        f"hydra.run.dir={run_dir}",
    ]
    code, out = finish(torchrun("train.py", [*args, "trainer.max_steps=11"], cwd=tmp_path), 300)
    assert code == 0, out[-4000:]
    first = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert first["epoch"] == 1 and int(first["ema"]["n_averaged"]) == first["step"] == 11
    code, out = finish(torchrun("train.py", args, cwd=tmp_path), 300)
    assert code == 0, out[-4000:]
    second = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert second["step"] == 22 and int(second["ema"]["n_averaged"]) == 22
    log = (run_dir / "train.log").read_text()
    assert (
        "after epoch 1/2, at step 11" in log.split("resumed from")[1]
        and "epoch 2/2 step 22: train" in log
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out: str, failure: str, results) -> None:
    """One gloo rank of a two-rank run; `failure` breaks one rank only."""
    import os

    import torch.distributed as dist

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from resnets.engine import trainer as trainer_module
    from resnets.engine.checkpoint import CheckpointError

    overrides = [*TINY, "trainer=ddp", "trainer.epochs=2", "trainer.log_every=5"]
    if failure == "nan" and rank == 1:  # the 5th loss (a check step) is NaN on rank 1 only
        calls = {"n": 0}
        forward = torch.nn.CrossEntropyLoss.forward

        def nan_at_5(self, logits, target):
            calls["n"] += 1
            loss = forward(self, logits, target)
            return loss * float("nan") if calls["n"] == 5 else loss

        torch.nn.CrossEntropyLoss.forward = nan_at_5
    if failure == "save" and rank == 0:

        def disk_full(path, state):
            raise CheckpointError(path, "could not be written ([Errno 28] No space left on device)")

        trainer_module.save_checkpoint = disk_full
    try:
        trainer_module.train(compose_train(overrides), out)
        outcome = (rank, None, "")
    except Exception as err:
        outcome = (rank, type(err).__name__, str(err))
    results.put((*outcome, dist.is_initialized()))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("failure", ["nan", "save"])
def test_one_failing_rank_stops_both_with_the_same_message(tmp_path, failure) -> None:
    """A NaN loss on rank 1 or a failed checkpoint write on rank 0: both ranks stop with the
    same one-line error and destroy the process group; nobody waits for a collective."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, port, str(tmp_path), failure, results))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    outcomes = {}
    try:
        for _ in procs:
            rank, kind, message, initialized = results.get(timeout=240)
            outcomes[rank] = (kind, message, initialized)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    expected = "NonFiniteLossError" if failure == "nan" else "CheckpointError"
    assert outcomes[0][0] == outcomes[1][0] == expected, outcomes
    assert outcomes[0][1] == outcomes[1][1], outcomes
    if failure == "nan":
        assert outcomes[0][1].startswith("training loss became nan by step 5 ")
    else:
        assert "No space left on device" in outcomes[0][1]
        assert outcomes[0][1].startswith(str(tmp_path / "checkpoints" / "best.pt"))
    assert not outcomes[0][2] and not outcomes[1][2]  # process group destroyed


def test_resume_on_fewer_gpus_restores_the_cuda_rng_states_that_fit(caplog) -> None:
    """An 8-GPU checkpoint resumed where one GPU is visible: device 0's state comes back and the
    rest are reported, where set_rng_state_all raised IndexError."""
    from resnets.engine.checkpoint import capture_rng, restore_rng

    rng = capture_rng()
    rng["cuda"] = torch.stack([torch.full((16,), i, dtype=torch.uint8) for i in range(8)])
    restored: list[tuple[int, torch.Tensor]] = []

    def set_rng_state(state, device="cuda"):  # as torch's: one generator per visible device
        index = device if isinstance(device, int) else (torch.device(device).index or 0)
        if index >= 1:
            raise IndexError("list index out of range")
        restored.append((index, state.clone()))

    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=1),
        mock.patch("torch.cuda.set_rng_state", set_rng_state),
        mock.patch("torch.cuda.random.set_rng_state", set_rng_state),
        caplog.at_level("WARNING"),
    ):
        restore_rng(rng)
    assert [i for i, _ in restored] == [0] and torch.equal(restored[0][1], rng["cuda"][0])
    assert "CUDA RNG states for 8 devices, 1 visible: restored devices 0-0" in caplog.text


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graphs_with_gradient_accumulation_are_refused_on_cuda(mode) -> None:
    from resnets.config import ConfigError
    from resnets.runtime import check_runtime

    cfg = compose_train(
        [
            *TINY,
            "trainer.compile=true",
            f"trainer.compile_mode={mode}",
            "trainer.accumulate_grad_batches=4",
        ]
    )
    with pytest.raises(
        ConfigError,
        match=rf"^trainer\.compile_mode='{mode}' replays CUDA graphs, which overwrite the gradients "
        r"that trainer\.accumulate_grad_batches=4 accumulates; accepted together: compile_mode=default",
    ):
        check_runtime(cfg.trainer, cfg.data, model=cfg.model, cuda_available=True)
    # compile left to the device (null) is on for CUDA: refused too
    cfg.trainer.compile = None
    with pytest.raises(ConfigError, match="replays CUDA graphs"):
        check_runtime(cfg.trainer, cfg.data, model=cfg.model, cuda_available=True)
    # without accumulation, without compile, or with the default mode: allowed
    for field, value in (
        ("accumulate_grad_batches", 1),
        ("compile", False),
        ("compile_mode", "default"),
    ):
        ok = cfg.copy()
        ok.trainer[field] = value
        assert check_runtime(ok.trainer, ok.data, model=ok.model, cuda_available=True) == "cuda"


DETERMINISTIC_REFUSAL = (
    r"^trainer\.deterministic=true cannot train model=attention56_cifar on CUDA: its "
    r"bilinear upsampling has no deterministic CUDA backward; accepted: "
    r"trainer\.deterministic=false .* or trainer\.device=cpu$"
)


def test_deterministic_attention_network_on_cuda_is_refused_with_the_choice() -> None:
    from resnets.config import ConfigError
    from resnets.models.presets import upsamples
    from resnets.runtime import check_runtime

    cfg = compose_train(["model=attention56_cifar", "trainer.deterministic=true"])
    attention = upsamples(cfg.model.name)
    with pytest.raises(ConfigError, match=DETERMINISTIC_REFUSAL):
        check_runtime(
            cfg.trainer, cfg.data, model=cfg.model, upsamples=attention, cuda_available=True
        )
    # the CPU's bilinear backward is deterministic; ResNets on CUDA have no upsampling
    assert (
        check_runtime(
            cfg.trainer, cfg.data, model=cfg.model, upsamples=attention, cuda_available=False
        )
        == "cpu"
    )
    plain = compose_train(["model=resnet56", "trainer.deterministic=true"])
    assert not upsamples(plain.model.name)
    assert (
        check_runtime(plain.trainer, plain.data, model=plain.model, cuda_available=True) == "cuda"
    )


def test_the_networks_said_to_upsample_are_the_ones_that_interpolate() -> None:
    """The fact the runtime is given (models.presets.upsamples) matches the built networks:
    exactly those that call a bilinear interpolation in their forward pass."""
    from resnets.models import build_model, list_models
    from resnets.models.presets import upsamples

    small = [n for n in list_models() if n.endswith("_cifar") or n in ("resnet20", "resnet56")]
    seen = {}
    for name in small:
        model = build_model(name, num_classes=10, image_size=32).eval()
        with (
            mock.patch(
                "torch.nn.functional.interpolate", wraps=torch.nn.functional.interpolate
            ) as spy,
            torch.no_grad(),
        ):
            model(torch.randn(1, 3, 32, 32))
        seen[name] = any(c.kwargs.get("mode") == "bilinear" for c in spy.call_args_list)
    assert seen == {name: upsamples(name) for name in small}
    assert {n for n in small if seen[n]} == {"attention56_cifar", "attention92_cifar"}


def test_the_trainer_asks_for_the_refusal_before_any_work(tmp_path, monkeypatch) -> None:
    """Trainer passes the network's upsampling to the runtime check: on a CUDA machine (the
    check's view patched) an attention network under deterministic=true stops at set-up."""
    from resnets.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = compose_train(["model=attention56_cifar", "trainer.deterministic=true"])
    with pytest.raises(ConfigError, match=DETERMINISTIC_REFUSAL):
        Trainer(cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bilinear_backward_on_cuda_is_not_deterministic_so_the_refusal_stands() -> None:
    """If a torch release adds a deterministic kernel, this fails: then lift the refusal."""
    x = torch.randn(2, 3, 8, 8, device="cuda", requires_grad=True)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
            torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear").sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


def _odd_ilsvrc_files(root, size: int = 40) -> dict[str, object]:
    """A folder as ILSVRC2012's train set has them: a PNG named .JPEG and a CMYK JPEG, beside
    ordinary RGB and greyscale JPEGs. Returns the PIL images as written."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for split in ("train", "val"):
        folder = root / split / "n01440764"
        folder.mkdir(parents=True)
        rgb = Image.fromarray(rng.integers(0, 255, (size, size + 6, 3), dtype=np.uint8))
        rgb.save(folder / "rgb.JPEG", quality=95)
        rgb.convert("L").save(folder / "grey.JPEG", quality=95)
        rgb.save(folder / "png_named.JPEG", format="PNG")
        rgb.convert("CMYK").save(folder / "cmyk.JPEG", quality=95)
        written[split] = rgb
    return written


def test_png_named_jpeg_and_cmyk_fall_back_to_the_cpu_and_are_counted(tmp_path) -> None:
    from PIL import Image

    from resnets.data.device_decode import (
        EncodedImages,
        collate_encoded,
        decode_batch,
        split_encoded,
    )

    _odd_ilsvrc_files(tmp_path)
    folder = tmp_path / "val" / "n01440764"
    names = ["rgb.JPEG", "png_named.JPEG", "grey.JPEG", "cmyk.JPEG"]
    dataset = EncodedImages([(str(folder / n), 0) for n in names])
    flat, offsets, _labels, on_cpu = collate_encoded([dataset[i] for i in range(len(names))])
    assert on_cpu.tolist() == [False, True, False, True]
    images, on_host = decode_batch(
        split_encoded(flat, offsets), on_cpu.tolist(), torch.device("cpu")
    )
    assert on_host == 2
    for name, image in zip(names, images, strict=True):
        with Image.open(folder / name) as pil:
            expected = torch.from_numpy(__import__("numpy").asarray(pil.convert("RGB")).copy())
        assert image.dtype == torch.uint8 and image.shape == expected.permute(2, 0, 1).shape, name
        # libjpeg-turbo (torchvision) and PIL's libjpeg agree to a grey level or two
        assert (image.permute(1, 2, 0).int() - expected.int()).abs().float().mean() < 2.0, name


def test_gpu_decode_bundle_trains_through_odd_files_and_counts_them(tmp_path) -> None:
    """The gpu_decode loaders, decoding on the CPU (the device check bypassed): a PNG named .JPEG
    and a CMYK JPEG go through the CPU and training batches still come out whole."""
    from resnets.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from resnets.data.factory import Batching, _folder_bundle

    from .test_data import data_cfg

    _odd_ilsvrc_files(tmp_path)
    cfg = data_cfg(
        name="imagefolder",
        root=str(tmp_path),
        image_size=32,
        val_crop=32,
        val_resize=36,
        gpu_decode=True,
        augment={"hflip": True},
    )
    bundle = _folder_bundle(
        cfg, Batching(4, eval_batch_size=4), device=torch.device("cpu"), workers=0, split="val"
    )
    bundle.train.set_epoch(0)
    ((images, _labels),) = list(bundle.train)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert bundle.train.cpu_decoded == 2
    # one normalisation: a uint8 image maps into [(0 - mean) / std, (1 - mean) / std]
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    assert lo - 1e-5 <= images.min() and images.max() <= hi + 1e-5
    # crops and flips come from (seed, epoch, batch): the same epoch again draws the same ones
    bundle.train.set_epoch(0)
    ((again, _),) = list(bundle.train)
    assert torch.equal(again, images)
    bundle.train.set_epoch(1)
    ((other, _),) = list(bundle.train)
    assert not torch.equal(other, images)
    ((val, _),) = list(bundle.val)
    assert val.shape == (4, 3, 32, 32) and bundle.val.cpu_decoded == 2


FD_SCRIPT = """
import resource, sys, torch
from resnets.data.factory import Batching, _folder_bundle
from tests.test_data import data_cfg

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
cfg = data_cfg(name="imagefolder", root=sys.argv[1], image_size=16, val_crop=16, val_resize=16,
               gpu_decode=True, prefetch_factor=4, persistent_workers=False)
bundle = _folder_bundle(cfg, Batching(120, eval_batch_size=120), device=torch.device("cpu"),
                        workers=2, split="val")
bundle.train.set_epoch(0)
n = sum(len(labels) for _, labels in bundle.train)
print("images", n)
"""


@pytest.mark.slow
def test_gpu_decode_batches_cross_from_workers_in_a_few_descriptors(tmp_path) -> None:
    """Batches of 120 images, 2 workers x 4 prefetched batches, under `ulimit -n 128`: one
    descriptor per image (960 in flight) runs out; one flat buffer per batch does not."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from .helpers import REPO

    rng = np.random.default_rng(0)
    for split, n in (("train", 960), ("val", 3)):
        folder = tmp_path / split / "c"
        folder.mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.JPEG")
    result = subprocess.run(
        [sys.executable, "-c", FD_SCRIPT, str(tmp_path), "128"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images 960" in result.stdout


def _tensor_loader(device="cpu", **kw):
    from resnets.data.loaders import TensorLoader

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return TensorLoader(
        images,
        torch.arange(50),
        batch_size=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        device=torch.device(device),
        train=True,
        seed=7,
        crop_padding=2,
        hflip=True,
        cutout=3,
        **kw,
    )


def test_tensor_loader_draws_on_the_datas_device_with_no_host_copies() -> None:
    loader = _tensor_loader()
    loader.set_epoch(3)
    gen = loader.generator()
    assert isinstance(gen, torch.Generator) and gen.device == loader.images.device
    batches = iter(loader)
    next(batches)  # the epoch's index copy happens once, before the first batch
    moved: list[str] = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        moved.append(repr(args))
        return real_to(self, *args, **kwargs)

    with mock.patch.object(torch.Tensor, "to", to):
        rest = list(batches)
    assert len(rest) == 2 and moved == []  # no per-step copies between host and device


def test_tensor_loader_augmentation_is_unchanged_for_a_fixed_seed() -> None:
    """An independent per-image reference of pad + crop + flip + cutout from the same draws: each
    position of the epoch's order has its own crop, flip and cutout, drawn once an epoch from
    (seed, epoch) (resnets.data.plan), so they do not depend on the batch size."""
    import torch.nn.functional as F

    from resnets.data.loaders import shard_indices
    from resnets.data.plan import augment_generator

    loader = _tensor_loader()
    loader.set_epoch(2)
    got = list(loader)
    order = shard_indices(
        50, shuffle=True, seed=7, epoch=2, rank=0, world_size=1, even=True, chunk=16
    )
    gen = augment_generator(7, 2)
    draws = [torch.randint(0, 5, (50,), generator=gen), torch.randint(0, 5, (50,), generator=gen)]
    draws += [torch.rand(50, generator=gen) < 0.5]
    draws += [torch.randint(0, 8, (50,), generator=gen), torch.randint(0, 8, (50,), generator=gen)]
    for b, (x, y) in enumerate(got):
        idx = order[b * 16 : (b + 1) * 16]
        assert torch.equal(y, idx)
        dy, dx, flip, cy, cx = (d[b * 16 : (b + 1) * 16] for d in draws)
        for k, i in enumerate(idx.tolist()):
            image = F.pad(loader.images[i], (2, 2, 2, 2))[:, dy[k] : dy[k] + 8, dx[k] : dx[k] + 8]
            image = image.flip(-1) if flip[k] else image.clone()
            y0, x0 = int(cy[k]) - 1, int(cx[k]) - 1
            image[:, max(y0, 0) : max(y0 + 3, 0), max(x0, 0) : max(x0 + 3, 0)] = 0
            expected = (image.float() - 0.5 * 255) / (0.25 * 255)
            torch.testing.assert_close(x[k], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("batch", "accumulate", "base", "expected"),
    [(32, 4, 64, 0.2), (48, 1, 256, 0.1 * 48 / 256), (32, 4, None, 0.1)],
)
def test_lr_scales_linearly_with_the_global_batch(
    tmp_path, caplog, batch, accumulate, base, expected
):
    overrides = [
        *TINY,
        "sched=constant",
        "optim.lr=0.1",
        f"trainer.batch_size={batch}",
        f"trainer.accumulate_grad_batches={accumulate}",
        f"optim.base_batch_size={'null' if base is None else base}",
    ]
    trainer = Trainer(compose_train(overrides), tmp_path)
    with caplog.at_level("INFO"):
        trainer._setup()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert f"global batch {batch * accumulate} (trainer.batch_size {batch} x 1 ranks" in caplog.text


def test_two_ranks_double_the_lr_of_a_recipe(tmp_path, monkeypatch) -> None:
    """The effective batch under DDP is batch_size x ranks: the rate follows it."""
    trainer = Trainer(
        compose_train([*TINY, "sched=constant", "optim.base_batch_size=64"]), tmp_path
    )
    trainer.dist = D.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    scaled = scaled_optim(trainer.cfg.optim, trainer.cfg.trainer, trainer.dist.world_size)
    assert scaled.lr == pytest.approx(trainer.cfg.optim.lr * 2 * 64 / 64)
    assert trainer.cfg.optim.lr != scaled.lr  # the config itself is left as written
