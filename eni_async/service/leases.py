"""A replica's leases (D27): claims, renewals and give-backs, what each lease allows, and fenced writes.

The service's work is leased per ENI in the journal, so that replicas on one shared journal never work one
ENI at once and a dead replica's work is adopted once its leases expire. ``Leases`` holds this process's
``Tenure`` of each ENI it claimed: the lease, and when the statement that last set it was sent, by this
process's monotonic clock (a lease runs on the database's clock from a moment after that, so the local view
is never later than the database's). A tenure is *held* while that view has at least a third of the lease
left (renewals come every third), *doubtful* past that (the journal did not answer: nothing new is sent, what
is seen is still written), and *lost* once the journal says another owner has it or the tenure ended. A
doubtful tenure renewed in time (its epoch unchanged: nobody else wrote) is held again.

``FencedRecorder`` is the batch's recorder for leased work: every write names the tenure's lease (the
journal's fence refuses it once the lease moved), a chunk is recorded as about to be sent only while the
tenure is held, a journal that cannot be reached is waited for (with backoff) rather than failing the item,
and a lost tenure drops the item (``LeaseLostError``), telling the engine; so does a write refused because
the item's release was cancelled (``WorkCancelledError``), which leaves the tenure held. Nothing here talks
to Tencent; times are real seconds, as the database's are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from eni_async.journal import Journal, JournalError, Lease, LeaseLostError, WorkCancelledError
from eni_async.outcomes import Item, Outcome

log = logging.getLogger("eni_async.service.leases")

# Renewals per lease: a tenure is renewed every ``lease_s / RENEWALS`` seconds and held while at least that
# much of it is left.
RENEWALS = 3
# A write the journal could not take is tried again after this, doubling up to the second value (seconds).
WRITE_BACKOFF_S = (0.1, 2.0)


def new_owner() -> str:
    """This process's name in the journal's leases: host, pid and a random part (a restart is a new owner)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


@dataclass(eq=False)
class Tenure:
    """This process's hold on one ENI's work: the lease, when it was last set (local monotonic seconds), and
    the journal keys of the items fed under it that have not left this process yet."""

    lease: Lease
    set_at: float
    lost: bool = False
    keys: set[int] = field(default_factory=set)

    @property
    def eni_id(self) -> str:
        return self.lease.eni_id


@dataclass
class LeaseCounts:
    """What ``/metrics`` exports about this replica's leases (counters since start, but ``held``)."""

    claimed: int = 0  # ENIs claimed while free
    adopted: int = 0  # ENIs claimed from an owner whose lease had expired
    adopted_releases: int = 0  # releases taken over part-done (a task to observe or a chunk in doubt)
    renewed: int = 0
    lost: int = 0  # tenures that ended because the lease moved or was not renewed in time
    given_back: int = 0
    journal_failures: int = 0  # claims and renewals the journal did not answer


