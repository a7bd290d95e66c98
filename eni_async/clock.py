"""The clock seam: the time of everything whose timing a test must control.

Signing timestamps, poll deadlines, retry sleeps, rate budgets and the simulator's task latencies all read a
``Clock``. What reads ``time`` or ``asyncio.sleep`` directly is outside the release engine's timing: the CLI's
elapsed-time lines and progress refresh, the service's socket timeouts, lease ticks and count cache, and the
PostgreSQL connector's reconnect backoff: they run on the wall clock by nature. Production code uses ``SystemClock``; tests use ``FakeClock``, whose ``sleep`` advances time
instead of waiting, so a ten-minute poll schedule runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What eni_async needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for deadlines and rates."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds; for signing timestamps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (or pretend to)."""
        ...


class SystemClock:
    """The real clock: ``monotonic`` and ``time`` are ``time.monotonic`` and ``time.time`` themselves (read
    on every step of every call: no Python frame in between)."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)`` (negative means no wait)."""
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock for tests: virtual time that jumps ahead whenever every coroutine is waiting on it.

    ``sleep(d)`` parks the caller until virtual time reaches now + d. A driver task lets ready coroutines
    run (``settle`` event-loop turns, so loopback I/O completes), then jumps time to the earliest wake-up and
    wakes every sleeper due by then. Concurrent sleepers therefore share time as they would on a real clock,
    and a ten-minute schedule runs in milliseconds. ``advance`` moves time by hand; ``sleeps`` records every
    duration asked for.
    """

    def __init__(self, *, start: float = 1_700_000_000.0, settle: int = 20) -> None:
        self._epoch = start
        self._now = 0.0
        self._settle = settle
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made."""
        return self._now

    def time(self) -> float:
        """Virtual Unix time: ``start`` plus ``monotonic()``."""
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping (sleepers now due wake at the driver's next turn)."""
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Park until virtual time has moved ``seconds`` on."""
        self.sleeps.append(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), next(self._seq), future))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await future

    async def _drive(self) -> None:
        while self._heap:
            for _ in range(self._settle):
                await asyncio.sleep(0)
            if not self._heap:
                return
            target = self._heap[0][0]
            self._now = max(self._now, target)
            while self._heap and self._heap[0][0] <= self._now:
                _, _, future = heapq.heappop(self._heap)
                if not future.done():
                    future.set_result(None)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f})"
