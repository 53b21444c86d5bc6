"""`make bench`: every benchmark, then benchmarks/results/SUMMARY.md from their JSON.

python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import json

from . import export, gpu, loader, models, trainer_overhead
from .common import machine, results_dir

QUICK = {
    "loader": ["--images", "2000", "--repeats", "1", "--jpegs", "32"],
    "trainer_overhead": ["--epochs", "1", "--fake-size", "512", "--repeats", "1"],
    "models": ["--repeats", "1", "--only", "resnet56"],
    "gpu": ["--repeats", "1"],
    "export": ["--repeats", "1", "--only", "resnet20_32"],
}


def summary_rows(results: dict[str, dict]) -> list[str]:
    rows = ["| benchmark | ours | peer | ratio | target | passed |", "|---|---|---|---|---|---|"]
    if "loader" in results:
        r = results["loader"]
        rates = r["images_per_s"]
        rows.append(
            f"| loader (images/s, 0 workers) | {rates['ours_workers0']:,.0f} | "
            f"{rates['torchvision_workers0']:,.0f} (torchvision per-sample; "
            f"{rates['torchvision_workers2']:,.0f} with 2 workers) | {r['ratio_same_workers']:.2f}x | "
            f"{r['target']} | {r['passed']} |"
        )
        if "image_files" in r:
            f = r["image_files"]
            rates, per_cpu = f["images_per_s"], f["images_per_cpu_second"]
            for key in ("dali_folder", "torchvision_shards", "dali_shards"):
                rows.append(
                    f"| {key.replace('_', ' ')} vs torchvision folder (500x375 JPEG -> 224 px, "
                    f"{f['workers']} workers/threads; images/s, images per CPU second) | "
                    f"{rates[key]:,.0f} ({per_cpu[key]:,.0f}) | "
                    f"{rates['torchvision_folder']:,.0f} ({per_cpu['torchvision_folder']:,.0f}) | "
                    f"{f['ratio_vs_torchvision_folder'][key]:.2f}x | - | - |"
                )
    if "trainer_overhead" in results:
        r = results["trainer_overhead"]
        rates = r["images_per_s"]
        rows.append(
            f"| Trainer.fit, defaults, vs bare loops (images/s, {r['model']}) | "
            f"{rates['trainer']:,.0f} | {rates['bare_channels_last']:,.0f} channels_last / "
            f"{rates['bare_nchw']:,.0f} NCHW | {r['ratio']:.3f}x ({r['ratio_vs_bare_nchw']:.2f}x "
            f"NCHW) | {r['target']} | {r['passed']} |"
        )
        if "default_run" in r:
            run = r["default_run"]
            rows.append(
                f"| default `make train` run ({run['epochs']} epochs, digits), training s | "
                f"{run['train_time_s']:.1f} ({run['best_val_top1']:.2f}% top-1) | - | - | "
                f"{run['target']} | {run['passed']} |"
            )
    if "models" in results:
        r = results["models"]
        for name, case in r["cases"].items():
            rows.append(
                f"| {name} fwd+bwd (s/step, batch {case['batch']}, {case['input_size']} px, "
                f"{r['device']}) | {case['ours_s']:.3f} | {case['peer_s']:.3f} ({case['peer']}) | "
                f"{case['ratio']:.3f}x | {r['target']} | {case['passed']} |"
            )
    if "gpu" in results:
        r = results["gpu"]
        if "skipped" in r:
            rows.append(f"| GPU benchmarks | - | - | - | - | skipped: {r['skipped']} |")
        else:
            r50, g = r["resnet50"], r["resnet50"]["images_per_s"]
            gpu_name = r["machine"]["cuda"]
            for mode in ("eager", "compiled"):
                ratio = r50[f"ratio_trainer_vs_bare_{mode}"]
                rows.append(
                    f"| resnet50 224 px train images/s, {mode}, steady state ({gpu_name}) | "
                    f"{g[f'trainer_{mode}']:,.0f} | {g[f'bare_{mode}']:,.0f} bare loop | "
                    f"{ratio:.3f}x | >= 0.97x | {ratio >= 0.97} |"
                )
            rows.append(
                f"| resnet50 eager vs torchvision reference settings (fp16, NCHW) | "
                f"{g['trainer_eager']:,.0f} | {g['torchvision_reference']:,.0f} | "
                f"{r50['ratio_trainer_eager_vs_torchvision_reference']:.3f}x | - | - |"
            )
            c = r["cifar_resnet18"]
            rows.append(
                f"| CIFAR ResNet-18 steady epoch (s; first epoch {c['first_epoch_s']:.1f}) | "
                f"{c['steady_epoch_s']:.2f} | - | - | - | - |"
            )
            d = r["gpu_decode"]
            rows.append(
                f"| gpu_decode images/s (500x375 JPEG -> 224) | {d['images_per_s']['gpu_decode']:,.0f} | "
                f"{d['images_per_s']['workers']:,.0f} ({d['workers']} PIL workers) | "
                f"{d['ratio_gpu_decode_vs_workers']:.2f}x | - | - |"
            )
    if "export" in results:
        r = results["export"]
        for name, case in r["cases"].items():
            ms, speed = case["ms_per_image"], case["speedup_vs_eager"]
            for batch in ("batch1", "batch32"):
                rows.append(
                    f"| {name} inference {batch} (ms/image, CPU, eager vs ONNX Runtime / "
                    f"TorchScript) | {ms['eager'][batch]:.3f} | "
                    f"{ms['onnxruntime'][batch]:.3f} / {ms['torchscript'][batch]:.3f} | "
                    f"{speed['onnxruntime'][batch]:.2f}x / {speed['torchscript'][batch]:.2f}x | - | - |"
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite SUMMARY.md from the JSON already there"
    )
    args = parser.parse_args(argv)
    benchmarks = (
        ()
        if args.summary_only
        else (
            ("loader", loader),
            ("trainer_overhead", trainer_overhead),
            ("models", models),
            ("gpu", gpu),
            ("export", export),
        )
    )
    for name, module in benchmarks:
        print(f"== {name}")
        module.main(QUICK[name] if args.quick else [])
    out = results_dir()
    results = {
        path.stem: json.loads(path.read_text())
        for path in sorted(out.glob("*.json"))
        if path.stem in ("loader", "trainer_overhead", "models", "gpu", "export")
    }
    m = machine()
    lines = [
        "# Benchmark summary",
        "",
        f"torch {m['torch']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
        f"GPU: {m['cuda'] or 'none'}. Ours and the peer run in the same process, alternating; "
        "medians of repeated runs.",
        "",
        *summary_rows(results),
        "",
    ]
    (out / "SUMMARY.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
