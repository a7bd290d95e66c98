"""Confirmation by ENI state: the engine that looks at the ENIs of watched tasks and asks about tasks only where
the ENI cannot settle them, carrying out what the watch table (``watch.TRANSITIONS``) says.

Rounds. The looks that are due (earliest first) have their ENIs described together, as many per call as the
dialect allows (API 3.0: 100 ids; API 2.0: the VPC's pages of 50 or one call per ENI, whichever costs fewer
calls), within the tracker's share of the describe budget; looks due a little later ride along in a call
that has room, and a call that would still not be full waits while another describe is in flight, at most
``Packing.coalesce`` (Nagle's rule: where the budget does not bind, calls stay full). Task queries
(``DescribeVpcTaskResult``) go by due time, never first come first served, within their own share of the
task-query budget, and never sooner than the poll backoff after a RUNNING reading.
Every answer becomes one ``Event`` for its watch; the table gives the next phase and the actions (when to
look or ask next, what is settled, whether the watch ends), and nothing else decides. A watch ends with a
``ChunkFate``; every task whose end was observed teaches the client's latency tracker how long it took.
Only ``AuthError`` (and a bug) reaches an awaiter as an exception.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eni_async.errors import AuthError, EniAsyncError, TaskTimeoutError
from eni_async.models import ChunkFate, TaskState, TaskStatus
from eni_async.policy import backoff
from eni_async.poller import MIN_SAMPLES
from eni_async.tracker.describing import Describer, Reading
from eni_async.tracker.pacing import LookPacing, Packing
from eni_async.tracker.schedule import Agenda, Loop
from eni_async.tracker.watch import ASKING, LOOKING, Do, Event, Phase, Watch, read_description

if TYPE_CHECKING:
    from eni_async.calls import Calls

log = logging.getLogger("eni_async.tracker")
# The members the per-task paths test, as module names (``watch``: a member reached through its enum costs a
# call of ``EnumType.__getattr__``'s hook on Python 3.11).
_UNREADABLE, _DONE = Phase.UNREADABLE, Phase.DONE
_LOOK, _LOOK_NOW, _ASK_NOW, _ASK_WHEN_EXPECTED, _ASK_LATER, _ASK_AGAIN = (
    Do.LOOK,
    Do.LOOK_NOW,
    Do.ASK_NOW,
    Do.ASK_WHEN_EXPECTED,
    Do.ASK_LATER,
    Do.ASK_AGAIN,
)


@dataclass(eq=False, slots=True)
class Watched:
    """The engine's record of one watch: the watch, its awaiter, and what is in flight or next for it."""

    watch: Watch
    future: asyncio.Future[ChunkFate]
    query_gaps: Iterator[float] | None = None  # the backoff between task queries, made at the first one
    gap: float | None = None  # the last gap between looks
    looking: bool = False
    querying: bool = False
    next_query_at: float = 0.0  # the poll backoff after the last RUNNING reading
    probe: bool = False  # API 2.0: one of the first tasks, asked when late while no latency is known yet


