"""Sweeps that answer questions: seed groups, plots, expected versus achieved, failed jobs that
do not stop a sweep, and sweeps that resume where they stopped."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ttest_ind

from resnets.engine.leaderboard import (
    collect,
    group_rows,
    optuna_best,
    sweep_leaderboard,
    varying_keys,
)
from resnets.engine.runs import FAILED
from resnets.engine.sweep import SweepJobFailed, run_job
from resnets.engine.sweep_plots import pareto_front

from .helpers import REPO, TINY, compose_train, read_metrics, run_train_cli
from .test_evaluate import assert_one_line_error, run_evaluate_cli


def no_score(path: Path) -> dict:
    raise AssertionError(f"rescore=false must not evaluate {path}")


def make_run(
    sweep: Path, name: str, overrides: list[str], metrics=None, config=None, raw_metrics=None
) -> Path:
    """A run directory as Hydra and the trainer leave it (without checkpoints or events)."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {"seed": 0}))
    if raw_metrics is not None:
        (run / "metrics.json").write_text(raw_metrics)
    elif metrics is not None:
        (run / "metrics.json").write_text(json.dumps({"overrides": overrides, **metrics}))
    return run


def finished(top1: float, final: float | None = None, **extra) -> dict:
    return {
        "status": "finished",
        "best_val_top1": top1,
        "val_top1": top1 if final is None else final,
        "val_top5": 99.0,
        "val_loss": 0.5,
        "train_time_s": 10.0,
        "images_per_s": 100.0,
        "num_params": 1000,
        "gflops": 0.01,
        **extra,
    }


# ------------------------------------------------------------------------------ leaderboard


