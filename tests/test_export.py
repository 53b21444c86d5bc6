"""export.py: every format of four network families from real training runs, parity checked
independently here, model.json and ONNX metadata read back, broken exports and bad input."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from resnets.data import build_data
from resnets.deploy import formats
from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.trainer import train
from resnets.models import build_model_from_config

from .helpers import compose_train, run_script_inprocess

# the TorchScript format is one users ask for; torch marks torch.jit as deprecated
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(load|save)` is deprecated:FutureWarning"
)

SHORT_RUN = [
    "data.image_size=16",
    "trainer.epochs=1",
    "trainer.max_steps=3",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=128",
    "trainer.workers=0",
    "trainer.progress=false",
]
FAMILIES = {
    "resnet20": ["model=resnet20"],
    "preact": ["model=resnet", "model.depth=8", "model.preact=true", "model.stem=cifar"],
    "seresnext": [
        "model=resnet",
        "model.depth=11",
        "model.block=bottleneck",
        "model.groups=4",
        "model.width_per_group=4",
        "model.attention=se",
        "model.stem=cifar",
    ],
    "attention": ["model=attention56_cifar"],
}
TINY_NET = ["model=resnet", "model.depth=8", "model.stem=cifar"]


def short_run(root: Path, model_args: list[str]) -> Path:
    """A real (if short) training run on digits; returns its last checkpoint."""
    train(compose_train([*model_args, *SHORT_RUN]), output_dir=root)
    return root / "checkpoints" / "last.pt"


def eager_from_checkpoint(ckpt: Path) -> tuple[torch.nn.Module, torch.Tensor, object]:
    """The trained network and 7 validation images, rebuilt without the export code."""
    state = load_checkpoint(ckpt)
    run = OmegaConf.create(state["config"])
    data = build_data(run.data, batch_size=64)
    model = build_model_from_config(
        run.model, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size
    )
    model.load_state_dict(state["model"])
    images = next(iter(data.val))[0][:7]
    return model.eval(), images, data


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return short_run(tmp_path_factory.mktemp("tiny"), TINY_NET)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_format_of_a_trained_family_equals_eager(family, tmp_path, capsys) -> None:
    ckpt = short_run(tmp_path / "run", FAMILIES[family])
    out = tmp_path / "export"
    code = run_script_inprocess(
        "export",
        [
            f"ckpt={ckpt}",
            "format=all",
            "parity_samples=40",
            "latency_repeats=1",
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    model, images, data = eager_from_checkpoint(ckpt)
    manifest = json.loads((out / "model.json").read_text())
    # model.json: what a deployment needs, each fact equal to its source
    assert manifest["class_names"] == [str(i) for i in range(10)] == data.class_names
    assert manifest["num_classes"] == 10
    pre = manifest["preprocessing"]
    assert pre["mean"] == pytest.approx(list(data.mean)) and pre["std"] == pytest.approx(
        list(data.std)
    )
    assert (pre["mode"], pre["resize"], pre["crop"]) == ("L", 16, 16)
    assert manifest["input"]["shape"] == ["batch", 1, 16, 16]
    assert manifest["architecture"]["name"] == FAMILIES[family][0].split("=")[1]
    assert manifest["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert manifest["source"]["step"] == 3
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0]
    assert manifest["versions"]["onnxruntime"]
    assert set(manifest["exports"]) == set(formats.FORMATS)
    for fmt, entry in manifest["exports"].items():
        report = entry["parity"]
        assert entry["status"] == "passed", entry
        assert report["samples"] == 40 and report["data"] == "val"
        assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 100.0
        for runner in ("eager", fmt):
            assert all(report["latency_ms_per_image"][runner][b] > 0 for b in ("batch1", "batch32"))
        assert f"{fmt}: {entry['file']}  [passed]" in printed.out
    assert manifest["exports"]["onnx"]["opset"] >= 17
    # each file through its own runtime, here and now, at batch 1 and 7
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"
    assert session.get_outputs()[0].name == "logits"
    scripted = torch.jit.load(str(out / "model_torchscript.pt"))
    program = torch.export.load(str(out / "model.pt2")).module()
    for batch in (1, 7):
        x = images[:batch]
        with torch.no_grad():
            reference = model(x)
            runs = {
                "onnx": torch.from_numpy(session.run(None, {"images": x.numpy()})[0]),
                "torchscript": scripted(x),
                "exported": program(x),
            }
        for fmt, logits in runs.items():
            assert logits.shape == (batch, 10), fmt
            assert (logits - reference).abs().max().item() <= 1e-4, (fmt, batch)
    meta = formats.onnx_metadata(out / "model.onnx")
    assert meta["class_names"] == manifest["class_names"]
    assert meta["preprocessing"] == manifest["preprocessing"]
    assert meta["source_sha256"] == manifest["source"]["sha256"]


def _perturbed_torchscript(original):
    def write(fmt, model, path, **kwargs):
        original(fmt, model, path, **kwargs)
        module = torch.jit.load(str(path))
        with torch.no_grad():
            module.fc.bias.add_(0.5)  # the file no longer holds the trained network
        torch.jit.save(module, str(path))

    return write


@pytest.mark.slow
def test_a_perturbed_file_fails_parity_exits_1_and_stays_marked_failed(
    tiny_ckpt, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(formats, "write", _perturbed_torchscript(formats.write))
    out = tmp_path / "export"
    args = [f"ckpt={tiny_ckpt}", "format=torchscript", "parity_samples=64", "latency_repeats=1"]
    code = run_script_inprocess(
        "export", [*args, f"output_dir={out}", f"hydra.run.dir={tmp_path / 'h'}"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "output 'logits' differs from eager" in err and "torchscript" in err
    entry = json.loads((out / "model.json").read_text())["exports"]["torchscript"]
    assert entry["status"] == "failed" and "max abs diff 0.5" in entry["failure"]
    assert entry["parity"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-5)
    assert (out / "model_torchscript.pt").stat().st_size > 0  # the file stays
    # the same checkpoint, unperturbed: passes into the same folder and the mark is cleared
    monkeypatch.undo()
    code = run_script_inprocess(
        "export", [*args, f"output_dir={out}", f"hydra.run.dir={tmp_path / 'h2'}"]
    )
    assert code == 0, capsys.readouterr().err
    entry = json.loads((out / "model.json").read_text())["exports"]["torchscript"]
    assert entry["status"] == "passed" and entry["parity"]["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_random_parity_data_and_fixed_batch(tiny_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "export"
    code = run_script_inprocess(
        "export",
        [
            f"ckpt={tiny_ckpt}",
            "format=exported",
            "parity_data=random",
            "parity_samples=5",
            "dynamic_batch=false",
            "latency_repeats=1",
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    entry = json.loads((out / "model.json").read_text())["exports"]["exported"]
    assert entry["dynamic_batch"] is False
    assert entry["parity"]["data"] == "random" and entry["parity"]["samples"] == 5
    assert entry["parity"]["latency_ms_per_image"]["exported"]["batch32"] is None
    assert "exported n/a (fixed batch)" in printed.out
    program = torch.export.load(str(out / "model.pt2")).module()
    with pytest.raises(Exception, match=r"(?i)size|shape|guard|expected"):
        program(torch.zeros(2, 1, 16, 16))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["format=tflite"], ["format='tflite' is not valid", "onnx, torchscript, exported, all"]),
        (["parity_data=train"], ["parity_data='train' is not valid", "val, random"]),
        (["tolerance=-1"], ["tolerance=-1.0 is not valid"]),
        (["parity_samples=0"], ["parity_samples=0 is not valid"]),
    ],
)
def test_bad_settings_are_one_line_errors(tiny_ckpt, tmp_path, capsys, args, fragments) -> None:
    code = run_script_inprocess("export", [f"ckpt={tiny_ckpt}", *args, f"hydra.run.dir={tmp_path}"])
    assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tiny_ckpt.parent.parent / "export").exists()


def test_missing_corrupt_and_absent_checkpoints_are_one_line_errors(tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    cases = {
        f"ckpt={tmp_path / 'missing.pt'}": "missing.pt: no such file",
        f"ckpt={corrupt}": "corrupt.pt: is truncated or corrupt",
        "format=onnx": "export.py needs ckpt=PATH",
    }
    for arg, fragment in cases.items():
        code = run_script_inprocess("export", [arg, f"hydra.run.dir={tmp_path / 'h'}"])
        assert_one_line_error(code, capsys.readouterr().err, fragment)


def test_onnxruntime_not_installed_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    ckpt = tmp_path / "last.pt"
    code = run_script_inprocess(
        "export", [f"ckpt={ckpt}", "format=all", f"hydra.run.dir={tmp_path}"]
    )
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "format=all needs onnx", "not installed: onnxruntime")
    assert "pip install -e '.[export]'" in err


@pytest.mark.slow
def test_export_failure_names_the_operator(tmp_path) -> None:
    class Unsupported(torch.nn.Module):  # no ONNX translation exists for eigh
        def forward(self, x):
            return torch.linalg.eigvalsh(x[:, 0]).sum(-1, keepdim=True)

    with pytest.raises(formats.ExportError) as caught:
        formats.write(
            "onnx",
            Unsupported(),
            tmp_path / "never.onnx",
            in_chans=1,
            size=4,
            dynamic_batch=True,
        )
    message = str(caught.value)
    assert message.startswith("format=onnx: export failed at operator aten::_linalg_eigh: ")
    assert len(message.splitlines()) == 1 and "\x1b" not in message


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # no traceback
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_onnx_metadata_round_trip(tmp_path) -> None:
    """set_onnx_metadata adds and replaces keys without touching the graph."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    formats.set_onnx_metadata(path, {"class_names": json.dumps(["a", "b"]), "k": "v"})
    formats.set_onnx_metadata(path, {"k": "w"})
    assert formats.onnx_metadata(path) == {"class_names": ["a", "b"], "k": "w"}
    assert len(onnx.load(str(path)).graph.node) == 1


