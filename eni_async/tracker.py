"""One tracker per client: every submitted task is watched here until each of its IPs has a known fate.

Rules. A task is handed over once the server has accepted it (``track``) and is owned here until every IP
is settled or its deadline passes; whoever awaits it gets a ``ChunkFate``, IP by IP, each saying how it was
established. With ``confirm = "eni"`` the tracker runs rounds: the tasks that are due (earliest first) have
their ENIs described together, as many per call as the dialect allows (API 3.0: 100 ids; API 2.0: the VPC's
pages of 50 or one call per ENI, whichever costs fewer calls), within the describe budget. An IP absent from
its ENI in a description sent after the task was accepted is released (the server accepted the call, so it
was there). An IP still listed is settled as not released only by a description sent after the task was
read as ended (FAILED), or, on API 3.0 when the task cannot be read, by one listing none of the task's IPs as
``DELETING``; DescribeVpcTaskResult is spent only where the ENI cannot settle the task: API 2.0
IPs still listed past the expected latency, API 3.0 IPs listed but no longer ``DELETING`` (the task ended
without them, or the view is stale: the task says which, and gives a FAILED task's reason), an ENI that is
no longer found or keeps failing to be described. Queries go by due time, never first come first served. A SUCCESS reading releases every IP
(D12). Nothing is guessed: an IP whose fate was not observed by the deadline is ``unknown``. With
``confirm = "task"`` each task is polled with ``wait_for_task`` and described only when it FAILED or its
fate is in doubt. ``describe`` packs the one-ENI descriptions other code asks for (the look before each
item's first submit) into shared calls the same way. Nothing here reads the dialect's name, only what it
can describe per call; nothing here imports the client (``Calls`` is what it needs of one).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from eni_async.calls import Calls
from eni_async.errors import AuthError, EniAsyncError, TaskTimeoutError
from eni_async.models import (
    BY_ENI,
    BY_TASK,
    NOT_RELEASED,
    RELEASED,
    ChunkFate,
    EniInfo,
    TaskState,
    TaskStatus,
)
from eni_async.poller import MIN_SAMPLES, poll_until_done

log = logging.getLogger("eni_async.tracker")

# The first look at a task comes at this quantile of the latencies seen lately (looks are cheap, a hundred
# tasks per call, but not free: most tasks are seen done at their first or second look).
FIRST_LOOK_QUANTILE = 0.7
# Later looks: the gap starts here and grows by GAP_GROWTH per look, up to MAX_GAP, or up to TAIL_GAP once
# at most TAIL tasks are watched (the tail of a batch: looks are cheap then, and the makespan waits on them).
MIN_GAP = 0.15
GAP_GROWTH = 1.2
MAX_GAP = 0.35
TAIL_GAP = 0.15
TAIL = 100
# Tasks due within this much of a round ride along in a call that has room for them, for free.
PACK_AHEAD = 0.1
# Asked-for descriptions wait at most this long for others to share their call.
COALESCE = 0.05
# Tasks due this close together are looked at in one round.
SLACK = 0.01
# API 2.0 tasks whose IPs are still listed past this quantile of the observed latencies are asked about.
EXPECTED_QUANTILE = 0.95
# Little's law: releases in flight = start rate x hold time x this headroom, never fewer than the minimum.
IN_FLIGHT_HEADROOM = 1.5
MIN_IN_FLIGHT = 16
IN_FLIGHT_REFRESH = 0.25
# DescribeVpcTaskResult calls per task with confirm = "task" (most tasks are asked once, some twice).
QUERIES_PER_TASK = 1.2
# Describe calls (each already retried by the retry policy) before the task-mode fallback gives up looking.
DESCRIBE_ROUNDS = 3
# Describes of one ENI failing in a row (each already retried) before its task is asked as well.
BLIND_LOOKS = 2


@dataclass(eq=False)
class _Watch:
    """One task being tracked: its IPs still pending, those settled, and when to look or ask next."""

    vpc_id: str
    eni_id: str
    task_id: str
    ips: tuple[str, ...]
    submitted_at: float
    registered_at: float
    deadline: float
    future: asyncio.Future[ChunkFate]
    pending: list[str]
    fates: dict[str, tuple[str, str]] = field(default_factory=dict)
    look_version: int = 0
    query_version: int = 0
    gap: float = MIN_GAP
    looking: bool = False
    alone: bool = False  # describe this ENI on its own (missing from a page, or a shared call refused)
    state: TaskState | None = None
    ended_at: float | None = None  # when a SUCCESS/FAILED reading arrived
    query_due: float | None = None
    next_query_at: float = 0.0
    querying: bool = False
    queries: int = 0
    query_broken: bool = False
    vanished: bool = False
    stale: bool = False  # API 3.0: an IP listed but no longer DELETING: the task should be read
    unread: int = 0  # describes of this ENI that failed in a row (transiently)
    error: BaseException | None = None

    @property
    def live(self) -> bool:
        return not self.future.done()

    def settle(self, ip: str, fate: str, by: str) -> None:
        self.pending.remove(ip)
        self.fates[ip] = (fate, by)


class Tracker:
    """Watches every task a client submits; see the module docstring for the rules."""

    def __init__(self, client: Calls, *, confirm: str = "eni", rng: random.Random | None = None) -> None:
        self._client = client
        self._clock = client.clock
        self.confirm = confirm
        self._rng = rng if rng is not None else random.Random()
        can = client.capabilities
        self._per_call = can.describe_ids_per_call
        self._page = can.describe_page_limit
        self._lists_state = can.lists_ip_state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._looks: list[tuple[float, int, int, _Watch]] = []
        self._queries: list[tuple[float, int, int, _Watch]] = []
        self._deadlines: list[tuple[float, int, _Watch]] = []
        self._by_vpc: dict[str, set[_Watch]] = {}
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.Task[None]] = set()
        self._timer_at: float | None = None
        self._looks_in_flight = 0
        self._queries_in_flight = 0
        self._vpc_sizes: dict[str, int] = {}
        self._in_flight: tuple[float, int] | None = None
        self._live = 0  # tasks watched now
        self._wanted: dict[str, list[asyncio.Future[EniInfo | None]]] = {}
        self._wanted_since: float | None = None
        # What the tracker spent, for benchmarks and logs.
        self.describe_calls = 0
        self.task_queries = 0

    def __repr__(self) -> str:
        return f"Tracker(confirm={self.confirm!r}, watching={len(self._deadlines)})"

    # -- the public side ------------------------------------------------------------------------------

    async def track(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: Sequence[str],
        *,
        submitted_at: float | None = None,
        timeout: float | None = None,
    ) -> ChunkFate:
        """Wait until every IP of an accepted task is settled (or its deadline passes) and return their fates.

        ``submitted_at`` is when the submit was sent (``Clock.monotonic``; default: when the client sent it, else
        now); ``timeout`` defaults
        to ``settings.poll.timeout``. Raises only ``AuthError`` (every later call would fail the same way).
        """
        policy = self._client.poll
        limit = policy.timeout if timeout is None else timeout
        now = self._clock.monotonic()
        # The submit's own send time when this client sent it: waits for the budget or a mutex before it are
        # not the task's latency (they would time first looks early and inflate the latencies learnt).
        sent = self._client.sent_at(task_id)
        if sent is None:
            sent = now if submitted_at is None else submitted_at
        if self.confirm == "task":
            return await self._by_task(vpc_id, eni_id, task_id, tuple(ips), sent, limit)
        self._start()
        assert self._loop is not None
        assert self._wake is not None
        w = _Watch(
            vpc_id, eni_id, task_id, tuple(ips), sent, now, now + limit, self._loop.create_future(), list(ips)
        )
        self._schedule_look(w, max(now, sent + self._first_look()))
        heapq.heappush(self._deadlines, (w.deadline, next(self._seq), w))
        self._by_vpc.setdefault(vpc_id, set()).add(w)
        self._live += 1
        w.future.add_done_callback(self._forget)
        self._wake.set()
        return await w.future  # cancelling the awaiter cancels the future: the watch is dropped

    async def describe(self, eni_id: str) -> EniInfo | None:
        """Describe one ENI (``None``: not found), packed with others asked for within ``COALESCE`` seconds.

        Where the dialect takes one id per call this is one call; on API 3.0 up to 100 ENIs share a call, so
        the look every item takes before its first submit costs a hundredth of a call. Raises what the call
        raised (after its own retries).
        """
        if self._per_call <= 1:
            return (await self._client.describe_many([eni_id])).get(eni_id)
        self._start()
        assert self._loop is not None
        assert self._wake is not None
        future: asyncio.Future[EniInfo | None] = self._loop.create_future()
        self._wanted.setdefault(eni_id, []).append(future)
        if self._wanted_since is None:
            self._wanted_since = self._clock.monotonic()
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Stop watching: every task still watched ends with its pending IPs ``unknown``."""
        for _, _, w in self._deadlines:
            if w.live:
                self._resolve(w, reason="the client was closed before the task's fate was seen")
        self._deadlines.clear()
        _fail_all(self._wanted, _closed())
        self._wanted.clear()
        self._wanted_since = None
        tasks = [t for t in (self._runner, *self._calls, *self._timers) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        self._calls.clear()

    def _forget(self, _: asyncio.Future[ChunkFate]) -> None:
        self._live -= 1

    def releases_in_flight(self) -> int:
        """How many releases to keep in flight so that the budgets, not the count, set the pace.

        Little's law: the rate tasks can be started at (the submit budget; with ``confirm = "task"`` also the
        task-query budget, about one query per task) times how long each holds its ENI (the latency most
        tasks end within, plus the time to see it), with headroom for the tail. Recomputed at most every
        ``IN_FLIGHT_REFRESH`` seconds.
        """
        now = self._clock.monotonic()
        if self._in_flight is not None and now - self._in_flight[0] < IN_FLIGHT_REFRESH:
            return self._in_flight[1]
        budgets = self._client.budgets
        rate = float(budgets["UnassignPrivateIpAddresses"].rate)
        if self.confirm == "task":
            rate = min(rate, budgets["DescribeVpcTaskResult"].rate / QUERIES_PER_TASK)
        latencies = self._client.latencies
        typical = latencies.latency(0.9) if len(latencies) >= MIN_SAMPLES else None
        hold = (2.0 * self._client.poll.first if typical is None else typical) + MAX_GAP / 2
        target = max(MIN_IN_FLIGHT, math.ceil(rate * hold * IN_FLIGHT_HEADROOM))
        self._in_flight = (now, target)
        return target

    # -- the loop -------------------------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: nothing of the old one can be awaited here
            self._loop, self._wake, self._runner, self._timer_at = loop, asyncio.Event(), None, None
            self._calls, self._timers = set(), set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(), name="eni_async tracker")

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while True:
                now = self._clock.monotonic()
                self._expire(now)
                self._start_describes(now)
                self._start_looks(now)
                self._start_queries(now)
                wake_at = self._next_wake()
                busy = self._deadlines or self._wanted or self._looks_in_flight or self._queries_in_flight
                if not busy:
                    self._idle()  # nothing watched: stop; the next ``track`` starts the loop again
                    return
                if wake_at is not None:
                    self._arm(wake_at)
                await self._wake.wait()
                self._wake.clear()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: every awaiter learns of it rather than waiting forever
            log.exception("tracker stopped by a bug")
            for _, _, w in self._deadlines:
                if w.live:
                    w.future.set_exception(exc)
            _fail_all(self._wanted, exc)
            self._wanted.clear()
            raise

    def _idle(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._timer_at = None

    def _arm(self, at: float) -> None:
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
        assert self._wake is not None
        self._wake.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _next_wake(self) -> float | None:
        times: list[float] = []
        self._clean(self._looks, look=True)
        self._clean(self._queries, look=False)
        while self._deadlines and not self._deadlines[0][2].live:
            heapq.heappop(self._deadlines)
        if self._looks and self._looks_in_flight < self._look_capacity():
            times.append(self._looks[0][0])
        if self._queries and self._queries_in_flight < self._query_capacity():
            times.append(self._queries[0][0])
        if self._wanted_since is not None and self._looks_in_flight < self._look_capacity():
            times.append(self._wanted_since + COALESCE)
        if self._deadlines and not self._looks_in_flight and not self._queries_in_flight:
            # A call in flight wakes the loop when it ends; a deadline timer meanwhile would only let a fake
            # clock jump past it while the answer is on its way.
            times.append(self._deadlines[0][0])
        return min(times) if times else None

    @staticmethod
    def _clean(heap: list[tuple[float, int, int, _Watch]], *, look: bool) -> None:
        while heap:
            _, _, version, w = heap[0]
            busy = w.looking if look else w.querying
            current = w.look_version if look else w.query_version
            if w.live and version == current and not busy:
                return
            heapq.heappop(heap)

    def _look_capacity(self) -> int:
        return max(1, int(self._client.budgets["DescribeNetworkInterfaces"].rate // 4))

    def _query_capacity(self) -> int:
        return max(1, int(self._client.budgets["DescribeVpcTaskResult"].rate // 2))

    def _first_look(self) -> float:
        latencies = self._client.latencies
        policy = self._client.poll
        if len(latencies) < MIN_SAMPLES or not policy.adaptive:
            return policy.first
        typical = latencies.latency(FIRST_LOOK_QUANTILE)
        return policy.first if typical is None else typical

    def _gap_cap(self) -> float:
        """The longest gap between looks: shorter at the tail of a batch, when few tasks are left to watch.

        Every look is an ENI in a describe answer that the server renders and the client parses; while
        thousands of tasks run, looking at each more often costs CPU on both sides that submitting needs."""
        return TAIL_GAP if self._live <= TAIL else MAX_GAP

    def _expected(self) -> float:
        latencies = self._client.latencies
        if len(latencies) < MIN_SAMPLES:
            return 2.0 * self._client.poll.first
        high = latencies.latency(EXPECTED_QUANTILE)
        return 2.0 * self._client.poll.first if high is None else high

    # -- scheduling -----------------------------------------------------------------------------------

    def _schedule_look(self, w: _Watch, due: float) -> None:
        w.look_version += 1
        heapq.heappush(self._looks, (due, next(self._seq), w.look_version, w))

    def _schedule_query(self, w: _Watch, due: float) -> None:
        """Ask about the task at ``due`` (not before the backoff after its last RUNNING reading)."""
        due = max(due, w.next_query_at)
        if w.querying or w.query_broken or (w.query_due is not None and w.query_due <= due):
            return
        w.query_due = due
        w.query_version += 1
        heapq.heappush(self._queries, (due, next(self._seq), w.query_version, w))

    def _pop_one(self, until: float) -> _Watch | None:
        self._clean(self._looks, look=True)
        if not self._looks or self._looks[0][0] > until:
            return None
        w = heapq.heappop(self._looks)[3]
        w.looking = True
        return w

    def _pop_due(self, until: float) -> list[_Watch]:
        taken: list[_Watch] = []
        while (w := self._pop_one(until)) is not None:
            taken.append(w)
        return taken

    def _start_describes(self, now: float) -> None:
        if self._wanted_since is None:
            return
        if len(self._wanted) < self._per_call and now < self._wanted_since + COALESCE - 1e-9:
            return
        while self._wanted and self._looks_in_flight < self._look_capacity():
            ids = list(itertools.islice(self._wanted, self._per_call))
            group = {eni: self._wanted.pop(eni) for eni in ids}
            self._looks_in_flight += 1
            self._spawn(self._describe_ids(group))
        self._wanted_since = now if self._wanted else None

    async def _describe_ids(self, group: dict[str, list[asyncio.Future[EniInfo | None]]]) -> None:
        try:
            self.describe_calls += 1
            found = await self._client.describe_many(list(group))
        except EniAsyncError as exc:
            if len(group) > 1 and not exc.transient and not isinstance(exc, AuthError):
                # One ENI refused (e.g. denied per resource) must not fail the others: ask for each alone.
                self.describe_calls += len(group)
                await asyncio.gather(*(self._describe_alone(eni, futures) for eni, futures in group.items()))
            else:
                _fail_all(group, exc)
        except BaseException as exc:  # every asker learns of it
            for futures in group.values():
                for future in futures:
                    if future.done():
                        continue
                    # A call is cancelled only by ``close``: its askers were not cancelled, the client was closed.
                    future.set_exception(_closed() if isinstance(exc, asyncio.CancelledError) else exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for eni, futures in group.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(eni))
        finally:
            self._looked()

    async def _describe_alone(self, eni: str, futures: list[asyncio.Future[EniInfo | None]]) -> None:
        try:
            found = await self._client.describe_many([eni])
        except EniAsyncError as exc:
            _fail_all({eni: futures}, exc)
        else:
            for future in futures:
                if not future.done():
                    future.set_result(found.get(eni))

    def _start_looks(self, now: float) -> None:
        capacity = self._look_capacity() - self._looks_in_flight
        if capacity <= 0:
            return
        due = self._pop_due(now + SLACK)
        if not due:
            return
        if self._per_call > 1:
            self._pack_by_ids(due, now, capacity)
        else:
            self._pack_by_vpc(due, now, capacity)

    def _pack_by_ids(self, due: list[_Watch], now: float, capacity: int) -> None:
        enis: dict[str, list[_Watch]] = {}
        alone: list[_Watch] = []
        for w in due:
            (alone.append(w) if w.alone else enis.setdefault(w.eni_id, []).append(w))
        room = (-len(enis)) % self._per_call
        while room and (extra := self._pop_one(now + PACK_AHEAD)) is not None:
            if extra.alone:
                alone.append(extra)
                continue
            if extra.eni_id not in enis:
                room -= 1
            enis.setdefault(extra.eni_id, []).append(extra)
        groups = [[w] for w in alone]
        ids = list(enis)
        groups += [
            [w for eni in ids[i : i + self._per_call] for w in enis[eni]]
            for i in range(0, len(ids), self._per_call)
        ]
        for group in groups[:capacity]:
            self._looks_in_flight += 1
            self._spawn(self._look_ids(group))
        for group in groups[capacity:]:
            self._give_back(group, now)

    def _pack_by_vpc(self, due: list[_Watch], now: float, capacity: int) -> None:
        by_vpc: dict[str, list[_Watch]] = {}
        singles: list[_Watch] = []
        for w in due:
            (singles.append(w) if w.alone else by_vpc.setdefault(w.vpc_id, []).append(w))
        for vpc, watches in by_vpc.items():
            count = len({w.eni_id for w in watches})
            size = self._vpc_sizes.get(vpc)
            pages = None if size is None else max(1, math.ceil(size / self._page))
            if count >= 2 and (pages is None or pages < count) and capacity > 0:
                # The whole VPC is described: every idle task in it is looked at for free.
                for other in self._by_vpc.get(vpc, ()):
                    if other.live and not other.looking and not other.alone and not other.querying:
                        other.looking = True
                        other.look_version += 1
                        watches.append(other)
                capacity -= 1
                self._looks_in_flight += 1
                self._spawn(self._look_vpc(vpc, watches))
            else:
                singles.extend(watches)
        enis: dict[str, list[_Watch]] = {}
        for w in singles:
            enis.setdefault(w.eni_id, []).append(w)
        for group in enis.values():
            if capacity <= 0:
                self._give_back(group, now)
                continue
            capacity -= 1
            self._looks_in_flight += 1
            self._spawn(self._look_ids(group))

    def _give_back(self, watches: list[_Watch], now: float) -> None:
        for w in watches:
            w.looking = False
            self._schedule_look(w, now)

    def _start_queries(self, now: float) -> None:
        while self._queries_in_flight < self._query_capacity():
            self._clean(self._queries, look=False)
            if not self._queries or self._queries[0][0] > now + SLACK:
                return
            w = heapq.heappop(self._queries)[3]
            w.querying = True
            w.query_due = None
            self._queries_in_flight += 1
            self._spawn(self._query(w))

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            w = heapq.heappop(self._deadlines)[2]
            if w.live:
                status = w.state.status.value if w.state is not None else None
                waited = now - w.registered_at
                w.error = w.error or TaskTimeoutError(w.task_id, status, waited)
                self._resolve(w, reason=f"task {w.task_id} still running at the deadline ({waited:.0f}s)")

    # -- looking --------------------------------------------------------------------------------------

    async def _look_ids(self, watches: list[_Watch]) -> None:
        enis = list(dict.fromkeys(w.eni_id for w in watches))
        sent = self._clock.monotonic()
        try:
            self.describe_calls += 1
            found = await self._client.describe_many(enis)
        except AuthError as exc:
            self._fail(watches, exc)
        except EniAsyncError as exc:
            self._unread(watches, exc, split=len(enis) > 1)
        except Exception as exc:  # a bug: whoever awaits these tasks learns of it now, not at the deadline
            log.exception("a look failed by a bug")
            self._fail(watches, exc)
        else:
            for w in watches:
                self._observe(w, found.get(w.eni_id), sent)
        finally:
            self._looked()

    async def _look_vpc(self, vpc: str, watches: list[_Watch]) -> None:
        sent = self._clock.monotonic()
        try:
            self.describe_calls += 1
            page, total = await self._client.describe_vpc(vpc, offset=0, limit=self._page)
            self._vpc_sizes[vpc] = total
            seen = {info.eni_id: info for info in page}
            missing = {w.eni_id for w in watches} - seen.keys()
            offsets = range(len(page), total, self._page) if page else range(0)
            if missing and len(offsets) <= len(missing):
                self.describe_calls += len(offsets)
                pages = await asyncio.gather(
                    *(self._client.describe_vpc(vpc, offset=o, limit=self._page) for o in offsets)
                )
                seen.update((info.eni_id, info) for more, _ in pages for info in more)
            elif missing:
                self.describe_calls += len(missing)
                singles = await asyncio.gather(*(self._client.describe_many([eni]) for eni in missing))
                for found in singles:
                    seen.update(found)
                for eni in missing:  # described by id and not there: not found
                    seen.setdefault(eni, _NOT_FOUND)
        except AuthError as exc:
            self._fail(watches, exc)
        except EniAsyncError as exc:
            self._unread(watches, exc, split=True)
        except Exception as exc:  # a bug: whoever awaits these tasks learns of it now, not at the deadline
            log.exception("a look failed by a bug")
            self._fail(watches, exc)
        else:
            now = self._clock.monotonic()
            for w in watches:
                info = seen.get(w.eni_id)
                if info is None:  # pages shift while ENIs come and go: ask for this one by id
                    w.looking, w.alone = False, True
                    self._schedule_look(w, now)
                else:
                    self._observe(w, None if info is _NOT_FOUND else info, sent)
        finally:
            self._looked()

    def _looked(self) -> None:
        self._looks_in_flight -= 1
        if self._wake is not None:
            self._wake.set()

    def _fail(self, watches: list[_Watch], exc: BaseException) -> None:
        for w in watches:
            w.looking = False
            if w.live:
                w.future.set_exception(exc)

    def _unread(self, watches: list[_Watch], exc: EniAsyncError, *, split: bool) -> None:
        now = self._clock.monotonic()
        for w in watches:
            w.looking = False
            if not w.live:
                continue
            w.error = exc
            if not exc.transient and (w.alone or not split):
                # This ENI cannot be described (refused for good): only its task can tell.
                w.vanished = True
                self._schedule_query(w, now)
                continue
            w.unread += 1
            # Refused for good in a shared call: this ENI may be the one refused, so it is described alone.
            # A transient failure says nothing about one ENI: it stays packed with the others.
            w.alone = w.alone or (split and not exc.transient)
            if (
                w.unread >= BLIND_LOOKS
            ):  # this ENI keeps failing to describe: its task may settle it (SUCCESS)
                self._schedule_query(w, max(now, w.submitted_at + self._expected()))
            self._schedule_look(w, now + min(w.gap, self._gap_cap()))
            w.gap = min(self._gap_cap(), w.gap * GAP_GROWTH)
        log.info("describe failed (%s); looking again", exc)

    def _observe(self, w: _Watch, info: EniInfo | None, sent: float) -> None:
        """Apply one description of the watch's ENI, sent at ``sent``, to its pending IPs."""
        w.looking = False
        if not w.live:
            return
        now = self._clock.monotonic()
        if info is None or info.vpc_id != w.vpc_id:
            w.vanished = True
            if w.state is not None and w.state.status.done:
                self._after_reading(w)
            else:
                self._schedule_query(w, now)
            return
        w.error = None
        w.unread = 0
        w.alone = False  # described: it may share calls again (alone only until this ENI is seen)
        ended = w.ended_at is not None and sent >= w.ended_at
        w.stale = False
        deleting = False
        for ip in list(w.pending):
            if not info.listed(ip):
                w.settle(ip, RELEASED, BY_ENI)
            elif ended:
                w.settle(ip, NOT_RELEASED, BY_ENI)
            elif self._lists_state and info.ip_states.get(ip, "DELETING") != "DELETING":
                w.stale = True
            else:
                deleting = True
        if w.stale and w.query_broken and not deleting:
            # The task cannot be read, and none of its IPs is DELETING in a look sent after it was accepted:
            # it ended without those still listed. (One still DELETING means it runs: keep looking.)
            for ip in list(w.pending):
                w.settle(ip, NOT_RELEASED, BY_ENI)
        if not w.pending:
            if all(fate == RELEASED for fate, _ in w.fates.values()) and w.state is None:
                self._client.latencies.observe(max(0.0, sent - w.submitted_at))
            self._resolve(w)
            return
        if w.stale:
            self._schedule_query(w, now)
        elif not self._lists_state and w.queries == 0 and now - w.submitted_at >= self._expected():
            self._schedule_query(w, w.submitted_at + self._expected())  # earliest expected end first
        if w.ended_at is not None and not ended:  # this look predates the reading: look again at once
            self._schedule_look(w, now)
            return
        self._schedule_look(w, now + min(w.gap, self._gap_cap()))
        w.gap = min(self._gap_cap(), w.gap * GAP_GROWTH)

    # -- asking ---------------------------------------------------------------------------------------

    async def _query(self, w: _Watch) -> None:
        try:
            self.task_queries += 1
            state = await self._client.task_state(w.task_id)
        except AuthError as exc:
            w.querying = False
            self._fail([w], exc)
        except EniAsyncError as exc:
            w.querying = False
            self._unasked(w, exc)
        except Exception as exc:  # a bug: whoever awaits this task learns of it now, not at the deadline
            log.exception("a task query failed by a bug")
            self._fail([w], exc)
        else:
            w.querying = False
            self._read(w, state)
        finally:
            w.querying = False
            self._queries_in_flight -= 1
            if self._wake is not None:
                self._wake.set()

    def _unasked(self, w: _Watch, exc: EniAsyncError) -> None:
        if not w.live:
            return
        w.error = exc
        now = self._clock.monotonic()
        if exc.transient:
            self._schedule_query(w, now + self._query_gap(w))
            return
        w.query_broken = True
        log.info("task %s unreadable (%s); the ENI alone decides", w.task_id, exc)
        if w.vanished:
            self._resolve(w, reason=f"{w.eni_id} not described and task {w.task_id} unreadable ({exc})")
        elif not self._lists_state:
            # IPs still listed, no state to read and no task to ask: their fate cannot be observed.
            self._resolve(
                w, reason=f"task {w.task_id} unreadable ({exc}); {len(w.pending)} IP(s) still listed"
            )
        elif w.stale:
            # Listed, no longer DELETING, after the task was accepted: the next look settles those (if none of
            # the task's IPs is DELETING by then; see ``_observe``).
            self._schedule_look(w, now)

    def _query_gap(self, w: _Watch) -> float:
        policy = self._client.poll
        return min(policy.maximum, max(policy.initial, MIN_GAP) * policy.multiplier ** max(0, w.queries - 1))

    def _read(self, w: _Watch, state: TaskState) -> None:
        w.queries += 1
        if not w.live:
            return
        w.state = state
        w.error = None
        now = self._clock.monotonic()
        if state.status is TaskStatus.RUNNING:
            w.stale = False
            # Still running: the ENI is looked at meanwhile (gone IPs settle it without a query); ask again
            # only after another expected latency, for a task that FAILED leaves its IPs listed for good.
            w.next_query_at = now + max(self._query_gap(w), self._expected())
            if w.vanished or w.unread >= BLIND_LOOKS or not self._lists_state:
                self._schedule_query(w, w.next_query_at)
            if w.vanished:
                return
            if not w.looking:
                self._schedule_look(w, now + min(w.gap, self._gap_cap()))
            return
        w.ended_at = now
        self._after_reading(w)

    def _after_reading(self, w: _Watch) -> None:
        assert w.state is not None
        if w.state.status is TaskStatus.SUCCESS:
            for ip in list(w.pending):  # D12: at SUCCESS every IP of the task is gone from the ENI
                w.settle(ip, RELEASED, BY_TASK)
            self._resolve(w)
        elif w.vanished:
            self._resolve(
                w, reason=f"{w.eni_id} not described (not found or refused) and task {w.task_id} FAILED"
            )
        elif not w.looking:
            self._schedule_look(w, self._clock.monotonic())

    # -- ending ---------------------------------------------------------------------------------------

    def _resolve(self, w: _Watch, *, reason: str | None = None) -> None:
        if not w.live:
            return
        released = tuple(ip for ip in w.ips if w.fates.get(ip, ("", ""))[0] == RELEASED)
        not_released = tuple(ip for ip in w.ips if w.fates.get(ip, ("", ""))[0] == NOT_RELEASED)
        unknown = tuple(ip for ip in w.ips if ip not in w.fates)
        fate = ChunkFate(
            w.vpc_id,
            w.eni_id,
            w.task_id,
            w.ips,
            released=released,
            not_released=not_released,
            unknown=unknown,
            confirmed_by={ip: by for ip, (_, by) in w.fates.items()},
            state=w.state,
            reason=reason if unknown else None,
            error=w.error if unknown else None,
        )
        w.future.set_result(fate)
        watchers = self._by_vpc.get(w.vpc_id)
        if watchers is not None:
            watchers.discard(w)
            if not watchers:
                del self._by_vpc[w.vpc_id]
        status = (
            w.state.status.value
            if w.state is not None
            else "UNKNOWN"
            if unknown
            else "FAILED"
            if not_released
            else "SUCCESS"
        )
        self._client.task_seen(w.task_id, status, self._clock.monotonic())

    # -- confirm = "task" -----------------------------------------------------------------------------

    async def _by_task(
        self, vpc: str, eni: str, task_id: str, ips: tuple[str, ...], sent: float, timeout: float
    ) -> ChunkFate:
        try:
            state = await poll_until_done(
                self._client.task_state,
                task_id,
                policy=self._client.poll,
                clock=self._clock,
                tracker=self._client.latencies,
                rng=self._rng,
                timeout=timeout,
                submitted_at=sent,
            )
        except AuthError:
            self._client.task_seen(task_id, "UNKNOWN", None)
            raise
        except TaskTimeoutError as exc:
            self._client.task_seen(task_id, "TIMEOUT", None)
            return await self._look_once(
                vpc, eni, task_id, ips, None, f"task {task_id} still running at the deadline", exc
            )
        except EniAsyncError as exc:
            self._client.task_seen(task_id, "UNKNOWN", None)
            return await self._look_once(
                vpc, eni, task_id, ips, None, f"task {task_id} unreadable ({exc})", exc
            )
        except BaseException:  # a bug or a cancellation: the tracker stops watching it
            self._client.task_seen(task_id, "UNKNOWN", None)
            raise
        self._client.task_seen(task_id, state.status.value, state.observed_at)
        if state.status is TaskStatus.SUCCESS:
            return ChunkFate(
                vpc, eni, task_id, ips, released=ips, confirmed_by=dict.fromkeys(ips, BY_TASK), state=state
            )
        return await self._look_once(vpc, eni, task_id, ips, state, f"task {task_id} FAILED", None)

    async def _look_once(
        self,
        vpc: str,
        eni: str,
        task_id: str,
        ips: tuple[str, ...],
        state: TaskState | None,
        why: str,
        error: BaseException | None,
    ) -> ChunkFate:
        """Describe the ENI: IPs gone are released; those listed are not released once the task has ended,
        in doubt while it may still run."""
        ended = state is not None and state.status.done
        info: EniInfo | None = None
        for attempt in range(DESCRIBE_ROUNDS):
            try:
                info = (await self._client.describe_many([eni])).get(eni, _NOT_FOUND)
                break
            except AuthError:
                raise
            except EniAsyncError as exc:
                error = error or exc
                if attempt < DESCRIBE_ROUNDS - 1:
                    await self._clock.sleep(self._client.retry.maximum * (attempt + 1))
        if info is None or info is _NOT_FOUND or info.vpc_id != vpc:
            what = "could not describe the ENI" if info is None else f"{eni} not found"
            return ChunkFate(
                vpc, eni, task_id, ips, unknown=ips, state=state, reason=f"{why}; {what}", error=error
            )
        gone = tuple(ip for ip in ips if not info.listed(ip))
        listed = tuple(ip for ip in ips if info.listed(ip))
        return ChunkFate(
            vpc,
            eni,
            task_id,
            ips,
            released=gone,
            not_released=listed if ended else (),
            unknown=() if ended else listed,
            confirmed_by=dict.fromkeys(gone + (listed if ended else ()), BY_ENI),
            state=state,
            reason=None if ended else why,
            error=None if ended else error,
        )


def _closed() -> EniAsyncError:
    return EniAsyncError("the client was closed before the ENI was described")


def _fail_all(group: dict[str, list[asyncio.Future[EniInfo | None]]], exc: BaseException) -> None:
    for futures in group.values():
        for future in futures:
            if not future.done():
                future.set_exception(exc)


# An ENI described by id and not returned: not found (kept apart from "not described").
_NOT_FOUND = EniInfo(vpc_id="", eni_id="", primary_ip=None, secondary_ips=())

__all__ = ["Tracker"]
