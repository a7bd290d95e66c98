"""When to look at a watched task's ENI and when to ask about the task: the tracker's schedules, as values.

Looks are paced by the task, not the clock. The first look comes at a quantile of the latencies seen lately
(``PollPolicy.first`` until enough are seen, or when the poll policy is not adaptive); later looks come after
a gap that starts at ``min_gap`` and grows by ``growth`` per look, up to a ceiling that grows with the task's
age (``age_share`` of how long it has run): a task that has run for 20 s is unlikely to end in the next
tenth of a second, and watching it as often as a task of 1 s spends describes for nothing. The ceiling is
never under ``max_gap``; while fewer than ``poller.MIN_SAMPLES`` latencies are known it grows only by
``warming_share`` (the first tasks seen ending teach the latency, so they are seen a little sooner); once
at most ``tail`` tasks are watched (the end of a batch, when one call holds them all and the makespan waits
on them) it is ``tail_gap`` (a tenth of a second: a round then costs one call), growing by ``tail_share``
of the age. Looks are aligned down to a grid of
``min_gap x 2**k`` (the largest step not over the gap), so that tasks paced alike fall due together and share
rounds and calls: calls, not looks, are what a round costs. ``Packing`` says how looks share calls. Nothing here performs I/O, reads a clock or awaits: the latencies are
read by the caller, times are arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from eni_async.policy import PollPolicy
from eni_async.poller import MIN_SAMPLES, LatencyTracker


@dataclass(frozen=True)
class LookPacing:
    """How often a watched ENI is looked at, and when its task is expected to have ended (see the module
    docstring). Quantiles are of the task latencies seen lately."""

    first_quantile: float = 0.7  # most tasks are seen done at their first or second look
    min_gap: float = 0.15
    growth: float = 1.2
    max_gap: float = 0.35
    age_share: float = 0.25
    warming_share: float = 0.2  # while latencies are being learnt (the in-flight target does not wait)
    tail: int = 50
    tail_gap: float = 0.1  # under min_gap: the tail's looks keep their own grid
    tail_share: float = 0.02
    expected_quantile: float = 0.95  # API 2.0: IPs still listed past it make the task worth asking
    # The grid of the last first look, as (``first``, in the tail, the tick): ``first_at`` is asked per task
    # and ``first`` changes only when a latency is learnt (a cache: not part of the value).
    _first_grid: list[tuple[float, bool, float]] = field(
        default_factory=lambda: [(math.nan, False, 0.0)],  # NaN equals no delay: the first call computes
        init=False,
        repr=False,
        compare=False,
    )

    def first_look(self, latencies: LatencyTracker, poll: PollPolicy) -> float:
        """Seconds after the submit to look first."""
        if not latencies.warm or not poll.adaptive:
            return poll.first
        typical = latencies.latency(self.first_quantile)
        return poll.first if typical is None else typical

    def expected(
        self, latencies: LatencyTracker, poll: PollPolicy, running: Sequence[float] | None = None
    ) -> float:
        """The latency most tasks end within (``2 x poll.first`` until enough latencies are seen).

        ``running``: the ages of the tasks watched now whose end is not seen yet. The latencies seen are
        those of the tasks that ended first, so the quantile is read with the running ones counted as
        lasting at least their age (Kaplan-Meier); while that estimate cannot reach the quantile yet
        (too few of the tasks have ended), twice the longest latency seen.
        """
        if len(latencies) < MIN_SAMPLES:
            return 2.0 * poll.first
        ended = latencies.ordered()
        if running is None:
            high = latencies.latency(self.expected_quantile)
            return 2.0 * poll.first if high is None else high
        high = censored_quantile(ended, running, self.expected_quantile)
        return 2.0 * ended[-1] if high is None else high

    def ceiling(self, *, age: float, watched: int, warm: bool = True) -> float:
        """The longest gap before the next look at a task that has run ``age`` seconds."""
        if watched <= self.tail:
            return max(self.tail_gap, self.tail_share * age)
        return max(self.max_gap, self._share(warm) * age)

    def _share(self, warm: bool) -> float:
        return self.age_share if warm else self.warming_share

    def gap(self, previous: float | None, *, age: float, watched: int, warm: bool = True) -> float:
        """The gap before the next look, after ``previous`` (``None``: the first gap after the first look);
        ``warm``: whether enough task latencies have been seen to pace by."""
        grown = self.min_gap if previous is None else previous * self.growth
        ceiling = self.ceiling(age=age, watched=watched, warm=warm)
        return min(max(grown, self._share(warm) * age), ceiling)

    def tick(self, gap: float) -> float:
        """The grid a look after ``gap`` is aligned to: the largest ``min_gap x 2**k`` not over ``gap`` (a gap
        under ``min_gap``, the tail's, is its own grid)."""
        if gap < self.min_gap:
            return gap
        if gap == self.min_gap:
            return self.min_gap
        return self.min_gap * 2.0 ** math.floor(math.log2(gap / self.min_gap))

    def at(self, now: float, gap: float) -> float:
        """When to look next: ``gap`` after ``now`` at the latest, aligned down to the grid of ``gap`` (so
        that looks of tasks paced alike fall due together and share rounds and calls), never before ``now``."""
        return max(now, self._align(now + gap, self.tick(gap)))

    def first_at(self, sent: float, first: float, *, watched: int) -> float:
        """When to look first at a task submitted at ``sent``: ``first`` after it at the latest, aligned to the
        grid of the gap that will follow (never before ``sent``)."""
        tail = watched <= self.tail
        last = self._first_grid[0]  # read once: the slot may be replaced meanwhile (by another thread)
        if last[0] == first and last[1] is tail:
            tick = last[2]
        else:  # the gap after a first look depends on ``watched`` only through ``tail``
            tick = self.tick(self.gap(None, age=first, watched=watched))
            self._first_grid[0] = (first, tail, tick)
        return max(sent, self._align(sent + first, tick))

    @staticmethod
    def _align(at: float, tick: float) -> float:
        # The small epsilon keeps a time already on the grid (up to float error) where it is.
        return math.floor(at / tick + 1e-9) * tick

    def typical_gap(self, latency: float) -> float:
        """The gap a task of ``latency`` seconds is looked at with near its end (while many are watched)."""
        return max(self.max_gap, self.age_share * latency)


def censored_quantile(ended: Sequence[float], running: Sequence[float], quantile: float) -> float | None:
    """The ``quantile`` of task latencies by Kaplan-Meier: ``ended`` the latencies seen (shortest first),
    ``running`` the ages of tasks not ended yet (each lasts at least that long). ``None`` while the estimate
    of the share still running has not fallen to ``1 - quantile``."""
    at_risk = len(ended) + len(running)
    alive = sorted(running)
    survival, j = 1.0, 0
    for latency in ended:
        while j < len(alive) and alive[j] < latency:  # censored before this end: no longer at risk
            j += 1
            at_risk -= 1
        survival *= 1.0 - 1.0 / at_risk
        at_risk -= 1
        if survival <= 1.0 - quantile:
            return latency
    return None


@dataclass(frozen=True)
class Packing:
    """How looks and asked-for descriptions share calls, and how much of each budget they may hold."""

    ahead: float = 0.15  # tasks due within this much of a round ride along in a call with room, for free
    # An asked-for description waits at most this long for others to share its call, and so does a look
    # that would go in a call not full while another describe is in flight.
    coalesce: float = 0.05
    slack: float = 0.01  # tasks due this close together are looked at in one round
    describes_in_flight: float = 0.25  # of the describe budget's rate
    queries_in_flight: float = 0.5  # of the task-query budget's rate

    def describe_room(self, rate: float) -> int:
        """Describe calls the tracker keeps in flight at most."""
        return max(1, int(rate * self.describes_in_flight))

    def query_room(self, rate: float) -> int:
        """Task queries the tracker keeps in flight at most."""
        return max(1, int(rate * self.queries_in_flight))


__all__ = ["LookPacing", "Packing", "censored_quantile"]
