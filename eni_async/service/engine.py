"""The service's engine: accepted releases run through the client's own batch machinery, forever.

One ``Batch`` (``EniClient.unassign_many``) runs for the life of the service, fed from a queue: it gives
bounded concurrency (``settings.concurrency`` ENIs at once), one task per ENI at a time, the reconciling
release path and the journal, exactly as ``batch`` and ``resume`` use them; the engine adds only the release
registry. Each journal item carries its journal key (``Item.key``), which the batch copies into the item's
outcome (``Outcome.key``): that is how an outcome finds its release. On start, unfinished releases go first: submitted tasks are polled,
never resubmitted, a chunk caught mid-submit is reconciled against the ENI, pending ones run. ``stop`` stops
taking work, lets in-flight items finish within the grace period, then cancels the rest, which stay
unfinished in the journal for the next start. Credentials the API refuses stop the batch: the releases it cut
short go back to ``pending`` for the next start (with good credentials), and no new one is accepted. Nothing
here parses HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from eni_async.errors import ConfigError
from eni_async.journal import Journal, Resumed
from eni_async.outcomes import Item, Outcome
from eni_async.service.registry import Registry, Release

if TYPE_CHECKING:
    from eni_async.batch import Batch
    from eni_async.client import EniClient

log = logging.getLogger("eni_async.service")

Request = tuple[str, str, tuple[str, ...]]
# Error codes of an outcome that say the API could not be reached.
# Seconds past the grace period a stopping batch may take to wind down before it is cancelled.
STOP_MARGIN_S = 5.0
UNREACHABLE_CODES = frozenset({"ConnectFailed", "ConnectionLost", "BadAnswer"})


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

    def __init__(self, client: EniClient, journal: Journal, *, max_unfinished: int) -> None:
        self.client = client
        self.journal = journal
        self.registry = Registry(journal, now=client.clock.time)
        self.max_unfinished = max_unfinished
        self.accepting = False
        self.failure: BaseException | None = None  # a bug ended the batch; the service is not ready
        self.api_state = "unknown"  # "ok", "unreachable" or "auth_failed" once outcomes say so
        self._queue: asyncio.Queue[tuple[str, Item | Resumed] | None] = asyncio.Queue()
        self._waiters: dict[str, asyncio.Event] = {}
        self._unfinished = 0
        self._stopping = False
        self._batch: Batch | None = None
        self._runner: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Engine(unfinished={self._unfinished}, accepting={self.accepting})"

    @property
    def unfinished(self) -> int:
        """Releases accepted and not yet finished."""
        return self._unfinished

    async def start(self) -> int:
        """Queue every unfinished release (resumed ones with their plans) and start; return how many.

        Unfinished releases are only resumed in the region they were submitted to: another region than the
        journal recorded is a ``ConfigError`` naming it."""
        releases = await self.registry.unfinished()
        await self._check_target(bool(releases))
        wanted = {r.item_key for r in releases}
        plans = {res.item.key: res async for res in self.journal.unfinished() if res.item.key in wanted}
        for release in releases:
            resumed = plans.get(release.item_key)
            if resumed is not None:
                self._enqueue(release.id, resumed)
                continue
            found = await self.journal.item(release.item_key)
            if found is not None and found[1] is not None and found[0] == "finished":
                await self.registry.finish(release.id, found[1])  # died between the journal's commit and ours
            else:
                self._enqueue(release.id, release.item)
        if self._unfinished:
            log.info("resuming %d unfinished release(s) from %s", self._unfinished, self.journal.where)
        self._runner = asyncio.create_task(self._run())
        self.accepting = True
        return self._unfinished

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
        await self.journal.set_meta({f"service.{key}": value for key, value in target.items()})

    def _enqueue(self, release_id: str, item: Item | Resumed) -> None:
        self._unfinished += 1
        self._queue.put_nowait((release_id, item))

    async def submit(
        self, requests: Sequence[Request], *, idempotency_key: str | None = None, body_hash: str = ""
    ) -> tuple[list[Release], bool]:
        """Accept checked requests; return the releases and whether they are new (``False``: an
        idempotent replay). Raises ``NotAcceptingError``, ``BackpressureError`` or
        ``IdempotencyConflictError``. Concurrent identical requests cannot both create: the journal's
        unique key on the idempotency key decides."""
        if not self.accepting:
            raise NotAcceptingError("the service is shutting down")
        if self.api_state == "auth_failed":
            raise NotAcceptingError("the API refused the service's credentials; fix them and restart it")
        if idempotency_key is not None:
            earlier = await self.registry.replay(idempotency_key, body_hash)
            if earlier is not None:
                return earlier, False
        if self._unfinished + len(requests) > self.max_unfinished:
            raise BackpressureError(self._unfinished, self.max_unfinished, retry_after=self._retry_after())
        releases, created = await self.registry.create(
            requests, idempotency_key=idempotency_key, body_hash=body_hash
        )
        for release in releases if created else ():
            self._enqueue(release.id, release.item)
        return releases, created

    def _retry_after(self) -> int:
        """Seconds worth waiting before retrying: about how long the queue ahead takes at full speed."""
        per_second = max(1.0, float(self.client.settings.rate_limits.task_query))
        return max(1, min(60, int(self._unfinished / per_second)))

    async def get(self, release_id: str) -> dict[str, Any] | None:
        """The release as JSON (with the journal's progress while it runs), or ``None``."""
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
        """The release once finished, or as it stands after ``timeout`` seconds (``None``: no such id)."""
        release = await self.registry.get(release_id)
        if release is None:
            return None
        if not release.finished and timeout > 0 and not self._stopping:
            event = self._waiters.setdefault(release_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        return await self.get(release_id)

    async def page(
        self, *, status: str | None, limit: int, before: int | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of releases as JSON, newest first, and the cursor of the next page."""
        releases, following = await self.registry.page(status=status, limit=limit, before=before)
        return [await self.view(r) for r in releases], following

    async def ready(self) -> tuple[bool, str]:
        """Whether the service can take work, and why not: the journal takes a write, the engine runs, and
        the API was reachable with our credentials (or has not been tried yet)."""
        if not self.accepting:
            return False, "shutting down"
        if self.failure is not None:
            return False, f"engine stopped: {type(self.failure).__name__}"
        try:
            await self.registry.heartbeat()
        except Exception as exc:  # JournalError: the journal is not writable
            return False, f"journal not writable ({type(exc).__name__})"
        if self.api_state in ("unreachable", "auth_failed"):
            return False, f"API {self.api_state.replace('_', ' ')}"
        return True, "ready"

    async def _source(self) -> AsyncIterator[Item | Resumed]:
        """The batch's input: queued releases, each marked running as a worker takes it."""
        while not self._stopping:
            entry = await self._queue.get()
            if entry is None or self._stopping:
                return
            release_id, item = entry
            await self.registry.started(release_id)
            yield item

    async def _run(self) -> None:
        batch = self.client.unassign_many(self._source(), journal=self.journal)
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
        release = await self.registry.by_item(key) if key is not None else None
        if key is None or release is None:
            log.warning("outcome for %s matches no release; ignored", outcome.eni_id)
            return
        if self._batch is not None and self._batch.aborted is not None:
            self.api_state = "auth_failed"
            found = await self.journal.item(key)
            if found is None or found[0] != "finished":  # cut short by the credentials: for the next start
                await self.registry.requeue(release.id)
                return
        else:
            code = (outcome.error or {}).get("code")
            self.api_state = "unreachable" if code in UNREACHABLE_CODES else "ok"
        await self.registry.finish(release.id, outcome.to_json())
        self._unfinished -= 1
        event = self._waiters.pop(release.id, None)
        if event is not None:
            event.set()

    async def stop(self, grace: float) -> int:
        """Take no more work; in-flight items get ``grace`` seconds to learn their fate (the batch's own
        ``stop``: nothing new is submitted), then the rest is cancelled. Return how many releases stay
        unfinished (in the journal, for the next start)."""
        self.accepting = False
        self._stopping = True
        self._queue.put_nowait(None)  # a worker waiting for the next release gets none
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
        return self._unfinished

    def hurry(self) -> None:
        """End a stop's grace period now: work still in flight is cancelled and stays unfinished."""
        if self._batch is not None and self._stopping:
            self._batch.stop(0)

    def _in_flight(self) -> int:
        return self._batch.stats.in_flight if self._batch is not None else 0


__all__ = ["BackpressureError", "Engine", "NotAcceptingError"]
