"""What a replica holds: the ENIs it leased from the journal and the releases it fed from them to its batch.

The claimer takes the ENIs whose releases wait longest (``Leases.claim``), as many as ``capacity()`` says,
reads their unfinished releases and the journal's plans for them (as ``resume`` does: tasks to poll, a chunk
in doubt) and puts each on the batch's queue as ``Work``, marked running in one statement fenced by this
owner's leases; a release whose journal item already finished (its replica died between the two commits) is
finished from the journal instead. Once an ENI's work here has ended, the claimer refills it from the
releases that arrived meanwhile or gives it back (in one statement for all). An ENI whose release is still
in the batch under an earlier, lost tenure waits until that leaves (dropped at its next write or submit).
The renewer renews every tenure each third of ``lease_s`` and first asks the journal to ``hold``: on a
shared journal the writer's lock is still held, on SQLite the file is still the one opened (one deleted or
replaced refuses every write from then on). Work is woken, not polled: new releases (``new_work``, here or
notified from another replica) or an ENI done wake the claimer; it claims only when that may find something (new releases, a last
claim that was full, or ``CLAIM_TICK_S`` since the last: expired leases are found so). Nothing here talks to Tencent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from eni_async.journal import Journal, JournalError, Resumed
from eni_async.journal.connector import IN_LIST
from eni_async.outcomes import Item
from eni_async.service.leases import Leases, Tenure
from eni_async.service.registry import Registry, Release

# The claimer works when woken (new work, an ENI done) but at most every CLAIM_GAP_S, and every
# CLAIM_TICK_S at least (expired leases are found so); after a journal failure it waits CLAIM_RETRY_S.
CLAIM_GAP_S, CLAIM_TICK_S, CLAIM_RETRY_S = 0.1, 1.0, 1.0
FILL_BATCH = 500  # ENIs whose releases are read (and marked running) in one go


@dataclass(eq=False)
class Work:
    """One release fed to the batch under a tenure, until it leaves this process."""

    release_id: str
    key: int
    tenure: Tenure
    entry: Item | Resumed
    created_at: float = 0.0  # when the release was accepted (Unix time): its deadline counts from there


class Holdings:
    """This replica's leased ENIs and fed releases; see the module docstring. ``settled`` is told of a
    release finished from the journal."""

    def __init__(
        self,
        journal: Journal,
        registry: Registry,
        leases: Leases,
        *,
        capacity: Callable[[], int],
        aborted: Callable[[], bool],
        stopping: Callable[[], bool],
        settled: Callable[[str], None],
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.leases = leases
        self.capacity = capacity
        self.aborted = aborted
        self.stopping = stopping
        self.settled = settled
        self.queue: asyncio.Queue[Work | None] = asyncio.Queue()
        self.work: dict[int, Work] = {}
        self.wake = asyncio.Event()
        # Whether a claim may find work: new releases were heard of, the last claim was full, or it was
        # CLAIM_TICK_S ago (an ENI done here only needs its own refill, not a claim).
        self._worth_claiming = True
        self._claimed_at = -CLAIM_TICK_S

    def __repr__(self) -> str:
        return f"Holdings(enis={len(self.leases.held)}, releases={len(self.work)})"

    def new_work(self) -> None:
        """Releases were created (here or, as a notification says, elsewhere): worth a claim."""
        self._worth_claiming = True
        self.wake.set()

    async def claimer(self) -> None:
        while not self.stopping():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLAIM_TICK_S):
                    await self.wake.wait()
            self.wake.clear()
            if time.monotonic() - self._claimed_at >= CLAIM_TICK_S:  # leases may have expired meanwhile
                self._worth_claiming = True
            try:
                await self.round()
            except JournalError:  # said once by the leases; the tick tries again
                await asyncio.sleep(CLAIM_RETRY_S)
            await asyncio.sleep(CLAIM_GAP_S)

    async def round(self) -> None:
        """Refill or give back the ENIs whose work here has ended, then claim more while there is room."""
        if self.stopping():
            return
        idle = [t for t in self.leases.held.values() if not t.keys]
        if idle:
            await self._fill(idle)
        if self.aborted():
            return
        room = self.capacity() - len(self.leases.held)
        if room > 0 and self._worth_claiming:
            self._worth_claiming, self._claimed_at = False, time.monotonic()
            try:
                claimed = await self.leases.claim(room)
            except JournalError:
                self._worth_claiming = True
                raise
            self._worth_claiming = len(claimed) == min(room, IN_LIST)  # a full claim: more may wait
            if claimed:
                await self._fill(claimed)

    async def _fill(self, tenures: list[Tenure]) -> None:
        """Feed the unfinished releases of the tenures' ENIs that are not already here (marked running in one
        statement, fenced by this owner's leases); give back those that end up with nothing to do."""
        for start in range(0, len(tenures), FILL_BATCH):
            await self._fill_some(tenures[start : start + FILL_BATCH])

    async def _fill_some(self, tenures: list[Tenure]) -> None:
        by_eni = {t.eni_id: t for t in tenures}
        waiting = [] if self.aborted() else await self.registry.unfinished(eni_ids=list(by_eni))
        waiting = [r for r in waiting if r.item_key not in self.work]
        plans: dict[int, Resumed] = {}
        if waiting:
            wanted = {r.item_key for r in waiting}
            async for found in self.journal.unfinished(eni_ids={r.eni_id for r in waiting}):
                if found.item.key in wanted:
                    plans[found.item.key] = found
        fed: list[tuple[Release, Tenure, Item | Resumed]] = []
        for release in waiting:
            tenure = by_eni[release.eni_id]
            resumed = plans.get(release.item_key)
            if resumed is None:
                if not await self._settled_in_journal(release, tenure):
                    fed.append((release, tenure, release.item))
                continue
            if tenure.lease.adopted_from is not None and (resumed.plan.tasks or resumed.plan.in_doubt):
                self.leases.counts.adopted_releases += 1
            fed.append((release, tenure, resumed))
        if fed:
            await self.registry.started_many([r.id for r, _, _ in fed], owner=self.leases.owner)
        for release, tenure, entry in fed:
            self.feed(release, tenure, entry)
        live = {w.tenure.eni_id for w in self.work.values()}
        # An ENI whose release is still here under an earlier, lost tenure waits for that to leave.
        await self.leases.give_back([t for t in tenures if not t.keys and t.eni_id not in live])

    async def _settled_in_journal(self, release: Release, tenure: Tenure) -> bool:
        """A release whose journal item finished (a replica died between the two commits): finished from
        the journal's outcome, never run again."""
        found = await self.journal.item(release.item_key)
        if found is None or found[0] != "finished" or found[1] is None:
            return False
        outcome = found[1]
        await self.registry.finish(release.id, outcome, lease=tenure.lease)
        self.settled(release.id)
        return True

    def feed(self, release: Release, tenure: Tenure, entry: Item | Resumed) -> None:
        work = Work(release.id, release.item_key, tenure, entry, release.created_at)
        self.work[work.key] = work
        tenure.keys.add(work.key)
        self.queue.put_nowait(work)

    def tenure_of(self, key: int) -> Tenure | None:
        work = self.work.get(key)
        return work.tenure if work is not None else None

    def dropped(self, key: int) -> None:
        """The batch drops the item ``key``: its tenure was lost."""
        work = self.work.get(key)
        if work is not None:
            self.leave(work)

    def leave(self, work: Work) -> None:
        """``work`` is no longer this process's: its ENI may take new work (the claimer sees to it)."""
        if self.work.get(work.key) is work:
            del self.work[work.key]
        work.tenure.keys.discard(work.key)
        if not work.tenure.keys or work.tenure.lost:
            self.wake.set()

    async def renewer(self) -> None:
        while True:
            await asyncio.sleep(self.leases.interval)
            try:
                await self.journal.hold()
                await self.leases.renew()
            except JournalError:  # said once by the leases; the next interval tries again
                pass


__all__ = ["Holdings", "Work"]
