"""What evaluate.py, export.py and predict.py score, and from what.

- predict.py prepares an image exactly as validation does (bit for bit, also for an in-memory
  dataset at another data.image_size, where validation upsamples after normalising);
- checkpoints carry their inference facts: predict and export work with the data moved away and
  give the same predictions; checkpoints without the facts keep working through the data;
- `use_ema=auto|true|false`: by default the weights that chose best.pt, named in every report;
- the tools' configs hold only what they read: a training field is one line and exit 2.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from resnets.config import register_eval_configs, register_export_configs
from resnets.data import build_data
from resnets.data.inference import stored_facts
from resnets.deploy.predict import from_checkpoint, image_transform, read_image
from resnets.engine.checkpoint import load_checkpoint, save_checkpoint
from resnets.engine.evaluation import checkpoint_run, collect_logits, restore_model_and_data
from resnets.engine.scored_weights import stored_best_by
from resnets.engine.trainer import train

from .conftest import write_image_folder
from .helpers import REPO, TINY, compose_train, run_script_inprocess

CPU = torch.device("cpu")


def compose_tool(name: str, overrides: list[str]):
    register_eval_configs()
    register_export_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def save_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    """uint8 NCHW -> one lossless PNG a picture, named in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images.cpu()):
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        paths.append(folder / f"{i:04d}.png")
        picture.save(paths[-1])
    return paths


def predict_inputs(paths: list[Path], pre: dict) -> torch.Tensor:
    transform = image_transform(pre)
    return torch.stack([transform(read_image(p, pre["mode"])) for p in paths])


# ------------------------------------------------------------------ validation preprocessing
@pytest.mark.parametrize("loader", ["tensor", "torchvision"])
@pytest.mark.parametrize("size", [40, 27, 32])
def test_predict_prepares_an_in_memory_image_exactly_as_validation(
    cifar10_root, tmp_path, loader, size
) -> None:
    """CIFAR is stored at 32 px: at another data.image_size validation normalises and then
    upsamples (bilinear, no antialias); predict.py did it the other way round (up to 0.016 apart
    in logits). Now the network inputs are the same bits, on both in-memory loaders."""
    data_cfg = compose_train(
        [
            "data=cifar10",
            f"data.root={cifar10_root}",
            f"data.image_size={size}",
            f"data.loader={loader}",
        ]
    ).data
    bundle = build_data(
        data_cfg, batch_size=16, eval_batch_size=500, num_workers=0, device=CPU, seed=0
    )
    images, _labels = next(iter(bundle.val))
    stored = bundle.val.images if loader == "tensor" else None
    if stored is None:  # the torchvision loader keeps its split in the dataset
        stored = bundle.val.dataset.images
    paths = save_pngs(stored[: len(images)], tmp_path / "png")
    pre = bundle.eval_preprocessing()
    assert pre["input_size"] == size and pre["crop"] == 32
    assert pre["upsample"] == (None if size == 32 else size)
    assert torch.equal(predict_inputs(paths, pre), images)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> Path:
    """One short epoch on CIFAR-10 files at 40 px (not the stored 32)."""
    from .conftest import write_cifar10

    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root)
    run_dir = tmp_path_factory.mktemp("cifar_run")
    cfg = compose_train(
        [
            *TINY,
            "data=cifar10",
            f"data.root={root}",
            "data.image_size=40",
            "trainer.epochs=1",
            "trainer.batch_size=16",
            "trainer.eval_batch_size=64",
        ]
    )
    train(cfg, output_dir=run_dir)
    return run_dir / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_predict_logits_equal_evaluate_at_a_non_native_size(cifar_run, tmp_path) -> None:
    cfg = compose_tool("evaluate", [f"ckpt={cifar_run}"])
    source, weights, _state, run, _scored = checkpoint_run(cfg, [])
    model, data = restore_model_and_data(run, weights, source, device=CPU)
    logits, _labels, _ = collect_logits(model, data.val, CPU, "32", "none", False)
    paths = save_pngs(data.val.images, tmp_path / "png")
    classifier = from_checkpoint(compose_tool("predict", [f"ckpt={cifar_run}", "images=x"]), [])
    inputs = predict_inputs(paths, classifier.preprocessing)
    with torch.no_grad():
        predicted = torch.cat([classifier(x) for x in inputs.split(64)])
    assert logits.shape == (40, 10)
    assert torch.equal(predicted, logits)


