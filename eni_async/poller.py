"""Waiting for a VPC task: when to ask, how often, and when to give up.

Polling is not retrying: RUNNING is an answer, with its own schedule and deadline. The first query of a task
is timed from the latencies of the tasks this client has already seen end (a high quantile of them), so most
tasks are asked about once, just after they end; later queries back off exponentially with jitter, capped,
and never past the deadline. Until enough latencies are seen, ``PollPolicy.first`` is used. Each query is
logged by the client; the first wait is logged at DEBUG and a passed deadline at INFO.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from eni_async.clock import Clock
from eni_async.errors import EniAsyncError, TaskTimeoutError
from eni_async.models import TaskState
from eni_async.policy import PollPolicy, stop_at_deadline

log = logging.getLogger(__name__)

# Tasks timed before the first-query delay is learnt; until then ``PollPolicy.first`` is used.
MIN_SAMPLES = 8
# The latencies remembered (the most recent), and the bound on the first delay they set.
RECENT = 1024
BOUND_QUANTILE = 0.95
BOUND_FACTOR = 2.0


class LatencyTracker:
    """When to ask a task for the first time, learnt from the tasks this client has seen end.

    Warm-up: the first ``MIN_SAMPLES`` tasks are timed (submit to the first SUCCESS/FAILED reading, an upper
    bound) and the delay starts at their ``quantile``. From then on it is steered by one signal, whether a
    task was already done at its first query: done, and the delay shrinks by ``step``; still RUNNING, and it
    grows by ``step * (1 - running) / running``. The delay settles where a fraction ``running`` of tasks need
    a second query (a Robbins-Monro quantile estimate that needs no latency it cannot observe: a task seen
    done only says it ended before it was asked).

    Two rules keep it from running away. An answer steers only the delay it was asked at: many tasks first
    asked at one delay answer in a burst, and that burst is one signal, so once the delay has moved the rest
    of the burst (which speaks of the old delay) is ignored. And the delay never exceeds ``BOUND_FACTOR`` times
    the ``BOUND_QUANTILE`` of the latencies observed lately (the last ``RECENT`` tasks seen end).
    """

    def __init__(self, *, quantile: float = 0.9, running: float = 0.1, step: float = 0.05) -> None:
        if not 0.0 < running < 1.0:
            raise ValueError(f"running must be between 0 and 1, not {running}")
        self.quantile = quantile
        self.running = running
        self.step = step
        self._recent: deque[float] = deque(maxlen=RECENT)
        self.seen = 0  # tasks observed in all (``len`` stops at ``RECENT``): their count over time is a rate
        # ``len(self) >= MIN_SAMPLES``, kept as a value (read per task; once true it stays true).
        self.warm = False
        self._sorted: list[float] | None = None
        self._delay: float | None = None

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        """Record that a task took at most ``seconds``."""
        self._recent.append(seconds)
        self.seen += 1
        self._sorted = None
        if not self.warm and len(self._recent) >= MIN_SAMPLES:
            self.warm = True
            self._delay = self.latency(self.quantile)

    def latency(self, quantile: float) -> float | None:
        """The ``quantile`` of the latencies observed lately, or ``None`` before any."""
        if not self._recent:
            return None
        ordered = self._sorted if self._sorted is not None else self.ordered()
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def ordered(self) -> list[float]:
        """The latencies observed lately, shortest first (the caller must not change the list)."""
        if self._sorted is None:
            self._sorted = sorted(self._recent)
        return self._sorted

    def bound(self) -> float | None:
        """The longest first delay allowed: ``BOUND_FACTOR`` x the ``BOUND_QUANTILE`` latency (once warm)."""
        if len(self._recent) < MIN_SAMPLES:
            return None
        high = self.latency(BOUND_QUANTILE)
        return None if high is None else BOUND_FACTOR * high

    def first_answer(self, *, done: bool, delay: float | None = None) -> None:
        """Steer the delay by whether a task first asked after ``delay`` (default: the current) was done."""
        current = self._delay
        if current is None:
            return
        used = current if delay is None else delay
        if not math.isclose(used, current, rel_tol=1e-9, abs_tol=1e-12):
            return  # speaks of a delay already steered away from: part of a burst already counted
        if done:
            current *= 1.0 - self.step
        else:
            current *= 1.0 + self.step * (1.0 - self.running) / self.running
        bound = self.bound()
        self._delay = current if bound is None else min(current, bound)

    def estimate(self) -> float | None:
        """The delay before a task's first query, or ``None`` while warming up."""
        return self._delay


