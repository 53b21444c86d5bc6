"""Scale-out: DDP on two gloo processes, submitit sweeps, preemption and requeue, Optuna, SLURM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnets.config import register_configs
from resnets.engine import distributed as D
from resnets.engine.trainer import train

from .helpers import REPO, TINY, compose_train, read_metrics, run_train_cli

# Exactly comparable runs: no label smoothing and no random crop, an odd validation set (361).
EXACT = [
    *TINY,
    "trainer.label_smoothing=0",
    "data.augment.crop_padding=0",
    "data.val_fraction=0.2005",
]


def torchrun(script: str, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / script),
            *args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def scalar_steps(tb_dir: Path, tag: str) -> list[int]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_equal_one_process_accumulating(tmp_path) -> None:
    per_rank = ["trainer.batch_size=32", "trainer.epochs=1"]
    code, out = finish(torchrun("train.py", ["trainer=ddp", *EXACT, *per_rank], cwd=tmp_path))
    assert code == 0, out[-4000:]
    # one run directory although each rank's Hydra could have stamped its own
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs
    ddp_dir = runs[0]

    single_dir = tmp_path / "single"
    cfg = compose_train([*EXACT, *per_rank, "trainer.accumulate_grad_batches=2"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker: the same kernels, the same rounding
    try:
        train(cfg, output_dir=single_dir)
    finally:
        torch.set_num_threads(threads)

    ddp = torch.load(ddp_dir / "checkpoints" / "last.pt", weights_only=True)
    single = torch.load(single_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ddp["step"] == single["step"] == 1437 // 64
    compared = 0
    for name, value in single["model"].items():
        if "running_" in name or "num_batches_tracked" in name:
            continue  # DDP keeps rank 0's batch-norm statistics (it broadcasts its buffers)
        torch.testing.assert_close(ddp["model"][name], value, atol=1e-5, rtol=0)
        compared += 1
    assert compared == sum(1 for _ in cfg_params(cfg))

    metrics = read_metrics(ddp_dir)
    assert metrics["val_samples"] == 361  # 181 + 180, no padded duplicates
    assert metrics["steps"] == 22
    # rank 0 alone writes: one log, each line once; every event file from one process
    log = (ddp_dir / "train.log").read_text()
    assert log.count("epoch 1/1 step 22: train loss") == 1
    pids = {p.name.split(".")[-2] for p in (ddp_dir / "tb").rglob("events.out.tfevents.*")}
    assert len(pids) == 1
    assert sorted(p.name for p in (ddp_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]

    # evaluation on two processes counts each of the 361 samples once
    code, out = finish(
        torchrun(
            "evaluate.py",
            [f"ckpt={ddp_dir / 'checkpoints' / 'last.pt'}", "trainer.workers=0"],
            cwd=tmp_path,
        )
    )
    assert code == 0, out[-4000:]
    scored = json.loads((ddp_dir / "eval" / "last" / "metrics.json").read_text())
    assert scored["samples"] == 361
    assert scored["top1"] == pytest.approx(metrics["val_top1"], abs=1e-9)
    assert scored["nll"] == pytest.approx(metrics["val_loss"], rel=1e-5)


def cfg_params(cfg):
    from resnets.models import build_model_from_config

    model = build_model_from_config(cfg.model, num_classes=10, in_chans=1, image_size=32)
    return list(model.parameters())


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_both_at_the_same_step(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = ["trainer=ddp", *TINY, "trainer.epochs=12", "trainer.log_every=5"]
    proc = torchrun("train.py", [*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before epoch 1"
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGTERM)  # the second worker only
    code, out = finish(proc)
    assert code != 0 and "stopped by SIGTERM (signal 15)" in out
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < state["step"] < 12 * 11 and state["step"] % 5 == 0  # stopped together at a sync
    code, out = finish(torchrun("train.py", [*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path))
    assert code == 0, out[-4000:]
    assert f"step {state['step']}" in (run_dir / "train.log").read_text().split("resumed from")[1]
    assert read_metrics(run_dir)["steps"] == 12 * 11  # 1437 // (2 ranks x 64) per epoch


def test_sync_batchnorm_needs_cuda() -> None:
    info = D.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="sync_batchnorm=true needs CUDA"):
        D.wrap_model(torch.nn.BatchNorm2d(3), info, sync_batchnorm=True)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_sync_batchnorm_on_two_gpus(tmp_path) -> None:
    run_dir = tmp_path / "run"
    code, out = finish(
        torchrun(
            "train.py",
            [
                "trainer=ddp",
                "trainer.sync_batchnorm=true",
                *TINY,
                "trainer.epochs=1",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=tmp_path,
        )
    )
    assert code == 0, out[-4000:]
    assert read_metrics(run_dir)["val_samples"] == 360


@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            *TINY,
            "trainer.epochs=1",
            "model.depth=8,14",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    depths = {}
    for job in (0, 1):
        metrics = read_metrics(sweep / str(job))
        assert metrics["steps"] == 1437 // 64
        overrides = yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text())
        depths[next(o for o in overrides if o.startswith("model.depth="))] = metrics["num_params"]
    assert set(depths) == {"model.depth=8", "model.depth=14"}
    assert depths["model.depth=14"] > depths["model.depth=8"]


def _submitit_task_pid(sweep: Path) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in cmdline and str(sweep) in cmdline:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_where_it_stopped(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            "hydra/launcher=submitit_local",
            *TINY,
            "trainer.epochs=8",
            "trainer.log_every=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = sweep / "0"
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the job ended before epoch 1"
        time.sleep(0.2)
    task = _submitit_task_pid(sweep)
    assert task is not None
    # SLURM announces a preemption with SIGTERM: last.pt at the next step, and training goes on
    os.kill(task, signal.SIGTERM)
    while "training goes on" not in (run_dir / "train.log").read_text():
        assert proc.poll() is None and time.time() < deadline, "the job ended on SIGTERM"
        time.sleep(0.1)
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    time.sleep(1.0)
    assert _submitit_task_pid(sweep) == task  # still the same process, still training
    os.kill(task, signal.SIGUSR2)  # then the preemption (or time-limit) signal
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    log = (run_dir / "train.log").read_text()
    assert f"signal {int(signal.SIGTERM)}: last.pt written at step {saved};" in log
    assert f"stopped by SIGUSR2 (signal {int(signal.SIGUSR2)})" in log
    resumed = log.split("resumed from")[1].splitlines()[0]
    step = int(resumed.split("step ")[1])
    assert 0 < saved < step < 8 * 22
    metrics = read_metrics(run_dir)
    assert metrics["steps"] == 8 * 22 and metrics["epochs"] == 8
    # TensorBoard continues: every logged step once, in order, across the two attempts
    steps = scalar_steps(run_dir / "tb", "train/loss")
    assert steps == list(range(2, 8 * 22 + 1, 2))


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_reports_the_best(tmp_path) -> None:
    sweep = tmp_path / "optuna"
    result = run_train_cli(
        [
            "-m",
            "hparams_search=digits_optuna",
            "hydra.sweeper.n_trials=2",
            *TINY,
            "trainer.epochs=1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [read_metrics(sweep / str(i))["best_val_top1"] for i in (0, 1)]
    assert report["best_value"] == pytest.approx(max(trials))
    assert set(report["best_params"]) == {
        "optim.lr",
        "optim.weight_decay",
        "trainer.label_smoothing",
    }
    best = trials.index(max(trials))
    overrides = yaml.safe_load((sweep / str(best) / ".hydra" / "overrides.yaml").read_text())
    assert f"optim.lr={report['best_params']['optim.lr']}" in overrides


def test_slurm_launcher_config_becomes_the_sbatch_script(tmp_path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    # no SLURM here: a stand-in srun on PATH lets submitit write the script it would submit
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.tasks_per_node=4",
                "hydra.launcher.setup=[source .venv/bin/activate]",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    for field in (
        "partition",
        "nodes",
        "gpus_per_node",
        "tasks_per_node",
        "cpus_per_task",
        "mem_gb",
        "timeout_min",
        "signal_delay_s",
        "max_num_timeout",
        "setup",
    ):
        assert field in launcher, field
    # the launcher's own translation (hydra_submitit_launcher.launch): shared keys as they are,
    # the rest prefixed with the cluster name, then submitit's AutoExecutor
    params = OmegaConf.to_container(launcher, resolve=False)
    for key in ("_target_", "submitit_folder", "name"):
        params.pop(key)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    auto = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path, slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    auto.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    executor = auto._executor
    assert isinstance(executor, SlurmExecutor)
    script = executor._make_submission_file_text("python train.py", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@120",
        "source .venv/bin/activate",
    ):
        assert line in script, line


def test_ranks_and_rendezvous_come_from_slurm_environment() -> None:
    """Inside a 2-node x 4-task SLURM job, submitit's helper turns SLURM's variables into torch's."""
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "42",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    with mock.patch.dict(os.environ, slurm):
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
        D._export_slurm_env()
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
            "5",
            "8",
            "1",
        )
        assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0