class LookEngine:
    """Watches tasks by looking at their ENIs (``confirm = "eni"``); see the module docstring."""

    def __init__(self, calls: Calls, describer: Describer, pacing: LookPacing, packing: Packing) -> None:
        self._calls = calls
        self._clock = calls.clock
        self._describer = describer
        self._pacing = pacing
        self._packing = packing
        self._lists_state = calls.capabilities.lists_ip_state
        self._loop = Loop(calls.clock, self._run, name="eni_async tracker")
        self._looks: Agenda[Watched] = Agenda()
        self._asks: Agenda[Watched] = Agenda()
        self._deadlines: list[tuple[float, int, Watched]] = []
        self._seq = itertools.count()
        self._by_vpc: dict[str, set[Watched]] = {}
        self._vpc_due: dict[str, float] = {}  # API 2.0: when each VPC described whole may be again
        self._live = 0
        self._queries_in_flight = 0
        self._probes = 0
        # Looks held back from a call that would not be full while another describe is in flight (and since
        # when), sent with the next round once that call ends, or ``Packing.coalesce`` after the first was due.
        self._held: list[Watched] = []
        self._held_since: float | None = None
        self._expectation = Expectation(calls, pacing)
        self.queries = 0  # task queries sent (for benchmarks and logs)
        describer.on_free = self._loop.wake

    @property
    def watching(self) -> int:
        """Tasks watched now."""
        return self._live

    async def track(
        self, vpc_id: str, eni_id: str, task_id: str, ips: tuple[str, ...], sent: float, timeout: float
    ) -> ChunkFate:
        """Watch one accepted task (its submit sent at ``sent``) until its fate is known or ``timeout`` passes."""
        self._loop.start()
        now = self._clock.monotonic()
        watch = Watch(vpc_id, eni_id, task_id, ips, sent, now, now + timeout)
        poll = self._calls.poll
        w = Watched(watch, asyncio.get_running_loop().create_future())
        if self._probes < MIN_SAMPLES and not self._calls.latencies.warm:
            # While no latency is known, only the first few tasks still listed past 2 x poll.first are asked
            # (a FAILED task stays listed: they are the sample that tells); the rest wait for the estimate.
            self._probes += 1
            w.probe = True
        first = self._pacing.first_look(self._calls.latencies, poll)
        self._looks.at(w, max(now, self._pacing.first_at(sent, first, watched=self._live)))
        heapq.heappush(self._deadlines, (watch.deadline, next(self._seq), w))
        watchers = self._by_vpc.get(vpc_id)
        if watchers is None:
            watchers = self._by_vpc[vpc_id] = set()
        watchers.add(w)
        self._live += 1
        self._loop.wake()
        try:
            return await w.future  # cancelling the awaiter cancels the future: the watch is dropped
        finally:
            # Here rather than in a done callback (one less object and call per task): the awaiter resumes
            # right where such a callback would have run, whether the future ended or was cancelled.
            self._forget(w)

    def _forget(self, w: Watched) -> None:
        self._live -= 1
        if len(self._deadlines) > 2 * self._live + 64:
            # Ended watches stay in the deadline heap until they reach its top, behind any watch still
            # running: dropped all at once now and then, so a long batch holds only what it watches.
            self._deadlines = [d for d in self._deadlines if not d[2].future.done()]
            heapq.heapify(self._deadlines)
        self._looks.cancel(w)
        self._asks.cancel(w)
        watchers = self._by_vpc.get(w.watch.vpc_id)
        if watchers is not None:
            watchers.discard(w)
            if not watchers:
                del self._by_vpc[w.watch.vpc_id]
                self._vpc_due.pop(w.watch.vpc_id, None)
        self._loop.wake()  # the round may have nothing left to watch: it then stops

    async def close(self) -> None:
        """Stop watching: every task still watched ends with its pending IPs ``unknown``."""
        for _, _, w in self._deadlines:
            if not w.future.done():
                self._apply(w, Event.CLOSED)
        self._deadlines.clear()
        self._held, self._held_since = [], None
        await self._loop.close()

    # -- the round ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        event = self._loop.event
        try:
            while True:
                now = self._clock.monotonic()
                self._expire(now)
                self._start_looks(now)
                self._start_asks(now)
                if not self._live and not self._loop.calls:
                    self._loop.idle()  # nothing watched: stop; the next ``track`` starts the loop again
                    return
                wake_at = self._next_wake()
                if wake_at is not None:
                    self._loop.arm(wake_at)
                await event.wait()
                event.clear()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: every awaiter learns of it rather than waiting forever
            log.exception("tracker stopped by a bug")
            for _, _, w in self._deadlines:
                if not w.future.done():
                    w.future.set_exception(exc)
            self._describer.fail_waiting(exc)
            raise

    def _next_wake(self) -> float | None:
        times: list[float] = []
        first_look, first_ask = self._looks.first(), self._asks.first()
        if self._describer.room() > 0:  # else a call ending wakes the round
            if first_look is not None:
                times.append(first_look)
            if self._held_since is not None:
                times.append(self._held_since + self._packing.coalesce)
        if first_ask is not None and self._queries_in_flight < self._query_room():
            times.append(first_ask)
        while self._deadlines and self._deadlines[0][2].future.done():
            heapq.heappop(self._deadlines)
        if self._deadlines and not self._describer.in_flight and not self._queries_in_flight:
            # A call in flight wakes the loop when it ends; a deadline timer meanwhile would only let a fake
            # clock jump past it while the answer is on its way.
            times.append(self._deadlines[0][0])
        return min(times) if times else None

    def _query_room(self) -> int:
        return self._packing.query_room(self._calls.budgets["DescribeVpcTaskResult"].rate)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            w = heapq.heappop(self._deadlines)[2]
            if not w.future.done():
                watch = w.watch
                status = watch.state.status.value if watch.state is not None else None
                watch.error = watch.error or TaskTimeoutError(
                    watch.task_id, status, now - watch.registered_at
                )
                self._apply(w, Event.DEADLINE)

    # -- starting looks and queries -------------------------------------------------------------------

    def _start_looks(self, now: float) -> None:
        room = self._describer.room()
        if room <= 0:
            return
        due = [w for w in self._held if not w.future.done()]
        since, self._held, self._held_since = self._held_since, [], None
        for w in self._looks.pop_due(now + self._packing.slack):
            if not w.future.done():
                w.looking = True
                due.append(w)
        if not due:
            return
        if self._describer.per_call > 1:
            self._pack_by_ids(due, now, room, now if since is None else since)
        else:
            self._pack_by_vpc(due, now, room)

    def _pack_by_ids(self, due: list[Watched], now: float, room: int, since: float) -> None:
        per_call = self._describer.per_call
        enis: dict[str, list[Watched]] = {}
        for w in due:
            enis.setdefault(w.watch.eni_id, []).append(w)
        space = (-len(enis)) % per_call
        while space and (extra := self._looks.pop(now + self._packing.ahead)) is not None:
            if extra.future.done():
                continue
            extra.looking = True
            if extra.watch.eni_id not in enis:
                space -= 1
            enis.setdefault(extra.watch.eni_id, []).append(extra)
        ids = list(enis)
        groups = [
            [w for eni in ids[i : i + per_call] for w in enis[eni]] for i in range(0, len(ids), per_call)
        ]
        partial = len(ids) % per_call != 0 and len(groups) <= room
        for group in groups[: len(groups) - 1 if partial else room]:
            self._describer.taken()
            self._loop.spawn(self._look_ids(group))
        if partial:
            # Nagle's rule for describes: a call that would not be full waits while another is in flight
            # (its end wakes the round), at most ``coalesce`` after its first look was due. Where calls are
            # not what binds (a budget out of the way) this keeps them full, not one per round.
            if self._describer.in_flight > 0 and now < since + self._packing.coalesce:
                self._held, self._held_since = groups[-1], since
            else:
                self._describer.taken()
                self._loop.spawn(self._look_ids(groups[-1]))
        for group in groups[room:]:
            self._refused(group)

    def _pack_by_vpc(self, due: list[Watched], now: float, room: int) -> None:
        by_vpc: dict[str, list[Watched]] = {}
        for w in due:
            by_vpc.setdefault(w.watch.vpc_id, []).append(w)
        singles: list[Watched] = []
        for vpc, watches in by_vpc.items():
            count = len({w.watch.eni_id for w in watches})
            size = self._describer.vpc_size(vpc)
            pages = None if size is None else max(1, math.ceil(size / self._describer.page))
            if count >= 2 and (pages is None or pages < count) and room > 0:
                due_again = self._vpc_due.get(vpc, now)
                if due_again > now + self._packing.slack:
                    # Described whole a moment ago: the tasks due wait for the VPC's next round.
                    for w in watches:
                        w.looking = False
                        self._looks.at(w, due_again)
                    continue
                warm = self._calls.latencies.warm
                period = _vpc_period(self._pacing, self._by_vpc.get(vpc, ()), now, self._live, warm)
                self._vpc_due[vpc] = now + period
                # The whole VPC is described: every idle task in it rides along for free (an end is seen
                # at once; one still running is looked at next after its own gap, so rounds grow sparse).
                for other in self._by_vpc.get(vpc, ()):
                    if other.watch.phase in LOOKING and not other.looking and not other.querying:
                        other.looking = True
                        self._looks.cancel(other)
                        watches.append(other)
                room -= 1
                self._describer.taken()
                self._loop.spawn(self._look_vpc(vpc, watches))
            else:
                singles.extend(watches)
        enis: dict[str, list[Watched]] = {}
        for w in singles:
            enis.setdefault(w.watch.eni_id, []).append(w)
        for group in enis.values():
            if room <= 0:
                self._refused(group)
                continue
            room -= 1
            self._describer.taken()
            self._loop.spawn(self._look_ids(group))

    def _refused(self, watches: list[Watched]) -> None:
        for w in watches:
            w.looking = False
            self._apply(w, Event.BUDGET_REFUSED)

    def _start_asks(self, now: float) -> None:
        while self._queries_in_flight < self._query_room():
            w = self._asks.pop(now + self._packing.slack)
            if w is None:
                return
            if w.querying or w.watch.phase not in ASKING:
                continue
            w.querying = True
            self._queries_in_flight += 1
            self._loop.spawn(self._ask(w))

    # -- answers --------------------------------------------------------------------------------------

    async def _look_ids(self, watches: list[Watched]) -> None:
        enis = list(dict.fromkeys([w.watch.eni_id for w in watches]))
        await self._look(watches, lambda: self._describer.by_ids(enis))

    async def _look_vpc(self, vpc: str, watches: list[Watched]) -> None:
        await self._look(watches, lambda: self._describer.by_vpc(vpc, [w.watch.eni_id for w in watches]))

    async def _look(
        self, watches: list[Watched], describe: Callable[[], Awaitable[dict[str, Reading]]]
    ) -> None:
        sent = self._clock.monotonic()
        try:
            readings = await describe()
            for reading in readings.values():  # a loop, not a generator: one pass per ENI described
                if isinstance(reading, EniAsyncError):
                    log.info("describe failed (%s); looking again", reading)
                    break
            for w in watches:
                self._described(w, readings.get(w.watch.eni_id), sent)
        except AuthError as exc:
            self._fail(watches, exc)
        except (
            Exception
        ) as exc:  # a bug (a TransitionError too): the awaiters learn of it now, not at the deadline
            log.exception("a look failed by a bug")
            self._fail(watches, exc)
        finally:
            self._describer.freed()

    def _described(self, w: Watched, reading: Reading, sent: float) -> None:
        w.looking = False
        if w.future.done():
            return  # ended meanwhile (deadline, close, cancel): a late answer changes nothing
        watch = w.watch
        if isinstance(reading, EniAsyncError):
            watch.error = reading
            self._apply(w, Event.DESCRIBE_FAILED if reading.transient else Event.DESCRIBE_REFUSED)
            return
        if reading is not None and watch.phase is not _UNREADABLE:
            watch.error = None  # described: an earlier describe failure no longer explains anything
        now = self._clock.monotonic()
        late = (
            not self._lists_state
            and (w.probe or self._calls.latencies.warm)
            and now - watch.submitted_at >= self._expected()
        )
        event = read_description(watch, reading, sent=sent, lists_state=self._lists_state, late=late)
        self._apply(w, event, ended=watch.ended_at if watch.ended_at is not None else sent)

    async def _ask(self, w: Watched) -> None:
        watch = w.watch
        event: Event | None = None
        ended: float | None = None
        try:
            self.queries += 1
            state = await self._calls.task_state(watch.task_id)
        except AuthError as exc:
            self._fail([w], exc)
        except EniAsyncError as exc:
            if not w.future.done():
                watch.error = exc
                event = Event.QUERY_FAILED if exc.transient else Event.UNREADABLE
                if event is Event.UNREADABLE:
                    log.info("task %s unreadable (%s); the ENI alone decides", watch.task_id, exc)
        except Exception as exc:  # a bug: whoever awaits this task learns of it now, not at the deadline
            log.exception("a task query failed by a bug")
            self._fail([w], exc)
        else:
            now = self._clock.monotonic()
            if not w.future.done():
                event = watch.read(state, now)
                if state.status is TaskStatus.RUNNING:
                    # A task that FAILED leaves its IPs listed for good: ask again, but only after another
                    # expected latency (the ENI is looked at meanwhile).
                    w.next_query_at = now + max(self._query_gap(w), self._expected())
                ended = _asked_at(state, now)
        finally:
            w.querying = False
            self._queries_in_flight -= 1
            self._loop.wake()
        if event is not None:
            try:
                self._apply(w, event, ended=ended)
            except Exception as exc:  # a bug (a TransitionError too): the awaiter learns of it now
                log.exception("a task reading failed by a bug")
                self._fail([w], exc)

    def _fail(self, watches: list[Watched], exc: BaseException) -> None:
        for w in watches:
            w.looking = False
            if not w.future.done():
                w.future.set_exception(exc)

    # -- carrying out the table -----------------------------------------------------------------------

    def _apply(self, w: Watched, event: Event, *, ended: float | None = None) -> None:
        """Feed ``event`` to the watch and carry out the step; ``ended``: when the task was seen ended, if
        this event is what showed it."""
        if w.future.done():
            return  # ended meanwhile (deadline, close, cancel): a late answer changes nothing
        step = w.watch.step(event)
        now = self._clock.monotonic()
        for do in step.do:
            if do is _LOOK:
                warm = self._calls.latencies.warm
                w.gap = self._pacing.gap(w.gap, age=now - w.watch.submitted_at, watched=self._live, warm=warm)
                self._look_at(w, self._pacing.at(now, w.gap))
            elif do is _LOOK_NOW:
                self._look_at(w, now)
            elif do is _ASK_NOW:
                self._ask_at(w, now)
            elif do is _ASK_WHEN_EXPECTED:
                self._ask_at(w, w.watch.submitted_at + self._expected())  # earliest expected end first
            elif do is _ASK_LATER:
                self._ask_at(w, w.next_query_at)
            elif do is _ASK_AGAIN:
                self._ask_at(w, now + self._query_gap(w))
        if w.watch.phase is _DONE:
            self._end(w, step.why, ended)

    def _query_gap(self, w: Watched) -> float:
        """The next gap on the watch's task-query backoff (most watches never ask: made when first needed)."""
        if w.query_gaps is None:
            poll = self._calls.poll
            w.query_gaps = backoff(poll, start=max(poll.initial, self._pacing.min_gap))
        return next(w.query_gaps)

    def _look_at(self, w: Watched, due: float) -> None:
        if not w.looking:  # a look in flight schedules the next one when it is answered
            self._looks.at(w, due)

    def _ask_at(self, w: Watched, due: float) -> None:
        """Ask about the task at ``due`` (not before the backoff after its last RUNNING reading)."""
        due = max(due, w.next_query_at)
        if w.querying:
            return
        current = self._asks.due(w)
        if current is None or due < current:
            self._asks.at(w, due)

    def _end(self, w: Watched, why: str | None, ended: float | None) -> None:
        watch = w.watch
        now = self._clock.monotonic()
        if not watch.pending and ended is not None:  # every IP's fate seen: the task's latency is known
            self._calls.latencies.observe(max(0.0, ended - watch.submitted_at))
        reason = None
        if why is not None:
            reason = why.format(
                eni=watch.eni_id,
                task=watch.task_id,
                error=watch.error,
                pending=len(watch.pending),
                waited=now - watch.registered_at,
            )
        w.future.set_result(watch.fate(reason))
        self._calls.task_seen(watch.task_id, watch.final_status(), now)

    def _expected(self) -> float:
        return self._expectation.value(self._by_vpc.values())


