"""The benchmark suite runs end to end at tiny sizes and writes readable results (no speed checks:
speed belongs to `make bench`, not to tests)."""

from __future__ import annotations

import json

import pytest

from benchmarks import run_all


@pytest.mark.slow
def test_quick_benchmark_run_writes_json_and_summary(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RESNETS_BENCH_RESULTS", str(tmp_path))
    run_all.main(["--quick"])
    loader = json.loads((tmp_path / "loader.json").read_text())
    rates = loader["images_per_s"]
    assert set(rates) == {"ours_workers0", "torchvision_workers0", "torchvision_workers2"}
    assert all(v > 0 for v in rates.values())
    assert loader["ratio_same_workers"] == pytest.approx(
        rates["ours_workers0"] / rates["torchvision_workers0"]
    )
    files = loader["image_files"]  # 500x375 JPEGs: torchvision folder vs DALI (CPU) and shards
    keys = {"torchvision_folder", "dali_folder", "torchvision_shards", "dali_shards"}
    assert set(files["images_per_s"]) == set(files["cpu_cores_used"]) == keys
    assert set(files["images_per_cpu_second"]) == keys
    assert files["ratio_vs_torchvision_folder"]["dali_folder"] == pytest.approx(
        files["images_per_s"]["dali_folder"] / files["images_per_s"]["torchvision_folder"]
    )
    assert all(c > 0 for c in files["cpu_cores_used"].values())
    trainer = json.loads((tmp_path / "trainer_overhead.json").read_text())
    rates = trainer["images_per_s"]
    assert set(rates) == {"trainer", "bare_nchw", "bare_channels_last"}
    assert all(v > 0 for v in rates.values())
    best_bare = max(rates["bare_nchw"], rates["bare_channels_last"])
    assert trainer["ratio"] == pytest.approx(rates["trainer"] / best_bare)
    models = json.loads((tmp_path / "models.json").read_text())
    case = models["cases"]["resnet56"]
    assert case["ours_s"] > 0 and case["ratio"] == pytest.approx(case["ours_s"] / case["peer_s"])
    gpu = json.loads((tmp_path / "gpu.json").read_text())
    assert "skipped" in gpu or gpu["resnet50"]["images_per_s"]["trainer_eager"] > 0
    export = json.loads((tmp_path / "export.json").read_text())
    case = export["cases"]["resnet20_32"]
    for runtime in ("onnxruntime", "torchscript"):
        assert case["max_abs_logit_diff"][runtime] < 1e-4
        assert case["speedup_vs_eager"][runtime]["batch32"] == pytest.approx(
            case["ms_per_image"]["eager"]["batch32"] / case["ms_per_image"][runtime]["batch32"]
        )
    assert "resnet20_32 inference batch1" in (tmp_path / "SUMMARY.md").read_text()
    for result in (loader, trainer, models, gpu, export):
        assert result["machine"]["torch"] and result["measured_at"]
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| loader (images/s, 0 workers) |" in summary and "resnet56 fwd+bwd" in summary


def test_paper_resnet56_reference_has_the_papers_size() -> None:
    from benchmarks.models import paper_resnet56
    from resnets.models import build_model

    reference = paper_resnet56()
    ours = build_model("resnet56", num_classes=10)
    count = sum(p.numel() for p in reference.parameters())
    assert count == sum(p.numel() for p in ours.parameters()) == 853_018


@pytest.mark.slow
def test_gpu_benchmarks_dali_and_shard_paths_run_on_the_cpu(tmp_path) -> None:
    """benchmarks/gpu.py's DALI and shard paths at smoke sizes on the CPU (what the first GPU
    run measures): every path yields batches and the figures are consistent."""
    from benchmarks import gpu
    from benchmarks.common import write_jpegs
    from resnets.data.shards import write_shards

    root, shards = tmp_path / "folder", tmp_path / "shards"
    write_jpegs(root, 16, (500, 375))
    write_shards(root, shards, 10**9)
    rates = gpu.decode_rates(root, shards, 16, 0, smoke=True)
    assert set(rates["images_per_s"]) == {"gpu_decode", "workers", "dali", "dali_shards"}
    assert rates["ratio_dali_vs_workers"] == pytest.approx(
        rates["images_per_s"]["dali"] / rates["images_per_s"]["workers"]
    )
    feed = gpu.dali_feed(root, 1, smoke=True)
    assert feed["images_per_s"]["dali_fed"] > 0 and 0 <= feed["data_wait_share"] < 1
