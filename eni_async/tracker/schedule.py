"""The tracker's clockwork: agendas of what is due when, and one loop that wakes when the next thing is due.

An ``Agenda`` holds items due at times, earliest first; scheduling an item again replaces its earlier entry
(the old one is skipped when it surfaces), and ties go first come first served. A ``Loop`` runs one
coroutine function (the round) on the running event loop, again each time it is woken: by ``wake`` (a call
ended, work arrived) or by a timer ``arm``-ed on the injected clock for the next due time (only the earliest
timer is kept meaningful). It restarts on a new event loop, and ``spawn`` keeps the calls it starts so that
``close`` can stop them. Nothing here knows what the items are.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from eni_async.clock import Clock

T = TypeVar("T", bound=Hashable)


class Agenda(Generic[T]):
    """Items due at times, earliest first; an item is in the agenda at most once (its latest entry)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        # item -> its live heap entry (due, sequence number, item): one dict for both, the entry compared by
        # identity (an entry left behind by ``at`` or ``cancel`` is skipped when it surfaces).
        self._entry: dict[T, tuple[float, int, T]] = {}

    def __len__(self) -> int:
        return len(self._entry)

    def __contains__(self, item: T) -> bool:
        return item in self._entry

    def at(self, item: T, due: float) -> None:
        """Make ``item`` due at ``due`` (replacing any earlier entry)."""
        entry = (due, next(self._seq), item)
        replaced = self._entry.get(item) is not None
        self._entry[item] = entry
        if replaced:
            self._compact()  # the earlier entry is left behind
        heapq.heappush(self._heap, entry)

    def due(self, item: T) -> float | None:
        """When ``item`` is due, if it is in the agenda."""
        entry = self._entry.get(item)
        return None if entry is None else entry[0]

    def cancel(self, item: T) -> None:
        """Take ``item`` out of the agenda."""
        if self._entry.pop(item, None) is not None:
            self._compact()  # its entry is left behind

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._entry) + 64:
            # Entries left behind hold what they name until they surface: drop them all now and then.
            entry = self._entry
            self._heap = [e for e in self._heap if entry.get(e[2]) is e]
            heapq.heapify(self._heap)

    def _drop_stale(self) -> None:
        heap, entry = self._heap, self._entry
        while heap and entry.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)

    def first(self) -> float | None:
        """When the earliest item is due."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: float) -> list[T]:
        """Take out every item due by ``until``, earliest first (``pop`` until ``None``, in one call)."""
        heap, entry = self._heap, self._entry
        due: list[T] = []
        while heap and heap[0][0] <= until:
            first = heapq.heappop(heap)
            item = first[2]
            if entry.get(item) is first:  # else an entry left behind
                del entry[item]
                due.append(item)
        return due

    def pop(self, until: float) -> T | None:
        """Take out the earliest item if it is due by ``until``."""
        self._drop_stale()
        heap = self._heap
        if not heap or heap[0][0] > until:
            return None
        item = heapq.heappop(heap)[2]
        del self._entry[item]  # its own entry, just taken out: nothing is left behind
        return item


class Loop:
    """One round coroutine, run again whenever woken or when an armed timer fires (see the module docstring)."""

    def __init__(self, clock: Clock, round_: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        self._clock = clock
        self._round = round_
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self._timer_at: float | None = None
        self.calls: set[asyncio.Task[None]] = set()

    @property
    def event(self) -> asyncio.Event:
        """The event the round waits on (set by ``wake``)."""
        assert self._event is not None
        return self._event

    def start(self) -> None:
        """Run the round on the running event loop, unless it runs already."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: nothing of the old one can be awaited here
            self._loop, self._event, self._runner, self._timer_at = loop, asyncio.Event(), None, None
            self.calls, self._timers = set(), set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._round(), name=self._name)

    def wake(self) -> None:
        """Let the round run again now."""
        if self._event is not None:
            self._event.set()

    def arm(self, at: float) -> None:
        """Wake the round at ``at`` (``Clock.monotonic``), unless an earlier wake-up is armed."""
        if self._timer_at is not None and self._timer_at <= at + 1e-9:
            return
        self._timer_at = at
        assert self._loop is not None
        timer = self._loop.create_task(self._timer(at))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _timer(self, at: float) -> None:
        await self._clock.sleep(max(0.0, at - self._clock.monotonic()))
        if self._timer_at == at:
            self._timer_at = None
        self.wake()

    def idle(self) -> None:
        """Nothing left to do: drop the timers (the next ``start`` runs the round again)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._timer_at = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one call beside the round, kept until it ends (``close`` cancels it)."""
        assert self._loop is not None
        task = self._loop.create_task(work)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def close(self) -> None:
        """Stop the round, its timers and every call it spawned."""
        tasks = [t for t in (self._runner, *self.calls, *self._timers) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        self.calls.clear()
        self._timers.clear()
        self._timer_at = None


__all__ = ["Agenda", "Loop"]