def test_seed_groups_mean_std_rank_and_lead_against_spread(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    figures = {"a": [90.0, 92.0, 91.0], "b": [80.0, 80.5], "c": [79.0, 81.0]}
    n = 0
    for lr, values in zip(("0.1", "0.2", "0.3"), figures.values(), strict=True):
        for seed, top1 in enumerate(values):
            make_run(
                sweep,
                str(n),
                ["model=resnet20", f"optim.lr={lr}", f"seed={seed}"],
                finished(top1, top1 - 1, train_time_s=5.0 + seed),
                {"seed": seed},
            )
            n += 1
    rows, left_out = collect(sweep, rescore=False, score=no_score)
    assert len(rows) == 7 and not left_out
    groups = group_rows(rows)
    assert [g["setting"] for g in groups] == [
        ["model=resnet20", f"optim.lr={lr}"] for lr in ("0.1", "0.2", "0.3")
    ]
    for g, values in zip(groups, figures.values(), strict=True):
        assert g["n"] == len(values) and g["seeds"] == list(range(len(values)))
        assert g["best_top1_mean"] == pytest.approx(np.mean(values))
        assert g["best_top1_std"] == pytest.approx(np.std(values, ddof=1))
        assert g["final_top1_mean"] == pytest.approx(np.mean(values) - 1)
        assert g["train_time_s_std"] == pytest.approx(np.std(5.0 + np.arange(len(values)), ddof=1))
        # no TensorBoard events: the best epoch's top-5 and loss are unknown, never borrowed
        assert g["best_top5_mean"] is None and g["best_loss_mean"] is None
        assert g["final_top5_mean"] == pytest.approx(99.0)
    # a: 91 +- 1 leads b: 80.25 +- 0.35 by 10.75; b leads c: 80 +- 1.41 by 0.25: Welch's test of
    # each lead over the seeds of the two rows, as scipy computes it
    assert groups[0]["lead"] == pytest.approx(91.0 - 80.25)
    values = list(figures.values())
    for g, a, b in zip(groups, values, values[1:], strict=False):
        reference = ttest_ind(a, b, equal_var=False)
        interval = reference.confidence_interval(0.95)
        assert (g["welch"].n_a, g["welch"].n_b) == (len(a), len(b))
        assert g["welch"].p_value == pytest.approx(reference.pvalue, rel=1e-9)
        assert g["welch"].df == pytest.approx(reference.df, rel=1e-9)
        assert (g["welch"].low, g["welch"].high) == pytest.approx(
            (interval.low, interval.high), rel=1e-9
        )
    assert groups[0]["welch"].p_value < 0.01 < 0.5 < groups[1]["welch"].p_value
    assert groups[2]["lead"] is None and groups[2]["welch"] is None
    ungrouped = group_rows(rows, group_seeds=False)
    assert len(ungrouped) == 7 and all(g["n"] == 1 for g in ungrouped)
    assert ungrouped[0]["best_top1_mean"] == 92.0 and ungrouped[0]["best_top1_std"] is None


def test_table_shows_only_differing_overrides_rounded_and_csv_keeps_all(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    common = ["model=resnet20", "trainer.epochs=3"]
    for i, (lr, seed, top1) in enumerate(
        [("0.012345678", 0, 95.0), ("0.012345678", 1, 96.0), ("0.5", 0, 90.0), ("0.5", 1, 91.0)]
    ):
        make_run(
            sweep,
            str(i),
            [*common, f"optim.lr={lr}", f"seed={seed}"],
            finished(top1),
            {"seed": seed},
        )
    board = sweep_leaderboard(sweep, rescore=False, score=no_score, plots=False)
    md = board["md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:3] == ["#", "optim.lr", "n"]  # model, epochs and seed do not vary between rows
    rows = [line for line in md.splitlines() if line.startswith("| 1") or line.startswith("| 2")]
    assert rows[0].startswith("| 1 | 0.01235 | 2 | raw | 95.50 ± 0.71 |")  # rounded; ddof=1
    assert rows[1].startswith("| 2 | 0.5 | 2 | raw | 90.50 ± 0.71 |")
    assert "Weights scored: raw (the weights that chose each run's best.pt" in md
    assert "Common to every row: `model=resnet20 trainer.epochs=3`" in md
    with open(sweep / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    # the CSV keeps every override of every run in full
    assert table[0]["overrides"] == (
        "model=resnet20 trainer.epochs=3 optim.lr=0.012345678 seed=0; "
        "model=resnet20 trainer.epochs=3 optim.lr=0.012345678 seed=1"
    )
    assert table[0]["weights"] == "raw"
    assert table[0]["setting"] == "model=resnet20 trainer.epochs=3 optim.lr=0.012345678"
    assert table[0]["runs"] == "0 1" and table[0]["n"] == "2"
    assert float(table[0]["best_top1_std"]) == pytest.approx(statistics.stdev([95.0, 96.0]))
    sweep_leaderboard(sweep, rescore=False, score=no_score, group_seeds=False, plots=False)
    with open(sweep / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["runs"] for r in table] == ["1", "0", "3", "2"] and {r["n"] for r in table} == {"1"}


@pytest.mark.parametrize(
    ("achieved", "verdict"),
    [((93.0, 93.4), "pass"), ((91.9, 92.1), "fail"), ((94.6, 94.8), "fail")],
    ids=["inside", "below", "above"],
)
def test_expected_versus_achieved(tmp_path, achieved, verdict) -> None:
    sweep = tmp_path / "sweep"
    expected = {"top1": 93.03, "tolerance": 0.5, "source": "He et al. 2015, Table 6"}
    for seed, final in enumerate(achieved):
        make_run(
            sweep,
            str(seed),
            ["+experiment=cifar10_resnet56", f"seed={seed}"],
            finished(final + 0.3, final),
            {"seed": seed, "expected": expected},
        )
    rows, _ = collect(sweep, rescore=False, score=no_score)
    (group,) = group_rows(rows)
    assert group["expected_top1"] == 93.03 and group["tolerance"] == 0.5
    assert group["difference"] == pytest.approx(np.mean(achieved) - 93.03)
    assert group["verdict"] == verdict
    md = sweep_leaderboard(sweep, rescore=False, score=no_score, plots=False)["md"].read_text()
    line = next(x for x in md.splitlines() if "He et al. 2015, Table 6" in x)
    assert f"**{verdict}**" in line and "| 93.03 |" in line
    assert f"{np.mean(achieved):.2f} ± {np.std(achieved, ddof=1):.2f}" in line
    with open(sweep / "leaderboard.csv") as f:
        assert next(csv.DictReader(f))["verdict"] == verdict


def test_expected_values_are_validated() -> None:
    from resnets.config import ConfigError
    from resnets.validation import validate

    for override, fragment in (
        ("expected.top1=120", "expected.top1=120.0 is not valid"),
        ("expected.tolerance=-1", "expected.tolerance=-1.0 is not valid"),
    ):
        cfg = compose_train([*TINY, "expected.top1=50", override])
        with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
            validate(cfg)


@pytest.mark.slow
def test_one_corrupt_run_is_listed_and_the_others_ranked(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "0", ["optim.lr=0.1"], finished(90.0))
    make_run(sweep, "1", ["optim.lr=0.2"], raw_metrics='{"best_val_top1": 9')  # cut short
    make_run(sweep, "2", ["optim.lr=0.3"], finished(95.0))
    make_run(sweep, "3", ["optim.lr=0.4"], {"status": "failed", "reason": "optim.lr=-1 bad"})
    make_run(sweep, "4", ["optim.lr=0.5"])  # never finished
    bad_yaml = make_run(sweep, "5", ["optim.lr=0.6"], finished(99.0))
    (bad_yaml / ".hydra" / "overrides.yaml").write_text("- optim.lr=0.6\n- [unclosed\n")
    make_run(sweep, "6", ["optim.lr=0.7"], raw_metrics="[1, 2]")
    result = run_evaluate_cli(
        [f"sweep={sweep}", "rescore=false", f"hydra.run.dir={tmp_path / 'e'}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: run")]
    assert len(warnings) == 5
    with open(sweep / "leaderboard.csv") as f:
        assert [r["runs"] for r in csv.DictReader(f)] == ["2", "0"]
    md = (sweep / "leaderboard.md").read_text()
    left = md.split("## Runs left out")[1]
    assert f"`1` (broken): {sweep / '1' / 'metrics.json'} is not valid JSON" in left
    assert "`3` (failed): optim.lr=-1 bad" in left
    assert "`4` (unfinished): no metrics.json" in left
    assert f"`5` (broken): {sweep / '5' / '.hydra' / 'overrides.yaml'} is not valid YAML" in left
    assert "`6` (broken):" in left and "holds a list, not an object" in left


@pytest.mark.slow
def test_sweep_without_any_readable_run_is_one_line(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "0", ["optim.lr=0.1"], raw_metrics="{not json")
    result = run_evaluate_cli(
        [f"sweep={sweep}", "rescore=false", f"hydra.run.dir={tmp_path / 'e'}"]
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "none of its 1 runs has finished figures" in errors[0]
    assert f"(run 0: broken: {sweep / '0' / 'metrics.json'} is not valid JSON" in errors[0]
    assert "Traceback" not in result.stderr


def test_optuna_trials_show_their_parameters_and_the_best_is_marked(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    trials = [(0.0312345, 1e-4, 91.0), (0.4, 3e-5, 95.5), (0.11, 1e-3, 93.0)]
    for i, (lr, wd, top1) in enumerate(trials):
        make_run(sweep, str(i), [f"optim.lr={lr}", f"optim.weight_decay={wd}"], finished(top1))
    (sweep / "optimization_results.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "optuna",
                "best_params": {"optim.lr": 0.4, "optim.weight_decay": 3e-5},
                "best_value": 95.5,
            }
        )
    )
    rows, _ = collect(sweep, rescore=False, score=no_score)
    groups = group_rows(rows)
    best = optuna_best(sweep, groups)
    assert best["rank"] == 1 and groups[0].get("optuna_best") and not groups[1].get("optuna_best")
    assert varying_keys(groups)[0] == ["optim.lr", "optim.weight_decay"]
    md = sweep_leaderboard(sweep, rescore=False, score=no_score, plots=False)["md"].read_text()
    assert "| # | optim.lr | optim.weight_decay | n |" in md
    assert "| 1 ★ | 0.4 | 3e-05 | 1 | raw | 95.50 |" in md
    assert "| 3 | 0.03123 | 0.0001 | 1 | raw | 91.00 |" in md
    with open(sweep / "leaderboard.csv") as f:
        assert [r["optuna_best"] for r in csv.DictReader(f)] == ["True", "False", "False"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=12))
def test_pareto_front_holds_exactly_the_undominated_points(points) -> None:
    front = set(pareto_front(points))

    def dominated(i: int) -> bool:
        x, y = points[i]
        return any(
            (px <= x and py >= y) and (px < x or py > y)
            for j, (px, py) in enumerate(points)
            if j != i
        )

    for i in range(len(points)):
        if dominated(i):
            assert i not in front
    # every undominated cost/accuracy pair is represented (duplicates once)
    assert {points[i] for i in range(len(points)) if not dominated(i)} == {points[i] for i in front}


# ------------------------------------------------------------------------------ sweep jobs


def _job_cfg(*extra: str):
    return compose_train([*TINY, *extra])


def test_failed_job_is_recorded_and_returns_no_score(tmp_path) -> None:
    def fail(cfg):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    out = tmp_path / "0"
    assert run_job(_job_cfg(), fail, out, ["optim.lr=9"]) is None
    record = read_metrics(out)
    assert record["status"] == FAILED and record["error"] == "RuntimeError"
    assert record["reason"] == "CUDA out of memory. Tried to allocate 2 GiB"
    assert record["overrides"] == ["optim.lr=9"]
    assert "Traceback" in (out / "failure.log").read_text()
    # Optuna must see a failed trial, never a placeholder score
    with pytest.raises(SweepJobFailed, match="CUDA out of memory"):
        run_job(_job_cfg(), fail, tmp_path / "1", ["optim.lr=9"], raise_on_failure=True)
    interrupted = tmp_path / "2"

    def ctrl_c(cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the sweep
        run_job(_job_cfg(), ctrl_c, interrupted, [])
    assert not (interrupted / "metrics.json").exists()


def test_finished_job_is_skipped_and_reports_its_stored_score(tmp_path) -> None:
    out = tmp_path / "0"
    make_run(tmp_path, "0", ["optim.lr=0.1"], finished(87.5))

    def never(cfg):
        raise AssertionError("a finished run must not train again")

    assert run_job(_job_cfg(), never, out, ["optim.lr=0.1"]) == 87.5
    # the same directory for another setting: refused, the finished run's record left alone
    before = (out / "metrics.json").read_bytes()
    assert run_job(_job_cfg(), never, out, ["optim.lr=0.2"]) is None
    with pytest.raises(SweepJobFailed, match="holds a finished run with other overrides"):
        run_job(_job_cfg(), never, out, ["optim.lr=0.2"], raise_on_failure=True)
    assert (out / "metrics.json").read_bytes() == before
    # a failed job runs again
    failed = make_run(tmp_path, "1", ["optim.lr=0.1"], {"status": "failed", "reason": "x"})
    assert run_job(_job_cfg(), lambda cfg: 42.0, failed, ["optim.lr=0.1"]) == 42.0


@pytest.mark.slow
def test_search_without_multirun_is_refused(tmp_path) -> None:
    group = "hparams_search=digits_optuna"  # reproduce=... goes through the same check
    result = run_train_cli([group, f"hydra.run.dir={tmp_path / 'run'}"])
    assert_one_line_error(result, f"{group} is a sweep and needs -m")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------ real sweeps

SWEEP_TINY = [*TINY, "trainer.batch_size=256", "trainer.eval_batch_size=360"]  # 5 steps an epoch


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_two_settings_two_seeds_on_digits(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        [
            "-m",
            *SWEEP_TINY,
            "trainer.epochs=2",
            "optim.lr=0.05,0.2",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = {i: read_metrics(sweep / str(i)) for i in range(4)}
    board = sweep_leaderboard(sweep, rescore=False, score=no_score)  # evaluate.py's own work
    with open(sweep / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and [r["n"] for r in table] == ["2", "2"]
    for row in table:
        runs = [trained[int(r)] for r in row["runs"].split()]
        assert {r["overrides"][-1] for r in runs} == {"seed=0", "seed=1"}
        for column, key in (
            ("best_top1", "best_val_top1"),
            ("final_top1", "val_top1"),
            ("final_loss", "val_loss"),
            ("images_per_s", "images_per_s"),
        ):
            values = [r[key] for r in runs]
            assert float(row[f"{column}_mean"]) == pytest.approx(np.mean(values), rel=1e-9)
            assert float(row[f"{column}_std"]) == pytest.approx(
                np.std(values, ddof=1), rel=1e-6, abs=1e-9
            )
        assert int(row["num_params"]) == runs[0]["num_params"]
        assert row["best_top5_mean"] != "" and row["best_loss_mean"] != ""  # from the events
    means = [float(r["best_top1_mean"]) for r in table]
    assert means == sorted(means, reverse=True)
    md = (sweep / "leaderboard.md").read_text()
    for name in ("top1_vs_params", "top1_vs_gflops", "top1_vs_train_time", "val_top1_curves"):
        assert f"]({name}.png)" in md
        assert png_size(sweep / f"{name}.png") == (700, 500)
    # the curves: one line per setting, each the mean of its seeds' events at each epoch
    curves = board["plotted"]["val_top1_curves"]
    assert sorted(curves) == ["optim.lr=0.05", "optim.lr=0.2"]
    for group in board["groups"]:
        x, y = curves[group["setting"][-1]]
        assert x == [1.0, 2.0]  # evaluated after each of the 2 epochs
        final = np.mean([trained[int(r)]["val_top1"] for r in group["runs"]])
        assert y[-1] == pytest.approx(final, abs=1e-4)  # events hold float32
    assert 0 in board["plotted"]["top1_vs_params"]["front"]  # the best is always on the front


@pytest.mark.slow
def test_one_bad_job_does_not_stop_the_sweep(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        ["-m", *SWEEP_TINY, "trainer.epochs=1", "optim.lr=-1,0.1", f"hydra.sweep.dir={sweep}"]
    )
    assert result.returncode == 1, result.stderr[-3000:]  # one job failed
    failed, done = read_metrics(sweep / "0"), read_metrics(sweep / "1")
    assert failed["status"] == "failed" and failed["error"] == "ConfigError"
    assert failed["reason"] == "optim.lr=-1.0 is not valid; accepted: a positive number in (0, 1000]"
    assert done["status"] == "finished" and done["steps"] == 5
    assert "1 of 2 jobs failed" in result.stderr + result.stdout
    board = run_evaluate_cli([f"sweep={sweep}", "rescore=true", f"hydra.run.dir={tmp_path / 'e'}"])
    assert board.returncode == 0, board.stderr[-3000:]
    md = (sweep / "leaderboard.md").read_text()
    assert "`0` (failed): optim.lr=-1.0 is not valid" in md
    with open(sweep / "leaderboard.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["runs"] == "1" and float(row["best_top1_mean"]) == pytest.approx(
        done["best_val_top1"]
    )


def _checkpoint_state(run: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "checkpoints").glob("*.pt")
    }


@pytest.mark.slow
def test_interrupted_sweep_skips_finished_resumes_started_runs_new(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *SWEEP_TINY,
        "trainer.epochs=3",
        "optim.lr=0.05,0.1,0.2",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 500
    while not (sweep / "1" / "checkpoints" / "last.pt").exists():  # job 1 finished an epoch
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output[-3000:]
    # the advice continues the sweep, not job 1 alone
    assert f"run the same -m command with hydra.sweep.dir={sweep} " in output, output[-3000:]
    assert "hydra.run.dir=" not in output
    assert read_metrics(sweep / "0")["status"] == "finished"
    assert not (sweep / "1" / "metrics.json").exists() and not (sweep / "2").exists()
    stopped_at = torch.load(sweep / "1" / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 5 <= stopped_at < 15
    first = _checkpoint_state(sweep / "0")
    first_metrics = (sweep / "0" / "metrics.json").read_bytes()

    result = run_train_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    assert "job 0 (" in log and "skipped, finished before" in log
    assert "job 1 (" in log and f"resuming from {sweep / '1' / 'checkpoints' / 'last.pt'}" in log
    assert "job 2 (" in log and "): starting" in log
    assert _checkpoint_state(sweep / "0") == first  # not retrained: same bytes, same times
    assert (sweep / "0" / "metrics.json").read_bytes() == first_metrics
    resumed = (sweep / "1" / "train.log").read_text()
    epoch, within = divmod(stopped_at, 5)  # 5 steps an epoch; epochs counted from 1
    place = f"inside epoch {epoch + 1}/" if within else f"after epoch {epoch}/"
    assert place in resumed and f", at step {stopped_at}" in resumed, resumed
    for i in range(3):
        metrics = read_metrics(sweep / str(i))
        assert metrics["status"] == "finished" and metrics["steps"] == 15 and metrics["epochs"] == 3
    board = run_evaluate_cli([f"sweep={sweep}", "rescore=false", f"hydra.run.dir={tmp_path / 'e'}"])
    assert board.returncode == 0, board.stderr[-3000:]
    with open(sweep / "leaderboard.csv") as f:
        assert sorted(r["runs"] for r in csv.DictReader(f)) == ["0", "1", "2"]


@pytest.mark.slow
def test_failures_and_skips_through_the_submitit_launcher(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=20",
        *SWEEP_TINY,
        "trainer.epochs=1",
        "optim.lr=-1,0.1",
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_train_cli(args)
    assert first.returncode == 1, first.stderr[-3000:]  # the failure counted across processes
    assert read_metrics(sweep / "0")["status"] == "failed"
    assert read_metrics(sweep / "1")["status"] == "finished"
    done = _checkpoint_state(sweep / "1")
    again = run_train_cli(args)
    assert again.returncode == 1, again.stderr[-3000:]
    assert _checkpoint_state(sweep / "1") == done  # skipped inside the submitit job
    assert "skipped, finished before" in (sweep / "1" / "train.log").read_text()
    assert read_metrics(sweep / "0")["reason"].startswith("optim.lr=-1.0 is not valid")


@pytest.mark.slow
def test_reproduce_digits_table_runs_the_papers_recipe_per_depth(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        [
            "-m",
            "reproduce=he2015_digits",
            "+experiment=cifar10_resnet20,cifar10_resnet110",  # two of the five depths
            "seed=0",
            "trainer.max_steps=2",  # tiny: the recipe is what is checked here
            "trainer.workers=0",
            "trainer.progress=false",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, depth in ((0, 20), (1, 110)):
        cfg = yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())
        assert cfg["model"]["name"] == f"resnet{depth}"
        assert cfg["data"]["name"] == "digits" and cfg["seed"] == 0
        assert cfg["optim"] == {**cfg["optim"], "lr": 0.1, "momentum": 0.9, "nesterov": False}
        assert cfg["optim"]["weight_decay"] == 1e-4 and not cfg["optim"]["no_decay_norm_bias"]
        assert cfg["sched"]["name"] == "multistep" and cfg["sched"]["milestones"] == [4, 6]
        assert cfg["trainer"]["epochs"] == 8 and cfg["trainer"]["batch_size"] == 128
        assert cfg["expected"]["top1"] is None  # the paper's CIFAR figure is not for digits
        assert read_metrics(sweep / str(job))["steps"] == 2
    warmup = yaml.safe_load((sweep / "1" / ".hydra" / "config.yaml").read_text())["sched"]
    assert warmup["warmup_epochs"] == 1 and warmup["warmup_start_factor"] == 0.1  # ResNet-110
    assert warmup["warmup_method"] == "constant"
    board = sweep_leaderboard(sweep, rescore=False, score=no_score, plots=False)
    experiments = [
        [o for o in g["setting"] if o.startswith("+experiment=")] for g in board["groups"]
    ]
    assert sorted(e for (e,) in experiments) == [
        "+experiment=cifar10_resnet110",
        "+experiment=cifar10_resnet20",
    ]
    assert board["groups"][0]["num_params"] != board["groups"][1]["num_params"]


def test_cifar_experiments_carry_the_papers_figures() -> None:
    # He et al. 2015, Table 6 (CIFAR-10 test error %), as listed in docs/sweeps.md
    paper = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61}
    for depth, error in paper.items():
        cfg = compose_train([f"+experiment=cifar10_resnet{depth}"])
        assert cfg.model.name == f"resnet{depth}" and cfg.data.name == "cifar10"
        assert cfg.expected.top1 == pytest.approx(100 - error)
        assert cfg.expected.tolerance == 0.5 and "He et al. 2015" in cfg.expected.source
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.trainer.batch_size) == (0.1, 1e-4, 128)
        assert list(cfg.sched.milestones) == [82, 123] and cfg.trainer.max_steps == 64000


def _write_events(tb: Path, series: dict[str, list[float]], steps: list[int]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tb))
    for tag, values in series.items():
        for step, value in zip(steps, values, strict=True):
            writer.add_scalar(tag, value, step)
    writer.close()


@pytest.mark.parametrize("weights", ["val", "val_ema"])
def test_rescore_false_row_takes_every_best_figure_from_the_best_evaluation(
    tmp_path, weights
) -> None:
    sweep = tmp_path / "sweep"
    run = make_run(
        sweep,
        "0",
        ["optim.lr=0.1"],
        finished(70.0, 60.0, val_top5=95.0, val_loss=0.6, steps_per_epoch=5),
    )
    other = "val_ema" if weights == "val" else "val"
    _write_events(
        run / "tb",
        {
            f"{weights}/acc": [50.0, 70.0, 60.0],  # best at the second evaluation
            f"{weights}/top5": [80.0, 90.0, 95.0],
            f"{weights}/loss": [1.0, 0.5, 0.6],
            f"{other}/acc": [40.0, 45.0, 50.0],
            f"{other}/top5": [70.0, 71.0, 72.0],
            f"{other}/loss": [2.0, 1.9, 1.8],
        },
        [5, 10, 15],
    )
    rows, _ = collect(sweep, rescore=False, score=no_score)
    (row,) = rows
    assert (row["best_top1"], row["best_top5"], row["best_loss"]) == (70.0, 90.0, 0.5)
    assert (row["final_top1"], row["final_top5"], row["final_loss"]) == (60.0, 95.0, 0.6)
    curve = row["curve"]
    assert curve.unit == "epoch" and curve.x == [1.0, 2.0, 3.0]
    # the curve is always the raw weights' validation top-1
    assert curve.top1 == ([50.0, 70.0, 60.0] if weights == "val" else [40.0, 45.0, 50.0])


def test_a_damaged_best_checkpoint_lists_the_run_when_rescoring(tmp_path) -> None:
    from resnets.engine.checkpoint import CheckpointError, load_checkpoint

    sweep = tmp_path / "sweep"
    make_run(sweep, "0", ["optim.lr=0.1"], finished(70.0))
    damaged = make_run(sweep, "1", ["optim.lr=0.2"], finished(80.0))
    (damaged / "checkpoints").mkdir()
    (damaged / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04 cut short")
    rows, left_out = collect(sweep, rescore=True, score=load_checkpoint)
    assert [r["run"] for r in rows] == ["0"]  # run 0 has no best.pt: its metrics.json is used
    (bad,) = left_out
    assert bad.name == "1" and bad.status == "broken"
    assert str(damaged / "checkpoints" / "best.pt") in bad.reason
    with pytest.raises(CheckpointError):
        load_checkpoint(damaged / "checkpoints" / "best.pt")


@pytest.mark.slow
def test_optuna_search_in_the_leaderboard(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        [
            "-m",
            "hparams_search=digits_optuna",
            "hydra.sweeper.n_trials=2",
            *SWEEP_TINY,
            "trainer.epochs=1",
            "trainer.max_steps=3",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    board = sweep_leaderboard(sweep, rescore=False, score=no_score, plots=False)
    marked = [g for g in board["groups"] if g.get("optuna_best")]
    assert len(board["groups"]) == 2 and len(marked) == 1
    assert marked[0]["best_top1_mean"] == pytest.approx(best["best_value"])
    header = next(x for x in board["md"].read_text().splitlines() if x.startswith("| # |"))
    for param in best["best_params"]:
        assert f" {param} |" in header  # the searched parameters are columns


def test_leaderboard_reads_the_history_not_tensorboard(tmp_path) -> None:
    """With every tb/ folder deleted, rescore=false writes the same table and the same figures:
    the best evaluation's figures and the curves come from history.jsonl."""
    sweep = tmp_path / "sweep"
    for name, (top1, curve) in {"0": (70.0, [50.0, 70.0]), "1": (65.0, [65.0, 60.0])}.items():
        run = make_run(
            sweep,
            name,
            [f"optim.lr=0.{name}5", "seed=0"],
            finished(top1, curve[-1], steps_per_epoch=5),
        )
        records = [
            {"kind": "val", "step": 5 * (i + 1), "epoch": i + 1, "images_seen": 0,
             "wall_time_s": 1.0, "val/top1": v, "val/top5": 90.0 + i, "val/loss": 1.0 - v / 100}
            for i, v in enumerate(curve)
        ]  # fmt: skip
        (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        # events that disagree with the history: they must not be read
        _write_events(run / "tb", {"val/acc": [1.0, 2.0], "val/top5": [3.0, 4.0]}, [5, 10])
    board = sweep_leaderboard(sweep, rescore=False, score=no_score)
    outputs = ["leaderboard.md", "leaderboard.csv", "val_top1_curves.png", "top1_vs_params.png"]
    before = {name: (sweep / name).read_bytes() for name in outputs}
    rows = {g["runs"][0]: g for g in board["groups"]}
    assert rows["0"]["best_top5_mean"] == 91.0 and rows["1"]["best_top5_mean"] == 90.0
    assert board["plotted"]["val_top1_curves"]["optim.lr=0.05"] == ([1.0, 2.0], [50.0, 70.0])
    for tb in sweep.glob("*/tb"):
        shutil.rmtree(tb)
    sweep_leaderboard(sweep, rescore=False, score=no_score)
    assert {name: (sweep / name).read_bytes() for name in outputs} == before
