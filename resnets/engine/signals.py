"""Graceful stop: the first SIGINT/SIGTERM asks the loop to stop at the next step boundary.

The loop then writes last.pt and exits; a second Ctrl-C exits at once. Inside a submitit job
(Hydra's submitit launcher, on SLURM or locally) the conventions are submitit's: SLURM announces a
preemption with SIGTERM and then the preemption signal (USR2), and a time limit with USR2 alone.
So there SIGTERM only writes last.pt at the next step and training goes on; USR2 writes last.pt,
then submitit's own handler gets it and requeues the job, which resumes in the same run directory.
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
        self,
        signals: Iterable[int] = DEFAULT_SIGNALS,
        hand_over: Iterable[int] = (),
        save_only: Iterable[int] = (),
    ) -> None:
        self.hand_over_signals = tuple(hand_over)
        self.save_only_signals = tuple(save_only)
        self.signals = tuple(dict.fromkeys((*signals, *self.hand_over_signals, *save_only)))
        self.signum: int | None = None
        self.save_signum: int | None = None  # a save-only signal waiting for the next step
        self._previous: dict[int, object] = {}

    @classmethod
    def for_this_job(cls) -> StopRequest:
        """SIGINT and SIGTERM stop; under submitit SIGTERM saves and USR2 stops and requeues."""
        preempt = preemption_signal()
        if preempt is None:
            return cls()
        return cls(signals=(signal.SIGINT,), hand_over=(preempt,), save_only=(signal.SIGTERM,))

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
        if signum in self.save_only_signals:
            self.save_signum = signum
        else:
            self.signum = signum

    def hand_over(self) -> None:
        """After last.pt is written: pass a preemption signal to the handler it displaced
        (submitit's, which requeues the job and exits)."""
        if self.signum in self.hand_over_signals:
            previous = self._previous.get(self.signum)
            if callable(previous):
                previous(self.signum, None)
