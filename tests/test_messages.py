"""Bad input that used to end in a traceback or a silent wrong choice: one line saying what to do."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from resnets.data import DataError, build_data
from resnets.engine.checkpoint import CheckpointError
from resnets.engine.trainer import train

from .helpers import TINY, compose_train


def test_download_without_network_says_where_to_put_the_archive(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cfg = compose_train(["data=cifar10", "data.download=true", f"data.root={tmp_path}"])
    with pytest.raises(DataError) as err:
        build_data(cfg.data, batch_size=8)
    message = str(err.value)
    assert "\n" not in message and "Name or service not known" in message
    assert "cifar-10-python.tar.gz" in message and f"put it in {tmp_path}/" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_imagefolder_without_root_is_refused_not_read_from_data(tmp_path) -> None:
    cfg = compose_train(["data=imagefolder"])
    assert cfg.data.root is None
    with pytest.raises(DataError, match=r"^data=imagefolder needs data\.root=PATH"):
        build_data(cfg.data, batch_size=8)


def test_resuming_with_another_model_says_what_differs(tmp_path) -> None:
    train(compose_train([*TINY, "data=fake", "data.fake_size=64", "trainer.max_steps=1"]), tmp_path)
    other = [*TINY, "model.depth=14", "data=fake", "data.fake_size=64", "trainer.max_steps=2"]
    with pytest.raises(CheckpointError) as err:
        train(compose_train(other), tmp_path)
    message = str(err.value)
    assert "\n" not in message and "does not fit model 'resnet':" in message
    assert "model.depth: checkpoint 8, this run 14" in message
    assert "missing keys (e.g. layer1.1." in message
    assert message.rstrip().endswith("(hydra.run.dir=...)")
