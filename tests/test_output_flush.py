"""The batch's output lines: flushed as their outcomes are known, one flush for outcomes known together."""

from __future__ import annotations

import json

from eni_async.cli_batch import run_items
from eni_async.clock import FakeClock
from tests.batchhelpers import world


class Recording:
    """An output that notes, on the fake clock, when each line is written and when the writes are flushed."""

    name = "recording.jsonl"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, float]] = []  # ("write", eni_id) or ("flush", "") at a clock reading
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        self.events.append((json.loads(text)["eni_id"], self.clock.monotonic()))
        return len(text)

    def flush(self) -> None:
        self.events.append(("", self.clock.monotonic()))


def _flushed_at(events: list[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """Each line's (write time, time of the first flush after it)."""
    out: dict[str, tuple[float, float]] = {}
    waiting: list[tuple[str, float]] = []
    for what, at in events:
        if what:
            waiting.append((what, at))
        else:
            out.update((eni, (written, at)) for eni, written in waiting)
            waiting = []
    assert not waiting, f"lines never flushed: {waiting}"
    return out


async def test_each_line_is_flushed_when_its_outcome_is_known() -> None:
    """Items ending at different times: every line is flushed at the moment it is written, none waits for
    the outcome of an item still running."""
    async with world(enis=6, task_latency=(1.0, 0.5)) as w:
        out = Recording(w.clock)
        summary, _ = await run_items(w.client, w.items(), out=out, total=None, progress=False)  # type: ignore[arg-type]
    assert summary.total == 6
    times = _flushed_at(out.events)
    assert len(times) == 6
    assert len({written for written, _ in times.values()}) > 1  # the items did end at different times
    for eni, (written, flushed) in times.items():
        assert flushed == written, f"{eni}: written at {written}, flushed at {flushed}"


async def test_outcomes_known_together_share_one_flush() -> None:
    """Many items ending together: their lines are written then flushed once per group, not once a line."""
    async with world(enis=40, ips_per_eni=1, task_latency=(0.0, 0.0)) as w:
        out = Recording(w.clock)
        await run_items(w.client, w.items(), out=out, total=None, progress=False)  # type: ignore[arg-type]
    flushes = sum(1 for what, _ in out.events if not what)
    assert len(out.lines) == 40
    assert _flushed_at(out.events)  # none left unflushed
    assert flushes < len(out.lines)
