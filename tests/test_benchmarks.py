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
