"""One live run per run directory: a second run stops at once naming the holder; a dead run's
lock and heartbeat are taken over and logged; cleaning temporaries spares a live writer's."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import pytest

from resnets.engine import run_lock
from resnets.engine.checkpoint import TMP_MARK, remove_stale_temporaries
from resnets.engine.run_lock import RunDirBusy, RunLock, hold_run_dir

from .helpers import TINY, run_script_inprocess


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_second_holder_is_refused_naming_the_first(tmp_path) -> None:
    with hold_run_dir(tmp_path):
        holder = json.loads((tmp_path / ".run.lock").read_text())
        assert holder["pid"] > 0 and holder["host"] == socket.gethostname()
        with pytest.raises(RunDirBusy) as busy:
            RunLock(tmp_path).acquire()
        message = str(busy.value)
        assert f"pid {holder['pid']} on {holder['host']}" in message and "\n" not in message
    RunLock(tmp_path).acquire()  # released at the end of the block


def test_lock_holds_against_another_process(tmp_path) -> None:
    code = (
        "import sys, time; from resnets.engine.run_lock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"pid {other.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        other.kill()
        other.wait()
    lock = RunLock(tmp_path)  # the kernel dropped the dead holder's lock: taken over
    lock.acquire()
    lock.release()


def test_dead_holder_on_this_host_is_taken_over_and_logged(tmp_path, caplog) -> None:
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": 0}
    (tmp_path / ".run.lock").write_text(json.dumps(dead))
    (tmp_path / ".run.heartbeat").write_text(json.dumps({**dead, "time": time.time()}))
    with caplog.at_level(logging.WARNING), hold_run_dir(tmp_path):
        pass
    assert f"from pid {dead['pid']} on {dead['host']}, which no longer runs" in caplog.text


def test_heartbeat_from_another_host_serves_where_locks_do_not(tmp_path, caplog) -> None:
    beat = {"host": "node-elsewhere", "pid": 4242, "time": time.time() - 5}
    (tmp_path / ".run.heartbeat").write_text(json.dumps(beat))
    with pytest.raises(RunDirBusy, match="pid 4242 on node-elsewhere wrote a heartbeat 5 s ago"):
        RunLock(tmp_path).acquire()
    beat["time"] = time.time() - run_lock.STALE_S - 1  # a heartbeat that stopped: dead
    (tmp_path / ".run.heartbeat").write_text(json.dumps(beat))
    with caplog.at_level(logging.WARNING), hold_run_dir(tmp_path):
        assert json.loads((tmp_path / ".run.heartbeat").read_text())["host"] == socket.gethostname()
    assert "taking the run over" in caplog.text
    assert not (tmp_path / ".run.heartbeat").exists()  # removed at release


def test_heartbeat_is_rewritten_while_held(tmp_path) -> None:
    lock = RunLock(tmp_path, heartbeat_s=0.05)
    lock.acquire()
    try:
        first = json.loads((tmp_path / ".run.heartbeat").read_text())["time"]
        time.sleep(0.3)
        assert json.loads((tmp_path / ".run.heartbeat").read_text())["time"] > first
    finally:
        lock.release()


def test_other_ranks_do_not_lock(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with hold_run_dir(tmp_path):
        assert not (tmp_path / ".run.lock").exists()


def test_cleaning_temporaries_spares_a_live_writer(tmp_path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = tmp_path / f".last.pt{TMP_MARK}{live.pid}"
        dead = tmp_path / f".last.pt{TMP_MARK}{_dead_pid()}"
        mine.write_bytes(b"half")
        dead.write_bytes(b"half")
        assert remove_stale_temporaries(tmp_path) == [dead]
        assert mine.exists() and not dead.exists()
    finally:
        live.kill()
        live.wait()


def test_train_in_a_held_directory_stops_at_once(tmp_path, capsys) -> None:
    args = [*TINY, "data=digits", "trainer.max_steps=1", f"hydra.run.dir={tmp_path}"]
    with hold_run_dir(tmp_path):
        status = run_script_inprocess("train", args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert f"{tmp_path} is in use by another run (pid " in lines[0]
    assert not (tmp_path / "checkpoints").exists()
