"""The clock seam: the only module that reads time or sleeps.

Signing timestamps, poll deadlines, retry sleeps, rate budgets and the simulator's task latencies all read a
``Clock``. Production code uses ``SystemClock``; tests use ``FakeClock``, whose ``sleep`` advances time
instead of waiting, so a ten-minute poll schedule runs in milliseconds.
"""

from __future__ import annotations

import asyncio
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
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock for tests: ``sleep`` advances time at once and records how long was asked.

    Time never goes back; concurrent sleepers each advance it, which over-estimates elapsed time but never
    under-estimates it, so deadlines still end every loop.
    """

    def __init__(self, *, start: float = 1_700_000_000.0) -> None:
        self._epoch = start
        self._now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward without sleeping."""
        self._now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f})"
