"""predict.py on real image files: the same top-1 as evaluate.py, checkpoint and ONNX paths agree,
bad files are skipped and counted, bad input is one line with exit 2."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, features

from resnets.engine.checkpoint import load_checkpoint
from resnets.engine.evaluation import collect_logits, evaluate_run, restore_model_and_data
from resnets.engine.trainer import train

from .conftest import write_image_folder
from .helpers import REPO, compose_train, run_script_inprocess
from .test_export import assert_one_line_error

CLASSES = ("cat", "dog", "eel")
# (suffix, PIL mode, width, height): every common format, sizes that are not the crop, all modes
VARIANTS = [
    (".png", "RGB", 40, 48),
    (".jpg", "RGB", 30, 30),
    (".png", "L", 50, 41),
    (".png", "RGBA", 40, 40),
    (".png", "P", 37, 44),
    (".bmp", "RGB", 64, 33),
    (".webp" if features.check("webp") else ".jpeg", "RGB", 28, 36),
]


def write_mixed_val(root: Path, per_variant: int = 1, seed: int = 1) -> list[Path]:
    """root/val/<class>/: each class's brightness as in the train tree, saved in every variant."""
    rng = np.random.default_rng(seed)
    written = []
    for c, name in enumerate(CLASSES):
        folder = root / "val" / name
        folder.mkdir(parents=True)
        for n, (suffix, mode, w, h) in enumerate(VARIANTS * per_variant):
            pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8) + 60 * c
            image = Image.fromarray(pixels.astype(np.uint8))
            if mode == "RGBA":
                alpha = rng.integers(0, 256, size=(h, w, 1), dtype=np.uint8)
                image = Image.fromarray(np.concatenate([np.asarray(image), alpha], axis=2), "RGBA")
            elif mode != "RGB":
                image = image.convert(mode)
            path = folder / f"{n}{suffix}"
            image.save(path, **({"quality": 90} if suffix in (".jpg", ".jpeg", ".webp") else {}))
            written.append(path)
    return written


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    """A short real run on an image-folder tree whose val/ mixes formats, sizes and modes."""
    root = tmp_path_factory.mktemp("tree")
    write_image_folder(root, classes=CLASSES, per_class=8, size=32, splits=("train",))
    write_mixed_val(root)
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_train(
        [
            "model=resnet",
            "model.depth=8",
            "model.stem=cifar",
            "data=imagefolder",
            f"data.root={root}",
            "data.image_size=24",
            "data.val_resize=28",
            "data.val_crop=24",
            "trainer.epochs=2",
            "trainer.batch_size=8",
            "trainer.workers=0",
            "trainer.progress=false",
        ]
    )
    train(cfg, output_dir=run_dir)
    return root, run_dir / "checkpoints" / "last.pt"


