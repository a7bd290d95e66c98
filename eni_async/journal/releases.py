"""The service's release registry in SQL both databases speak: ``SqlReleases``, over a journal's connector.

A release and its journal item are written in one transaction (the item through the journal's own
``insert_item``); an idempotency key is the database's unique key, so the database decides between
processes; a key recorded before the caller's expiry moment is taken anew in the same statement (an upsert
whose update applies only to an expired row), so expiry is exact whether or not retention pruned the row
yet. Every write of a release being worked on is fenced by the lease on its ENI, like the journal's item
steps (the journal's ``fence``); creating releases notifies ``WORK_CHANNEL`` and ending one
``RELEASE_CHANNEL`` (its id), at commit, for the other processes sharing the journal.

A cancel is one transaction whose conditional update of the item (not finished, nothing sent, no task, no
chunk in doubt) races the item's ``submitting`` step (an update refused once the item is finished): on
PostgreSQL both lock the item's row and the later one re-reads it, on SQLite transactions run one at a
time, so in either database exactly one of them wins, whichever replica runs each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from eni_async.journal.connector import IN_LIST, Connector, Row, Tx
from eni_async.journal.seam import (
    CANCELLED,
    FINISHED,
    PENDING,
    RELEASE_CHANNEL,
    RELEASE_STATUSES,
    RELEASE_UNFINISHED,
    RUNNING,
    WORK_CHANNEL,
    Cancellation,
    IdempotencyConflictError,
    Lease,
    Pruned,
    Release,
    ReleaseFilter,
    Releases,
    Request,
    decode,
    encode,
    ip_list,
)
from eni_async.outcomes import NOT_ATTEMPTED, Item, Outcome

CANCEL_CODE = "Cancelled"


class ItemJournal(Protocol):
    """What the registry needs of its journal: its name, connector, item rows and fence."""

    @property
    def where(self) -> str: ...

    @property
    def connector(self) -> Connector: ...

    async def insert_item(self, tx: Tx, item: Item) -> int: ...

    async def fence(
        self, tx: Tx, lease: Lease | None, *, table: str = "items", key: object, live: bool = False
    ) -> None: ...


_RELEASE_COLUMNS = (
    "seq, id, item_key, vpc_id, eni_id, ips, status, created_at, started_at, finished_at, outcome"
)


class SqlReleases(Releases):
    """The service's ``Releases`` in the journal's database; see the module docstring."""

    def __init__(self, journal: ItemJournal) -> None:
        self.journal = journal
        self.connector = journal.connector

    def __repr__(self) -> str:
        return f"SqlReleases({self.journal.where!r})"

    async def create(
        self,
        requests: Sequence[Request],
        ids: Sequence[str],
        *,
        now: float,
        idempotency_key: str | None = None,
        body_hash: str = "",
        keys_expire_before: float | None = None,
    ) -> tuple[list[Release], bool]:
        async with self.connector.transaction() as tx:
            if idempotency_key is not None:
                taken = await tx.run(
                    "INSERT INTO service_idempotency (key, body_hash, release_ids, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET body_hash = excluded.body_hash, "
                    "release_ids = excluded.release_ids, created_at = excluded.created_at "
                    "WHERE service_idempotency.created_at < ? RETURNING key",
                    (idempotency_key, body_hash, encode(list(ids)), now, _expiry(keys_expire_before)),
                )
                if not taken:  # recorded before (by us or another process) and alive: the database decided
                    earlier = await self._replay(tx, idempotency_key, body_hash, None)
                    assert earlier is not None
                    return earlier, False
            for rid, (vpc, eni, ips) in zip(ids, requests, strict=True):
                key = await self.journal.insert_item(tx, Item(vpc, eni, ips))
                await tx.run(
                    "INSERT INTO service_releases (id, item_key, vpc_id, eni_id, ips, status, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rid, key, vpc, eni, encode(list(ips)), PENDING, now),
                )
            made = [await self._get(tx, "id", rid) for rid in ids]
            await self.connector.notify(tx, WORK_CHANNEL, "")
        return [r for r in made if r is not None], True

    async def replay(
        self, idempotency_key: str, body_hash: str, *, keys_expire_before: float | None = None
    ) -> list[Release] | None:
        async with self.connector.reading() as tx:
            return await self._replay(tx, idempotency_key, body_hash, keys_expire_before)

    async def _replay(
        self, tx: Tx, idempotency_key: str, body_hash: str, keys_expire_before: float | None
    ) -> list[Release] | None:
        rows = await tx.run(
            "SELECT body_hash, release_ids FROM service_idempotency WHERE key = ? AND created_at >= ?",
            (idempotency_key, _expiry(keys_expire_before)),
        )
        if not rows:
            return None
        if rows[0][0] != body_hash:
            raise IdempotencyConflictError(idempotency_key)
        where = self.journal.where
        ids = ip_list(
            where,
            f"idempotency {idempotency_key!r}",
            "release_ids",
            decode(where, "?", "release_ids", rows[0][1]),
        )
        found = [await self._get(tx, "id", rid) for rid in ids]
        return [r for r in found if r is not None]

    async def _get(self, tx: Tx, column: str, value: object) -> Release | None:
        rows = await tx.run(f"SELECT {_RELEASE_COLUMNS} FROM service_releases WHERE {column} = ?", (value,))
        return self._release(rows[0]) if rows else None

    async def get(self, release_id: str) -> Release | None:
        async with self.connector.reading() as tx:
            return await self._get(tx, "id", release_id)

    async def by_item(self, item_key: int) -> Release | None:
        async with self.connector.reading() as tx:
            return await self._get(tx, "item_key", item_key)

    async def started(self, release_id: str, *, now: float, lease: Lease | None = None) -> None:
        async with self.connector.transaction() as tx:
            await self.journal.fence(tx, lease, table="service_releases", key=release_id)
            await tx.run(
                "UPDATE service_releases SET status = ?, started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND status = ?",
                (RUNNING, now, release_id, PENDING),
            )

    async def started_many(self, release_ids: Collection[str], *, now: float, owner: str) -> None:
        wanted = sorted(set(release_ids))
        async with self.connector.transaction() as tx:
            for start in range(0, len(wanted), IN_LIST):
                part = wanted[start : start + IN_LIST]
                await tx.run(
                    "UPDATE service_releases SET status = ?, started_at = COALESCE(started_at, ?) "
                    f"WHERE status = ? AND id IN ({', '.join('?' * len(part))}) "
                    "AND eni_id IN (SELECT eni_id FROM leases WHERE owner = ?)",
                    (RUNNING, now, PENDING, *part, owner),
                )

    async def requeue(self, release_id: str, *, lease: Lease | None = None) -> None:
        async with self.connector.transaction() as tx:
            await self.journal.fence(tx, lease, table="service_releases", key=release_id)
            await tx.run(
                "UPDATE service_releases SET status = ? WHERE id = ? AND status = ?",
                (PENDING, release_id, RUNNING),
            )

    async def finish(
        self, release_id: str, status: str, outcome: dict[str, Any], *, now: float, lease: Lease | None = None
    ) -> None:
        async with self.connector.transaction() as tx:
            await self.journal.fence(tx, lease, table="service_releases", key=release_id)
            ended = await tx.run(
                "UPDATE service_releases SET status = ?, finished_at = ?, outcome = ?, "
                "started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN (?, ?) RETURNING id",
                (status, now, encode(outcome), now, release_id, *RELEASE_UNFINISHED),
            )
            if ended:
                await self.connector.notify(tx, RELEASE_CHANNEL, release_id)

    async def page(
        self, *, limit: int = 100, before: int | None = None, filters: ReleaseFilter | None = None
    ) -> tuple[list[Release], int | None]:
        wanted = filters or ReleaseFilter()
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        for column, value in (
            ("status", wanted.status),
            ("eni_id", wanted.eni_id),
            ("vpc_id", wanted.vpc_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if wanted.created_after is not None:
            where.append("created_at >= ?")
            args.append(wanted.created_after)
        if wanted.created_before is not None:
            where.append("created_at < ?")
            args.append(wanted.created_before)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        async with self.connector.reading() as tx:
            rows = await tx.run(
                f"SELECT {_RELEASE_COLUMNS} FROM service_releases WHERE {' AND '.join(where)} "
                "ORDER BY seq DESC LIMIT ?",
                (*args, limit + 1),
            )
        releases = [self._release(row) for row in rows[:limit]]
        more = len(rows) > limit
        return releases, (releases[-1].seq if more and releases else None)

    async def cancel(self, release_id: str, *, now: float) -> Cancellation | None:
        async with self.connector.transaction() as tx:
            release = await self._get(tx, "id", release_id)
            if release is None or release.finished:
                return None if release is None else Cancellation(release, False)
            outcome = Outcome(release.vpc_id, release.eni_id, release.ips, status=NOT_ATTEMPTED)
            outcome.not_released = list(release.ips)  # never sent: still on the ENI as far as we did
            outcome.error = {"code": CANCEL_CODE, "message": "cancelled before any of its calls was sent"}
            data = outcome.to_json()
            closed = await tx.run(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ? AND state <> ? "
                "AND sent = '[]' AND in_doubt IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.item_id = items.id) RETURNING id",
                (FINISHED, encode(data), release.item_key, FINISHED),
            )
            if closed:
                ended = await tx.run(
                    "UPDATE service_releases SET status = ?, finished_at = ?, outcome = ? "
                    "WHERE id = ? AND status IN (?, ?) RETURNING id",
                    (CANCELLED, now, encode(data), release_id, *RELEASE_UNFINISHED),
                )
                assert ended, "an unfinished item's release is unfinished"
                await self.connector.notify(tx, RELEASE_CHANNEL, release_id)
                after = await self._get(tx, "id", release_id)
                assert after is not None
                return Cancellation(after, True)
            tasks = await tx.run(
                "SELECT task_id FROM tasks WHERE item_id = ? AND done = 0 ORDER BY task_id",
                (release.item_key,),
            )
            doubt = await tx.run(
                "SELECT 1 FROM items WHERE id = ? AND in_doubt IS NOT NULL", (release.item_key,)
            )
        return Cancellation(release, False, tuple(str(t) for (t,) in tasks), bool(doubt))

    async def prune(self, *, finished_before: float, keys_before: float, limit: int = 500) -> Pruned:
        releases = keys = 0
        while True:
            async with self.connector.transaction() as tx:
                rows = await tx.run(
                    "SELECT seq, item_key FROM service_releases WHERE finished_at < ? "
                    "AND status NOT IN (?, ?) ORDER BY finished_at LIMIT ?",
                    (finished_before, *RELEASE_UNFINISHED, limit),
                )
                if rows:
                    marks = ", ".join("?" * len(rows))
                    items = [key for _, key in rows]
                    await tx.run(f"DELETE FROM tasks WHERE item_id IN ({marks})", items)
                    await tx.run(f"DELETE FROM items WHERE id IN ({marks})", items)
                    await tx.run(f"DELETE FROM service_releases WHERE seq IN ({marks})", [s for s, _ in rows])
            releases += len(rows)
            if len(rows) < limit:
                break
        while True:
            async with self.connector.transaction() as tx:
                gone = await tx.run(
                    "DELETE FROM service_idempotency WHERE key IN (SELECT key FROM service_idempotency "
                    "WHERE created_at < ? ORDER BY created_at LIMIT ?) RETURNING key",
                    (keys_before, limit),
                )
            keys += len(gone)
            if len(gone) < limit:
                break
        return Pruned(releases, keys)

    async def unfinished(self, *, eni_ids: Collection[str] | None = None) -> list[Release]:
        query = f"SELECT {_RELEASE_COLUMNS} FROM service_releases WHERE status IN (?, ?)"
        if eni_ids is None:
            async with self.connector.reading() as tx:
                rows = await tx.run(query + " ORDER BY seq", RELEASE_UNFINISHED)
            return [self._release(row) for row in rows]
        wanted = sorted(set(eni_ids))
        found: list[Row] = []
        async with self.connector.reading() as tx:
            for start in range(0, len(wanted), IN_LIST):
                part = wanted[start : start + IN_LIST]
                found += await tx.run(
                    f"{query} AND eni_id IN ({', '.join('?' * len(part))})", (*RELEASE_UNFINISHED, *part)
                )
        return sorted((self._release(row) for row in found), key=lambda release: release.seq)

    async def statuses(self, release_ids: Collection[str]) -> dict[str, str]:
        wanted = sorted(set(release_ids))
        found: dict[str, str] = {}
        async with self.connector.reading() as tx:
            for start in range(0, len(wanted), IN_LIST):
                part = wanted[start : start + IN_LIST]
                rows = await tx.run(
                    f"SELECT id, status FROM service_releases WHERE id IN ({', '.join('?' * len(part))})",
                    part,
                )
                found.update((str(rid), str(status)) for rid, status in rows)
        return found

    async def unfinished_count(self) -> int:
        async with self.connector.reading() as tx:
            ((count,),) = await tx.run(
                "SELECT COUNT(*) FROM service_releases WHERE status IN (?, ?)", RELEASE_UNFINISHED
            )
        return int(count)

    async def counts(self) -> dict[str, int]:
        async with self.connector.reading() as tx:
            rows = await tx.run("SELECT status, COUNT(*) FROM service_releases GROUP BY status")
        found = {status: int(count) for status, count in rows}
        return {status: found.get(status, 0) for status in RELEASE_STATUSES}

    async def heartbeat(self, now: float) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(
                "INSERT INTO service_meta (key, value) VALUES ('heartbeat', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(now),),
            )

    def _release(self, row: Row) -> Release:
        seq, rid, key, vpc, eni, ips, status, created, started, finished, outcome = row
        where = self.journal.where
        data = decode(where, key, "service_releases.outcome", outcome) if outcome else None
        return Release(
            seq=int(seq),
            id=rid,
            item_key=int(key),
            vpc_id=vpc,
            eni_id=eni,
            ips=ip_list(where, key, "service_releases.ips", decode(where, key, "service_releases.ips", ips)),
            status=status,
            created_at=float(created),
            started_at=None if started is None else float(started),
            finished_at=None if finished is None else float(finished),
            outcome=data,
        )


def _expiry(keys_expire_before: float | None) -> float:
    """The moment before which a key is expired (``None``: keys never expire)."""
    return float("-inf") if keys_expire_before is None else keys_expire_before


__all__ = ["CANCEL_CODE", "SqlReleases"]
