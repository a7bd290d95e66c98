"""Per-action rate budgets over asyncio-throttle, read through our ``Clock``.

asyncio-throttle keeps a sliding window of send times but reads ``time.monotonic`` and polls every 10 ms
while full. ``RateBudget`` keeps its window and its ``rate_limit`` knob, reads the injected clock, and sleeps
exactly until the oldest send leaves the window, so tests run in fake time and a full budget costs no CPU.
The budget also adapts (AIMD): a throttle answer cuts the rate to ``DECREASE`` of itself (once per window,
never below one), and each quiet window adds back ``RECOVERY`` of the configured rate, up to the configured
rate or a limit the server stated (decisions.md D6). The client's window is ``WINDOW`` seconds, a little over
the server's one second, so that jitter in when requests arrive cannot fit more than the limit into one of
the server's windows.
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
# The client's window: the server counts per second by arrival, and arrivals jitter by milliseconds.
WINDOW = 1.02
# A throttle answer cuts the rate to this fraction; a quiet window adds back this fraction of the configured.
DECREASE = 0.7
RECOVERY = 0.05
# A period is spent in tenths: at most a tenth of the rate (rounded up) in any tenth of the period.
BURST_SLICES = 10


class RateBudget(Throttler):
    """At most ``rate`` acquisitions in any ``period`` seconds, shared by every coroutine that uses it."""

    def __init__(self, rate: int, clock: Clock, *, period: float = 1.0, name: str = "") -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1, not {rate}")
        super().__init__(rate_limit=rate, period=period)
        self._clock = clock
        self.name = name
        self.configured = rate
        self.ceiling = rate
        self._lock = asyncio.Lock()
        self._burst_logs: deque[float] = deque()
        self._last_change = clock.monotonic()
        self._last_decrease = float("-inf")
        self.throttles = 0

    def __repr__(self) -> str:
        return f"RateBudget({self.name!r}, rate={self.rate_limit}/{self.period}s)"

    @property
    def rate(self) -> int:
        """The current rate per period."""
        return int(self.rate_limit)

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
        async with self._lock:
            while True:
                self._recover()
                self.flush()
                burst_cap = -(-int(self.rate_limit) // BURST_SLICES)
                waits = []
                if len(self._task_logs) >= self.rate_limit:
                    waits.append(self._task_logs[0] + self.period)
                if len(self._burst_logs) >= burst_cap:
                    waits.append(self._burst_logs[0] + self.period / BURST_SLICES)
                if not waits:
                    break
                await self._clock.sleep(max(max(waits) - self._clock.monotonic(), 0.0) + _EPSILON)
            now = self._clock.monotonic()
            self._task_logs.append(now)
            self._burst_logs.append(now)

    def on_throttled(self, stated_limit: int | None = None) -> None:
        """Slow down after a throttle answer: halve the rate, and never exceed a limit the server stated."""
        self.throttles += 1
        if stated_limit is not None and stated_limit >= 1:
            self.ceiling = min(self.configured, stated_limit)
        now = self._clock.monotonic()
        # Many calls of one window are throttled together: that is one signal, so decrease once per period.
        if now - self._last_decrease < self.period:
            self.rate_limit = min(self.rate_limit, self.ceiling)
            return
        self._last_decrease = now
        self.rate_limit = max(1, min(self.ceiling, int(self.rate_limit * DECREASE)))
        self._last_change = now

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
    def rate(self) -> int:
        """The current rate per window."""
        ...

    async def acquire(self) -> None:
        """Wait for a slot."""
        ...

    def on_throttled(self, stated_limit: int | None = None) -> None:
        """Take a throttle answer into account."""
        ...


class BudgetTable(Protocol):
    """One budget per action: ``Budgets``, or ``shared_quota.SharedBudgets``."""

    def __getitem__(self, action: str) -> Budget: ...


class Budgets:
    """One ``RateBudget`` per action, shared by every coroutine of a client."""

    def __init__(self, rates: Mapping[str, int], clock: Clock, *, period: float = WINDOW) -> None:
        self._budgets = {
            action: RateBudget(rate, clock, period=period, name=action) for action, rate in rates.items()
        }

    def __getitem__(self, action: str) -> RateBudget:
        return self._budgets[action]

    def __repr__(self) -> str:
        return f"Budgets({', '.join(f'{a}={b.rate}/s' for a, b in self._budgets.items())})"