# ------------------------------------------------------------------ facts in the checkpoint
CLASSES = ("ant", "bee", "cow")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A short run on an image folder; (data root, checkpoint, images to predict elsewhere)."""
    root = tmp_path_factory.mktemp("tree")
    write_image_folder(root, classes=CLASSES, per_class=6, size=30, splits=("train", "val"))
    photos = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sorted((root / "val").rglob("*.JPEG"))):
        shutil.copy(path, photos / f"{i:02d}.jpg")
    run_dir = tmp_path_factory.mktemp("folder_run")
    cfg = compose_train(
        [
            *TINY,
            "data=imagefolder",
            f"data.root={root}",
            "data.image_size=24",
            "data.val_resize=27",
            "data.val_crop=24",
            "trainer.epochs=1",
            "trainer.batch_size=8",
        ]
    )
    train(cfg, output_dir=run_dir)
    return root, run_dir / "checkpoints" / "last.pt", photos


def predict_cli(args: list[str], out: Path) -> int:
    return run_script_inprocess(
        "predict", [*args, f"output_dir={out}", f"hydra.run.dir={out / 'h'}", "progress=false"]
    )


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_checkpoints_store_the_inference_facts(folder_run) -> None:
    _root, ckpt, _photos = folder_run
    facts = stored_facts(torch.load(ckpt, weights_only=True))
    assert facts is not None
    assert facts.class_names == list(CLASSES) and facts.num_classes == 3
    assert facts.in_chans == 3 and facts.image_size == 24
    pre = facts.preprocessing
    assert (pre["mode"], pre["resize"], pre["crop"], pre["interpolation"]) == (
        "RGB",
        27,
        24,
        "bilinear",
    )
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert pre["upsample"] is None and pre["input_size"] == 24


@pytest.mark.slow
def test_predict_and_export_work_with_the_data_moved_away(folder_run, tmp_path, capsys) -> None:
    root, ckpt, photos = folder_run
    assert predict_cli([f"ckpt={ckpt}", f"images={photos}"], tmp_path / "with") == 0
    export_args = [f"ckpt={ckpt}", "format=onnx", "parity_samples=9", "latency_repeats=1"]
    out_with = tmp_path / "export_with"
    code = run_script_inprocess(
        "export", [*export_args, f"output_dir={out_with}", f"hydra.run.dir={tmp_path / 'h1'}"]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    moved = tmp_path / "moved"
    shutil.move(str(root), moved)
    try:
        capsys.readouterr()
        assert predict_cli([f"ckpt={ckpt}", f"images={photos}"], tmp_path / "without") == 0
        out_without = tmp_path / "export_without"
        code = run_script_inprocess(
            "export",
            [*export_args, f"output_dir={out_without}", f"hydra.run.dir={tmp_path / 'h2'}"],
        )
        printed = capsys.readouterr()
        assert code == 0, printed.err[-2000:]
        # parity_data=auto: the validation images are gone, random ones are used and said so
        manifest = json.loads((out_without / "model.json").read_text())
        assert manifest["exports"]["onnx"]["parity"]["data"] == "random"
        assert manifest["exports"]["onnx"]["status"] == "passed"
        assert "random" in printed.out
        with_data = json.loads((out_with / "model.json").read_text())
        assert with_data["exports"]["onnx"]["parity"]["data"] == "val"
        for key in ("class_names", "preprocessing", "input", "output", "num_classes"):
            assert manifest[key] == with_data[key], key
        # parity_data=val insists on the data: one line, exit 2
        code = run_script_inprocess(
            "export",
            [
                *export_args,
                "parity_data=val",
                f"output_dir={tmp_path / 'x'}",
                f"hydra.run.dir={tmp_path / 'h3'}",
            ],
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
        # the exported file, run by its own runtime, predicts what the checkpoint predicts
        onnx_out = tmp_path / "onnx"
        assert (
            predict_cli([f"model_file={out_without / 'model.onnx'}", f"images={photos}"], onnx_out)
            == 0
        )
    finally:
        shutil.move(str(moved), root)
    before = read_rows(tmp_path / "with" / "predictions.csv")
    assert len(before) == 3 * 6
    assert read_rows(tmp_path / "without" / "predictions.csv") == before
    onnx_rows = read_rows(onnx_out / "predictions.csv")
    assert [r["predicted"] for r in onnx_rows] == [r["predicted"] for r in before]
    for a, b in zip(onnx_rows, before, strict=True):
        assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-5)


@pytest.mark.slow
def test_a_checkpoint_without_facts_reads_the_data_as_before(folder_run, tmp_path, capsys) -> None:
    root, ckpt, photos = folder_run
    state = load_checkpoint(ckpt)
    del state["inference"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, state)
    assert predict_cli([f"ckpt={ckpt}", f"images={photos}"], tmp_path / "new") == 0
    assert predict_cli([f"ckpt={old}", f"images={photos}"], tmp_path / "old") == 0
    assert read_rows(tmp_path / "old" / "predictions.csv") == read_rows(
        tmp_path / "new" / "predictions.csv"
    )
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.move(str(root), moved)
    try:  # without facts the data is needed: one line naming it, exit 2
        assert predict_cli([f"ckpt={old}", f"images={photos}"], tmp_path / "gone") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and str(root) in err
    finally:
        shutil.move(str(moved), root)


# ------------------------------------------------------------------ which weights
@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    """One epoch on digits with an EMA of the weights (it picks best.pt by default)."""
    run_dir = tmp_path_factory.mktemp("ema_run")
    cfg = compose_train([*TINY, "trainer.epochs=1", "trainer.ema_decay=0.5"])
    train(cfg, output_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def evaluate_cli(args: list[str], tmp_path: Path, capsys) -> tuple[int, dict | None, str]:
    out = tmp_path / "eval"
    shutil.rmtree(out, ignore_errors=True)
    code = run_script_inprocess(
        "evaluate", [*args, f"output_dir={out}", f"hydra.run.dir={tmp_path / 'h'}", "plots=false"]
    )
    printed = capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text()) if code == 0 else None
    return code, metrics, printed.out + printed.err


@pytest.mark.slow
def test_reports_score_the_weights_that_chose_best_by_default(ema_run, tmp_path, capsys) -> None:
    state = load_checkpoint(ema_run)
    assert state["ema"] is not None and stored_best_by(state) == "ema"
    code, auto, printed = evaluate_cli([f"ckpt={ema_run}"], tmp_path, capsys)
    assert code == 0, printed[-2000:]
    assert auto["use_ema"] is True and "EMA weights" in auto["weights"]
    assert "best_by=ema" in auto["weights"] and "EMA weights" in printed
    _, ema, _ = evaluate_cli([f"ckpt={ema_run}", "use_ema=true"], tmp_path, capsys)
    _, raw, printed = evaluate_cli([f"ckpt={ema_run}", "use_ema=false"], tmp_path, capsys)
    assert raw["use_ema"] is False and "raw weights (use_ema=false)" in printed
    assert auto["nll"] == ema["nll"] and auto["top1"] == ema["top1"]
    assert raw["nll"] != ema["nll"]  # a decay of 0.5 over a few steps: other weights
    # predict and export name the weights too, and use the EMA's
    photos = save_pngs(torch.zeros(2, 1, 8, 8, dtype=torch.uint8) + 100, tmp_path / "png")
    out = tmp_path / "pred"
    code = run_script_inprocess(
        "predict",
        [
            f"ckpt={ema_run}",
            f"images={photos[0].parent}",
            f"output_dir={out}",
            f"hydra.run.dir={out / 'h'}",
            "progress=false",
        ],
    )
    assert code == 0
    assert (
        "weights: EMA weights (use_ema=auto: the checkpoint's best_by=ema)"
        in capsys.readouterr().out
    )
    code = run_script_inprocess(
        "export",
        [
            f"ckpt={ema_run}",
            "format=torchscript",
            "parity_samples=4",
            "latency_repeats=1",
            f"output_dir={tmp_path / 'exp'}",
            f"hydra.run.dir={tmp_path / 'h4'}",
        ],
    )
    printed = capsys.readouterr().out
    # the report after export's phase lines names the weights first
    report = [line for line in printed.splitlines() if not line.startswith("[")]
    assert code == 0 and report[0].startswith("weights: EMA weights (use_ema=auto"), printed
    manifest = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert manifest["source"]["use_ema"] is True


@pytest.mark.slow
def test_a_stored_best_by_decides_and_true_needs_an_ema(ema_run, tmp_path, capsys) -> None:
    state = load_checkpoint(ema_run)
    state["best_by"] = "raw"  # what the trainer stores when the raw weights chose best.pt
    raw_best = tmp_path / "raw_best.pt"
    save_checkpoint(raw_best, state)
    _, auto, _ = evaluate_cli([f"ckpt={raw_best}"], tmp_path, capsys)
    assert auto["use_ema"] is False and "best_by=raw" in auto["weights"]
    state["ema"] = None
    no_ema = tmp_path / "no_ema.pt"
    save_checkpoint(no_ema, state)
    for tool, extra in (
        ("evaluate", []),
        ("predict", [f"images={tmp_path}"]),
        ("export", ["format=torchscript"]),
    ):
        code = run_script_inprocess(
            tool,
            [
                f"ckpt={no_ema}",
                "use_ema=true",
                *extra,
                f"output_dir={tmp_path / tool}",
                f"hydra.run.dir={tmp_path / 'h' / tool}",
            ],
        )
        err = capsys.readouterr().err.strip()
        assert code == 2, (tool, err)
        assert len(err.splitlines()) == 1 and "use_ema=true" in err and "no EMA" in err, err
    code = run_script_inprocess("evaluate", [f"ckpt={no_ema}", "use_ema=maybe"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "use_ema='maybe' is not valid; accepted: auto, true, false" in err


def test_old_checkpoints_infer_best_by_from_their_config() -> None:
    config = OmegaConf.to_yaml({"trainer": {"ema_decay": 0.9, "best_by": None}})
    assert stored_best_by({"config": config, "ema": {"w": torch.ones(1)}}) == "ema"
    assert stored_best_by({"config": config, "ema": None}) == "raw"
    raw = OmegaConf.to_yaml({"trainer": {"ema_decay": 0.9, "best_by": "raw"}})
    assert stored_best_by({"config": raw, "ema": {"w": torch.ones(1)}}) == "raw"
    off = OmegaConf.to_yaml({"trainer": {"ema_decay": None}})
    assert stored_best_by({"config": off, "ema": None}) == "raw"
    assert stored_best_by({"config": off, "ema": None, "best_by": "ema"}) == "ema"


# ------------------------------------------------------------------ slim tool configs
@pytest.mark.parametrize(
    ("tool", "override"),
    [
        ("evaluate", "trainer.epochs=5"),
        ("evaluate", "seed=3"),
        ("evaluate", "trainer.progress=true"),
        ("evaluate", "optim.lr=0.5"),
        ("export", "trainer.epochs=5"),
        ("export", "trainer.progress=false"),
        ("export", "sched.min_lr=0.1"),
        ("predict", "trainer.epochs=5"),
        ("predict", "seed=3"),
        ("predict", "trainer.workers=2"),
    ],
)
def test_a_training_field_on_a_tool_is_one_line_and_exit_2(tool, override, capsys) -> None:
    code = run_script_inprocess(tool, ["ckpt=x.pt", override])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1
    key = override.split("=")[0]
    assert err.startswith(f"error: {override} is a training setting that {tool}.py does not read")
    assert "accepted: " in err and key not in err.split("accepted: ")[1].split(", ")


def test_tool_configs_hold_only_what_the_tools_read() -> None:
    evaluate = compose_tool("evaluate", [])
    assert set(evaluate.trainer) == {
        "batch_size",
        "eval_batch_size",
        "workers",
        "device",
        "channels_last",
        "dist_backend",
    }
    assert "seed" not in evaluate
    export = compose_tool("export", [])
    assert set(export.trainer) == {"batch_size", "eval_batch_size", "workers"}
    predict = compose_tool("predict", [])
    assert "trainer" not in predict and "seed" not in predict
    # the fields the tools do read still compose
    assert compose_tool("evaluate", ["trainer.batch_size=7"]).trainer.batch_size == 7
    assert compose_tool("export", ["seed=4"]).seed == 4
