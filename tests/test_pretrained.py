"""Published weights through torchvision's and timm's own loaders and caches, all offline.

The caches are filled the way the libraries fill them when they download: torchvision's files
under $TORCH_HOME/hub/checkpoints with the names its weight enums' URLs end in, timm's in the
Hugging Face cache layout. The files hold the libraries' own randomly initialised networks (with
random BatchNorm statistics), so every comparison is against the library's model with those weights.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from resnets.models import ModelError, build_model
from resnets.models.pretrained import PretrainedError, adapt_input_conv

from .helpers import REPO

TOL = 1e-5
OFFLINE = {
    "https_proxy": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HF_HUB_OFFLINE": "1",
}


def run_cli(script: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """train.py / evaluate.py in a subprocess with no way to download anything."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "2", **OFFLINE, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def fill_torchvision_cache(home: Path, name: str, tag: str, seed: int = 0) -> Path:
    """Write torchvision's own random `name` under the file name `Weights.url` ends in."""
    torch.manual_seed(seed)
    member = torchvision.models.get_model_weights(name)[tag]
    model = _randomise_bn(torchvision.models.get_model(name, weights=None))
    path = home / "hub" / "checkpoints" / os.path.basename(member.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    # any download attempt fails at once instead of reaching the network
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    return home


@pytest.fixture(scope="module")
def resnet18_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    fill_torchvision_cache(home, "resnet18", "IMAGENET1K_V1")
    return home


@pytest.fixture
def with_resnet18(resnet18_home, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(resnet18_home))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    return resnet18_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_torchvision_weights_load_through_the_hub_cache(with_resnet18) -> None:
    # the library model reads the same cached file through its own weights API
    reference = torchvision.models.resnet18(weights="IMAGENET1K_V1").eval()
    saved = torch.load(with_resnet18, weights_only=True)
    assert torch.equal(reference.conv1.weight, saved["conv1.weight"])
    x = torch.randn(2, 3, 64, 64)
    for spec in ("torchvision:IMAGENET1K_V1", "torchvision", "torchvision:DEFAULT"):
        # image_size 32 alone would pick the CIFAR stem: the weights' 7x7 stem is kept
        ours = build_model("resnet18", 1000, pretrained=spec, image_size=32).eval()
        assert ours.stem_type == "imagenet"
        with torch.no_grad():
            assert _max_diff(ours(x), reference(x)) <= TOL


def test_classifier_is_reinitialised_for_another_class_count(with_resnet18, caplog) -> None:
    reference = torchvision.models.resnet18(weights="IMAGENET1K_V1").eval()
    saved = torch.load(with_resnet18, weights_only=True)
    torch.manual_seed(1)
    with caplog.at_level(logging.INFO):
        ours = build_model("resnet18", 7, pretrained="torchvision:IMAGENET1K_V1").eval()
    assert "classifier re-initialised for 7 classes (the weights have 1000)" in caplog.text
    assert ours.fc.weight.shape == (7, 512)
    fresh = torch.nn.Linear(512, 7)
    assert not torch.equal(ours.fc.weight, saved["fc.weight"][:7])
    # everything but the head is the file's
    for key, value in ours.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, saved[key]), key
    assert ours.fc.weight.abs().max() <= 1 / 512**0.5 + 1e-7  # nn.Linear's own init range
    assert fresh.weight.shape == ours.fc.weight.shape
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        backbone = torch.nn.Sequential(*list(reference.children())[:-1])
        features = backbone(x).flatten(1)
        assert _max_diff(ours.forward_head(ours.forward_features(x)), ours.fc(features)) <= TOL


@pytest.mark.parametrize("in_chans", [1, 2, 5])
def test_first_convolution_adapts_to_input_channels_as_timm_does(with_resnet18, in_chans) -> None:
    from timm.models import adapt_input_conv as timm_adapt

    saved = torch.load(with_resnet18, weights_only=True)["conv1.weight"]
    ours = build_model("resnet18", 10, in_chans=in_chans, pretrained="torchvision").eval()
    expected = timm_adapt(in_chans, saved.clone())
    assert torch.equal(ours.conv1.weight, expected)
    assert torch.equal(adapt_input_conv(in_chans, saved), expected)
    if in_chans == 1:
        # a grey image through the summed filters = the same image in three channels through
        # the library's network
        reference = torchvision.models.resnet18(weights="IMAGENET1K_V1").eval()
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            ref = torch.nn.Sequential(*list(reference.children())[:-1])(x.repeat(1, 3, 1, 1))
            assert _max_diff(ours.avgpool(ours.forward_features(x)), ref) <= TOL


