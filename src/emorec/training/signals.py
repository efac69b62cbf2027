"""Graceful interruption: SIGINT / SIGTERM ask the loop to stop after the current step.

The first signal only sets a flag; the loop finishes its optimizer step, writes a resumable
checkpoint and exits non-zero. A second signal means the user will not wait: exit at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


class StopRequest:
    """Context manager that turns SIGINT / SIGTERM into a polled `requested` flag."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, message: str = "stopping after the current step to write a checkpoint; "
                                      "signal again to exit at once"):
        self.message = message
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            print(f"\nemorec: second {signal.Signals(signum).name}, exiting now without a checkpoint",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)  # skip cleanup on purpose: the user asked to stop now
        self.signum = signum
        print(f"\nemorec: {signal.Signals(signum).name} received, {self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        # Signal handlers can only be installed from the main thread (e.g. not inside a notebook worker).
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