class _PollWait(tenacity.wait.wait_base):
    """Exponential waits with jitter, capped, and cut short so the last query lands on the deadline."""

    def __init__(self, policy: PollPolicy, clock: Clock, deadline: float, rng: random.Random) -> None:
        self.policy = policy
        self.clock = clock
        self.deadline = deadline
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        p = self.policy
        base = min(p.maximum, p.initial * p.multiplier ** (retry_state.attempt_number - 1))
        wait = base * (1.0 + self.rng.uniform(-p.jitter, p.jitter))
        return max(0.0, min(wait, p.maximum, self.deadline - self.clock.monotonic()))


async def poll_until_done(
    query: Callable[[str], Awaitable[TaskState]],
    task_id: str,
    *,
    policy: PollPolicy,
    clock: Clock,
    latencies: LatencyTracker,
    rng: random.Random,
    timeout: float,
    submitted_at: float | None = None,
) -> TaskState:
    """Query ``task_id`` until SUCCESS or FAILED; raise ``TaskTimeoutError`` at the deadline. ``latencies``
    times the first query and learns from each task seen end."""
    start = clock.monotonic()
    origin = submitted_at if submitted_at is not None else start
    deadline = start + timeout
    last: list[TaskState] = []

    estimate = latencies.estimate() if policy.adaptive else None
    first = estimate if estimate is not None else policy.first
    delay = min(max(0.0, origin + first - clock.monotonic()), deadline - clock.monotonic())
    log.debug(
        "task %s: first query in %.2fs (%s)",
        task_id, delay, "estimate from past tasks" if estimate is not None else "policy's first delay",
        extra={"task_id": task_id, "wait_s": round(delay, 3)},
    )  # fmt: skip
    if delay > 0:
        await clock.sleep(delay)

    async def once() -> TaskState | None:
        """One reading; ``None`` when the query failed transiently even after its own retries: the task is
        not known to have ended, so polling goes on (to the deadline) rather than giving up on it."""
        try:
            state = await query(task_id)
        except EniAsyncError as exc:
            if not exc.transient:
                raise
            log.info(
                "task %s unreadable for now (%s); polling on", task_id, exc,
                extra={"task_id": task_id, "code": type(exc).__name__},
            )  # fmt: skip
            return None
        last.append(state)
        return state

    # Most tasks are done at the first query: ask once before building a retrier (CPU), and let tenacity
    # take over from that first answer when the task is still running.
    first_state = await once()
    if first_state is not None and policy.adaptive and estimate is not None:
        latencies.first_answer(done=first_state.status.done, delay=estimate)
    if first_state is not None and first_state.status.done:
        return _done(first_state, clock, origin, latencies)
    replay = [first_state]

    async def again() -> TaskState | None:
        return replay.pop() if replay else await once()

    retrying = AsyncRetrying(
        sleep=clock.sleep,
        stop=stop_at_deadline(clock, deadline),
        wait=_PollWait(policy, clock, deadline, rng),
        retry=tenacity.retry_if_result(lambda state: state is None or not state.status.done),
    )
    try:
        state: TaskState | None = await retrying(again)
        assert state is not None  # tenacity returns only a result the predicate accepts
    except tenacity.RetryError:
        status = last[-1].status.value if last else None
        log.info(
            "task %s still %s at the poll deadline (%.1fs); giving up waiting",
            task_id, status or "unread", clock.monotonic() - start,
            extra={"task_id": task_id, "status": status},
        )  # fmt: skip
        raise TaskTimeoutError(task_id, status, clock.monotonic() - start) from None
    return _done(state, clock, origin, latencies)


def _done(state: TaskState, clock: Clock, origin: float, latencies: LatencyTracker) -> TaskState:
    """Record how long the task took (an upper bound: when it was seen done) and return it."""
    seen = state.observed_at if state.observed_at is not None else clock.monotonic()
    latencies.observe(max(0.0, seen - origin))
    return state
