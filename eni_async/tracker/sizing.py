"""How many releases to keep in flight so that the budgets, not the count, set the pace (read by the batch).

Little's law: the rate tasks can be started at (the confirmation strategy says which budgets bind it) times
how long each holds its ENI (the latency most tasks end within, plus half the gap at which an ending task is
seen), with headroom for the tail, never fewer than a minimum. Until enough latencies are seen the hold is
``2 x PollPolicy.first``, or the time since the first target was asked for if longer (while nothing has been
seen to end, every task sent since may still hold its ENI, and the count must not starve the submits). Recomputed at most every ``refresh`` seconds. Nothing here performs I/O.

Where the budgets allow more than one process can start (``process_rate``: limits raised out of the way),
the CPU binds, not the budgets, and a hold measured then is mostly the items' own queueing (for a
connection, for the event loop): Little's law would grow the count with it, without end, and so would any
rule that grows while the process is short of a core (another process may hold the rest). There, given the
process's CPU time (``cpu``), the count grows only while growing pays:

- while the process used at least ``saturated`` of a core since the last target, it shrinks by ``backoff``
  (with growth up to Little's law's otherwise, the rule before the climb: 40,000 one-IP ENIs, limits off:
  ~600-700 in flight -> ~200-500, CPU 30.5 -> 28.9 s in one run each);
- until a task is seen to end (nothing to measure yet), it grows by ``growth`` per target;
- from then on it climbs the throughput, tasks seen to end per second (``LatencyTracker.seen``), each count
  measured over at least ``window`` seconds and one hold, after one hold for the count to take effect: a
  step up by ``growth`` is kept if it raised the throughput by ``pays`` or more, and the climb goes on up;
  one that did not is stepped back, and a step down by ``growth`` is tried, kept if it cost less than
  ``costs``; the count found is held ``cruise`` seconds, then probed again (BBR's probing, on the count).

Never above Little's law's, never below ``minimum``. Under the budgets the rule never applies. Measured
(``bench/run.py --only scale --seed 7``, 100,000 one-IP ENIs, on a 2-core machine other work shared; the
targets read every refresh, median / 90th percentile / most, the range over runs): idle, 368-390 /
396-462 / 461-604 before the climb (3 runs), 232-368 / 348-387 / 380-404 with it (2); beside two CPU hogs
369-423 / 385-492 / 407-631 (2) and 292-364 / 383-439 / 388-452 (2); on one core shared with four busy
processes 519 / 595 / 665 and 377 / 415 / 493 (1 each). Peak RSS 47-51 MiB, no collector pause over 50 ms
and CPU per ENI within this machine's noise (idle: 0.208-0.246 ms before, 0.223-0.231 after), before and
after: the runaway to the 10,000 cap measured earlier under load did not recur here, before or after.
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
    ``typical_quantile`` of the latencies seen lately, recomputed every ``refresh`` seconds. Where the CPU
    binds (see the module docstring): ``saturated``, ``backoff`` and ``growth`` for the CPU, ``pays``,
    ``costs``, ``window`` and ``cruise`` for the climb on throughput."""

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
    # A step of the climb is kept when the throughput it gave (tasks seen to end per second, over at least
    # ``window`` seconds and one hold, after one hold for the count to take effect) was at least ``1 + pays``
    # times the level's (a step up) or more than ``1 - costs`` times it (a step down); a level found is kept
    # ``cruise`` seconds before it is probed again.
    pays: float = 0.1
    costs: float = 0.05
    window: float = 0.5
    cruise: float = 4.0


