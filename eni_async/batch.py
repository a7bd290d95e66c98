"""Many ENIs at once: bounded concurrency, lazy input, one task per ENI at a time, one outcome per ENI.

``unassign_many`` pulls items only when a worker is free (a 100,000-line file is never held whole), runs at
most ``concurrency`` items at once, serialises items that name the same ENI (never racing into the mutex),
and yields each outcome as it finishes. One item's failure is that item's outcome. An authentication failure
stops the batch: every item not yet processed is reported ``not_attempted``. Closing or cancelling the
iteration stops submitting, cancels the workers and leaves ``Batch.unconfirmed`` with what was submitted but
not confirmed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eni_async import validation
from eni_async.errors import AuthError, EniAsyncError, InputError, error_info
from eni_async.journal import Journal, JournalRecorder, Resumed, ResumePlan
from eni_async.outcomes import NOT_ATTEMPTED, InvalidItem, Item, Outcome, as_item
from eni_async.reconcile import decide, finish_task, preflight, reconcile_in_doubt, release_item

__all__ = ["Batch", "BatchStats", "release_item"]

if TYPE_CHECKING:
    from eni_async.client import EniClient

log = logging.getLogger("eni_async.batch")

Items = Iterable[object] | AsyncIterable[object]


@dataclass
class BatchStats:
    """Live counters for progress display."""

    pulled: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


async def _aiter(items: Items) -> AsyncIterator[object]:
    if isinstance(items, AsyncIterable):
        async for entry in items:
            yield entry
    else:
        for entry in items:
            yield entry


class Batch:
    """An async iterator of outcomes; see the module docstring for its semantics."""

    def __init__(
        self,
        client: EniClient,
        items: Items,
        *,
        concurrency: int,
        preflight: bool = False,
        journal: Journal | None = None,
    ) -> None:
        if concurrency < 1:
            raise InputError("concurrency", concurrency, "must be at least 1")
        self.client = client
        self.concurrency = concurrency
        self.preflight = preflight
        self.stats = BatchStats()
        self.aborted: BaseException | None = None
        self._source = _aiter(items)
        self.journal = journal
        self._recorder = JournalRecorder(journal) if journal is not None else None
        self._pull_lock = asyncio.Lock()
        self._eni_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._active: dict[int, Outcome] = {}
        self._results: asyncio.Queue[Outcome | None] = asyncio.Queue(maxsize=min(concurrency, 1024))
        self._group: asyncio.TaskGroup | None = None
        self._workers = 0
        self._exhausted = False
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self.unconfirmed: list[Outcome] = []

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Outcome]:
        self._runner = asyncio.create_task(self._run())
        finished = False
        try:
            while True:
                outcome = await self._results.get()
                if outcome is None:
                    finished = True
                    break
                yield outcome
            if self._failure is not None:
                raise self._failure
        finally:
            if not finished:
                await self._stop()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _stop(self) -> None:
        """Cancel the workers; what was in flight becomes ``unconfirmed`` (or not attempted)."""
        assert self._runner is not None
        self._stopping = True
        in_flight = list(self._active.values())  # workers forget their items as they unwind
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        for outcome in in_flight:
            if outcome.task_ids:
                outcome.status = "failed"
                outcome.error = {
                    "code": "Cancelled",
                    "message": f"cancelled; task(s) {', '.join(outcome.task_ids)} submitted but not confirmed",
                }
                outcome.not_released = [
                    ip for ip in outcome.ips if ip not in outcome.released and ip not in outcome.not_released
                ]
            else:
                outcome.status = NOT_ATTEMPTED
                outcome.error = {"code": "Cancelled", "message": "cancelled before submitting"}
            self.unconfirmed.append(outcome)
        self._active.clear()

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._grow()
        except BaseException as exc:
            if not self._stopping:  # a bug in a worker or the source: end the iteration, then raise it
                self._failure = exc
            raise
        finally:
            if not self._stopping:
                await self._results.put(None)

    async def _next(self) -> Item | InvalidItem | Resumed | None:
        async with self._pull_lock:
            try:
                entry = await anext(self._source)
            except StopAsyncIteration:
                self._exhausted = True
                return None
            self.stats.pulled += 1
            if isinstance(entry, Resumed):
                return entry
            item = as_item(entry)
            if self.journal is not None and item.key is None:
                plain = Item(item.vpc_id, item.eni_id, item.ips, item.line)
                item = dataclasses.replace(item, key=self.journal.add(plain))
            return item

    async def _emit(self, outcome: Outcome, key: int | None = None) -> None:
        if self.journal is not None and key is not None and outcome.status != NOT_ATTEMPTED:
            self.journal.finished(key, outcome)
        self.stats.done += 1
        if outcome.status != "succeeded":
            self.stats.failed += 1
        self.stats.by_status[outcome.status] = self.stats.by_status.get(outcome.status, 0) + 1
        await self._results.put(outcome)

    def _target(self) -> int:
        """Items to work on at once: as many as the budgets keep busy (Little's law), at most ``concurrency``."""
        return min(self.concurrency, self.client.tracker.releases_in_flight())

    def _grow(self) -> None:
        """Start workers up to the target (it grows as task latencies are observed and budgets change)."""
        assert self._group is not None
        while not self._exhausted and self._workers < self._target():
            self._workers += 1
            self._group.create_task(self._worker())

    async def _worker(self) -> None:
        try:
            await self._work_items()
        finally:
            self._workers -= 1

    async def _work_items(self) -> None:
        while True:
            if self._workers > self._target() + 1:  # the target shrank: this worker retires
                return
            self._grow()
            item = await self._next()
            if item is None:
                return
            key = item.item.key if isinstance(item, Resumed) else item.key
            if self.aborted is not None:
                plain = item.item if isinstance(item, Resumed) else item
                await self._emit(_not_attempted(plain, self.aborted), key)
                continue
            outcome = await self._process(item)
            await self._emit(outcome, key)

    async def _process(self, entry: Item | InvalidItem | Resumed) -> Outcome:
        started = self.client.clock.monotonic()
        if isinstance(entry, InvalidItem):
            outcome = Outcome(entry.vpc_id, entry.eni_id, entry.ips, status="failed", line=entry.line)
            outcome.fail(entry.error)
            return outcome
        plain, plan = (entry.item, entry.plan) if isinstance(entry, Resumed) else (entry, None)
        outcome = (
            plan.outcome
            if plan is not None
            else Outcome(plain.vpc_id, plain.eni_id, plain.ips, line=plain.line)
        )
        try:  # the one validation of the item: every call below takes it as checked
            vpc, eni, ips = validation.release_request(plain.vpc_id, plain.eni_id, plain.ips)
        except InputError as exc:
            outcome.status = "failed"
            outcome.fail(exc)
            return outcome
        item = Item(vpc, eni, ips, plain.line, plain.key)
        key = id(outcome)
        lock = self._lock_for(item.eni_id)
        try:
            async with lock:
                self._active[key] = outcome
                self.stats.in_flight += 1
                try:
                    await self._work(item, outcome, plan)
                finally:
                    self.stats.in_flight -= 1
                    self._active.pop(key, None)
        except AuthError as exc:
            if self.aborted is None:
                log.error("authentication failed, stopping the batch: %s", exc)
                self.aborted = exc
            outcome.fail(exc)
            outcome.settle()
        except EniAsyncError as exc:  # anything else is this item's outcome, never the batch's end
            outcome.fail(exc)
            outcome.settle()
        finally:
            self._release_lock(item.eni_id)
        outcome.elapsed_s += self.client.clock.monotonic() - started
        return outcome

    async def _work(self, item: Item, outcome: Outcome, plan: ResumePlan | None) -> None:
        todo: tuple[str, ...] = item.ips
        if plan is not None:  # resuming: poll known tasks, reconcile a chunk in doubt, never resubmit blindly
            for task_id, _request_id, chunk in plan.tasks:
                decide(outcome, f"resumed: polling task {task_id}")
                await finish_task(self.client, item, outcome, task_id, chunk)
                if self._recorder is not None:
                    self._recorder.progressed(item, outcome)
            if plan.in_doubt:
                still = await reconcile_in_doubt(
                    self.client, outcome, plan.in_doubt, "resumed with a submit in doubt"
                )
                if still is None:
                    outcome.not_released.extend(plan.in_doubt)
            done = {*outcome.released, *outcome.not_released}
            todo = tuple(ip for ip in item.ips if ip not in done)
        elif self.preflight:
            todo = await preflight(self.client, item, outcome)
        if todo:
            await release_item(self.client, item, outcome, ips=todo, recorder=self._recorder)
        else:
            outcome.settle()

    def _lock_for(self, eni: str) -> asyncio.Lock:
        lock, users = self._eni_locks.get(eni, (asyncio.Lock(), 0))
        self._eni_locks[eni] = (lock, users + 1)
        return lock

    def _release_lock(self, eni: str) -> None:
        lock, users = self._eni_locks[eni]
        if users <= 1:
            del self._eni_locks[eni]
        else:
            self._eni_locks[eni] = (lock, users - 1)


def _not_attempted(item: Item | InvalidItem, cause: BaseException) -> Outcome:
    outcome = Outcome(item.vpc_id, item.eni_id, item.ips, status=NOT_ATTEMPTED, line=item.line)
    info = error_info(cause)
    outcome.error = {"code": "NotAttempted", "message": f"batch stopped: {info['message']}"}
    outcome.not_released = list(item.ips)
    return outcome
