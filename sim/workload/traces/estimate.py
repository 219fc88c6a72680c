"""The service-time estimate used to turn recorded arrival times into tool/think gaps.

Traces record when a call was *issued*, not when its output ended.  To recover the
gap between a call finishing and the next call of the session being issued we estimate
the call's service time as ``ttft_s + tpot_s * output_tokens`` and take
``gap = next_issue - (issue + estimate)``, clamped at 0 (never negative).

Defaults (measured on the LMCache mini-SWE-agent runs, a strictly sequential agent, so
every inter-arrival time bounds the previous call's service time from above): the lower
envelope of ``inter-arrival / output_tokens`` is 6.7-7.8 ms per cl100k token with no
visible dependence on prompt length, so we use 6 ms per output token plus a 50 ms
first-token time; with these, none of the 382 sequential mini-SWE gaps is clamped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceEstimate:
    """Estimated service time of a recorded call, in seconds.

    Attributes:
        ttft_s: time to first token, seconds.
        tpot_s: time per output token, seconds.
    """

    ttft_s: float = 0.05
    tpot_s: float = 0.006

    def seconds(self, output_tokens: int) -> float:
        """Estimated seconds from issue to last token for ``output_tokens`` tokens."""
        return self.ttft_s + self.tpot_s * output_tokens

    def as_dict(self) -> dict[str, float]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s}