def test_stem_follows_the_weights_unless_forced(with_resnet18, caplog) -> None:
    saved = torch.load(with_resnet18, weights_only=True)
    kept = build_model("resnet18", 10, stem="auto", image_size=32, pretrained="torchvision")
    assert kept.stem_type == "imagenet" and torch.equal(kept.conv1.weight, saved["conv1.weight"])
    with caplog.at_level(logging.INFO):
        forced = build_model("resnet18", 10, stem="cifar", image_size=32, pretrained="torchvision")
    assert "model.stem=cifar replaces the imagenet stem of the weights" in caplog.text
    assert forced.stem_type == "cifar" and forced.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(forced.bn1.weight, torch.ones(64))  # re-initialised, not the file's
    assert not torch.equal(saved["bn1.weight"], torch.ones(64))
    for key, value in forced.state_dict().items():
        if key.startswith("layer"):
            assert torch.equal(value, saved[key]), key


def test_unknown_weights_name_the_accepted_ones(with_resnet18) -> None:
    with pytest.raises(ModelError) as err:
        build_model("resnet18", pretrained="torchvision:IMAGENET1K_V9")
    assert str(err.value) == (
        "model.pretrained='torchvision:IMAGENET1K_V9': torchvision has no 'IMAGENET1K_V9' "
        "weights for resnet18; accepted: torchvision:IMAGENET1K_V1, torchvision:DEFAULT"
    )
    with pytest.raises(PretrainedError) as err:
        build_model("resnet56", pretrained="torchvision")
    message = str(err.value)
    assert message.startswith(
        "model.pretrained='torchvision': torchvision has no weights for 'resnet56'; "
        "networks with torchvision weights: resnet101, resnet152, resnet18, resnet34, resnet50, "
    )
    assert "wide_resnet50_2" in message and "seresnet50" not in message and "\n" not in message
    with pytest.raises(
        PretrainedError, match="timm has no weights for 'resnet56'; networks with timm"
    ):
        build_model("resnet56", pretrained="timm")
    with pytest.raises(
        PretrainedError,
        match=r"timm has no weights 'resnet18.nope' for resnet18; accepted: timm:resnet18.a1_in1k",
    ):
        build_model("resnet18", pretrained="timm:resnet18.nope")


def test_missing_cache_file_names_the_path(torch_home) -> None:
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(PretrainedError) as err:
        build_model("resnet18", pretrained="torchvision:IMAGENET1K_V1")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "model.pretrained='torchvision:IMAGENET1K_V1': weights file resnet18-f37072fd.pth is not "
        "in the torch hub cache and could not be downloaded"
    )
    assert message.endswith(
        f"download https://download.pytorch.org/models/resnet18-f37072fd.pth and place it at {expected}"
    )


