"""data.loader=dali on DALI's CPU operators (the `gpu` tests run the mixed decoder): the order and
the crop windows come from the epoch plan, so batches equal the torchvision loader's up to the
resampling filter, resume is exact and ranks split what accumulation sees."""

from __future__ import annotations

import sys

import pytest
import torch
from omegaconf import OmegaConf

from resnets.data import DataError, build_data
from resnets.data.dali import INSTALL, eval_window, train_window
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train

from .conftest import write_image_folder
from .helpers import TINY, compose_train, read_metrics, run_script_inprocess

# one grey level is 1 / (255 * 0.225) = 0.017 after normalisation; the filters differ by a few
GREY = 1 / (255 * 0.225)


def folder(tmp_path, **kw):
    return write_image_folder(tmp_path / "data", per_class=kw.pop("per_class", 8), size=40, **kw)


def data_cfg(root, **fields):
    base = dict(name="imagefolder", root=str(root), image_size=16, loader="dali")
    return OmegaConf.create({**base, **fields})


def batches(loader, epoch=0, start=0):
    loader.set_epoch(epoch, start_sample=start)
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.slow
def test_crop_windows_and_flips_are_the_torchvision_loaders(tmp_path) -> None:
    """The same (seed, epoch, position) draws the same window and flip: only the decoder and
    the resampling filter differ, by a few grey levels on average."""
    root = folder(tmp_path)
    kw = dict(batch_size=4, seed=3)
    tv = build_data(data_cfg(root, loader="torchvision"), **kw)
    dali = build_data(data_cfg(root), **kw)
    for epoch in (0, 1):
        a, b = batches(tv.train, epoch), batches(dali.train, epoch)
        assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]
        diff = torch.cat([(x - z).abs().flatten() for (x, _), (z, _) in zip(a, b, strict=True)])
        assert diff.mean() < 0.5 * GREY and diff.max() < 6 * GREY, (diff.mean(), diff.max())
    images, _ = b[0]
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_validation_geometry_is_torchvisions(tmp_path) -> None:
    """Resize's output size and CenterCrop's offsets match torchvision's for odd sizes, and
    the validation batches agree within a grey level on average."""
    from PIL import Image
    from torchvision.transforms import v2

    for width, height in [(500, 375), (375, 500), (81, 80), (30, 40), (301, 299)]:
        w, h, _, _ = eval_window(
            width, height, 256 if width > 100 else 36, 224 if width > 100 else 32
        )
        resized = v2.Resize(256 if width > 100 else 36)(Image.new("RGB", (width, height)))
        assert (w, h) == resized.size
    # a picture smaller than the crop is padded around its centre as CenterCrop pads
    assert eval_window(20, 20, 20, 25)[2:] == (-2, -2)
    root = folder(tmp_path)
    tv = build_data(data_cfg(root, loader="torchvision", val_resize=20), batch_size=5)
    dali = build_data(data_cfg(root, val_resize=20), batch_size=5)
    a, b = batches(tv.val), batches(dali.val)
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]
    diff = torch.cat([(x - z).abs().flatten() for (x, _), (z, _) in zip(a, b, strict=True)])
    assert diff.mean() < 0.5 * GREY and diff.max() < 6 * GREY, (diff.mean(), diff.max())


