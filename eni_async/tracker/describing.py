"""Describing ENIs for the tracker: calls shared as widely as the dialect allows, one missing ENI never failing
the others, and the tracker's share of the describe budget.

``by_ids`` describes ENIs by id, as many per call as the dialect takes. A call that fails for good (not
transiently) is split in halves, and each half asked again, down to the ENIs that fail alone: one ENI refused
or missing costs a few calls, never one per ENI. An ENI is *not found* when it is missing from an answer
(Tencent may leave an unknown id out) or when a call naming it alone fails with ``ResourceNotFound`` (API 3.0
documents it; ``InvalidNetworkInterface.NotFound`` on API 2.0), or with a plain parameter error naming the id
(``InvalidParameterValue``; API 2.0 ``InvalidParameter``), as docs/protocol.md D31 decides. A transient failure says nothing about one ENI: every ENI of the call gets it, and
they stay packed. ``by_vpc`` reads a VPC's pages (API 2.0) and describes by id what the pages missed.
``describe`` is what other code asks for (the look before each item's first submit): descriptions asked
within ``Packing.coalesce`` seconds share calls. Only ``AuthError`` (and a bug) escapes ``by_ids`` and
``by_vpc``; ``describe`` raises an ENI's own error.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from eni_async.errors import AuthError, EniAsyncError, InvalidParameterError, NotFoundError, VpcNotFoundError
from eni_async.models import EniInfo
from eni_async.tracker.pacing import Packing

if TYPE_CHECKING:
    from eni_async.calls import Calls

# What one description by id found: the ENI, ``None`` (not found), or the error that kept it from view.
Reading = EniInfo | None | EniAsyncError
Askers = list[asyncio.Future[EniInfo | None]]


# Parameter errors that mean "no such ENI" when they name the id asked for (docs/protocol.md D31); their
# sub-codes (``.Malformed``, ``.LimitExceeded``, ...) say something else.
_PARAMETER_CODES = frozenset({"InvalidParameterValue", "InvalidParameter"})


def names_missing(exc: EniAsyncError, eni_id: str) -> bool:
    """Whether ``exc``, the answer to a describe naming ``eni_id`` alone, says that ENI does not exist."""
    if isinstance(exc, NotFoundError) and not isinstance(exc, VpcNotFoundError):
        return True
    return isinstance(exc, InvalidParameterError) and exc.code in _PARAMETER_CODES and eni_id in str(exc)


class Describer:
    """The tracker's describe calls: by id with bisection, by VPC page, coalesced on request; and the room
    left in the tracker's share of the describe budget (calls in flight, looks included)."""

    def __init__(self, calls: Calls, packing: Packing) -> None:
        self._calls = calls
        self._packing = packing
        self.per_call = calls.capabilities.describe_ids_per_call
        self.page = calls.capabilities.describe_page_limit
        self.in_flight = 0
        self.made = 0  # describe calls sent (for benchmarks and logs)
        self.on_free: Callable[[], None] | None = None  # told whenever a call in flight ends
        self._vpc_sizes: dict[str, int] = {}
        self._wanted: dict[str, Askers] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._freed: asyncio.Event | None = None
        self._calls_in_flight: set[asyncio.Task[None]] = set()

    # -- the tracker's share of the budget -----------------------------------------------------------

    def room(self) -> int:
        """Describe calls that may start now within the tracker's share of the budget."""
        return (
            self._packing.describe_room(self._calls.budgets["DescribeNetworkInterfaces"].rate)
            - self.in_flight
        )

    def taken(self) -> None:
        """A call (a look, or a group of asked-for descriptions) starts."""
        self.in_flight += 1

    def freed(self) -> None:
        """A call started by ``taken`` ended."""
        self.in_flight -= 1
        if self._freed is not None:
            self._freed.set()
        if self.on_free is not None:
            self.on_free()

    def vpc_size(self, vpc_id: str) -> int | None:
        """How many ENIs the VPC had when a page of it was last read."""
        return self._vpc_sizes.get(vpc_id)

    # -- describing -----------------------------------------------------------------------------------

    async def by_ids(self, eni_ids: Sequence[str]) -> dict[str, Reading]:
        """Describe ``eni_ids`` (at most ``per_call``): each one's reading (see the module docstring)."""
        ids = list(dict.fromkeys(eni_ids))
        try:
            self.made += 1
            found = await self._calls.describe_many(ids)
        except AuthError:
            raise
        except EniAsyncError as exc:
            if exc.transient:
                return dict.fromkeys(ids, exc)
            if len(ids) == 1:
                return {ids[0]: None if names_missing(exc, ids[0]) else exc}
            half = len(ids) // 2
            left, right = await asyncio.gather(self.by_ids(ids[:half]), self.by_ids(ids[half:]))
            return left | right
        return {eni: found.get(eni) for eni in ids}

    async def by_vpc(self, vpc_id: str, eni_ids: Sequence[str]) -> dict[str, Reading]:
        """Read the VPC's first page, then the rest of its pages or the wanted ENIs by id, whichever costs
        fewer calls: the reading of every wanted ENI and of every other ENI the pages showed."""
        self.made += 1
        try:
            page, total = await self._calls.describe_vpc(vpc_id, offset=0, limit=self.page)
        except AuthError:
            raise
        except EniAsyncError as exc:
            if exc.transient:
                return dict.fromkeys(eni_ids, exc)
            return await self._each(eni_ids)  # e.g. the VPC refused: the ENIs may still be described by id
        self._vpc_sizes[vpc_id] = total
        seen: dict[str, Reading] = {info.eni_id: info for info in page}
        missing = [eni for eni in eni_ids if eni not in seen]
        offsets = range(len(page), total, self.page) if page else range(0)
        if missing and len(offsets) <= len(missing):
            self.made += len(offsets)
            try:
                pages = await asyncio.gather(
                    *(self._calls.describe_vpc(vpc_id, offset=o, limit=self.page) for o in offsets)
                )
            except AuthError:
                raise
            except EniAsyncError as exc:
                return seen | dict.fromkeys(missing, exc)
            seen.update((info.eni_id, info) for more, _ in pages for info in more)
            missing = [eni for eni in eni_ids if eni not in seen]
        # Pages shift while ENIs come and go: what they did not show is asked for by id.
        return seen | (await self._each(missing) if missing else {})

    async def _each(self, eni_ids: Sequence[str]) -> dict[str, Reading]:
        groups = [eni_ids[i : i + self.per_call] for i in range(0, len(eni_ids), self.per_call)]
        found: dict[str, Reading] = {}
        for part in await asyncio.gather(*(self.by_ids(group) for group in groups)):
            found.update(part)
        return found

    async def describe(self, eni_id: str) -> EniInfo | None:
        """Describe one ENI (``None``: not found), in a call shared with others asked for meanwhile."""
        if self.per_call <= 1:
            reading = (await self.by_ids([eni_id]))[eni_id]
            if isinstance(reading, EniAsyncError):
                raise reading
            return reading
        future: asyncio.Future[EniInfo | None] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(eni_id, []).append(future)
        if self._flusher is None or self._flusher.done():
            self._freed = asyncio.Event()
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="eni_async describes")
        return await future

    async def _flush(self) -> None:
        """Send what was asked for: a call as soon as one is full, the rest after the coalescing window."""
        try:
            await self._send()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: every asker learns of it rather than waiting forever
            self.fail_waiting(exc)
            raise

    async def _send(self) -> None:
        assert self._freed is not None
        clock = self._calls.clock
        started = clock.monotonic()
        while self._wanted:
            full = len(self._wanted) >= self.per_call
            wait = started + self._packing.coalesce - clock.monotonic()
            if not full and wait > 1e-9:
                await clock.sleep(wait)
                continue
            if self.room() <= 0:
                self._freed.clear()
                await self._freed.wait()
                continue
            group = {
                eni: self._wanted.pop(eni) for eni in itertools.islice(list(self._wanted), self.per_call)
            }
            self.taken()
            call = asyncio.get_running_loop().create_task(self._answer(group))
            self._calls_in_flight.add(call)
            call.add_done_callback(self._calls_in_flight.discard)
            started = clock.monotonic()

    async def _answer(self, group: dict[str, Askers]) -> None:
        try:
            readings = await self.by_ids(list(group))
        except BaseException as exc:  # every asker learns of it
            # A call is cancelled only by ``close``: its askers were not cancelled, the client was closed.
            _fail(group, closed() if isinstance(exc, asyncio.CancelledError) else exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for eni, futures in group.items():
                reading = readings[eni]
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(reading, EniAsyncError):
                        future.set_exception(reading)
                    else:
                        future.set_result(reading)
        finally:
            self.freed()

    def fail_waiting(self, exc: BaseException) -> None:
        """Fail every description asked for and not yet sent (a bug stopped the tracker)."""
        _fail(self._wanted, exc)
        self._wanted.clear()

    async def close(self) -> None:
        """Fail what was asked for (the client is closing) and stop every call in flight."""
        self.fail_waiting(closed())
        tasks = [t for t in (self._flusher, *self._calls_in_flight) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flusher = None


def closed() -> EniAsyncError:
    """The error an asker gets when the client closes before its ENI was described."""
    return EniAsyncError("the client was closed before the ENI was described")


def _fail(group: dict[str, Askers], exc: BaseException) -> None:
    for futures in group.values():
        for future in futures:
            if not future.done():
                future.set_exception(exc)


__all__ = ["Describer", "Reading", "closed", "names_missing"]
