"""Many ENIs at once: bounded concurrency, lazy input, one task per ENI at a time, one outcome per ENI.

``unassign_many`` pulls items only when a worker is free (a 100,000-line file is never held whole), runs as
many items at once as ``target()`` says (the client's tracker derives it from the submit rate and the
observed task latency, Little's law), never more than ``concurrency``, serialises items that name the same
ENI (never racing into the mutex), sends every item through the one release path (``Releaser.release``)
and yields each outcome as it finishes. One item's failure is that item's outcome. Workers follow the
target as it moves, but retire one at a time and never the last one, so a batch ends only once its input is
exhausted or it was told to stop. An authentication failure stops the batch: every item not yet processed
is reported ``not_attempted``, and a journal records none of the items it cut short as finished, so a
``resume`` with good credentials finishes them.

Stopping keeps the books: every item ever pulled from the input appears exactly once, either yielded or in
``Batch.unconfirmed``. ``Batch.stop(grace)`` stops submitting and pulling at once, lets work in flight run
for ``grace`` seconds to learn its fate, then cancels it; the iteration ends normally. Cancelling the
iteration, ``Batch.aclose()`` or leaving ``async for`` early (``break``; the stop then happens when the
iterator is closed, so prefer ``contextlib.aclosing`` or ``aclose()`` to stop at a known point) stops at
once. An item stopped part-way gets an honest outcome (``Outcome.interrupt``): IPs of a submit whose effect
was not observed are ``unknown``, never ``not_released``; an item with nothing submitted is
``not_attempted``. Such outcomes, and finished outcomes not yet yielded, are in ``unconfirmed``; a journal
records none of the interrupted ones as finished, so ``resume`` polls their tasks.

Work another process took over (the service's replicas, D27): a ``guard`` asked before every submit, or a
journal write refused by its lease's fence, raises ``LeaseLostError``; the item is then dropped where it
stands (neither yielded nor journalled: its new owner reports it), counted in ``BatchStats.dropped``, and the
worker goes on with the next item.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from eni_async import validation
from eni_async.errors import InputError, error_info
from eni_async.journal import Journal, JournalRecorder, LeaseLostError, Resumed, ResumePlan
from eni_async.outcomes import NOT_ATTEMPTED, SUCCEEDED, InvalidItem, Item, Outcome, as_item
from eni_async.release import Recorder, Releaser

__all__ = ["Batch", "BatchStats"]


log = logging.getLogger("eni_async.batch")

Items = Iterable[object] | AsyncIterable[object]


@dataclass
class BatchStats:
    """Live counters for progress display."""

    pulled: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    dropped: int = 0  # taken over by another process (its lease moved), or its release cancelled
    by_status: dict[str, int] = field(default_factory=dict)


_END = object()  # the end of a plain iterable's items


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
        releaser: Releaser,
        items: Items,
        *,
        concurrency: int,
        target: Callable[[], int] | None = None,
        preflight: bool = False,
        journal: Journal | None = None,
        recorder: Recorder | None = None,
        guard: Callable[[Item], None] | None = None,
        deadline: Callable[[Item], float | None] | None = None,
        listen: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        if concurrency < 1:
            raise InputError("concurrency", concurrency, "must be at least 1")
        self.releaser = releaser
        self.clock = releaser.calls.clock
        self.concurrency = concurrency
        self._wanted = target or (lambda: concurrency)
        # ``listen(callback)``: called on every task accepted, so the workers grow while every one of them
        # waits on a task (the target moves then: latencies learnt); it returns the way to stop listening.
        self._listen = listen
        self.preflight = preflight
        self.stats = BatchStats()
        self.aborted: BaseException | None = None
        self._source = _aiter(items)
        self.journal = journal
        # ``recorder``: one that fences the journal's writes (the service's); else the journal's own.
        self._recorder = recorder or (JournalRecorder(journal) if journal is not None else None)
        # A plain iterable with nothing to record per item is pulled from directly: ``next`` never awaits,
        # so no lock is needed to keep two workers from pulling at once.
        self._plain = iter(items) if not isinstance(items, AsyncIterable) and self._recorder is None else None
        self._guard = guard
        # An item's deadline (``Clock.monotonic``): outages are waited out until then (``release``).
        self._deadline = deadline
        self._pull_lock = asyncio.Lock()
        # The ENIs with an item in flight, each with the items of it waiting their turn (a lock made only
        # when two items share an ENI: an ``asyncio.Lock`` per item costs more than the rest of its turn).
        self._eni_turns: dict[str, list[asyncio.Future[None]]] = {}
        # Outcomes not yet yielded (``None``: the end), with the consumer waiting on ``_arrived`` when there is
        # none, and workers waiting on ``_room`` (one future each, woken one per outcome taken) while
        # ``_room_for`` of them are waiting: a deque and futures, not an ``asyncio.Queue`` (whose put and get
        # cost a dozen Python calls per outcome).
        self._results: deque[Outcome | None] = deque()
        self._room_for = min(concurrency, 1024)
        self._arrived: asyncio.Future[None] | None = None
        self._room: deque[asyncio.Future[None]] = deque()
        self._group: asyncio.TaskGroup | None = None
        self._exhausted = False
        self._runner: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        # Workers started and not yet ended, kept in step as each one decides (``_workers`` changes only in
        # done callbacks, a tick later: workers deciding in one tick would all see the old count).
        self._live = 0
        self._expiry: asyncio.Task[None] | None = None
        self._iterator: weakref.ref[AsyncIterator[Outcome]] | None = None
        self._stopping = False  # no new submit, no new item
        self._halted = False  # the iteration itself was closed or cancelled
        self._failure: BaseException | None = None
        # Every pulled item's outcome until it is yielded (insertion order is pull order). Final among them
        # (never to be interrupted): those waiting in ``_results``, those closed by an interruption
        # (``Outcome.interrupted``) and those whose emission was cut short (``_final``, added to only then).
        self._open: dict[int, Outcome] = {}
        self._final: set[int] = set()
        self.unconfirmed: list[Outcome] = []

    def __aiter__(self) -> AsyncIterator[Outcome]:
        if self._runner is not None or self._iterator is not None:
            raise RuntimeError("a Batch can be iterated only once")
        iterator = self._iterate()
        # A weak reference: on ``break`` the iterator must be free to be finalised (which closes it).
        self._iterator = weakref.ref(iterator)
        return iterator

    @property
    def ready(self) -> bool:
        """Whether another outcome is already waiting to be yielded (a consumer may write a group of them
        before flushing)."""
        return bool(self._results)

    def stop(self, grace: float = 0.0) -> None:
        """Stop gracefully: submit nothing more and pull no more items; work in flight has ``grace`` seconds
        (on the client's clock) to finish, then it is cancelled and listed in ``unconfirmed``. The iteration
        then ends normally. Calling it again with a shorter grace shortens the wait (0: at once)."""
        self._stopping = True
        if self._expiry is not None and not self._expiry.done():
            if grace > 0:
                return
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().create_task(self._expire(grace))

    async def aclose(self) -> None:
        """Stop at once (see the module docstring); safe to call more than once, or before iterating."""
        iterator = self._iterator() if self._iterator is not None else None
        if iterator is not None and hasattr(iterator, "aclose"):
            with contextlib.suppress(RuntimeError):  # being awaited by another task: halt it from here
                await iterator.aclose()
        if self._runner is not None:
            await self._halt("closed")

    async def _expire(self, grace: float) -> None:
        if grace > 0:
            await self.clock.sleep(grace)
        for worker in list(self._workers):
            worker.cancel()

    async def _iterate(self) -> AsyncIterator[Outcome]:
        self._runner = asyncio.create_task(self._run())
        finished = False
        try:
            results = self._results
            while True:
                if not results:
                    self._arrived = asyncio.get_running_loop().create_future()
                    try:
                        await self._arrived
                    finally:
                        self._arrived = None
                    continue
                outcome = results.popleft()
                if self._room:
                    self._make_room()
                if outcome is None:
                    finished = True
                    break
                self._open.pop(id(outcome), None)
                yield outcome
            if self._failure is not None:
                raise self._failure
        finally:
            if not finished:
                await self._halt("cancelled")
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _halt(self, why: str) -> None:
        """Cancel everything now; every pulled item not yielded goes to ``unconfirmed``."""
        if self._halted:
            return
        assert self._runner is not None
        self._halted = self._stopping = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        self._close_open(why)
        self._results.clear()  # already in ``unconfirmed``; never yield them as well
        self._put_now(None)  # a consumer waiting in another task ends

    def _close_open(self, why: str, *, yielding: bool = False) -> None:
        """Every pulled item not yielded goes to ``unconfirmed``, interrupted unless final; with ``yielding``
        (the batch ended and the iteration goes on), those still waiting to be yielded stay: they will be."""
        queued = {id(outcome) for outcome in self._results}
        kept: dict[int, Outcome] = {}
        for key, outcome in self._open.items():
            if key in queued:
                if yielding:
                    kept[key] = outcome
                    continue
            elif key not in self._final and not outcome.interrupted:
                outcome.interrupt(why)
            self.unconfirmed.append(outcome)
        self._open = kept
        self._final.clear()

    async def _run(self) -> None:
        unlisten: Callable[[], None] | None = None
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                unlisten = self._listen(self._grow_more) if self._listen is not None else None
                self._grow()
        except BaseException as exc:
            if not self._halted:  # a bug in a worker or the source: end the iteration, then raise it
                self._failure = exc
            raise
        finally:
            if unlisten is not None:
                unlisten()
            if self._expiry is not None:
                self._expiry.cancel()
            if not self._halted:
                self._close_open("stopped", yielding=True)
                await self._room_made()
                self._put_now(None)

    async def _next(self) -> Item | InvalidItem | Resumed | None:
        """The next item of an async iterable, or of one whose items are recorded as they are pulled (a plain
        iterable with nothing to record is pulled from in ``_worker`` itself)."""
        async with self._pull_lock:
            if self._stopping:
                return None
            try:
                entry = await anext(self._source)
            except StopAsyncIteration:
                self._exhausted = True
                return None
            self.stats.pulled += 1
            if isinstance(entry, Resumed):
                return entry
            item = as_item(entry)
            if self._recorder is not None and item.key is None:
                plain = Item(item.vpc_id, item.eni_id, item.ips, item.line)
                item = dataclasses.replace(item, key=await self._recorder.add(plain))
            return item

    async def _room_made(self) -> None:
        """Wait until fewer than ``_room_for`` outcomes are waiting to be yielded."""
        while len(self._results) >= self._room_for:
            room = asyncio.get_running_loop().create_future()
            self._room.append(room)
            try:
                await room
            except asyncio.CancelledError:
                if room.done() and not room.cancelled():  # woken, then cancelled: the room is the next one's
                    self._make_room()
                raise

    def _put_now(self, outcome: Outcome | None) -> None:
        self._results.append(outcome)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def _make_room(self) -> None:
        """An outcome was taken: wake the first worker still waiting to hand one over."""
        while self._room:
            room = self._room.popleft()
            if not room.done():
                room.set_result(None)
                return

    def _target(self) -> int:
        """Items to work on at once: ``target()`` (as many as the budgets keep busy), at most ``concurrency``."""
        return max(1, min(self.concurrency, self._wanted()))

    def _grow_more(self) -> None:
        """A task was accepted: start more workers if the target grew meanwhile."""
        if self._group is not None and not self._stopping and not self._halted:
            target = max(1, min(self.concurrency, self._wanted()))  # ``_target()``, inline: once per task
            if self._live < target:
                self._grow(target)

    def _grow(self, target: int | None = None) -> None:
        """Start workers up to the target (it grows as task latencies are observed and budgets change)."""
        assert self._group is not None
        if self._exhausted or self._stopping:
            return
        if target is None:
            target = self._target()
        while self._live < target:
            self._live += 1
            worker = self._group.create_task(self._worker())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        plain, wanted, most, stats, turns = (
            self._plain,
            self._wanted,
            self.concurrency,
            self.stats,
            self._eni_turns,
        )
        try:
            while True:
                # The target (``_target()``, inline: asked once per item) shrank: this worker retires, one at a
                # time and never as the last one; it grew: more workers start.
                target = max(1, min(most, wanted()))
                live = self._live
                if live > 1 and live > target + 1:
                    return
                if live < target:
                    self._grow(target)
                entry: Item | InvalidItem | Resumed | None
                if plain is not None:  # a plain iterable: ``next`` never awaits (no coroutine per pull)
                    if self._stopping:
                        return
                    pulled = next(plain, _END)
                    if pulled is _END:
                        self._exhausted = True
                        return
                    stats.pulled += 1
                    entry = pulled if isinstance(pulled, Resumed) else as_item(pulled)
                else:
                    entry = await self._next()
                    if entry is None:
                        return
                if isinstance(entry, Resumed):  # its outcome carries what the journal knew
                    outcome, key = entry.plan.outcome, entry.item.key
                    outcome.key = key
                else:
                    outcome, key = Outcome.for_item(entry), entry.key
                self._open[id(outcome)] = outcome  # from here on the item is accounted for, whatever happens
                if self.aborted is not None:
                    _not_attempted(entry.item if isinstance(entry, Resumed) else entry, self.aborted, outcome)
                elif (checked := self._checked(entry, outcome)) is not None:
                    # The release, in this coroutine (not one more layer, resumed at every step of it).
                    item, plan = checked
                    eni = item.eni_id
                    started = self.clock.monotonic()
                    try:
                        waiting = turns.get(eni)
                        if waiting is None:
                            turns[eni] = []  # the ENI's turn is this item's: nothing else works on it
                        else:
                            await self._turn(eni, waiting)  # another item of the ENI is in flight: after it
                        stats.in_flight += 1
                        try:
                            await self.releaser.release(
                                item,
                                outcome,
                                plan=plan,
                                recorder=self._recorder,
                                look=True if self.preflight else None,
                                gate=self._closed if self._guard is None else self._gate(item),
                                deadline=self._deadline(item) if self._deadline is not None else None,
                            )
                        finally:
                            stats.in_flight -= 1
                            if turns[eni]:
                                self._pass_on(eni)
                            else:  # nobody waits for the ENI (the common case): its turn ends here
                                del turns[eni]
                    except LeaseLostError:
                        self._drop(outcome)
                        continue
                    finally:
                        outcome.elapsed_s += self.clock.monotonic() - started
                    if outcome.credentials_error is not None and self.aborted is None:
                        log.error("authentication failed, stopping the batch: %s", outcome.credentials_error)
                        self.aborted = outcome.credentials_error
                    # The gate closed: in ``unconfirmed``, never journalled as finished.
                    if outcome.interrupted:
                        return
                # The outcome is final: journalled (unless cut short by the credential failure that ended the
                # batch: pending in the journal, ``resume`` polls its tasks and does the rest), then yielded.
                try:
                    if (
                        key is not None
                        and self._recorder is not None
                        and outcome.status != NOT_ATTEMPTED
                        and outcome.credentials_error is None
                    ):
                        await self._recorder.finished(key, outcome)
                    stats.done += 1
                    status = outcome.status
                    if status != SUCCEEDED:
                        stats.failed += 1
                    stats.by_status[status] = stats.by_status.get(status, 0) + 1
                    if len(self._results) >= self._room_for:
                        await self._room_made()
                except LeaseLostError:
                    self._drop(outcome)
                    continue
                except BaseException:
                    self._final.add(id(outcome))  # stopped while being emitted: final all the same
                    raise
                self._results.append(outcome)  # ``_put_now``, inline: once per item
                arrived = self._arrived
                if arrived is not None and not arrived.done():
                    arrived.set_result(None)
        finally:
            self._live -= 1  # in the same step as the decision to end, so the next worker sees it

    def _drop(self, outcome: Outcome) -> None:
        """``LeaseLostError``: another process owns the item's work now, and reports the item."""
        self._open.pop(id(outcome), None)
        self._final.discard(id(outcome))
        self.stats.dropped += 1

    @staticmethod
    def _checked(
        entry: Item | InvalidItem | Resumed, outcome: Outcome
    ) -> tuple[Item, ResumePlan | None] | None:
        """The item to release, validated (the one validation of it: every call after takes it as checked),
        with a resumed item's plan; ``None`` when it cannot be released (its outcome then says why)."""
        if isinstance(entry, InvalidItem):
            outcome.status = "failed"
            outcome.fail(entry.error)
            return None
        plain, plan = (entry.item, entry.plan) if isinstance(entry, Resumed) else (entry, None)
        try:
            vpc, eni, ips = validation.release_request(plain.vpc_id, plain.eni_id, plain.ips)
        except InputError as exc:
            outcome.status = "failed"
            outcome.fail(exc)
            return None
        if vpc is plain.vpc_id and eni is plain.eni_id and ips is plain.ips and type(plain) is Item:
            return plain, plan  # already as checked (the common case; frozen): no copy of it
        return Item(vpc, eni, ips, plain.line, plain.key), plan

    def _closed(self) -> bool:
        """The gate of an item with no guard to ask: closed once stopping (one method for every item, where
        ``_gate`` makes a function per item)."""
        return self._stopping

    def _gate(self, item: Item) -> Callable[[], bool]:
        """Asked before every submit of ``item`` when there is a guard: closed once stopping; the guard raises
        when the item's work moved to another process (without a guard, ``_closed`` is the gate)."""
        guard = self._guard
        assert guard is not None

        def gate() -> bool:
            guard(item)
            return self._stopping

        return gate

    async def _turn(self, eni: str, waiting: list[asyncio.Future[None]]) -> None:
        """Wait until the items of ``eni`` before this one are done (one at a time, in pull order: one task
        may run on an ENI at a time). Cancelled after being handed the turn, it passes the turn on."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_on(eni)
            raise

    def _pass_on(self, eni: str) -> None:
        """The item holding ``eni``'s turn is done: hand it to the next one still waiting, if any."""
        waiting = self._eni_turns[eni]
        while waiting:
            turn = waiting.pop(0)
            if not turn.done():  # (a waiter cancelled meanwhile left its future cancelled)
                turn.set_result(None)
                return
        del self._eni_turns[eni]


def _not_attempted(item: Item | InvalidItem, cause: BaseException, outcome: Outcome) -> Outcome:
    """Nothing was sent for the item in this run: its IPs are not released, or ``unknown`` when an earlier
    run sent them (a resumed item: D25)."""
    outcome.status = NOT_ATTEMPTED
    info = error_info(cause)
    outcome.error = {"code": "NotAttempted", "message": f"batch stopped: {info['message']}"}
    done = outcome.accounted()
    outcome.unknown.extend(ip for ip in item.ips if ip not in done and ip in outcome.sent)
    outcome.not_released.extend(ip for ip in item.ips if ip not in done and ip not in outcome.sent)
    return outcome
