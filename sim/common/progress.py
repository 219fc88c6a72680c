"""A progress bar for long simulations: calls done, simulated time, events per second.

It draws on stderr only when stderr is a terminal (so logs and CI output stay clean)
and redraws at most ten times a second, so calling :meth:`ProgressBar.update` often
costs little.  Callers pass ``progress=False`` for ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

REFRESH_S = 0.1


class ProgressBar:
    """tqdm bar over a run's calls with the simulated time against the trace's span.

    Args:
        total_calls: calls in the workload (the bar's 100%; None: not known yet, as
            for a workload generated while it runs).
        trace_span_s: simulated second of the last root arrival (arrival times
            divided by the load scale); shown as the trace position.
        label: text before the bar (e.g. the policy and seed of a comparison run).
        stream: where to draw (default stderr); nothing is drawn unless it is a TTY.
    """

    def __init__(
        self,
        total_calls: int | None,
        trace_span_s: float,
        label: str = "simulating",
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.span = trace_span_s
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_calls, unit="call", desc=label, leave=False, file=self.stream
            )

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, sim_now_s: float, calls_done: int, events: int) -> None:
        """Redraw (at most every 0.1 s of wall time) with the current counters."""
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last < REFRESH_S:
            return
        self._last = now
        el = max(now - self.t0, 1e-9)
        self._bar.n = calls_done
        self._bar.set_postfix_str(
            f"sim t={sim_now_s:,.0f}s"
            + (f" of {self.span:,.0f}s trace" if self.span == self.span else "")
            + f", {events / el:,.0f} ev/s",
            refresh=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
