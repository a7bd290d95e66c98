"""``LogLimiter``: one line per kind of event per interval, the lines held back counted, none lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eni_async.service.lograte import LogLimiter

log = logging.getLogger("eni_async.test.lograte")


class Now:
    """A settable clock."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_repeats_within_the_interval_become_one_line_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 occurrences in a minute log one line; the next one after the minute logs the count held back."""
    now = Now()
    limiter = LogLimiter(log, interval=60.0, now=now)
    with caplog.at_level(logging.INFO, logger=log.name):
        for i in range(1000):
            now.value = i * 0.05
            limiter.log(logging.WARNING, "refuse", "refused a connection from %s", "a")
        assert messages(caplog) == ["refused a connection from a"]
        now.value = 61.0
        limiter.log(logging.WARNING, "refuse", "refused a connection from %s", "b")
    assert messages(caplog) == [
        "refused a connection from a",
        "refused a connection from a (999 more like it in the last 60s)",
        "refused a connection from b",
    ]


def test_kinds_are_limited_apart_and_flush_reports_what_is_held(caplog: pytest.LogCaptureFixture) -> None:
    """Each key has its own interval; flush() logs the counts still held and nothing for keys with none."""
    now = Now()
    limiter = LogLimiter(log, interval=60.0, now=now)
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(3):
            limiter.log(logging.INFO, "a", "event a")
        limiter.log(logging.INFO, "b", "event b")
        limiter.flush()
        limiter.flush()
    assert messages(caplog) == ["event a", "event b", "event a (2 more like it in the last 60s)"]


async def test_on_a_running_loop_the_count_is_logged_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a running loop, the count held back is logged at the end of the interval, with no further event."""
    limiter = LogLimiter(log, interval=0.05)
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(4):
            limiter.log(logging.ERROR, "boom", "boom")
        for _ in range(40):  # at most 0.4 s
            if len(messages(caplog)) == 2:
                break
            await asyncio.sleep(0.01)
    assert messages(caplog) == ["boom", "boom (3 more like it in the last 0.05s)"]
