"""Graceful stop: the first SIGINT/SIGTERM asks the loop to stop at the next step boundary.

The loop then writes last.pt and exits; a second Ctrl-C exits at once. Inside a submitit job
(Hydra's submitit launcher, on SLURM or locally) the preemption signal that submitit sends before
a time limit is caught too: once last.pt is written, submitit's own handler gets it and requeues
the job, which then resumes from last.pt in the same run directory.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def preemption_signal() -> int | None:
    """The signal submitit sends before a time limit (USR2 unless SUBMITIT_PREEMPT_SIGNAL says
    otherwise); None outside a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", None)


class StopRequest:
    def __init__(
        self, signals: Iterable[int] = DEFAULT_SIGNALS, hand_over: Iterable[int] = ()
    ) -> None:
        self.hand_over_signals = tuple(hand_over)
        self.signals = tuple(dict.fromkeys((*signals, *self.hand_over_signals)))
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @classmethod
    def for_this_job(cls) -> StopRequest:
        """SIGINT and SIGTERM, plus submitit's preemption signal when running under submitit."""
        preempt = preemption_signal()
        return cls(hand_over=(preempt,) if preempt is not None else ())

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> StopRequest:
        # signals only reach the main thread
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without waiting for the step
        self.signum = signum

    def hand_over(self) -> None:
        """After last.pt is written: pass a preemption signal to the handler it displaced
        (submitit's, which requeues the job and exits)."""
        if self.signum in self.hand_over_signals:
            previous = self._previous.get(self.signum)
            if callable(previous):
                previous(self.signum, None)
