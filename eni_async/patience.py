"""Waiting out outages for work that has a deadline: the release path's patience, in one place.

An item released with a deadline (the service's accepted work; the library's with ``release_deadline``)
is not failed by an outage: a call that failed transiently after its own ``RetryPolicy`` (the API
unreachable, 5xx, ``InternalError``, throttling; for a submit only when it surely had no effect) is tried
again on the ``OutagePolicy`` backoff until the deadline, then its error is raised and the release path's
cases decide as without one. While it waits, the last error is the outcome's error (journalled when its
code changes); one decision says when the wait began and one when it ended; a closed gate ends the wait
(``StopSubmitting``). ``Patience.on_outage`` hears of each wait's beginning (its error) and end (``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from tenacity import RetryCallState

from eni_async.calls import Gate, StopSubmitting
from eni_async.clock import Clock
from eni_async.errors import EniAsyncError, error_code, error_info
from eni_async.policy import OutagePolicy, outlasting

if TYPE_CHECKING:
    from eni_async.outcomes import Item, Outcome

log = logging.getLogger("eni_async.release")

T = TypeVar("T")


class Progress(Protocol):
    """Where a wait is journalled (the release path's ``Recorder`` is one)."""

    async def progressed(self, item: Item, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class Waiting:
    """What one item with a deadline needs to wait out an outage: the deadline (``Clock.monotonic``), the
    gate that ends the wait, and where the wait is journalled."""

    deadline: float
    item: Item
    gate: Gate | None
    recorder: Progress | None

    def closed(self) -> bool:
        """Whether the gate closed (nothing more may be submitted)."""
        return self.gate is not None and self.gate()


def outlastable(exc: BaseException) -> bool:
    """Worth waiting for: a transient failure after the call's own retries (a submit's only when it had no
    effect: an ambiguous one is an ``OutcomeUnknownError``, looked at first)."""
    return isinstance(exc, EniAsyncError) and exc.transient


class Patience:
    """The items being released with a deadline (by ``id(outcome)``, since every step has its outcome), and
    how they wait (see the module docstring)."""

    def __init__(self, clock: Clock, policy: OutagePolicy) -> None:
        self.clock = clock
        self.policy = policy
        self.items: dict[int, Waiting] = {}
        self.on_outage: Callable[[BaseException | None], None] | None = None

    def __repr__(self) -> str:
        return f"Patience({self.policy!r}, waiting={len(self.items)})"

    def of(self, outcome: Outcome) -> Waiting | None:
        """The item's deadline and gate, if it has a deadline."""
        return self.items.get(id(outcome))

    async def outlast(self, outcome: Outcome, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, waited out on the backoff until the item's deadline when it has one."""
        waiting = self.items.get(id(outcome))
        if waiting is None:
            return await call()
        began = self.clock.monotonic()
        before = outcome.error
        failures: list[BaseException] = []
        shown: list[str] = []  # the error code last journalled

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return
            wait = state.next_action.sleep if state.next_action else 0.0
            if not failures:
                _decide(outcome, f"{what} failed ({exc}): waiting for the API, until the release's deadline")
                if self.on_outage is not None:
                    self.on_outage(exc)
            failures.append(exc)
            if before is None:
                outcome.error = error_info(exc)
            log.log(
                logging.INFO if len(failures) > 1 else logging.WARNING,
                "%s: %s failed (%s); trying again in %.1fs (until the release's deadline)",
                outcome.eni_id, what, exc, wait,
            )  # fmt: skip

        async def attempt() -> T:
            if failures:
                if waiting.closed():
                    raise StopSubmitting
                code = error_code(failures[-1])
                if waiting.recorder is not None and shown[-1:] != [code]:
                    shown.append(code)
                    await waiting.recorder.progressed(waiting.item, outcome)
            return await call()

        retrying = outlasting(
            self.policy, self.clock, waiting.deadline, retry=outlastable, before_sleep=before_sleep
        )
        answered = False
        try:
            result: T = await retrying(attempt)
            answered = True
        finally:
            if failures:
                if before is None:
                    outcome.error = None  # the case that decides next records its own error
                if self.on_outage is not None:
                    self.on_outage(None)
        if failures and answered:
            _decide(outcome, f"the API answered again after {self.clock.monotonic() - began:.0f}s ({what})")
        return result

    async def pause_before_watching_again(self, outcome: Outcome, again: int) -> bool:
        """Before the ``again``-th new watch of a task left unseen: wait on the backoff (never past the
        deadline); ``False`` when the item has no deadline left or its gate closed."""
        waiting = self.items.get(id(outcome))
        if waiting is None:
            return False
        left = waiting.deadline - self.clock.monotonic()
        if left <= 0 or waiting.closed():
            return False
        await self.clock.sleep(min(left, self.policy.maximum, self.policy.initial * 2**again))
        return not waiting.closed()


def _decide(outcome: Outcome, decision: str) -> None:
    outcome.decisions.append(decision)
    log.info("%s: %s", outcome.eni_id, decision)


__all__ = ["Patience", "Progress", "Waiting", "outlastable"]
