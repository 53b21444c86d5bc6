"""CUDA-only settings on a machine without CUDA: one line naming the field, exit status 2."""

from __future__ import annotations

import pytest
import torch

from resnets.config import ConfigError
from resnets.engine.trainer import Trainer
from resnets.runtime import check_runtime

from .helpers import TINY, compose_train, run_train_cli

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: these are allowed")


@no_cuda
@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=gpu"],
        ["+experiment=cifar10_fast"],
        ["+experiment=imagenet_resnet50"],
        ["+experiment=imagenet_resnet50_v2"],
        ["trainer.device=cuda"],
    ],
)
def test_gpu_settings_without_cuda_are_config_errors(tmp_path, overrides) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.device='cuda' but this machine has no CUDA"):
        Trainer(compose_train(overrides), tmp_path)


@pytest.mark.parametrize(
    ("trainer", "data", "fragment"),
    [
        ({"precision": "16-mixed"}, None, r"trainer\.precision='16-mixed' needs CUDA"),
        (
            {"compile": True, "compile_mode": "reduce-overhead"},
            None,
            r"trainer\.compile_mode='reduce-overhead' .* accepted on CPU: default, max-autotune",
        ),
        ({}, {"gpu_decode": True}, r"data\.gpu_decode=true needs a CUDA device"),
        ({"device": "cuda"}, None, r"trainer\.device='cuda' .*accepted here: auto, cpu"),
    ],
)
def test_one_function_refuses_what_needs_cuda(trainer, data, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        check_runtime(trainer, data, cuda_available=False)
    # the same settings pass where CUDA exists, and auto picks it
    assert check_runtime({**trainer}, data, cuda_available=True) == "cuda"


def test_sync_batchnorm_needs_cuda_only_with_several_ranks() -> None:
    assert check_runtime({"sync_batchnorm": True}, cuda_available=False, world_size=1) == "cpu"
    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm=true needs CUDA"):
        check_runtime({"sync_batchnorm": True}, cuda_available=False, world_size=2)


@no_cuda
@pytest.mark.slow
def test_trainer_gpu_cli_is_one_line_and_exit_2(tmp_path) -> None:
    result = run_train_cli([*TINY, "trainer=gpu", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("error: trainer.device='cuda'"), lines
    assert "Traceback" not in result.stderr + result.stdout