def test_train_window_draws_what_the_torchvision_pipeline_draws() -> None:
    """train_window(seed) is v2.RandomResizedCrop's window and RandomHorizontalFlip's choice
    under manual_seed(seed), as the torchvision loader's SeededSamples draws them: the crop of a
    picture whose pixels number themselves shows which window and mirror the pipeline took."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    height, width = 37, 50
    ramp = np.arange(height * width, dtype=np.int64).reshape(height, width)
    image = Image.fromarray(
        np.stack([ramp % 256, ramp // 256, np.zeros_like(ramp)], -1).astype(np.uint8)
    )
    pipeline = v2.Compose(
        [v2.RandomResizedCrop((4, 4), interpolation=v2.InterpolationMode.NEAREST),
         v2.RandomHorizontalFlip()]
    )  # fmt: skip
    flips = []
    for seed in range(30):
        left, top, w, h, flip = train_window(image, seed, (0.08, 1.0), True)
        torch.manual_seed(seed)
        drawn = np.asarray(pipeline(image))
        mine = TF.resized_crop(image, top, left, h, w, [4, 4], v2.InterpolationMode.NEAREST)
        mine = np.asarray(TF.horizontal_flip(mine) if flip else mine)
        assert np.array_equal(drawn, mine), seed  # numbered pixels: another window differs
        flips.append(flip)
    assert 5 < sum(flips) < 25  # both choices were drawn


def test_resume_yields_the_rest_of_the_uninterrupted_epoch(tmp_path) -> None:
    root = folder(tmp_path)
    loader = build_data(data_cfg(root), batch_size=4, seed=5).train
    whole = batches(loader, epoch=2)
    rest = batches(loader, epoch=2, start=8)  # after two batches of four
    assert len(rest) == len(whole) - 2
    for (x, y), (z, t) in zip(whole[2:], rest, strict=True):
        assert torch.equal(y, t) and torch.equal(x, z)  # DALI's CPU operators are deterministic
    # a pass broken off half-way leaves nothing behind for the next one
    loader.set_epoch(2)
    next(iter(loader))
    assert [y.tolist() for _, y in batches(loader, epoch=2)] == [y.tolist() for _, y in whole]


def test_two_ranks_see_what_one_accumulating_process_sees(tmp_path) -> None:
    """Rank r takes global micro-batch m when m % 2 == r; one process with accumulate=2 takes
    them all in order: the 'accumulation equals DDP' rule (batch 3 does not divide 24)."""
    root = folder(tmp_path)
    cfg = data_cfg(root, drop_last=False)
    one = batches(build_data(cfg, batch_size=5, accumulate=2, seed=1).train)
    ranks = [
        batches(build_data(cfg, batch_size=5, seed=1, rank=r, world_size=2).train) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2 == 3  # two steps of 10, one of 4
    for m, (x, y) in enumerate(one):
        z, t = ranks[m % 2][m // 2]
        assert torch.equal(y, t) and torch.equal(x, z)


@pytest.mark.parametrize("world_size", [1, 2])
def test_repeated_augmentation_order_is_the_torchvision_loaders(tmp_path, world_size) -> None:
    root = folder(tmp_path)
    for rank in range(world_size):
        kw = dict(batch_size=3, accumulate=2, seed=1, rank=rank, world_size=world_size)
        dali = batches(build_data(data_cfg(root, repeated_aug=3), **kw).train, epoch=1)
        tv = data_cfg(root, loader="torchvision", repeated_aug=3)
        tv = batches(build_data(tv, **kw).train, epoch=1)
        assert [y.tolist() for _, y in tv] == [y.tolist() for _, y in dali]
        # three copies of an image in a row, each with its own crop
        x = dali[0][0]
        assert not torch.equal(x[0], x[1])


def test_unreadable_images_skipped_and_counted_as_the_torchvision_loader_does(tmp_path) -> None:
    from .test_hostile_data import _damaged_tree

    truncated, text, broken_val = _damaged_tree(tmp_path)
    cfg = data_cfg(tmp_path, max_bad_images=0.2)
    bundle = build_data(cfg, batch_size=4)
    assert [len(y) for _, y in bundle.train] == [4, 4, 4, 4]  # bad ones replaced
    assert sorted(bundle.train.bad) == sorted([str(truncated), str(text)])
    assert "truncated" in bundle.train.bad[str(truncated)].lower()
    val_labels = [int(v) for _, y in bundle.val for v in y]
    assert len(val_labels) == 17 and val_labels.count(2) == 5  # dropped, not doubled
    assert list(bundle.val.bad) == [str(broken_val)]
    tv = build_data(data_cfg(tmp_path, max_bad_images=0.2, loader="torchvision"), batch_size=4)
    assert [y.tolist() for _, y in bundle.train] == [y.tolist() for _, y in tv.train]


def test_a_file_only_the_decoder_finds_broken_is_skipped_and_the_pass_goes_on(tmp_path) -> None:
    """A JPEG whose header and end marker are fine but whose scan header is not: DALI's batch
    fails, PIL confirms the file is bad, and the pass restarts at that batch without it."""
    root = folder(tmp_path)
    broken = root / "train" / "dog" / "3.JPEG"
    data = bytearray(broken.read_bytes())
    sos = data.index(b"\xff\xda")
    data[sos + 5] = 9  # a component id the frame does not have
    broken.write_bytes(bytes(data))
    fields = dict(max_bad_images=0.2)
    dali = build_data(data_cfg(root, **fields), batch_size=4, seed=2)
    tv = build_data(data_cfg(root, loader="torchvision", **fields), batch_size=4, seed=2)
    a, b = batches(dali.train), batches(tv.train)
    assert [len(y) for _, y in a] == [4] * 6
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]
    assert list(dali.train.bad) == list(tv.train.bad) == [str(broken)]
    assert "broken data stream" in dali.train.bad[str(broken)]


def test_too_many_unreadable_images_stop_with_one_line(tmp_path) -> None:
    from .test_hostile_data import _damaged_tree

    _damaged_tree(tmp_path)
    bundle = build_data(data_cfg(tmp_path), batch_size=4)
    with pytest.raises(DataError, match=r"unreadable images in the train split of .*max_bad"):
        for _ in bundle.train:
            pass


@pytest.mark.slow
def test_missing_dali_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys) -> None:
    root = folder(tmp_path)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali -> ImportError
    with pytest.raises(DataError, match=r"data\.loader=dali needs NVIDIA DALI") as info:
        build_data(data_cfg(root), batch_size=4)
    assert INSTALL in str(info.value) and "\n" not in str(info.value)
    args = [*TINY, "data=imagefolder", f"data.root={root}", "data.loader=dali"]
    status = run_script_inprocess("train", [*args, f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and INSTALL in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "digits", "root": None}, r"data\.loader=dali decodes image files"),
        (
            {"augment": {"auto_augment": "randaugment"}},
            r"auto_augment.*need data\.loader=torchvision",
        ),
        ({"augment": {"random_erasing": 0.25}}, r"random_erasing.*need data\.loader=torchvision"),
    ],
)
def test_what_dali_does_not_do_is_refused(tmp_path, fields, message) -> None:
    root = folder(tmp_path)
    with pytest.raises(DataError, match=message):
        build_data(OmegaConf.merge(data_cfg(root), fields), batch_size=4)


def _run(tmp_path, name, *extra):
    overrides = [
        *TINY,
        "data=imagefolder",
        f"data.root={tmp_path / 'data'}",
        "data.loader=dali",
        "data.image_size=16",
        "trainer.batch_size=4",
        "trainer.epochs=2",
        "trainer.deterministic=true",
        "trainer.channels_last=false",
        *extra,
    ]
    train(compose_train(overrides), tmp_path / name)
    return tmp_path / name


@pytest.mark.slow
def test_dali_trains_a_folder_and_resumes_weight_for_weight(tmp_path) -> None:
    folder(tmp_path)  # 24 train images: 6 steps of 4 an epoch
    straight = _run(tmp_path, "straight")
    metrics = read_metrics(straight)
    assert metrics["status"] == "finished" and metrics["steps"] == 12
    assert metrics["val_samples"] == 24 and metrics["bad_images"] == []
    resumed = _run(tmp_path, "resumed", "trainer.max_steps=8")  # stops 2 batches into epoch 1
    assert load_checkpoint(resumed / "checkpoints/last.pt")["samples_in_epoch"] == 8
    _run(tmp_path, "resumed")
    a = load_checkpoint(straight / "checkpoints/last.pt")
    b = load_checkpoint(resumed / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert read_metrics(resumed)["val_top1"] == metrics["val_top1"]


def _hard_folder(root, per_class: int = 30) -> None:
    """Classes that differ by a little brightness under much noise: top-1 well below 100%, so
    the two loaders' scores can differ."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog", "eel")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                shift = 14 * c + rng.integers(-25, 26)  # overlapping classes
                pixels = rng.integers(0, 200, (48, 56, 3)) + 25 + shift
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.JPEG")


