"""kill -9 at random moments of a run that saves every epoch: last.pt always loads with
weights_only=True, and the same command resumes from it and finishes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from .helpers import REPO, read_metrics

KILLS = 10
EPOCHS, STEPS_PER_EPOCH = 10, 4

# One process composes the config and imports everything once, then forks a child per attempt
# (nothing has run a torch op before the fork): ten kills cost seconds, not ten interpreter starts.
DRIVER = r"""
import json, os, random, signal, sys, time
sys.path.insert(0, sys.argv[1])
from tests.helpers import TINY, compose_train
from resnets.engine.trainer import train
import torch

run_dir, seed, kills, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cfg = compose_train([*TINY, "data=fake", "data.fake_size=64", "trainer.batch_size=16",
                     f"trainer.epochs={epochs}", "trainer.save_every=1", "sched=constant"])
last = os.path.join(run_dir, "checkpoints", "last.pt")
log = os.path.join(run_dir, "train.log")

def started():
    # the line each attempt logs once set up, just before its first step
    return open(log).read().count("steps per epoch") if os.path.exists(log) else 0

def attempt():
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)
            train(cfg, run_dir)
            code = 0
        finally:
            os._exit(code)
    return pid

rng, report = random.Random(seed), []
for _ in range(kills):
    before, pid = started(), attempt()
    if rng.random() < 0.2:  # now and then during set-up and resume
        time.sleep(rng.uniform(0.0, 0.5))
    else:  # mostly while training: steps, evaluations and per-epoch saves
        deadline = time.time() + 60
        while started() == before and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    folder = os.path.dirname(last)
    tmp = [n for n in os.listdir(folder) if ".tmp-" in n] if os.path.isdir(folder) else []
    step = None
    if os.path.exists(last):
        step = int(torch.load(last, weights_only=True)["step"])
    report.append({"step": step, "tmp_left": len(tmp)})
pid = attempt()
_, status = os.waitpid(pid, 0)
print(json.dumps({"kills": report, "final_status": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path) -> None:
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(REPO), str(run_dir), "13", str(KILLS), str(EPOCHS)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    kills = report["kills"]
    assert len(kills) == KILLS and report["final_status"] == 0, report
    steps = [k["step"] for k in kills]
    # every kill left a loadable last.pt (or none yet); progress never went backwards
    assert [s for s in steps if s is not None] == sorted(s for s in steps if s is not None)
    assert any(s is not None for s in steps), report  # the kills did land after saves
    # "the same command resumes": each attempt after a saved kill logged resuming at that step
    log = (run_dir / "train.log").read_text()
    resumed = [int(s) for s in re.findall(r"resumed from \S+ .*, at step (\d+)", log)]
    expected = [s for s in steps if s is not None]
    assert set(resumed) <= set(expected) and resumed == sorted(resumed), (resumed, steps)
    assert resumed[-1] == expected[-1]  # the final attempt resumed from the last kill's save
    final = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert final["step"] == EPOCHS * STEPS_PER_EPOCH and final["epoch"] == EPOCHS
    assert read_metrics(run_dir)["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))
    print(f"kill -9 report: {kills}")
