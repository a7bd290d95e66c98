"""How many releases to keep in flight so that the budgets, not the count, set the pace (read by the batch).

Little's law: the rate tasks can be started at (the confirmation strategy says which budgets bind it) times
how long each holds its ENI (the latency most tasks end within, plus half the gap at which an ending task is
seen), with headroom for the tail, never fewer than a minimum. Until enough latencies are seen the hold is
``2 x PollPolicy.first``, or the time since the first target was asked for if longer (while nothing has been
seen to end, every task sent since may still hold its ENI, and the count must not starve the submits). Recomputed at most every ``refresh`` seconds. Nothing here performs I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eni_async.poller import MIN_SAMPLES
from eni_async.tracker.pacing import LookPacing

if TYPE_CHECKING:
    from eni_async.calls import Calls


@dataclass(frozen=True)
class InFlightPolicy:
    """Little's law's terms: ``headroom`` over rate x hold, at least ``minimum``, the hold read at
    ``typical_quantile`` of the latencies seen lately, recomputed every ``refresh`` seconds."""

    headroom: float = 1.5
    minimum: int = 16
    # One process starts at most about this many tasks a second (beyond it, CPU binds, not the budget):
    # Little's law reads a larger budget (limits raised out of the way) as this, so that what is in flight
    # (memory, and the collector's work) follows what the process can do. Per-item garbage is freed by
    # refcounting (a 20,000-ENI batch leaves the collector ~8,000 objects in all), but every object of an
    # item in flight is traversed by each collection it lives through: 2,000/s kept ~3,000 items (~80
    # objects each) in flight, 1,000 half as many, no slower (20,000 ENIs, bench/scale.py's settings:
    # collector 2.9-5.1 s -> 1.5 s, RSS 107-146 -> 56 MiB, CPU 0.45-0.60 -> 0.44 ms per ENI).
    process_rate: float = 1000.0
    typical_quantile: float = 0.9
    refresh: float = 0.25


class InFlight:
    """The in-flight target of one tracker (see the module docstring)."""

    def __init__(self, calls: Calls, *, policy: InFlightPolicy, pacing: LookPacing) -> None:
        self._calls = calls
        self._policy = policy
        self._pacing = pacing
        self._last: tuple[float, int] | None = None
        self._cold_since: float | None = None

    def recent(self) -> int | None:
        """The target computed less than ``refresh`` seconds ago, if there is one (asked before every item:
        the rate it needs is not read then)."""
        last = self._last
        if last is not None and self._calls.clock.monotonic() - last[0] < self._policy.refresh:
            return last[1]
        return None

    def target(self, rate: float) -> int:
        """Releases to keep in flight when tasks can be started at ``rate`` per second."""
        recent = self.recent()
        if recent is not None:
            return recent
        now = self._calls.clock.monotonic()
        latencies = self._calls.latencies
        typical = latencies.latency(self._policy.typical_quantile) if len(latencies) >= MIN_SAMPLES else None
        if typical is None:
            # No latency known yet: every task submitted since the first target was asked for may still be
            # running, so the hold is at least that long (the count never starves the submits meanwhile).
            if self._cold_since is None:
                self._cold_since = now
            latency = max(2.0 * self._calls.poll.first, now - self._cold_since)
        else:
            latency = typical
        hold = latency + self._pacing.typical_gap(latency) / 2
        rate = min(rate, self._policy.process_rate)
        target = max(self._policy.minimum, math.ceil(rate * hold * self._policy.headroom))
        self._last = (now, target)
        return target


__all__ = ["InFlight", "InFlightPolicy"]