# ----------------------------------------------------------------------------- timm
def fill_timm_cache(hub_cache: Path, tag: str, seed: int = 0) -> torch.nn.Module:
    """timm's random `tag` network saved where timm's Hugging Face download would put it."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = _randomise_bn(timm.create_model(tag, pretrained=False))
    repo = hub_cache / f"models--timm--{tag}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("main")
    (repo / "snapshots" / "main").mkdir(parents=True)
    save_file(model.state_dict(), repo / "snapshots" / "main" / "model.safetensors")
    return model


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_timm_weights_load_through_the_hf_cache(hf_cache) -> None:
    import timm

    source = fill_timm_cache(hf_cache, "resnet18.a1_in1k")
    # timm's own pretrained loading reads the cache we filled
    reference = timm.create_model("resnet18.a1_in1k", pretrained=True).eval()
    ours = build_model("resnet18", 1000, pretrained="timm:resnet18.a1_in1k", image_size=32).eval()
    default = build_model("resnet18", 1000, pretrained="timm").eval()  # resnet18's default tag
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
        assert _max_diff(reference(x), expected) == 0
        assert _max_diff(ours(x), expected) <= TOL
        assert _max_diff(default(x), expected) <= TOL


def test_timm_missing_weights_name_the_cache_path(hf_cache) -> None:
    repo = hf_cache / "models--timm--resnet18.a1_in1k"
    with pytest.raises(PretrainedError) as err:
        build_model("resnet18", pretrained="timm:resnet18.a1_in1k")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "model.pretrained='timm:resnet18.a1_in1k': timm weights model.safetensors of "
        "resnet18.a1_in1k are not in the cache"
    )
    assert message.endswith(
        f"place it at {repo / 'snapshots' / 'main' / 'model.safetensors'} and write the word "
        f"main into {repo / 'refs' / 'main'}"
    )


UNREACHABLE_HUB = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture
def hf_cache_online(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache with offline mode off and a Hub that refuses connections."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE_HUB)
    return cache


def test_timm_weights_absent_and_hub_unreachable_stop_before_timm_retries(
    hf_cache_online, monkeypatch
) -> None:
    import timm

    def no_download(*args, **kwargs):
        raise AssertionError("timm's download (a minute of retries offline) was started")

    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(PretrainedError) as err:
        build_model("resnet18", pretrained="timm:resnet18.a1_in1k")
    message = str(err.value)
    assert "\n" not in message
    assert "(the Hugging Face Hub cannot be reached: ConnectError" in message, message
    assert message.endswith(
        f"write the word main into {hf_cache_online}/models--timm--resnet18.a1_in1k/refs/main"
    )


def test_timm_weights_staged_in_the_cache_load_with_the_hub_unreachable(hf_cache_online) -> None:
    # an offline cluster: weights copied into the cache, HF_HUB_OFFLINE not set, no network
    source = fill_timm_cache(hf_cache_online, "resnet18.a1_in1k")
    ours = build_model("resnet18", 1000, pretrained="timm:resnet18.a1_in1k", image_size=32).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _max_diff(ours(x), source(x)) <= TOL


@pytest.mark.slow
def test_train_with_absent_timm_weights_offline_fails_with_one_line(tmp_path) -> None:
    # no HF_HUB_OFFLINE: before, timm retried each file five times (~50 s, 24 warnings)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": UNREACHABLE_HUB, "HF_HUB_OFFLINE": "0"}
    proc = run_cli(
        "train.py",
        [
            "model=resnet18",
            "model.pretrained=timm:resnet18.a1_in1k",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        **env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Retrying" not in proc.stderr + proc.stdout
    assert len(errors) == 1 and "the Hugging Face Hub cannot be reached" in errors[0], errors


# ----------------------------------------------------------------------------- files
def test_own_checkpoint_model_or_ema_weights(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    ema = build_model("resnet20", 10)
    ckpt = {
        "model": model.state_dict(),
        "ema": {
            "n_averaged": torch.tensor(3),
            **{f"module.{k}": v for k, v in ema.state_dict().items()},
        },
        "epoch": 1,
        "step": 1,
        "config": "model:\n  name: resnet20\ndata:\n  name: digits\n",
        "format_version": 1,
    }
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    for use_ema, source in ((False, model), (True, ema)):
        loaded = build_model("resnet20", 100, pretrained=str(path), pretrained_ema=use_ema)
        for key, value in source.state_dict().items():
            if not key.startswith("fc."):
                assert torch.equal(loaded.state_dict()[key], value), key
        assert loaded.fc.weight.shape == (100, 64)
    wrong = build_model("resnet32", 10)
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(
        PretrainedError, match=r"does not match model 'resnet20': .*unexpected keys"
    ):
        build_model("resnet20", pretrained=str(tmp_path / "wrong.pt"))


@pytest.mark.slow
def test_train_py_missing_weights_exit_2_one_line(tmp_path) -> None:
    home = tmp_path / "empty_home"
    result = run_cli(
        "train.py",
        [
            "model=resnet18",
            "model.pretrained=torchvision:IMAGENET1K_V1",
            "trainer.progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        TORCH_HOME=str(home),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in lines[0]


@pytest.mark.slow
def test_evaluate_scores_published_weights_with_their_own_preprocessing(tmp_path) -> None:
    """`evaluate.py weights=torchvision:IMAGENET1K_V2 model=resnet50 data=imagenet` equals
    torchvision's model fed by torchvision's own transforms (resize 232, crop 224)."""
    import json

    import numpy as np
    from PIL import Image

    home = tmp_path / "torch_home"
    fill_torchvision_cache(home, "resnet50", "IMAGENET1K_V2")
    root = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    tiny = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
    for c in range(1000):  # 1000 classes, as the weights' classifier
        (root / "train" / f"c{c:03d}").mkdir(parents=True)
        tiny.save(root / "train" / f"c{c:03d}" / "0.jpg")
    for c in range(3):
        (root / "val" / f"c{c:03d}").mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "val" / f"c{c:03d}" / f"{i}.png")
    out = tmp_path / "eval"
    result = run_cli(
        "evaluate.py",
        [
            "model=resnet50",
            "weights=torchvision:IMAGENET1K_V2",
            "data=imagenet",
            f"data.root={root}",
            "trainer.workers=0",
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        TORCH_HOME=str(home),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((out / "metrics.json").read_text())
    os.environ["TORCH_HOME"] = str(home)
    try:
        weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
        reference = torchvision.models.resnet50(weights=weights).eval()
    finally:
        del os.environ["TORCH_HOME"]
    preprocess = weights.transforms()
    assert (preprocess.resize_size, preprocess.crop_size) == ([232], [224])
    folder = torchvision.datasets.ImageFolder(str(root / "val"), transform=preprocess)
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    labels = torch.tensor(folder.targets)
    with torch.no_grad():
        logits = reference(images)
    nll = torch.nn.functional.cross_entropy(logits, labels).item()
    assert scored["samples"] == 6
    assert scored["nll"] == pytest.approx(nll, rel=1e-5)
    assert scored["checkpoint"] == "torchvision:IMAGENET1K_V2"