class Expectation:
    """The latency most tasks end within, read with the tasks watched now (``LookPacing.expected``);
    recomputed at most every ``refresh`` seconds (it sorts every age)."""

    def __init__(self, calls: Calls, pacing: LookPacing, *, refresh: float = 0.25) -> None:
        self._calls = calls
        self._pacing = pacing
        self._refresh = refresh
        self._at: tuple[float, float] | None = None  # (when computed, the expected latency)

    def value(self, watched: Iterable[Iterable[Watched]]) -> float:
        """The expected latency now; ``watched``: the tasks watched, in groups."""
        now = self._calls.clock.monotonic()
        if self._at is not None and now - self._at[0] < self._refresh:
            return self._at[1]
        latencies = self._calls.latencies
        running = None
        if latencies.warm:
            running = [
                now - w.watch.submitted_at
                for group in watched
                for w in group
                if w.watch.pending and not w.future.done()
            ]
        expected = self._pacing.expected(latencies, self._calls.poll, running)
        self._at = (now, expected)
        return expected


def _vpc_period(pacing: LookPacing, watched: Iterable[Watched], now: float, live: int, warm: bool) -> float:
    """How long a VPC described whole waits before its next whole round: the look gap of its median task
    (a round spends every page, however few of its tasks are due)."""
    ages = sorted(now - w.watch.submitted_at for w in watched)
    if not ages:
        return pacing.max_gap
    return pacing.ceiling(age=ages[len(ages) // 2], watched=live, warm=warm)


def _asked_at(state: TaskState, arrived: float) -> float:
    return state.observed_at if state.observed_at is not None else arrived


__all__ = ["Expectation", "LookEngine"]
