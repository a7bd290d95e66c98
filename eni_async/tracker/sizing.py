"""How many releases to keep in flight so that the budgets, not the count, set the pace (read by the batch).

Little's law: the rate tasks can be started at (the confirmation strategy says which budgets bind it) times
how long each holds its ENI (the latency most tasks end within, plus half the gap at which an ending task is
seen), with headroom for the tail, never fewer than a minimum. Until enough latencies are seen the hold is
``2 x PollPolicy.first``, or the time since the first target was asked for if longer (while nothing has been
seen to end, every task sent since may still hold its ENI, and the count must not starve the submits). Recomputed at most every ``refresh`` seconds. Nothing here performs I/O.

Where the budgets allow more than one process can start (``process_rate``: limits raised out of the way),
the CPU binds, not the budgets, and a hold measured then is mostly the items' own queueing (for a
connection, for the event loop): Little's law would grow the count with it, without end. There, given the
process's CPU time (``cpu``), the count follows the CPU instead: while the process used at least
``saturated`` of a core since the last target, it shrinks by ``backoff``; otherwise it grows at most by
``growth`` per target, up to Little's law's (40,000 one-IP ENIs, limits off: ~600-700 in flight ->
~200-500, CPU 30.5 -> 28.9 s in one run each). Under the budgets the rule never applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    saturated: float = 0.9
    backoff: float = 0.9
    growth: float = 1.5


class InFlight:
    """The in-flight target of one tracker (see the module docstring)."""

    def __init__(
        self,
        calls: Calls,
        *,
        policy: InFlightPolicy,
        pacing: LookPacing,
        cpu: Callable[[], float] | None = None,
    ) -> None:
        self._calls = calls
        self._policy = policy
        self._pacing = pacing
        self._cpu = cpu  # the process's CPU seconds, on the clock ``calls.clock`` keeps (None: not known)
        self._last: tuple[float, int] | None = None
        self._cpu_at: float | None = None  # ``cpu()`` when ``_last`` was computed
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
        policy = self._policy
        target = max(policy.minimum, math.ceil(min(rate, policy.process_rate) * hold * policy.headroom))
        cpu = self._cpu() if self._cpu is not None else None
        if rate > policy.process_rate and cpu is not None:
            target = self._by_cpu(target, now, cpu)
        self._last, self._cpu_at = (now, target), cpu
        return target

    def _by_cpu(self, target: int, now: float, cpu: float) -> int:
        """Little's law's ``target`` where the CPU binds: shrunk while the process was saturated since the
        last target, else grown from it at most by ``growth`` (see the module docstring)."""
        if self._last is None or self._cpu_at is None or now <= self._last[0]:
            return target
        policy = self._policy
        last = self._last[1]
        if (cpu - self._cpu_at) / (now - self._last[0]) >= policy.saturated:
            return max(policy.minimum, min(target, math.floor(last * policy.backoff)))
        return min(target, max(last + 1, math.ceil(last * policy.growth)))


__all__ = ["InFlight", "InFlightPolicy"]
