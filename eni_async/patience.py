"""Waiting out outages for work that has a deadline: the release path's patience, in one place.

An item released with a deadline (the service's accepted work; the library's with ``release_deadline``)
is not failed by an outage: a call that failed transiently after its own ``RetryPolicy`` (the API
unreachable, 5xx, ``InternalError``, throttling; for a submit only when it surely had no effect) is tried
again on the ``OutagePolicy`` backoff until the deadline, then its error is raised and the release path's
cases decide as without one. While it waits, the last error is the outcome's error (journalled when its
code changes); one decision says when the wait began and one when it ended; a closed gate ends the wait
(``StopSubmitting``). ``Patience.on_outage`` hears of each wait's beginning (its error) and end (``None``).
Where something knows whether the API answers and probes it meanwhile (``Patience.api_down``: the service's
``ApiHealth``), a waiting item whose backoff is over does not try again while the API is known to be down:
it checks every ``PARKED_S`` (no call), so thousands of items waiting for one outage cost one probe's calls,
not one backoff each.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
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
# How often an item parked while the API is known to be down looks whether it is back (no call: a look at
# ``Patience.api_down``).
PARKED_S = 5.0


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
        # The error that made the API known not to answer, if it is so now (the service's ``ApiHealth``,
        # which probes it meanwhile).
        self.api_down: Callable[[], BaseException | None] | None = None
        self.watching: set[int] = set()  # items (by ``id(outcome)``) whose task is being watched now
        self.parked_s = PARKED_S  # how often a parked item looks (``ApiHealth`` sets it with ``api_down``)

    def __repr__(self) -> str:
        return f"Patience({self.policy!r}, waiting={len(self.items)})"

    def of(self, outcome: Outcome) -> Waiting | None:
        """The item's deadline and gate, if it has a deadline."""
        return self.items.get(id(outcome))

    def outlast(self, outcome: Outcome, what: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """``call()``, waited out on the backoff until the item's deadline when it has one (without one,
        ``call()`` itself: no frame between the caller and the call)."""
        waiting = self.items.get(id(outcome))
        if waiting is None:
            return call()
        return self._outlast(outcome, what, call, waiting)

    async def _outlast(
        self, outcome: Outcome, what: str, call: Callable[[], Awaitable[T]], waiting: Waiting
    ) -> T:
        began = self.clock.monotonic()
        before = outcome.error
        failures: list[BaseException] = []
        shown: list[str] = []  # the error code last journalled

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None:
                failed(exc, state.next_action.sleep if state.next_action else 0.0)

        def failed(exc: BaseException, wait: float, *, tried: bool = True) -> None:
            # ``tried``: this item's call failed; else another call's error says the API is down, and this
            # item has made no call yet.
            done = f"{what} failed" if tried else f"{what} not tried: the API is down"
            if not failures:
                _decide(outcome, f"{done} ({exc}): waiting for the API, until the release's deadline")
                if self.on_outage is not None:
                    self.on_outage(exc)
            failures.append(exc)
            if before is None:
                outcome.error = error_info(exc)
            log.log(
                logging.INFO if len(failures) > 1 else logging.WARNING,
                "%s: %s (%s); trying again in %.1fs (until the release's deadline)",
                outcome.eni_id, done, exc, wait,
            )  # fmt: skip

        async def attempt() -> T:
            if failures:
                code = error_code(failures[-1])
                if waiting.recorder is not None and shown[-1:] != [code]:
                    shown.append(code)
                    await waiting.recorder.progressed(waiting.item, outcome)
                await self._while_api_down(waiting)
                if waiting.closed():
                    raise StopSubmitting
            return await call()

        known = self.api_down() if self.api_down is not None else None
        if known is not None:  # the API is known down: no try before the probe says it is back
            failed(known, PARKED_S, tried=False)
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

    async def refused(self, outcome: Outcome, *, shown: bool) -> None:
        """The API refused the credentials: an item with a deadline and a recorder (the service's) waits
        for credentials it takes, so its outcome says why, journalled (the error, when ``shown``: it had
        none before; not while its task is watched: the watch journals what it sees). ``taken_again``
        clears it when the item goes on."""
        waiting = self.items.get(id(outcome))
        if waiting is None or waiting.recorder is None or not shown or id(outcome) in self.watching:
            return
        _decide(outcome, _refusal(outcome.error))
        await waiting.recorder.progressed(waiting.item, outcome)

    async def pause_before_watching_again(self, outcome: Outcome, again: int) -> bool:
        """Before the ``again``-th new watch of a task left unseen: wait on the backoff (never past the
        deadline); ``False`` when the item has no deadline left or its gate closed."""
        return await self._pause(outcome, again)

    async def pause_before_looking_again(self, outcome: Outcome, again: int) -> None:
        """Before the look that follows the ``again``-th ambiguous submit in a row after the first: wait on
        the backoff (never past the deadline); nothing for an item without a deadline."""
        await self._pause(outcome, again)

    def left(self, outcome: Outcome, limit: float) -> float:
        """``limit`` seconds, cut at the item's deadline when it has one (at least 0)."""
        waiting = self.items.get(id(outcome))
        if waiting is None:
            return limit
        return max(0.0, min(limit, waiting.deadline - self.clock.monotonic()))

    async def _pause(self, outcome: Outcome, again: int) -> bool:
        waiting = self.items.get(id(outcome))
        if waiting is None:
            return False
        left = waiting.deadline - self.clock.monotonic()
        if left <= 0 or waiting.closed():
            return False
        await self.clock.sleep(min(left, self.policy.maximum, self.policy.initial * 2 ** min(again, 32)))
        await self._while_api_down(waiting)
        return not waiting.closed()

    async def _while_api_down(self, waiting: Waiting) -> None:
        """While the API is known not to answer, wait (checking every ``PARKED_S``, until the deadline or
        the gate closes) rather than try: one probe, not every waiting item, finds out when it is back."""
        down = self.api_down
        if down is None:
            return
        while down() is not None and not waiting.closed():
            left = waiting.deadline - self.clock.monotonic()
            if left <= 0:
                return
            await self.clock.sleep(min(left, self.parked_s))


def taken_again(outcome: Outcome) -> None:
    """An item resumed after waiting for credentials (``Patience.refused``) goes on: their refusal is no
    longer its error."""
    if outcome.error is not None and outcome.decisions[-1:] == [_refusal(outcome.error)]:
        outcome.error = None
        _decide(outcome, "the credentials work again: going on")


def _refusal(error: Mapping[str, str] | None) -> str:
    code = (error or {}).get("code", "?")
    return f"the API refused the credentials ({code}): waiting until it takes them (read again from their source)"


def _decide(outcome: Outcome, decision: str) -> None:
    outcome.decisions.append(decision)
    log.info("%s: %s", outcome.eni_id, decision)


__all__ = ["PARKED_S", "Patience", "Progress", "Waiting", "outlastable", "taken_again"]