class _Climb:
    """The hill climb on throughput where the CPU binds (see the module docstring); pure arithmetic on the
    times, task counts and targets it is given."""

    def __init__(self, policy: InFlightPolicy, now: float, level: int) -> None:
        self._policy = policy
        self.restart(now, level)

    def restart(self, now: float, level: int) -> None:
        """Measure ``level`` afresh from ``now`` (set from outside: a shrink, the cold growth)."""
        self.phase = "measure"  # measure | up | down | cruise
        self.level = level  # the count in force (the one a failed probe steps back to)
        self.trial = level  # the count tried while probing (``up``, ``down``), else ``level``
        self.base: float | None = None  # throughput measured at ``level``
        self._since = now  # when the count now tried was set
        self._start: tuple[float, int] | None = None  # (time, tasks seen) where its measurement began

    def step(self, now: float, seen: int, little: int, hold: float) -> int:
        """The count to keep in flight now (before the caps), ``seen`` tasks having ended so far."""
        if self.phase == "cruise":
            if now - self._since >= self._policy.cruise:
                self._try("measure", self.level, now)
            return self.level
        rate = self._measured(now, seen, hold)
        if rate is None:
            return self.trial
        policy = self._policy
        if self.phase == "up" and self.base is not None and rate >= self.base * (1.0 + policy.pays):
            self.level, self.base = self.trial, rate  # the growth paid: keep it, and probe further up
            self._up(now, little)
        elif self.phase == "up":
            self._down(now)  # it did not pay: step back, and see whether less costs anything
        elif self.phase == "down" and self.base is not None and rate > self.base * (1.0 - policy.costs):
            self.level, self.base = self.trial, rate  # less costs no throughput: keep less
            self._try("cruise", self.level, now)
        elif self.phase == "down":
            self._try("cruise", self.level, now)  # less costs throughput: back to the level
        else:  # measure
            self.base = rate
            self._up(now, little)
        return self.trial

    def _up(self, now: float, little: int) -> None:
        grown = min(little, max(self.level + 1, math.ceil(self.level * self._policy.growth)))
        if grown > self.level:
            self._try("up", grown, now)
        else:
            self._down(now)

    def _down(self, now: float) -> None:
        shrunk = max(self._policy.minimum, math.floor(self.level / self._policy.growth))
        if shrunk < self.level:
            self._try("down", shrunk, now)
        else:
            self._try("cruise", self.level, now)

    def _try(self, phase: str, count: int, now: float) -> None:
        self.phase, self.trial, self._since, self._start = phase, count, now, None

    def _measured(self, now: float, seen: int, hold: float) -> float | None:
        """Tasks seen to end per second at the count tried, once measured (``None`` until then)."""
        if self._start is None:
            if now - self._since >= hold:  # the count has had one hold to take effect
                self._start = (now, seen)
            return None
        began, seen_then = self._start
        elapsed = now - began
        if elapsed < max(self._policy.window, hold) or seen - seen_then < MIN_SAMPLES:
            return None
        return (seen - seen_then) / elapsed


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
        self._seen_first: int | None = None  # tasks seen to end when the first target was computed
        self._climb: _Climb | None = None  # where the CPU binds, once a task has been seen to end

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
        if self._seen_first is None:
            self._seen_first = latencies.seen
        if rate > policy.process_rate and cpu is not None:
            target = self._by_cpu(target, now, cpu, hold)
        else:
            self._climb = None
        self._last, self._cpu_at = (now, target), cpu
        return target

    def _by_cpu(self, target: int, now: float, cpu: float, hold: float) -> int:
        """Little's law's ``target`` where the CPU binds: shrunk while the process was saturated since the
        last target; else, until a task is seen to end, grown from it at most by ``growth``; else the climb's
        (see the module docstring). Never above ``target``, never below ``minimum``."""
        if self._last is None or self._cpu_at is None or now <= self._last[0]:
            return target
        policy = self._policy
        last = self._last[1]
        seen = self._calls.latencies.seen
        if (cpu - self._cpu_at) / (now - self._last[0]) >= policy.saturated:
            count = max(policy.minimum, min(target, math.floor(last * policy.backoff)))
        elif seen == self._seen_first:
            count = min(target, max(last + 1, math.ceil(last * policy.growth)))
        elif self._climb is None:
            self._climb = _Climb(policy, now, last)
            return max(policy.minimum, min(target, last))
        else:
            return max(policy.minimum, min(target, self._climb.step(now, seen, target, hold)))
        if self._climb is not None:
            self._climb.restart(now, count)
        return count


__all__ = ["InFlight", "InFlightPolicy"]
