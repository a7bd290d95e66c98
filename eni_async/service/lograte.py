"""``LogLimiter``: repeated log lines become one line per key per interval, with the count held back.

A hostile or broken client can make the same error happen thousands of times a second (refused connections,
malformed requests, a descriptor limit reached); one line each would fill a disk and hide everything else.
The first occurrence of a key is logged at once; the next ones within ``interval`` seconds are counted, and
the count is logged when the interval ends (by a timer on the running loop, or with the next occurrence, or
by ``flush``). The key names the kind of event, never a value a caller sent. Time comes from ``now``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_S = 60.0


@dataclass
class _Window:
    started: float
    held: int
    level: int
    message: str
    args: tuple[object, ...]
    timer: asyncio.TimerHandle | None = None


class LogLimiter:
    """At most one line per key per ``interval`` seconds on ``logger``; see the module docstring."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._now = now
        self._windows: dict[str, _Window] = {}

    def __repr__(self) -> str:
        return f"LogLimiter({self.logger.name!r}, interval={self.interval})"

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` now, or count it if ``key`` was logged less than ``interval`` ago."""
        now = self._now()
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval:
            window.held += 1
            window.level, window.message, window.args = level, message, args
            if window.timer is None:
                window.timer = _later(window.started + self.interval - now, self._close, key)
            return
        if window is not None:
            self._close(key)
        self._windows[key] = _Window(now, 0, level, message, args)
        self.logger.log(level, message, *args)

    def flush(self) -> None:
        """Log the counts held back so far (at shutdown)."""
        for key in list(self._windows):
            self._close(key)

    def _close(self, key: str) -> None:
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if window.held:
            self.logger.log(
                window.level,
                window.message + " (%d more like it in the last %gs)",
                *window.args,
                window.held,
                self.interval,
            )


def _later(delay: float, callback: Callable[[str], None], key: str) -> asyncio.TimerHandle | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a synchronous caller): the next occurrence or flush() reports the count
        return None
    return loop.call_later(max(0.0, delay), callback, key)


__all__ = ["LogLimiter"]
