"""The service's engine: accepted releases run through the client's own batch machinery, under leases.

One ``Batch`` (``EniClient.unassign_many``) runs for the life of the service, fed from a queue: it gives
bounded concurrency, one task per ENI at a time, the reconciling release path and the journal, exactly as
``batch`` and ``resume`` use them. The engine adds the release registry and the leases (D27) that let any
number of replicas share one journal: its ``Holdings`` claim the ENIs whose releases wait longest (as many
as the batch keeps busy, twice over) and feed their unfinished releases as ``resume`` does (submitted tasks
polled, never resubmitted; a chunk caught mid-submit reconciled against the ENI first; pending IPs run),
give an ENI back once its releases end and no new one waits, and renew what they hold. An ENI whose lease
expired (its replica died or lost the journal) is claimed like a free one: that is the adoption. Every
write of leased work is fenced (``FencedRecorder``); a replica that lost a lease drops that work without a
write. Each journal item carries its journal key (``Item.key``), which the batch copies into the item's
outcome (``Outcome.key``): that is how an outcome finds its release.

Every replica answers for every release: reads and ``?wait=`` go to the journal, and a wait ends when the
release ends wherever it ran. Waits are woken by the replica that ended the release, or, for another
replica's, by the journal's notification (PostgreSQL LISTEN/NOTIFY, one connection per replica), and a
sweep every ``WAIT_SWEEP_S`` seconds reads the waited releases in one statement in case a notification was
missed (the listening connection was down). Polling alone would cost a read per waiter per interval, and
notifications alone could be missed. A replica whose journal does not answer claims nothing, answers
``/readyz`` 503, waits for it in every write (nothing new is sent while its leases are in doubt) and goes
on when it answers. An SQLite journal is checked at every renewal, each third of ``lease_s`` (``Holdings``:
``Journal.hold``, the file is still the one opened), so that one deleted or replaced under the service is
found within seconds even when nothing is written: every write is refused from then on, and ``/readyz``
answers 503 with the reason. A write the journal refuses (a full disk) answers the caller 503 with the
reason and creates nothing; the engine's own writes wait and are tried again (``FencedRecorder``), so the
service goes on by itself once there is room, with nothing it observed lost. ``stop`` takes no more work,
lets in-flight items finish within the grace period, cancels the rest and gives its leases back, so that
other replicas (or the next start) take over at once.

Each release has until ``service_release_deadline`` seconds after its acceptance: the release path waits
out outages until then (``release``), and ``/readyz`` says the API is unreachable while one is waited out.
The credentials are checked at start with one cheap call. Credentials the API refuses stop the batch: the
releases it cut short go back to ``pending`` and their leases are given back; no new one is accepted, and
``/readyz`` says why. Meanwhile the credentials are read again from their source (``reload``: the chain
that found them, so a rewritten file, a renewed role or new variables count) on the ``CREDENTIALS_WAIT``
backoff and tried with the same cheap call; once accepted, a new batch takes the work up by itself.
Nothing fails for refused credentials. A cancel is the journal's (``Releases.cancel``: decided against a
submit by the database, whichever replica holds the release); the batch drops a cancelled item at its next
write. Every ``PRUNE_EVERY_S`` a retention pass prunes finished releases and expired idempotency keys
(windows on the client's clock, like the releases' timestamps). Nothing here parses HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from eni_async.batch import Batch, BatchStats
from eni_async.clock import Clock, SystemClock
from eni_async.errors import ConfigError
from eni_async.journal import Cancellation, Journal, JournalError, LeaseLostError, ReleaseFilter, Resumed
from eni_async.journal.seam import CONNECTED, RELEASE_CHANNEL, WORK_CHANNEL
from eni_async.outcomes import Item, Outcome
from eni_async.service.health import ApiHealth
from eni_async.service.holdings import Holdings
from eni_async.service.leases import FencedRecorder, Leases, new_owner
from eni_async.service.registry import Registry, Release, final_status

if TYPE_CHECKING:
    from eni_async.client import EniClient
    from eni_async.credentials import CredentialProvider

log = logging.getLogger("eni_async.service")

Request = tuple[str, str, tuple[str, ...]]
# Seconds past the grace period a stopping batch may take to wind down before it is cancelled.
STOP_MARGIN_S = 5.0
# ENIs held at least, whatever the batch's target (so that a cold start claims work at once).
MIN_HELD = 16
WAIT_SWEEP_S = 5.0
# The global count of unfinished releases (backpressure, /readyz) is read again when older than this.
COUNT_TTL_S = 0.5
READY_TIMEOUT_S = 2.0  # a readiness probe's write to the journal, at most
START_CHECK_S = 5.0  # the start waits this long at most for the credentials' check (it goes on after)
PRUNE_EVERY_S = 60.0  # between retention passes (service_retention, service_idempotency_ttl)


class NotAcceptingError(Exception):
    """The engine is stopping (or not started): no new releases."""


class BackpressureError(Exception):
    """Too many releases unfinished; ``retry_after`` is a hint in seconds."""

    def __init__(self, unfinished: int, limit: int, retry_after: int) -> None:
        self.unfinished = unfinished
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"{unfinished} releases unfinished (limit {limit}); try again later")


class Engine:
    """Accepts releases and runs them; see the module docstring."""

    def __init__(
        self,
        client: EniClient,
        journal: Journal,
        *,
        max_unfinished: int,
        reload: Callable[[], Awaitable[CredentialProvider]] | None = None,
        retention_clock: Clock | None = None,
    ) -> None:
        self.client = client
        # Real time by default, as the other loops': a fake clock that drives itself would run free.
        self.retention_clock: Clock = retention_clock or SystemClock()
        self.journal = journal
        keep, ttl = client.settings.service_retention, client.settings.service_idempotency_ttl
        self.registry = Registry(journal, now=client.clock.time, retention=keep, idempotency_ttl=ttl)
        self.max_unfinished = max_unfinished
        self.leases = Leases(journal, owner=new_owner(), lease_s=client.settings.lease_s)
        self.holdings = Holdings(
            journal,
            self.registry,
            self.leases,
            capacity=self._capacity,
            aborted=self._aborted,
            stopping=lambda: self._stopping,
            settled=self._wake,
        )
        h = self.holdings
        self.recorder = FencedRecorder(journal, self.leases, tenure_of=h.tenure_of, dropped=h.dropped)
        self.accepting = False
        self.failure: BaseException | None = None  # a bug ended the batch; the service is not ready
        # ``reload``: the credentials' source, read again while the API refuses them.
        wait = client.settings.service_outage_wait
        self.api = ApiHealth(client, reload=reload, resume=self._restart, first_wait=wait)
        self._waiters: dict[str, asyncio.Event] = {}
        self._count = (-COUNT_TTL_S, 0)  # (read at, unfinished releases) of the whole journal
        self._stopping = False
        self._batch: Batch | None = None
        self._runner: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Engine({self.leases.owner!r}, unfinished={self.unfinished}, accepting={self.accepting})"

    @property
    def unfinished(self) -> int:
        """Releases accepted and not yet finished, by every replica (as last read)."""
        return self._count[1]

    @property
    def api_state(self) -> str:
        """The API as this replica sees it, in one line (``health``)."""
        return self.api.state

    @property
    def stats(self) -> BatchStats | None:
        """The batch's live counters (``dropped``: work whose lease moved), once it runs."""
        return self._batch.stats if self._batch is not None else None

    async def start(self) -> int:
        """Start: free the leases of a journal only this process writes (an earlier run's), take the first
        work, and run; return how many releases are unfinished in the journal.

        Unfinished releases are only resumed in the region they were submitted to: another region than the
        journal recorded is a ``ConfigError`` naming it."""
        unfinished = await self._unfinished_now(fresh=True)
        await self._check_target(bool(unfinished))
        if not self.journal.shared:
            await self.journal.clear_leases()
        await self.holdings.round()
        self._runner = asyncio.create_task(self._run())
        self._loops = [
            asyncio.create_task(self.holdings.claimer()),
            asyncio.create_task(self.holdings.renewer()),
            asyncio.create_task(self.registry.pruner(self.retention_clock, PRUNE_EVERY_S)),
        ]
        # The credentials' check: awaited a moment, so that a service that starts well starts ready.
        check = asyncio.create_task(self.api.first_check())
        self._loops.append(check)
        await asyncio.wait({check}, timeout=START_CHECK_S)
        if self.journal.shared:
            self._loops += [
                asyncio.create_task(self.journal.listen(self._heard)),
                asyncio.create_task(self._sweeper()),
            ]
        self.accepting = True
        if unfinished:
            log.info("%d unfinished release(s) in %s", unfinished, self.journal.where)
        return unfinished

    async def _check_target(self, unfinished: bool) -> None:
        settings = self.client.settings
        # Tasks belong to a region: polling them in another would find none. Endpoints may change (a
        # regional endpoint, a proxy) and either dialect reads the same tasks.
        target = {"region": settings.region}
        recorded = await self.journal.meta()
        for key, value in target.items():
            before = recorded.get(f"service.{key}")
            if unfinished and before is not None and before != value:
                raise ConfigError(
                    f"--{key}",
                    value,
                    f"the journal's unfinished releases were submitted with {key} {before!r}; "
                    "serve them with that, or use a new journal",
                )
        if any(recorded.get(f"service.{key}") != value for key, value in target.items()):
            await self.journal.set_meta({f"service.{key}": value for key, value in target.items()})

    # -- accepting and answering ---------------------------------------------------------------------------

    async def submit(
        self, requests: Sequence[Request], *, idempotency_key: str | None = None, body_hash: str = ""
    ) -> tuple[list[Release], bool]:
        """Accept checked requests; return the releases and whether they are new (``False``: an
        idempotent replay). Raises ``NotAcceptingError``, ``BackpressureError`` or
        ``IdempotencyConflictError``. Identical requests cannot both create, on this replica or any other:
        the journal's unique key on the idempotency key decides."""
        if not self.accepting:
            raise NotAcceptingError("the service is shutting down")
        if self.api.refused:
            raise NotAcceptingError(
                f"the API refuses the service's credentials ({self.api.state.partition(': ')[2]}); they are "
                "read again from their source until it accepts them, then the work goes on"
            )
        self._journal_answers()
        if idempotency_key is not None:
            earlier = await self.registry.replay(idempotency_key, body_hash)
            if earlier is not None:
                return earlier, False
        unfinished = await self._unfinished_now()
        if unfinished + len(requests) > self.max_unfinished:
            raise BackpressureError(unfinished, self.max_unfinished, retry_after=self._retry_after())
        releases, created = await self.registry.create(
            requests, idempotency_key=idempotency_key, body_hash=body_hash
        )
        if created:
            read_at, count = self._count
            self._count = (read_at, count + len(releases))
            self.holdings.new_work()
        return releases, created

    def _journal_answers(self) -> None:
        """Raise ``JournalError`` while a shared journal is known not to answer (the last claim or renewal
        failed, at most a second ago): callers hear so at once rather than after the pool's wait. (An SQLite
        journal that takes no writes may still be read.)"""
        if self.journal.shared and self.leases.journal_error is not None:
            raise JournalError(self.journal.where, f"does not answer ({self.leases.journal_error})")

    async def _unfinished_now(self, *, fresh: bool = False) -> int:
        read_at, count = self._count
        if fresh or time.monotonic() - read_at >= COUNT_TTL_S:
            count = await self.registry.unfinished_count()
            self._count = (time.monotonic(), count)
        return count

    def _retry_after(self) -> int:
        """Seconds worth waiting before retrying: about how long the queue ahead takes at full speed."""
        per_second = max(1.0, float(self.client.settings.rate_limits.task_query))
        return max(1, min(60, int(self.unfinished / per_second)))

    async def get(self, release_id: str) -> dict[str, Any] | None:
        """The release as JSON (with the journal's progress while it runs), or ``None``."""
        self._journal_answers()
        release = await self.registry.get(release_id)
        return await self.view(release) if release is not None else None

    async def view(self, release: Release) -> dict[str, Any]:
        """A release as JSON, with the journal's outcome so far when it has not finished."""
        progress = None
        if not release.finished:
            found = await self.journal.item(release.item_key)
            progress = found[1] if found is not None else None
        return release.to_json(progress)

    async def wait(self, release_id: str, timeout: float) -> dict[str, Any] | None:
        """The release once finished (by any replica), or as it stands after ``timeout`` seconds
        (``None``: no such id)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._waiters.setdefault(release_id, asyncio.Event())  # before reading: no lost wake
            self._journal_answers()
            release = await self.registry.get(release_id)
            if release is None:
                self._waiters.pop(release_id, None)
                return None
            left = deadline - time.monotonic()
            if release.finished or left <= 0 or self._stopping:
                return await self.view(release)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await event.wait()

    def _wake(self, release_id: str) -> None:
        event = self._waiters.pop(release_id, None)
        if event is not None:
            event.set()

    def _heard(self, channel: str, payload: str) -> None:
        """A notification from the journal (another replica's work, or ours)."""
        if channel == RELEASE_CHANNEL:
            self._wake(payload)
        elif channel == WORK_CHANNEL:
            self.holdings.new_work()
        elif channel == CONNECTED:  # notifications may have been missed meanwhile: every waiter reads again
            for release_id in list(self._waiters):
                self._wake(release_id)
            self.holdings.new_work()

    async def _sweeper(self) -> None:
        """Every ``WAIT_SWEEP_S``: wake the waiters of releases that ended (a missed notification)."""
        while True:
            await asyncio.sleep(WAIT_SWEEP_S)
            if not self._waiters:
                continue
            try:
                statuses = await self.registry.statuses(list(self._waiters))
            except JournalError:
                continue
            for release_id, status in statuses.items():
                if status not in ("pending", "running"):
                    self._wake(release_id)

    async def page(
        self, *, limit: int, before: int | None, filters: ReleaseFilter | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of releases as JSON, newest first, and the cursor of the next page."""
        self._journal_answers()
        releases, following = await self.registry.page(limit=limit, before=before, filters=filters)
        return [await self.view(r) for r in releases], following

    async def cancel(self, release_id: str) -> Cancellation | None:
        """``Registry.cancel`` (the journal decides it against a submit); ``None``: no such id."""
        self._journal_answers()
        found = await self.registry.cancel(release_id)
        if found is not None and found.cancelled:
            self._count = (self._count[0], max(0, self._count[1] - 1))
            self._wake(release_id)
        return found

    async def ready(self) -> tuple[bool, str]:
        """Whether the service can take work, and why not: the journal answers and takes a write, the
        engine runs, and the API was reachable with our credentials (or has not been tried yet)."""
        if not self.accepting:
            return False, "shutting down"
        if self.failure is not None:
            return False, f"engine stopped: {type(self.failure).__name__}"
        if self.leases.journal_error is not None:
            return False, f"journal unreachable: {self.leases.journal_error}; not taking work"
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self.registry.heartbeat()
                await self._unfinished_now()
        except (Exception, TimeoutError) as exc:  # JournalError: the journal is not writable
            return False, _not_writable(exc)
        if not self.api.ok:
            return False, f"API {self.api.state}"
        return True, "ready"

    def _capacity(self) -> int:
        """ENIs worth holding: twice what the batch keeps in flight, at least ``MIN_HELD``."""
        settings = self.client.settings
        target = min(settings.concurrency, self.client.tracker.releases_in_flight())
        return max(MIN_HELD, 2 * target)

    def _aborted(self) -> bool:
        return self._batch is not None and self._batch.aborted is not None

    # -- running ---------------------------------------------------------------------------------------------

    async def _source(self) -> AsyncIterator[Item | Resumed]:
        """The batch's input: the fed releases whose tenure still holds, in the order fed."""
        while not self._stopping:
            work = await self.holdings.queue.get()
            if work is None or self._stopping:
                return
            if work.tenure.lost:
                self.holdings.leave(work)
                continue
            yield work.entry

    async def _restart(self) -> None:
        """Replace a batch stopped by refused credentials (they work again), once the items it was working
        on have ended (they go back to pending)."""
        batch, runner = self._batch, self._runner
        if batch is None or batch.aborted is None or self._stopping:
            return
        clock = self.client.clock
        while batch.stats.in_flight and not self._stopping:
            await clock.sleep(0.05)
        batch.stop(0)
        if runner is not None:
            await asyncio.gather(runner, return_exceptions=True)
        if self._stopping:
            return
        self._runner = asyncio.create_task(self._run())
        self.holdings.new_work()

    # -- running ---------------------------------------------------------------------------------------------

    def _deadline(self, item: Item) -> float | None:
        """An item's deadline on the client's clock: ``service_release_deadline`` after its release was
        accepted (so a restart does not give it more time)."""
        work = self.holdings.work.get(item.key) if item.key is not None else None
        if work is None:
            return None
        clock = self.client.clock
        left = work.created_at + self.client.settings.service_release_deadline - clock.time()
        return clock.monotonic() + left

    async def _run(self) -> None:
        batch = Batch(  # as ``EniClient.unassign_many`` makes it, with the leases' recorder and guard
            self.client.releaser,
            self._source(),
            concurrency=self.client.settings.concurrency,
            target=self.client.tracker.releases_in_flight,
            journal=self.journal,
            recorder=self.recorder,
            guard=self.recorder.guard,
            deadline=self._deadline,
        )
        self._batch = batch
        try:
            async for outcome in batch:
                await self._finished(outcome)
        except Exception as exc:  # a bug in the batch machinery: stop accepting, say so on /readyz
            log.error("release engine stopped: %r", exc)
            self.failure = exc
            self.accepting = False

    async def _finished(self, outcome: Outcome) -> None:
        key = outcome.key
        work = self.holdings.work.get(key) if key is not None else None
        if key is None or work is None:
            log.warning("outcome for %s matches no release here; ignored", outcome.eni_id)
            return
        release_id = work.release_id
        try:
            if self._aborted():
                assert self._batch is not None
                assert self._batch.aborted is not None
                self.api.refuse(self._batch.aborted)
                found = await self.journal.item(key)
                if found is None or found[0] != "finished":  # cut short by the credentials: pending again
                    await self.recorder.write(
                        key, lambda lease: self.registry.requeue(release_id, lease=lease)
                    )
                    return
            else:
                self.api.finished((outcome.error or {}).get("code"))
            data = outcome.to_json()
            await self.recorder.write(key, lambda lease: self.registry.finish(release_id, data, lease=lease))
            read_at, count = self._count
            self._count = (read_at, max(0, count - 1))
            self._wake(release_id)
        except LeaseLostError:  # its new owner finishes it from the journal
            pass
        finally:
            self.holdings.leave(work)

    async def stop(self, grace: float) -> int:
        """Take no more work; in-flight items get ``grace`` seconds to learn their fate (the batch's own
        ``stop``: nothing new is submitted), then the rest is cancelled and the leases given back. Return
        how many releases stay unfinished in the journal (for other replicas, or the next start)."""
        self.accepting = False
        self._stopping = True
        await self.api.close()
        self.holdings.queue.put_nowait(None)  # a worker waiting for the next release gets none
        for event in self._waiters.values():  # long polls answer now, with the state as it stands
            event.set()
        runner = self._runner
        if runner is not None and not runner.done():
            if self._batch is not None:
                if self._in_flight():
                    log.info("letting %d in-flight release(s) finish (%.1fs)", self._in_flight(), grace)
                self._batch.stop(grace)
            done, _ = await asyncio.wait({runner}, timeout=grace + STOP_MARGIN_S)
            if not done:  # the batch did not end by itself: cancel it
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self.leases.give_back_all()
        with contextlib.suppress(JournalError, TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT_S):
                return await self._unfinished_now(fresh=True)
        return self.unfinished

    def hurry(self) -> None:
        """End a stop's grace period now: work still in flight is cancelled and stays unfinished."""
        if self._batch is not None and self._stopping:
            self._batch.stop(0)

    def _in_flight(self) -> int:
        return self._batch.stats.in_flight if self._batch is not None else 0


def _not_writable(exc: BaseException) -> str:
    """Why ``/readyz`` says the journal takes no write: a ``JournalError``'s reason (a full disk, a journal
    deleted or replaced), else the kind of failure."""
    why = f": {exc.reason}" if isinstance(exc, JournalError) else f" ({type(exc).__name__})"
    return f"journal not writable{why}; not taking work"


__all__ = ["BackpressureError", "Engine", "NotAcceptingError", "final_status"]
