"""One live run per run directory: an advisory lock with its holder recorded, and a heartbeat.

Two `train.py ... hydra.run.dir=SAME` (a requeued job racing its slow-to-die predecessor) would
both write the same checkpoints. Rank 0 takes `flock` on `<run>/.run.lock` at start and records
host, pid and start time in it; a second run stops at once naming the holder. The kernel drops the
lock when its process dies, so a dead run's lock is taken over (and logged). On shared file
systems where `flock` is not honoured across hosts, `<run>/.run.heartbeat`, rewritten every
HEARTBEAT_S by the holder, tells a live run on another host from a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LOCK_NAME, HEARTBEAT_NAME = ".run.lock", ".run.heartbeat"
HEARTBEAT_S = 30.0
STALE_S = 4 * HEARTBEAT_S  # a heartbeat older than this is a dead run's


class RunDirBusy(RuntimeError):
    """Another live run holds the run directory; the message names it."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}"


class RunLock:
    """`acquire()` or RunDirBusy; `release()` at exit. Use through `hold_run_dir`."""

    def __init__(self, run_dir: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.run_dir = Path(run_dir)
        self.lock_path = self.run_dir / LOCK_NAME
        self.heartbeat_path = self.run_dir / HEARTBEAT_NAME
        self.heartbeat_s = heartbeat_s
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read(self.lock_path) or {}
            raise RunDirBusy(self._busy_message(holder, "holds its lock")) from None
        except OSError as err:  # a file system without flock: the heartbeat alone decides
            log.warning(
                "%s: no advisory lock here (%s); relying on the heartbeat", self.lock_path, err
            )
        self._fd = fd
        try:
            self._check_heartbeat()
        except RunDirBusy:
            self._unlock()
            raise
        previous = _read(self.lock_path)
        if previous and previous.get("pid") != os.getpid():
            log.warning(
                "took over %s from %s, which no longer runs", self.lock_path, _describe(previous)
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._write_heartbeat()
        self._beat = threading.Thread(target=self._beat_loop, name="run-heartbeat", daemon=True)
        self._beat.start()

    def _check_heartbeat(self) -> None:
        """A fresh heartbeat of another live process means a live run the lock did not stop."""
        beat = _read(self.heartbeat_path)
        if not beat or (
            beat.get("pid") == os.getpid() and beat.get("host") == socket.gethostname()
        ):
            return
        age = time.time() - float(beat.get("time", 0))
        if beat.get("host") == socket.gethostname():
            if pid_alive(int(beat.get("pid", -1))):
                raise RunDirBusy(self._busy_message(beat, "is alive and beating"))
            return  # a dead process on this host: taken over (logged by acquire)
        if age < STALE_S:
            raise RunDirBusy(
                self._busy_message(beat, f"wrote a heartbeat {age:.0f} s ago")
                + f"; if it is dead, retry after {STALE_S - age:.0f} s"
            )
        log.warning(
            "%s: heartbeat of %s is %.0f s old; taking the run over",
            self.heartbeat_path,
            _describe(beat),
            age,
        )

    def _busy_message(self, holder: dict[str, Any], how: str) -> str:
        return (
            f"{self.run_dir} is in use by another run ({_describe(holder)} {how}); one live run "
            "per run directory: wait for it, stop it, or choose another hydra.run.dir"
        )

    def _write_heartbeat(self) -> None:
        beat = {**_holder(), "time": time.time()}
        tmp = self.heartbeat_path.with_name(f"{HEARTBEAT_NAME}.{os.getpid()}")
        with contextlib.suppress(OSError):  # a missed beat is retried; never fatal to training
            tmp.write_text(json.dumps(beat))
            os.replace(tmp, self.heartbeat_path)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._write_heartbeat()

    def _unlock(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with contextlib.suppress(OSError):
            self.heartbeat_path.unlink(missing_ok=True)
            # the holder record stays empty, not removed: removing a locked file races a waiter
            self.lock_path.write_text("")
        self._unlock()


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike) -> Iterator[None]:
    """Rank 0 holds the run directory for the block; other ranks share rank 0's hold."""
    if int(os.environ.get("RANK", "0")) > 0:
        yield
        return
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