@pytest.mark.slow
def test_evaluation_parity_with_the_torchvision_loader(tmp_path) -> None:
    """The same checkpoint scored through both loaders' validation: top-1 within one image of
    90, the loss within 1%."""
    from resnets.engine.steps import evaluate_model
    from resnets.models import build_model

    _hard_folder(tmp_path / "data")
    run = _run(tmp_path, "run", "data.image_size=32", "trainer.batch_size=16")
    model = build_model("resnet", num_classes=3, depth=8, stem="cifar")
    model.load_state_dict(load_checkpoint(run / "checkpoints/last.pt")["model"])
    scores = {}
    for loader in ("torchvision", "dali"):
        cfg = data_cfg(tmp_path / "data", loader=loader, image_size=32)
        val = build_data(cfg, batch_size=16).val
        scores[loader] = evaluate_model(model, val, torch.device("cpu"), "32")
    tv, dali = scores["torchvision"], scores["dali"]
    assert dali["n"] == tv["n"] == 90
    assert 35 < tv["top1"] < 95, tv  # above chance, below perfect: one image can move it
    assert abs(dali["top1"] - tv["top1"]) <= 100 / 90 + 1e-6, scores
    assert abs(dali["loss"] - tv["loss"]) < 0.01 * tv["loss"], scores


# ----------------------------------------------------------------------------- GPU (mixed)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mixed_decoder_matches_the_cpu_pipeline(tmp_path, dtype) -> None:
    from torchvision.datasets import ImageFolder

    from resnets.data.dali import DaliLoader, EncodedSamples

    root = folder(tmp_path)
    samples = EncodedSamples(ImageFolder(str(root / "train")))
    kw = dict(batch_size=4, train=True, seed=2, mean=(0.5,) * 3, std=(0.25,) * 3, size=16)
    cpu = list(DaliLoader(samples, **kw))
    gpu = list(DaliLoader(samples, device="cuda", dtype=dtype, **kw))
    assert len(cpu) == len(gpu) == 6
    for (x, y, _), (z, t, _) in zip(cpu, gpu, strict=True):
        assert z.device.type == "cuda" and z.dtype == dtype
        assert z.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y, t)
        # nvJPEG's IDCT and the GPU resampler differ from libjpeg-turbo's by a few levels
        assert (z.float().cpu() - x).abs().mean() < 2 / (255 * 0.25)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dali_trains_on_the_gpu(tmp_path) -> None:
    folder(tmp_path)
    run = _run(tmp_path, "gpu", "trainer.device=cuda", "trainer.deterministic=false")
    assert read_metrics(run)["steps"] == 12
