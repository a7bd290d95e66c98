"""Retry and poll policies as frozen values, turned into tenacity retriers at call time.

Retrying answers "the call failed": a fast, jittered, bounded schedule for exceptions. Polling answers "not
done yet": RUNNING is a result, with its own slower schedule and its own deadline. Both read the injected
``Clock`` for sleeping and for their deadlines (tenacity's own ``stop_after_delay`` reads ``time.monotonic``).
Which exceptions are retried is one table: the ``transient`` and ``no_effect`` flags on the exception tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tenacity
from tenacity import AsyncRetrying, RetryCallState
from tenacity.stop import stop_base

from eni_async.clock import Clock
from eni_async.errors import EniAsyncError


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried: ``attempts`` in all, full-jitter exponential waits, a deadline."""

    attempts: int = 8
    initial: float = 0.2
    maximum: float = 5.0
    deadline: float = 120.0


@dataclass(frozen=True)
class PollPolicy:
    """How a RUNNING task is polled.

    ``first`` is the delay before the first query when no task latency has been observed yet; later
    queries wait ``multiplier`` times longer each time, with jitter, capped at ``maximum``; ``timeout`` is the
    deadline for one task.
    """

    first: float = 1.0
    initial: float = 0.5
    multiplier: float = 1.5
    maximum: float = 10.0
    jitter: float = 0.25
    timeout: float = 600.0
    adaptive: bool = True


@dataclass(frozen=True)
class LookPolicy:
    """How hard to try to describe an ENI before an IP's fate is left in doubt: ``rounds`` describe calls
    (each already retried by the ``RetryPolicy``), the n-th pause between them ``pause * n`` seconds."""

    rounds: int = 3
    pause: float = 5.0

    def pauses(self) -> Iterator[float]:
        """The pause before each round after the first (``rounds - 1`` of them)."""
        return (self.pause * n for n in range(1, self.rounds))


@dataclass(frozen=True)
class OutagePolicy:
    """How work with a deadline waits out an outage (the API unreachable, answering 5xx, throttling) once a
    call's own ``RetryPolicy`` is spent: full-jitter exponential waits from ``initial``, capped at
    ``maximum`` seconds, until the work's deadline (one last try at the deadline itself)."""

    initial: float = 1.0
    maximum: float = 30.0


def backoff(policy: PollPolicy, *, start: float | None = None) -> Iterator[float]:
    """The poll schedule without jitter: ``start`` (default ``policy.initial``), then ``multiplier`` times
    longer each time, capped at ``maximum``; endless (the caller's deadline bounds it)."""
    delay = policy.initial if start is None else start
    while True:
        yield min(policy.maximum, delay)
        delay = min(policy.maximum, delay * policy.multiplier)


class stop_at_deadline(stop_base):
    """Stop once the injected clock reaches ``deadline`` (a ``Clock.monotonic`` reading)."""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock = clock
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock.monotonic() >= self.deadline


def outlasting(
    policy: OutagePolicy,
    clock: Clock,
    deadline: float,
    *,
    retry: Callable[[BaseException], bool],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """The tenacity retrier that waits out an outage under ``policy`` until ``deadline`` (a
    ``Clock.monotonic`` reading): no wait passes the deadline, and the try at the deadline is the last."""
    jittered = tenacity.wait_random_exponential(multiplier=policy.initial, max=policy.maximum)

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(jittered(state), deadline - clock.monotonic()))

    return AsyncRetrying(
        sleep=clock.sleep,
        stop=stop_at_deadline(clock, deadline),
        wait=wait,
        retry=tenacity.retry_if_exception(retry),
        before_sleep=before_sleep,
        reraise=True,
    )


def retryable(*, mutating: bool) -> Callable[[BaseException], bool]:
    """The retry table: read-only calls retry transient faults; mutating calls only those with no effect."""

    def check(exc: BaseException) -> bool:
        if not isinstance(exc, EniAsyncError) or not exc.transient:
            return False
        return exc.no_effect or not mutating

    return check


def retrier(
    policy: RetryPolicy,
    clock: Clock,
    *,
    mutating: bool,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """Build the tenacity retrier for one call under ``policy``."""
    return AsyncRetrying(
        sleep=clock.sleep,
        stop=tenacity.stop_after_attempt(policy.attempts)
        | stop_at_deadline(clock, clock.monotonic() + policy.deadline),
        wait=tenacity.wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
        retry=tenacity.retry_if_exception(retryable(mutating=mutating)),
        before_sleep=before_sleep,
        reraise=True,
    )