class Leases:
    """This process's tenures on one journal; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        *,
        owner: str,
        lease_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.owner = owner
        self.lease_s = lease_s
        self.monotonic = monotonic
        self.held: dict[str, Tenure] = {}
        self.counts = LeaseCounts()
        self.journal_error: str | None = None  # why the last claim or renewal failed, until one succeeds

    def __repr__(self) -> str:
        return f"Leases({self.owner!r}, held={len(self.held)})"

    @property
    def interval(self) -> float:
        """Seconds between renewals."""
        return self.lease_s / RENEWALS

    def valid(self, tenure: Tenure) -> bool:
        """Whether ``tenure`` is held: not lost, with at least a renewal interval of its lease left."""
        return not tenure.lost and self.monotonic() < tenure.set_at + self.lease_s - self.interval

    def guard(self, tenure: Tenure | None) -> None:
        """Raise ``LeaseLostError`` unless ``tenure`` is held (asked before a submit)."""
        if tenure is None:
            raise LeaseLostError(Lease("?", self.owner, 0, 0.0))
        if not self.valid(tenure):
            raise LeaseLostError(tenure.lease)

    def lose(self, tenure: Tenure, why: str) -> None:
        """End ``tenure``: its work is another owner's (or nobody's until claimed)."""
        if tenure.lost:
            return
        tenure.lost = True
        self.counts.lost += 1
        if self.held.get(tenure.eni_id) is tenure:
            del self.held[tenure.eni_id]
        log.warning("lease on %s (epoch %d) lost: %s", tenure.eni_id, tenure.lease.epoch, why)

    def _failed(self, exc: JournalError) -> None:
        self.counts.journal_failures += 1
        if self.journal_error is None:
            log.warning("journal unreachable, no new work claimed until it answers: %s", exc.reason)
        self.journal_error = exc.reason

    def _answered(self) -> None:
        if self.journal_error is not None:
            log.warning("journal answers again; claiming work")
        self.journal_error = None

    async def claim(self, limit: int) -> list[Tenure]:
        """Claim up to ``limit`` ENIs; the new tenures. Raises ``JournalError``."""
        if limit <= 0:
            return []
        sent = self.monotonic()
        try:
            leases = await self.journal.claim(self.owner, lease_s=self.lease_s, limit=limit)
        except JournalError as exc:
            self._failed(exc)
            raise
        self._answered()
        tenures = []
        for lease in leases:
            if lease.adopted_from is None:
                self.counts.claimed += 1
            else:
                self.counts.adopted += 1
                log.info("adopted %s from %s (its lease expired)", lease.eni_id, lease.adopted_from)
            tenure = Tenure(lease, sent)
            old = self.held.get(lease.eni_id)
            if old is not None:  # our own earlier tenure, doubtful and now expired: claimed anew
                self.lose(old, "claimed again under a new epoch")
            self.held[lease.eni_id] = tenure
            tenures.append(tenure)
        return tenures

    async def renew(self) -> list[Tenure]:
        """Renew every tenure (doubtful ones too); return those found lost. Raises ``JournalError``, after
        ending the tenures whose lease ran out meanwhile (their work may be adopted by now)."""
        tenures = list(self.held.values())
        if not tenures:
            self._answered()
            return []
        sent = self.monotonic()
        try:
            renewed = await self.journal.renew_many([t.lease for t in tenures], lease_s=self.lease_s)
        except JournalError as exc:
            self._failed(exc)
            raise
        self._answered()
        found = {lease.eni_id: lease for lease in renewed}
        lost = []
        for tenure in tenures:
            lease = found.get(tenure.eni_id)
            if lease is None or lease.epoch != tenure.lease.epoch:
                if not tenure.lost:
                    self.lose(tenure, "another owner holds it")
                    lost.append(tenure)
                continue
            tenure.lease, tenure.set_at = lease, sent
            self.counts.renewed += 1
        return lost

    async def give_back(self, tenures: Collection[Tenure]) -> None:
        """End ``tenures`` early (one transaction) so that any replica may claim their ENIs at once.
        Raises ``JournalError``."""
        live = [t for t in tenures if not t.lost]
        if not live:
            return
        await self.journal.give_back_many([t.lease for t in live])
        for tenure in live:
            tenure.lost = True
            if self.held.get(tenure.eni_id) is tenure:
                del self.held[tenure.eni_id]
        self.counts.given_back += len(live)

    async def give_back_all(self) -> None:
        """Give back every tenure (when stopping): the work goes to other replicas without waiting."""
        try:
            await self.give_back(list(self.held.values()))
        except JournalError as exc:  # they expire by themselves
            log.info(
                "could not give the leases back (%s); they expire within %.0fs", exc.reason, self.lease_s
            )


Write = Callable[[Lease], Awaitable[None]]


class FencedRecorder:
    """The batch's ``Recorder`` for leased work; see the module docstring. ``tenure_of`` finds the tenure an
    item was fed under (by its journal key); ``dropped`` is told of every item this drops."""

    def __init__(
        self,
        journal: Journal,
        leases: Leases,
        *,
        tenure_of: Callable[[int], Tenure | None],
        dropped: Callable[[int], None],
    ) -> None:
        self.journal = journal
        self.leases = leases
        self.tenure_of = tenure_of
        self.dropped = dropped

    def __repr__(self) -> str:
        return f"FencedRecorder({self.journal!r})"

    def guard(self, item: Item) -> None:
        """Before every submit: ``LeaseLostError`` (the item is dropped) unless its tenure is held."""
        if item.key is None:
            return
        try:
            self.leases.guard(self.tenure_of(item.key))
        except LeaseLostError:
            self.dropped(item.key)
            raise

    async def write(self, key: int, write: Write, *, sending: bool = False) -> None:
        """Run ``write`` under the lease of the item ``key``: tried again while the journal cannot take it;
        ``sending`` (a chunk about to be sent) also waits while the tenure is doubtful. ``LeaseLostError``
        once the tenure is lost (the item is dropped)."""
        tenure = self.tenure_of(key)
        delay, longest = WRITE_BACKOFF_S
        while True:
            if tenure is None or tenure.lost:
                self.dropped(key)
                raise LeaseLostError(tenure.lease if tenure else Lease("?", self.leases.owner, 0, 0.0))
            if sending and not self.leases.valid(tenure):
                await asyncio.sleep(delay)  # until a renewal holds it again, or it is lost
                delay = min(longest, delay * 2)
                continue
            try:
                await write(tenure.lease)
                return
            except WorkCancelledError:  # the release was cancelled: its item goes, the lease holds
                self.dropped(key)
                raise
            except LeaseLostError:
                self.leases.lose(tenure, "a write was refused by its fence")
                self.dropped(key)
                raise
            except JournalError as exc:
                log.debug("journal write for item %d failed (%s); trying again", key, exc.reason)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)

    async def add(self, item: Item) -> int:
        return await self.journal.add(item)

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        if item.key is not None:
            key = item.key
            await self.write(
                key, lambda lease: self.journal.submitting(key, chunk, outcome, lease=lease), sending=True
            )

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        if item.key is not None:
            key = item.key
            await self.write(
                key,
                lambda lease: self.journal.submitted(key, task_id, request_id, chunk, outcome, lease=lease),
            )

    async def progressed(
        self, item: Item, outcome: Outcome, *, ended: Collection[str] = (), taken_back: bool = False
    ) -> None:
        if item.key is not None:
            key = item.key
            await self.write(
                key,
                lambda lease: self.journal.progressed(
                    key, outcome, lease=lease, ended=ended, taken_back=taken_back
                ),
            )

    async def finished(self, key: int, outcome: Outcome) -> None:
        await self.write(key, lambda lease: self.journal.finished(key, outcome, lease=lease))


__all__ = ["FencedRecorder", "LeaseCounts", "Leases", "Tenure", "new_owner"]
