"""Waiting for a VPC task: when to ask, how often, and when to give up.

Polling is not retrying: RUNNING is an answer, with its own schedule and deadline. The first query of a task
is timed from the latencies of the tasks this client has already seen end (a high quantile of them), so most
tasks are asked about once, just after they end; later queries back off exponentially with jitter, capped,
and never past the deadline. Until enough latencies are seen, ``PollPolicy.first`` is used. Each query is
logged by the client; the first wait is logged at DEBUG and a passed deadline at INFO.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Awaitable, Callable

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from eni_async.clock import Clock
from eni_async.errors import TaskTimeoutError
from eni_async.models import TaskState
from eni_async.policy import PollPolicy, stop_at_deadline

log = logging.getLogger(__name__)

# Observed latencies kept for the estimate; old ones drop out so the estimate follows drift.
_WINDOW = 512
_MIN_SAMPLES = 8


class LatencyTracker:
    """Upper bounds of task latencies seen so far (submit to the first SUCCESS/FAILED reading)."""

    def __init__(self, *, quantile: float = 0.85) -> None:
        self.quantile = quantile
        self._recent: list[float] = []
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        """Record that a task took at most ``seconds``."""
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._recent) > _WINDOW:
            old = self._recent.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def estimate(self) -> float | None:
        """The ``quantile`` of observed latencies, or ``None`` before enough are seen."""
        if len(self._sorted) < _MIN_SAMPLES:
            return None
        index = min(len(self._sorted) - 1, int(self.quantile * len(self._sorted)))
        return self._sorted[index]


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
    tracker: LatencyTracker,
    rng: random.Random,
    timeout: float,
    submitted_at: float | None = None,
) -> TaskState:
    """Query ``task_id`` until SUCCESS or FAILED; raise ``TaskTimeoutError`` at the deadline."""
    start = clock.monotonic()
    origin = submitted_at if submitted_at is not None else start
    deadline = start + timeout
    last: list[TaskState] = []

    estimate = tracker.estimate() if policy.adaptive else None
    first = estimate if estimate is not None else policy.first
    delay = min(max(0.0, origin + first - clock.monotonic()), deadline - clock.monotonic())
    log.debug(
        "task %s: first query in %.2fs (%s)",
        task_id, delay, "estimate from past tasks" if estimate is not None else "policy's first delay",
        extra={"task_id": task_id, "wait_s": round(delay, 3)},
    )  # fmt: skip
    if delay > 0:
        await clock.sleep(delay)

    async def once() -> TaskState:
        state = await query(task_id)
        last.append(state)
        return state

    retrying = AsyncRetrying(
        sleep=clock.sleep,
        stop=stop_at_deadline(clock, deadline),
        wait=_PollWait(policy, clock, deadline, rng),
        retry=tenacity.retry_if_result(lambda state: not state.status.done),
    )
    try:
        state: TaskState = await retrying(once)
    except tenacity.RetryError:
        status = last[-1].status.value if last else None
        log.info(
            "task %s still %s at the poll deadline (%.1fs); giving up waiting",
            task_id, status or "unread", clock.monotonic() - start,
            extra={"task_id": task_id, "status": status},
        )  # fmt: skip
        raise TaskTimeoutError(task_id, status, clock.monotonic() - start) from None
    seen = state.observed_at if state.observed_at is not None else clock.monotonic()
    tracker.observe(max(0.0, seen - origin))
    return state
