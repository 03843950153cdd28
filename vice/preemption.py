"""Preemption: SIGUSR2/SIGTERM become a flag the training loop checks between steps."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

#: Seconds a rank stopped by another rank's signal waits for its own before exiting.
SIGNAL_WAIT_S = 30.0


class GracefulStop:
    """Turn SIGUSR2/SIGTERM into a flag the loop checks between steps.

    The loop then checkpoints and calls the handler that was installed before (submitit's, which
    requeues the job); without one it exits with 128 + signal.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def forward_signal(self, wait_s: float | None = None) -> None:
        """Hand the caught signal to the previous handler, or exit.

        A rank stopped by another rank's signal waits up to ``wait_s`` seconds for its own (SLURM
        signals every task), then exits as if it had got SIGTERM.
        """
        deadline = time.monotonic() + (SIGNAL_WAIT_S if wait_s is None else wait_s)
        while self.signum is None and time.monotonic() < deadline:
            time.sleep(0.1)
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, None)
        raise SystemExit(128 + signum)
