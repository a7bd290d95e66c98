"""The release registry: what callers asked for, under which id and idempotency key, and where it stands.

A release is one ENI's request as a caller made it. Its work lives in the journal as one item (the engine's
durable record); the registry adds the caller's view, kept by the journal's own ``Releases`` (the storage
seam, in SQLite or PostgreSQL): ``service_releases`` (id, journal key, status, timestamps, final outcome)
and ``service_idempotency`` (key, body hash, the releases the key created). A release and its journal item
are written in one transaction, before the caller hears of the release; an idempotency key is the
database's unique key, so the database, not a process, decides which of several identical requests creates
the release (also across replicas). Here: the ids, the clock, the final status and the retention windows
(``retention``: seconds a finished release is kept; ``idempotency_ttl``: seconds a key is kept, after which
the same key makes a new release; never longer than ``retention``, so that a replay always finds the
releases its key made, a key being older than they are). Nothing here does HTTP or talks to Tencent, and
statuses move ``pending`` -> ``running`` -> a final one (``succeeded``, ``failed``, or ``cancelled`` before
any call was sent) and never back.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

from eni_async.clock import Clock
from eni_async.journal import (
    Cancellation,
    IdempotencyConflictError,
    Journal,
    JournalError,
    Lease,
    Pruned,
    Release,
    ReleaseFilter,
)
from eni_async.journal.seam import (
    CANCELLED,
    FAILED,
    PENDING,
    RELEASE_STATUSES,
    RELEASE_UNFINISHED,
    RUNNING,
    Request,
)
from eni_async.outcomes import SUCCEEDED

log = logging.getLogger("eni_async.service")

UNFINISHED = RELEASE_UNFINISHED
STATUSES = RELEASE_STATUSES


def final_status(outcome_status: str) -> str:
    """The release status for a finished outcome: ``succeeded``, or ``failed`` for every other ending."""
    return SUCCEEDED if outcome_status == SUCCEEDED else FAILED


class Registry:
    """Releases and idempotency keys in the journal's database; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        *,
        now: Callable[[], float],
        retention: float | None = None,
        idempotency_ttl: float | None = None,
    ) -> None:
        self.journal = journal
        self._releases = journal.releases
        self._now = now
        self.retention = retention  # None: finished releases are kept for ever
        ttls = [t for t in (idempotency_ttl, retention) if t is not None]
        self.idempotency_ttl = min(ttls) if ttls else None  # None: keys are kept for ever

    def __repr__(self) -> str:
        return f"Registry({self.journal!r})"

    async def replay(self, idempotency_key: str, body_hash: str) -> list[Release] | None:
        """The releases an earlier request with this key created (``None`` if the key is new); raise
        ``IdempotencyConflictError`` when that request had another body."""
        return await self._releases.replay(
            idempotency_key, body_hash, keys_expire_before=self._keys_expire_before()
        )

    def _keys_expire_before(self) -> float | None:
        return None if self.idempotency_ttl is None else self._now() - self.idempotency_ttl

    async def heartbeat(self) -> None:
        """Write to the database (the readiness check: raises ``JournalError`` when it cannot)."""
        await self._releases.heartbeat(self._now())

    async def create(
        self,
        requests: Sequence[Request],
        *,
        idempotency_key: str | None = None,
        body_hash: str = "",
    ) -> tuple[list[Release], bool]:
        """Record checked ``(vpc_id, eni_id, ips)`` requests as pending releases, with their journal items.

        With an ``idempotency_key`` seen before (by this process or another on the same database), return
        the releases it created (and ``False``) when ``body_hash`` matches, or raise
        ``IdempotencyConflictError``.
        """
        ids = [f"rel-{uuid.uuid4().hex}" for _ in requests]
        return await self._releases.create(
            requests,
            ids,
            now=self._now(),
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            keys_expire_before=self._keys_expire_before(),
        )

    async def cancel(self, release_id: str) -> Cancellation | None:
        """Cancel a release none of whose calls was sent (``None``: no such id); see ``Cancellation``."""
        return await self._releases.cancel(release_id, now=self._now())

    async def pruner(self, clock: Clock, every: float) -> None:
        """Run a retention pass (``prune``) every ``every`` seconds of ``clock``, for ever; a journal that
        does not answer skips a pass (every replica prunes, and the deletes are idempotent)."""
        while True:
            await clock.sleep(every)
            try:
                pruned = await self.prune()
            except JournalError as exc:
                log.debug("retention pass skipped: %s", exc)
                continue
            if pruned.releases or pruned.keys:
                log.info("retention: %d release(s) and %d key(s) pruned", pruned.releases, pruned.keys)

    async def prune(self) -> Pruned:
        """Delete finished releases older than ``retention`` and keys older than ``idempotency_ttl``."""
        now = self._now()
        return await self._releases.prune(
            finished_before=-math.inf if self.retention is None else now - self.retention,
            keys_before=-math.inf if self.idempotency_ttl is None else now - self.idempotency_ttl,
        )

    async def started(self, release_id: str, *, lease: Lease | None = None) -> None:
        """A worker took the release: it is running (``lease``: the write is fenced by it)."""
        await self._releases.started(release_id, now=self._now(), lease=lease)

    async def started_many(self, release_ids: Collection[str], *, owner: str) -> None:
        """Releases ``owner`` took up are running (those on ENIs it holds a lease on)."""
        await self._releases.started_many(release_ids, now=self._now(), owner=owner)

    async def requeue(self, release_id: str, *, lease: Lease | None = None) -> None:
        """Work on the release was cut short and will start again (on the next start): pending."""
        await self._releases.requeue(release_id, lease=lease)

    async def finish(self, release_id: str, outcome: dict[str, Any], *, lease: Lease | None = None) -> None:
        """Record the final outcome (once: a release already finished is left as it is)."""
        status = final_status(outcome["status"])
        await self._releases.finish(release_id, status, outcome, now=self._now(), lease=lease)

    async def get(self, release_id: str) -> Release | None:
        """The release with this id, or ``None``."""
        return await self._releases.get(release_id)

    async def by_item(self, item_key: int) -> Release | None:
        """The release whose work is the journal item ``item_key``."""
        return await self._releases.by_item(item_key)

    async def page(
        self, *, limit: int = 100, before: int | None = None, filters: ReleaseFilter | None = None
    ) -> tuple[list[Release], int | None]:
        """Releases newest first, ``limit`` at a time, older than ``before`` (a ``seq``), matching
        ``filters``; and the next ``before``, or ``None`` when this is the last page."""
        return await self._releases.page(limit=limit, before=before, filters=filters)

    async def unfinished(self, *, eni_ids: Collection[str] | None = None) -> list[Release]:
        """Every release not finished (on ``eni_ids`` only, when given), oldest first."""
        return await self._releases.unfinished(eni_ids=eni_ids)

    async def statuses(self, release_ids: Collection[str]) -> dict[str, str]:
        """The status of each of ``release_ids`` that exists."""
        return await self._releases.statuses(release_ids)

    async def unfinished_count(self) -> int:
        """How many releases are not finished (by every replica)."""
        return await self._releases.unfinished_count()

    async def counts(self) -> dict[str, int]:
        """Releases by status, every status present."""
        return await self._releases.counts()


__all__ = [
    "CANCELLED",
    "PENDING",
    "RUNNING",
    "STATUSES",
    "IdempotencyConflictError",
    "Registry",
    "Release",
    "ReleaseFilter",
    "final_status",
]
