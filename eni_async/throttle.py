"""Per-action rate budgets over asyncio-throttle, read through our ``Clock``.

asyncio-throttle keeps a sliding window of send times but reads ``time.monotonic`` and polls every 10 ms
while full. ``RateBudget`` keeps its window and its ``rate_limit`` knob, reads the injected clock, and sleeps
exactly until the oldest send leaves the window, so tests run in fake time and a full budget costs no CPU.
The budget also adapts (AIMD), to sustained throttling only: a stray throttle answer (a fault, a neighbour's
burst) costs only the retry of the call it hit, while throttles that keep coming (at least ``STRAY_LIMIT``
within one window, at least ``SHARE`` of the calls sent in it and, for a budget that calls wait for,
``BUSY_SHARE`` of its rate: another process is spending the same quota) cut the rate to ``DECREASE`` of itself, once per window, never below one. Each quiet window adds back
``RECOVERY`` of the configured rate, up to the configured rate or a limit the server stated (docs/protocol.md
D6, D18). With ``discovery`` (opt-in), a budget that has more demand than rate grows by ``GROWTH`` per window
while never throttled (slow start), and settles at the limit the first throttle answer states, even above
the configured rate. The client's window is ``WINDOW`` seconds, a little over the server's one second, so
that jitter in when requests arrive cannot fit more than the limit into one of the server's windows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from asyncio_throttle.throttler import Throttler

from eni_async.clock import Clock

# How long past the window edge to wake: guards against float rounding re-sleeping for nothing.
_EPSILON = 1e-6
# The client's window: the server counts per second by arrival, and arrivals jitter by milliseconds (tens of
# them when the server is busy: at 1.02 s one answer in a few thousand was throttled under load).
WINDOW = 1.05
# Once calls have been timed, a budget's window is the server's second, plus ``DRIFT`` (clocks that disagree
# by up to a thousandth), plus the spread of the answer times seen lately (the most arrivals can jitter, as
# the client can tell): on loopback a few milliseconds, so submits run at nearly the whole limit. Timed over
# the last ``TIMED`` answers, from ``MIN_TIMED`` on; a throttle answer puts the window back to ``WINDOW`` for
# ``CAUTION`` seconds (the spread did not cover what the server saw).
DRIFT = 0.001
TIMED = 64
MIN_TIMED = 16
CAUTION = 30.0
# A throttle answer cuts the rate to this fraction; a quiet window adds back this fraction of the configured.
DECREASE = 0.7
RECOVERY = 0.05
# Throttles count as sustained (and cut the rate) only this many within one window, and this share of its calls.
# Random throttles (a flaky gateway: the hostile profile answers 5% of calls so) are strays; they come in
# clusters (12 of a window's 100 calls were seen at 5%); another process on the quota refuses far more.
STRAY_LIMIT = 3
SHARE = 0.12
BUSY_SHARE = 0.2  # of the rate, for a budget that calls wait for (see ``RateBudget.on_throttled``)
# Discovery: the rate grows by this factor per window while demand exceeds it and no throttle was seen
# (slow start: doubling, so a tenfold quota is found in under four windows).
GROWTH = 2.0
# A period is spent in tenths: at most a tenth of the rate (rounded up) in any tenth of the period.
BURST_SLICES = 10


class RateBudget(Throttler):
    """At most ``rate`` acquisitions in any ``period`` seconds, shared by every coroutine that uses it."""

    # asyncio-throttle annotates an int; its window arithmetic works as well with a fractional rate.
    rate_limit: float  # type: ignore[assignment]

    def __init__(
        self,
        rate: float,
        clock: Clock,
        *,
        period: float = 1.0,
        name: str = "",
        discovery: bool = False,
        timed: bool = False,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1, not {rate}")
        super().__init__(rate_limit=1, period=period)
        self.rate_limit = rate
        self._clock = clock
        self.name = name
        self.configured = rate
        self.ceiling = rate
        self.discovery = discovery
        self.discovered: float | None = None  # the limit a throttle answer stated while discovering
        self._recent_throttles: deque[float] = deque()
        self._last_growth = clock.monotonic()
        self._lock = asyncio.Lock()
        self._queued = 0  # acquisitions holding or waiting for the lock
        self._burst_logs: deque[float] = deque()
        self._last_change = clock.monotonic()
        self._last_decrease = float("-inf")
        self.throttles = 0
        # ``timed``: the window follows the answer times (``observe``); ``period`` is the window until then.
        self._timed = timed
        self._safe_period = period
        self._answers: deque[float] = deque(maxlen=TIMED)
        self._untimed = 0  # answers since the window was last set
        self._careful_until = float("-inf")

    def __repr__(self) -> str:
        return f"RateBudget({self.name!r}, rate={self.rate_limit}/{self.period}s)"

    @property
    def rate(self) -> float:
        """The current rate per period (a whole number unless a fraction was configured)."""
        rate: float = self.rate_limit
        return int(rate) if float(rate).is_integer() else rate

    def flush(self) -> None:
        now = self._clock.monotonic()
        logs = self._task_logs
        while logs and now - logs[0] >= self.period:
            logs.popleft()
        burst = self._burst_logs
        while burst and now - burst[0] >= self.period / BURST_SLICES:
            burst.popleft()

    async def acquire(self) -> None:
        """Wait until one more call fits in the window, then take the slot (first come, first served).

        Two windows must both have room: the whole ``period`` (at most ``rate`` calls) and its last tenth
        (at most a tenth of ``rate``, rounded up), so a full budget is spent evenly across the period rather
        than in one burst that a busy server would count partly into its next second.
        """
        if not self._queued and self._free_at() is None:  # nobody waiting and a slot free: take it now
            self._stamp()
            return
        self._queued += 1
        try:
            async with self._lock:
                await self._take()
        finally:
            self._queued -= 1

    async def acquire_retry(self) -> None:
        """Take a slot for the retry of a call that was refused (throttled) or failed, without queueing.

        The retry does not go to the back of the line of every call waiting for this budget: it competes
        only with the one call at the head of it, so a stray throttle costs its call a retry wait, not a
        second trip through the whole queue (at 100/s with hundreds of items waiting, seconds).
        """
        await self._take()

    async def _take(self) -> None:
        while (free_at := self._free_at()) is not None:
            if self._grow():
                continue
            await self._clock.sleep(max(free_at - self._clock.monotonic(), 0.0) + _EPSILON)
        self._stamp()

    def _free_at(self) -> float | None:
        """When the next call fits both windows (``None``: one fits now)."""
        self._recover()
        self.flush()
        burst_cap = -(-int(self.rate_limit) // BURST_SLICES)
        waits = []
        if len(self._task_logs) >= self.rate_limit:
            waits.append(self._task_logs[0] + self.period)
        if len(self._burst_logs) >= burst_cap:
            waits.append(self._burst_logs[0] + self.period / BURST_SLICES)
        # A fractional rate (6.5) also spaces calls period/rate apart: its long-run rate is the fraction.
        spaced = self._task_logs[-1] + self.period / self.rate_limit if self._task_logs else 0.0
        if not float(self.rate_limit).is_integer() and spaced > self._clock.monotonic():
            waits.append(spaced)
        return max(waits) if waits else None

    def _stamp(self) -> None:
        now = self._clock.monotonic()
        self._task_logs.append(now)
        self._burst_logs.append(now)

    def observe(self, seconds: float) -> None:
        """Take the time one call took from send to answer into account (a timed budget's window)."""
        if not self._timed:
            return
        answers = self._answers
        answers.append(seconds)
        self._untimed += 1
        if self._untimed < MIN_TIMED or len(answers) < MIN_TIMED:
            return
        self._untimed = 0
        if self._clock.monotonic() < self._careful_until:
            return
        spread = max(answers) - min(answers)
        self.period = min(self._safe_period * 2, 1.0 + DRIFT + spread)

    def on_throttled(self, stated_limit: int | None = None) -> None:
        """Take a throttle answer into account; ``stated_limit`` is the limit its message gave, if any.

        A stated limit caps the rate and the ceiling (never above the configured rate, unless discovering);
        the rate is cut only when throttles are sustained (see the module docstring).
        """
        self.throttles += 1
        now = self._clock.monotonic()
        if self._timed:
            self._careful_until = now + CAUTION
            self.period = max(self.period, self._safe_period)
        stated = stated_limit if stated_limit is not None and stated_limit >= 1 else None
        if self.discovery and self.discovered is None:
            # The first throttle ends the probe: settle at the stated limit, or back at the last rate that held.
            self.discovered = (
                stated if stated is not None else max(self.configured, int(self.rate_limit / GROWTH))
            )
            self.ceiling = self.discovered
            self.rate_limit = self.discovered
            self._last_change = now
            return
        if stated is not None:
            self.ceiling = min(self.discovered or self.configured, stated)
            if self.rate_limit > self.ceiling:  # down to the stated limit at once: that is this window's cut
                self.rate_limit = self.ceiling
                self._last_decrease = self._last_change = now
        recent = self._recent_throttles
        recent.append(now)
        while recent and now - recent[0] >= self.period:
            recent.popleft()
        self.flush()
        # A busy budget (calls wait for it) spends its whole window: its throttles are sustained only at
        # ``BUSY_SHARE`` of its rate (random ones come in clusters, and early in a window its first calls are
        # too few to make a share of).
        busy = BUSY_SHARE * self.rate_limit if self._queued else 0.0
        sustained = len(recent) >= max(STRAY_LIMIT, SHARE * len(self._task_logs), busy)
        # Many calls of one window are throttled together: that is one signal, so decrease once per period.
        if not sustained or now - self._last_decrease < self.period:
            self.rate_limit = min(self.rate_limit, self.ceiling)
            return
        self._last_decrease = now
        self.rate_limit = max(1, min(self.ceiling, int(self.rate_limit * DECREASE)))
        self._last_change = now

    def _grow(self) -> bool:
        """Discovery: with more demand than rate and no throttle yet, raise the rate once per window."""
        if not self.discovery or self.discovered is not None:
            return False
        now = self._clock.monotonic()
        if now - self._last_growth < self.period:
            return False
        self._last_growth = now
        self.rate_limit = max(int(self.rate_limit) + 1, int(self.rate_limit * GROWTH))
        self.ceiling = max(self.ceiling, int(self.rate_limit))
        return True

    def _recover(self) -> None:
        # Additive increase: a step per quiet period, back up to the ceiling.
        if self.rate_limit >= self.ceiling:
            return
        now = self._clock.monotonic()
        periods = int((now - self._last_change) / self.period)
        if periods > 0:
            step = max(1, int(self.configured * RECOVERY))
            self.rate_limit = min(self.ceiling, int(self.rate_limit) + periods * step)
            self._last_change += periods * self.period


class Budget(Protocol):
    """What a client needs of one action's budget: ``RateBudget``, or ``shared_quota.SharedBudget``."""

    @property
    def rate(self) -> float:
        """The current rate per window."""
        ...

    async def acquire(self) -> None:
        """Wait for a slot."""
        ...

    async def acquire_retry(self) -> None:
        """Wait for a slot for a retry, without queueing again behind every first attempt."""
        ...

    def on_throttled(self, stated_limit: int | None = None) -> None:
        """Take a throttle answer into account."""
        ...

    def observe(self, seconds: float) -> None:
        """Take the time one call took from send to answer into account."""
        ...


class BudgetTable(Protocol):
    """One budget per action: ``Budgets``, or ``shared_quota.SharedBudgets``."""

    def __getitem__(self, action: str) -> Budget: ...


class Budgets:
    """One ``RateBudget`` per action, shared by every coroutine of a client."""

    def __init__(
        self, rates: Mapping[str, float], clock: Clock, *, period: float = WINDOW, discovery: bool = False
    ) -> None:
        self._budgets = {
            action: RateBudget(rate, clock, period=period, name=action, discovery=discovery, timed=True)
            for action, rate in rates.items()
        }

    def __getitem__(self, action: str) -> RateBudget:
        return self._budgets[action]

    def __repr__(self) -> str:
        return f"Budgets({', '.join(f'{a}={b.rate}/s' for a, b in self._budgets.items())})"
