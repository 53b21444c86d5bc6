"""Graceful stop: the first SIGINT/SIGTERM asks the loop to stop at the next step boundary.

The loop then writes last.pt and exits; a second Ctrl-C exits at once. `on_stop` hooks run after
the checkpoint is written (a cluster launcher uses one to requeue the job).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self.on_stop: list[Callable[[int], None]] = []
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> StopRequest:
        if (
            threading.current_thread() is threading.main_thread()
        ):  # signals only reach the main thread
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

    def run_hooks(self) -> None:
        if self.signum is not None:
            for hook in self.on_stop:
                hook(self.signum)