def test_parity_progress_logs_each_quarter_once(caplog) -> None:
    from resnets.deploy import parity
    from resnets.deploy.export import parity_progress

    seen: list[int] = []
    x = torch.randn(512, 1, 4, 4)
    with caplog.at_level("INFO", logger="resnets.deploy.export"):
        progress = parity_progress("onnx", len(x))
        report = parity.compare(
            lambda t: t.flatten(1),
            lambda t: t.flatten(1),
            x,
            batch=32,
            tolerance=0.0,
            progress=lambda done: (seen.append(done), progress(done)),
        )
    assert report["passed"] and seen == list(range(32, 513, 32))
    assert [r.getMessage() for r in caplog.records] == [
        f"onnx: parity {n}/512 images" for n in (128, 256, 384, 512)
    ]


@pytest.mark.slow
def test_export_prints_its_phases_and_latency_false_skips_the_benchmark(
    tiny_ckpt, tmp_path, monkeypatch, capsys
) -> None:
    from resnets.deploy import parity

    def no_latency(*args, **kwargs):
        raise AssertionError("latency=false still ran the latency benchmark")

    monkeypatch.setattr(parity, "latency_table", no_latency)
    out = tmp_path / "export"
    code = run_script_inprocess(
        "export",
        [
            f"ckpt={tiny_ckpt}",
            "format=torchscript",
            "parity_samples=40",
            "latency=false",
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    phases = [
        "torchscript: exporting",
        "torchscript: written in",
        "parity on 40 val images",
        "torchscript: parity 32/40 images",  # batches of 32: three quarters after the first
        "torchscript: parity 40/40 images",
        "torchscript: latency not measured (latency=false)",
        "torchscript: model_torchscript.pt  [passed]",
        "  latency not measured (latency=false)",
    ]
    positions = [printed.out.find(p) for p in phases]
    assert -1 not in positions and positions == sorted(positions), printed.out
    entry = json.loads((out / "model.json").read_text())["exports"]["torchscript"]
    assert entry["status"] == "passed" and "latency_ms_per_image" not in entry["parity"]