def read_predictions(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def predict(args: list[str], out: Path) -> int:
    return run_script_inprocess(
        "predict", [*args, f"output_dir={out}", f"hydra.run.dir={out / 'hydra'}", "progress=false"]
    )


@pytest.mark.slow
def test_predictions_equal_evaluate_on_the_same_files(folder_run, tmp_path, capsys) -> None:
    root, ckpt = folder_run
    code = predict([f"ckpt={ckpt}", f"images={root / 'val'}", "topk=2", "batch_size=4"], tmp_path)
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    rows = read_predictions(tmp_path / "predictions.csv")
    assert len(rows) == 3 * len(VARIANTS)
    assert f"predicted {len(rows)} of {len(rows)} files, skipped 0" in printed.out
    # evaluate.py scores the same files through ImageFolder and its own loader
    from hydra import compose, initialize_config_dir

    from resnets.config import register_eval_configs

    register_eval_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", [f"ckpt={ckpt}", f"output_dir={tmp_path / 'eval'}"])
    metrics = evaluate_run(cfg, [], tmp_path, plots=False)
    correct = sum(Path(f).parent.name == row["predicted"] for f, row in rows.items())
    assert metrics["samples"] == len(rows)
    assert 100 * correct / len(rows) == pytest.approx(metrics["top1"], abs=1e-9)
    # and image by image: the evaluation loader's logits, matched to files by ImageFolder's order
    state = load_checkpoint(ckpt)
    run = OmegaConf.create(state["config"])
    model, data = restore_model_and_data(run, state["model"], ckpt, device=torch.device("cpu"))
    logits, labels, _ = collect_logits(model, data.val, torch.device("cpu"), "32", "none", False)
    probs = torch.softmax(logits, 1)
    dataset = data.val.dataset
    while not hasattr(dataset, "samples"):  # wrappers (bad-image skipping) hold the ImageFolder
        dataset = dataset.dataset
    samples = dataset.samples
    assert len(samples) == len(rows)
    for (path, _label), p in zip(samples, probs, strict=True):
        row = rows[str(Path(path))]
        assert row["predicted"] == data.class_names[int(p.argmax())]
        assert float(row["probability"]) == pytest.approx(float(p.max()), abs=2e-6)
        assert float(row["top2_probability"]) == pytest.approx(float(p.topk(2)[0][1]), abs=2e-6)
    assert labels.tolist() == [label for _, label in samples]
    # the table: one row per file with top-2 classes and probabilities
    table = [line for line in printed.out.splitlines() if line.startswith(("cat/", "dog/", "eel/"))]
    assert len(table) == len(rows) and all(line.count("%)") == 2 for line in table)


@pytest.mark.slow
def test_onnx_model_file_agrees_with_the_checkpoint(folder_run, tmp_path, capsys) -> None:
    root, ckpt = folder_run
    export_dir = tmp_path / "export"
    code = run_script_inprocess(
        "export",
        [
            f"ckpt={ckpt}",
            "format=onnx",
            "parity_samples=21",
            "latency_repeats=1",
            f"output_dir={export_dir}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
    )
    assert code == 0, capsys.readouterr().err[-3000:]
    manifest = json.loads((export_dir / "model.json").read_text())
    assert manifest["preprocessing"] == {
        "mode": "RGB",
        "resize": 28,
        "crop": 24,
        "interpolation": "bilinear",
        "mean": pytest.approx([0.485, 0.456, 0.406]),
        "std": pytest.approx([0.229, 0.224, 0.225]),
        "upsample": None,
        "input_size": 24,
    }
    assert manifest["class_names"] == list(CLASSES)
    images = str(root / "val" / "**" / "*.*")
    assert predict([f"ckpt={ckpt}", f"images={images}", "topk=3"], tmp_path / "a") == 0
    onnx_args = [f"model_file={export_dir / 'model.onnx'}", f"images={images}", "topk=3"]
    assert predict(onnx_args, tmp_path / "b") == 0
    by_ckpt = read_predictions(tmp_path / "a" / "predictions.csv")
    by_onnx = read_predictions(tmp_path / "b" / "predictions.csv")
    assert by_ckpt.keys() == by_onnx.keys() and len(by_ckpt) == 3 * len(VARIANTS)
    for file, row in by_ckpt.items():
        other = by_onnx[file]
        assert [row[f"top{k}_class"] for k in (1, 2, 3)] == [
            other[f"top{k}_class"] for k in (1, 2, 3)
        ]
        for k in (1, 2, 3):
            assert float(row[f"top{k}_probability"]) == pytest.approx(
                float(other[f"top{k}_probability"]), abs=1e-5
            )
    # no network code on this path: it runs with resnets.models and resnets.engine unimportable
    argv = ["predict.py", *onnx_args, f"output_dir={tmp_path / 'd'}", f"hydra.run.dir={tmp_path}"]
    blocked = (
        "import runpy, sys; sys.modules['resnets.models'] = sys.modules['resnets.engine'] = None; "
        f"sys.argv = {argv!r}; runpy.run_path({str(REPO / 'predict.py')!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_predictions(tmp_path / "d" / "predictions.csv") == by_onnx
    # without model.json the ONNX file's own metadata gives classes and preprocessing
    (export_dir / "model.json").unlink()
    assert predict(onnx_args, tmp_path / "c") == 0
    alone = read_predictions(tmp_path / "c" / "predictions.csv")
    assert {f: r["predicted"] for f, r in alone.items()} == {
        f: r["predicted"] for f, r in by_onnx.items()
    }


@pytest.mark.slow
def test_corrupt_and_text_files_are_skipped_and_counted(folder_run, tmp_path, capsys) -> None:
    root, ckpt = folder_run
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = sorted((root / "val" / "dog").iterdir())[:3]
    for path in good:
        shutil.copy(path, mixed / path.name)
    jpeg = (root / "val" / "cat" / "1.jpg").read_bytes()
    (mixed / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated mid-scan
    (mixed / "notes.txt").write_text("not a picture\n")
    code = predict([f"ckpt={ckpt}", f"images={mixed}"], tmp_path / "out")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "predicted 3 of 5 files, skipped 2" in printed.out
    assert "skipped notes.txt: not an image PIL can read" in printed.out
    assert "skipped corrupt.jpg: unreadable or corrupt (OSError" in printed.out
    rows = read_predictions(tmp_path / "out" / "predictions.csv")
    assert sorted(Path(f).name for f in rows) == sorted(p.name for p in good)
    assert all(
        len([k for k in r if k.endswith("_class")]) == 3 for r in rows.values()
    )  # default: 5, or all 3
    with open(tmp_path / "out" / "skipped.csv") as f:
        skipped = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"corrupt.jpg", "notes.txt"}
    # nothing readable at all: exit 1, the reasons still listed
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copy(mixed / "notes.txt", only_bad / "notes.txt")
    assert predict([f"ckpt={ckpt}", f"images={only_bad}", "topk=3"], tmp_path / "o2") == 1
    assert "no image could be predicted" in capsys.readouterr().err
    # more classes asked for than the model has: refused, not cut
    assert predict([f"ckpt={ckpt}", f"images={mixed}", "topk=4"], tmp_path / "o3") == 2
    assert "topk=4 is not valid; accepted: 1 to 3" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02" + bytes(100))
    text = tmp_path / "model.onnx"
    text.write_text("not onnx")
    cases = [
        ([f"ckpt={tmp_path / 'missing.pt'}", f"images={image}"], "missing.pt: no such file"),
        ([f"ckpt={corrupt}", f"images={image}"], "corrupt.pt: is truncated or corrupt"),
        ([f"ckpt={corrupt}", f"images={tmp_path / 'none*.png'}"], "matches no files"),
        ([f"images={image}"], "needs exactly one of ckpt=PATH"),
        ([f"ckpt={corrupt}", f"model_file={text}", f"images={image}"], "exactly one of"),
        ([f"ckpt={corrupt}"], "needs images=PATH_OR_GLOB"),
        ([f"ckpt={corrupt}", f"images={image}", "topk=0"], "topk=0 is not valid"),
        ([f"model_file={text}", f"images={image}", "batch_size=-1"], "batch_size=-1 is not valid"),
        ([f"model_file={tmp_path / 'm.tflite'}", f"images={image}"], "no such file"),
        ([f"model_file={image}", f"images={image}"], "unknown suffix '.png'; accepted: .onnx"),
        ([f"model_file={text}", f"images={image}"], "not a readable ONNX file"),
    ]
    for args, fragment in cases:
        code = predict(args, tmp_path / "out")
        assert_one_line_error(code, capsys.readouterr().err, fragment)
