"""One tracker per client: every submitted task is watched here until each of its IPs has a known fate.

A task is handed over once the server has accepted it (``Tracker.track``) and is owned here until every IP
is settled or its deadline passes; whoever awaits it gets a ``ChunkFate``, IP by IP, each saying how it was
established. The fate rules are the watch table's (``watch``): an IP gone from its ENI in a description sent
after acceptance is released; one still listed is not released only after a FAILED reading or, on API 3.0
with the task unreadable, in a description listing none of the task's IPs as ``DELETING``; a SUCCESS
reading releases every IP (D12); nothing is guessed, so an IP whose fate was not observed by the deadline is
``unknown``. How a fate is confirmed is a strategy (``confirm``): ``ByEni`` watches ENIs and asks tasks only
where the ENI cannot settle them, ``ByTask`` polls each task. The package's modules, each with one job:

- ``watch``: the life of one watched task as a table (pure);
- ``pacing``: when to look and when to ask, as policy values (pure);
- ``schedule``: agendas of what is due, and the loop that wakes for it;
- ``describing``: describe calls shared as widely as the dialect allows, a missing ENI found by bisection,
  and ``describe`` for the look before each item's first submit (coalesced);
- ``looks``: the engine of ``confirm = "eni"``;
- ``confirm``: the strategies;
- ``sizing``: how many releases to keep in flight (``releases_in_flight``, read by the batch).

Nothing here reads the dialect's name, only what it can do (``Capabilities``), and nothing imports the
client: ``eni_async.calls.Calls`` is what the tracker needs of one.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from eni_async.clock import SystemClock
from eni_async.errors import ConfigError
from eni_async.models import ChunkFate, EniInfo
from eni_async.policy import LookPolicy
from eni_async.tracker.confirm import CONFIRMATIONS, Confirmation, Setup
from eni_async.tracker.describing import Describer
from eni_async.tracker.pacing import LookPacing, Packing
from eni_async.tracker.sizing import InFlight, InFlightPolicy

if TYPE_CHECKING:
    from eni_async.calls import Calls


class Tracker:
    """Watches every task a client submits; see the module docstring for the rules.

    ``confirm`` names the strategy (``CONFIRMATIONS``); ``pacing``, ``packing``, ``in_flight`` and ``looks``
    are the schedules it follows (the defaults are the tuned ones; ``looks`` pauses ``retry.maximum``).
    """

    def __init__(
        self,
        client: Calls,
        *,
        confirm: str = "eni",
        rng: random.Random | None = None,
        pacing: LookPacing | None = None,
        packing: Packing | None = None,
        in_flight: InFlightPolicy | None = None,
        looks: LookPolicy | None = None,
    ) -> None:
        strategy = CONFIRMATIONS.get(confirm)
        if strategy is None:
            raise ConfigError("confirm", confirm, f"must be one of {', '.join(CONFIRMATIONS)}")
        self._client = client
        self.confirm = confirm
        self.pacing = pacing if pacing is not None else LookPacing()
        packing = packing if packing is not None else Packing()
        self._describer = Describer(client, packing)
        self._strategy: Confirmation = strategy(
            Setup(
                client,
                self._describer,
                self.pacing,
                packing,
                # The n-th pause between describe rounds is n x the longest retry wait, as before.
                looks if looks is not None else LookPolicy(pause=client.retry.maximum),
                rng if rng is not None else random.Random(),
            )
        )
        self._listeners: list[Callable[[], None]] = []
        self._in_flight = InFlight(
            client,
            policy=in_flight if in_flight is not None else InFlightPolicy(),
            pacing=self.pacing,
            # The process's CPU is measured against real time only: against a FakeClock's it means nothing.
            cpu=time.process_time if isinstance(client.clock, SystemClock) else None,
        )

    def __repr__(self) -> str:
        return f"Tracker(confirm={self.confirm!r}, watching={self._strategy.watching})"

    @property
    def describe_calls(self) -> int:
        """DescribeNetworkInterfaces calls sent so far (for benchmarks and logs)."""
        return self._describer.made

    @property
    def task_queries(self) -> int:
        """DescribeVpcTaskResult calls sent so far (for benchmarks and logs)."""
        return self._strategy.queries

    def track(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: Sequence[str],
        *,
        submitted_at: float | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, ChunkFate]:
        """Watch an accepted task from now on; the coroutine returned waits until every IP is settled (or its
        deadline passes) and returns their fates (the strategy's own: no frame in between).

        ``submitted_at`` is when the submit was sent (``Clock.monotonic``; default: when the client sent it,
        else now); ``timeout`` defaults to ``settings.poll.timeout``. Raises only ``AuthError`` (every later
        call would fail the same way).
        """
        client = self._client
        limit = client.poll.timeout if timeout is None else timeout
        # The submit's own send time when this client sent it: waits for the budget or a mutex before it are
        # not the task's latency (they would time first looks early and inflate the latencies learnt).
        sent = client.sent_at(task_id)
        if sent is None:
            sent = client.clock.monotonic() if submitted_at is None else submitted_at
        for listener in tuple(self._listeners):
            listener()
        return self._strategy.track(vpc_id, eni_id, task_id, tuple(ips), sent, limit)

    def describe(self, eni_id: str) -> Coroutine[Any, Any, EniInfo | None]:
        """Describe one ENI (``None``: not found), packed with others asked for within ``Packing.coalesce``.

        Where the dialect takes one id per call this is one call; on API 3.0 up to 100 ENIs share a call, so
        the look every item takes before its first submit costs a hundredth of a call. A call that fails for
        one ENI is split (``describing``): an ENI the API says does not exist is ``None``, as one left out of
        an answer is. Raises the ENI's own error (after the call's retries). The awaitable returned is the
        describer's own (no frame between).
        """
        return self._describer.describe(eni_id)

    def releases_in_flight(self) -> int:
        """How many releases to keep in flight so that the budgets, not the count, set the pace (``sizing``)."""
        recent = self._in_flight.recent()
        if recent is not None:
            return recent
        return self._in_flight.target(self._strategy.start_rate(self._client.budgets))

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (no arguments, at once, never awaited) on every task handed over to ``track``:
        the in-flight target may have grown meanwhile (a batch grows its workers then). Returns the
        function that stops it."""
        self._listeners.append(callback)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return stop

    async def close(self) -> None:
        """Stop watching: every task still watched ends with its pending IPs ``unknown``."""
        await self._strategy.close()
        await self._describer.close()


__all__ = ["Tracker"]
