"""The journal's logic once, in SQL both databases speak, over a small ``Connector`` each database provides.

Every step is one short transaction on the connector (committed before the work it announces goes on);
reads are paged by key, one short read per page, so that no reader holds a transaction while the batch
works. Statements use ``?`` placeholders and three markers the connector fills: ``{now}`` (the database's
clock, seconds since the epoch), ``{skip_locked}`` (``FOR UPDATE SKIP LOCKED`` where rows can be locked) and
``{for_share}``. Leases follow procrastinate's claim: one statement picks free ENIs with ``SKIP LOCKED`` and
bumps their epoch; a write of leased work first reads its lease row ``FOR SHARE`` with ``owner`` and
``epoch`` in the ``WHERE``, so an adopter's claim waits for it, and a writer that lost its lease writes
nothing. The service's ``Releases`` share the connector, so a release and its item commit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol, Self

from eni_async.journal.seam import (
    FINISHED,
    PENDING,
    RELEASE_STATUSES,
    RELEASE_UNFINISHED,
    RUNNING,
    STATES,
    SUBMITTED,
    SUBMITTING,
    IdempotencyConflictError,
    Journal,
    Lease,
    LeaseLostError,
    Release,
    Releases,
    Request,
    Resumed,
    ResumePlan,
    damaged,
    decode,
    encode,
    encode_sent,
    final_outcome,
    ip_list,
    restore,
)
from eni_async.outcomes import FAILED as FAILED_STATUS
from eni_async.outcomes import InvalidItem, Item, Outcome

PAGE = 500
LOAD_BATCH = 1000
Row = tuple[Any, ...]


class Tx(Protocol):
    """One transaction (or one consistent read) on the database."""

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Execute one statement; its rows (those of ``RETURNING`` too), or none."""
        ...

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Connector(Protocol):
    """What the shared logic needs of a database: transactions, reads, and its dialect's three markers."""

    where: str
    version: int  # the journal's format, as found (then as migrated)
    markers: ClassVar[dict[str, str]]

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    def reading(self) -> AbstractAsyncContextManager[Tx]: ...

    async def close(self) -> None: ...


_ITEM_INSERT = "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)"
_LEASES_FOR = "INSERT INTO leases (eni_id) SELECT DISTINCT eni_id FROM items WHERE id > ? ON CONFLICT (eni_id) DO NOTHING"
_STEP = "UPDATE items SET state = ?, in_doubt = ?, outcome = ?, sent = ? WHERE id = ?"
_FENCE = "SELECT epoch FROM leases WHERE eni_id = ? AND owner = ? AND epoch = ? {for_share}"
_CLAIM = """
WITH free AS (
    SELECT l.eni_id FROM leases l
    WHERE (l.owner IS NULL OR l.expires_at <= {now})
      AND EXISTS (SELECT 1 FROM items i WHERE i.eni_id = l.eni_id AND i.state <> 'finished')
    ORDER BY l.eni_id LIMIT ? {skip_locked}
)
UPDATE leases SET owner = ?, epoch = leases.epoch + 1, expires_at = {now} + ?
FROM free WHERE leases.eni_id = free.eni_id
RETURNING leases.eni_id, leases.owner, leases.epoch, leases.expires_at
"""
_RENEW = (
    "UPDATE leases SET expires_at = {now} + ? WHERE eni_id = ? AND owner = ? AND epoch = ? "
    "RETURNING eni_id, owner, epoch, expires_at"
)
_GIVE_BACK = "UPDATE leases SET owner = NULL, expires_at = NULL WHERE eni_id = ? AND owner = ? AND epoch = ?"


class SqlJournal(Journal):
    """``Journal`` over a ``Connector``; see the module docstring."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._sql = {name: text.format(**connector.markers) for name, text in _TEMPLATES.items()}
        self._releases = SqlReleases(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    @property
    def where(self) -> str:
        return self.connector.where

    @property
    def releases(self) -> SqlReleases:
        return self._releases

    async def close(self) -> None:
        await self.connector.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- meta --------------------------------------------------------------------------------------------

    async def set_meta(self, data: dict[str, Any]) -> None:
        async with self.connector.transaction() as tx:
            await self._put_meta(tx, data)

    @staticmethod
    async def _put_meta(tx: Tx, data: dict[str, Any]) -> None:
        if data:
            await tx.run_many(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [(key, encode(value)) for key, value in data.items()],
            )

    async def meta(self) -> dict[str, Any]:
        async with self.connector.reading() as tx:
            rows = await tx.run("SELECT key, value FROM meta")
        return {key: decode(self.where, f"meta {key!r}", "value", text) for key, text in rows}

    # -- steps -------------------------------------------------------------------------------------------

    async def add(self, item: Item) -> int:
        async with self.connector.transaction() as tx:
            return await self.insert_item(tx, item)

    async def insert_item(self, tx: Tx, item: Item) -> int:
        """Record a pending item (and its ENI's lease row) inside ``tx``; return its key."""
        ((key,),) = await tx.run(
            _ITEM_INSERT + " RETURNING id",
            (item.vpc_id, item.eni_id, encode(list(item.ips)), item.line, PENDING),
        )
        await tx.run("INSERT INTO leases (eni_id) VALUES (?) ON CONFLICT (eni_id) DO NOTHING", (item.eni_id,))
        return int(key)

    async def _fence(self, tx: Tx, key: int, lease: Lease | None) -> None:
        if lease is None:
            return
        held = await tx.run(self._sql["fence"], (lease.eni_id, lease.owner, lease.epoch))
        mine = await tx.run("SELECT 1 FROM items WHERE id = ? AND eni_id = ?", (key, lease.eni_id))
        if not held or not mine:
            raise LeaseLostError(lease)

    async def submitting(
        self, key: int, chunk: tuple[str, ...], outcome: Outcome, *, lease: Lease | None = None
    ) -> None:
        async with self.connector.transaction() as tx:
            await self._fence(tx, key, lease)
            sent = encode(sorted({*outcome.sent, *chunk}))  # recorded as sent before it is sent (D25)
            await tx.run(_STEP, (SUBMITTING, encode(list(chunk)), encode(outcome.to_json()), sent, key))

    async def submitted(
        self,
        key: int,
        task_id: str,
        request_id: str | None,
        chunk: tuple[str, ...],
        outcome: Outcome,
        *,
        lease: Lease | None = None,
    ) -> None:
        async with self.connector.transaction() as tx:
            await self._fence(tx, key, lease)
            await tx.run(
                "INSERT INTO tasks (item_id, task_id, request_id, ips, done) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT (item_id, task_id) DO UPDATE SET request_id = excluded.request_id, "
                "ips = excluded.ips, done = 0",
                (key, task_id, request_id, encode(list(chunk))),
            )
            await tx.run(_STEP, (SUBMITTED, None, encode(outcome.to_json()), encode_sent(outcome), key))

    async def progressed(self, key: int, outcome: Outcome, *, lease: Lease | None = None) -> None:
        await self._settled(key, outcome, SUBMITTED, lease)

    async def finished(self, key: int, outcome: Outcome, *, lease: Lease | None = None) -> None:
        await self._settled(key, outcome, FINISHED, lease)

    async def _settled(self, key: int, outcome: Outcome, state: str, lease: Lease | None) -> None:
        async with self.connector.transaction() as tx:
            await self._fence(tx, key, lease)
            await tx.run("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))
            await tx.run(_STEP, (state, None, encode(outcome.to_json()), encode_sent(outcome), key))

    async def load(
        self, items: Iterable[Item | InvalidItem], *, meta: dict[str, Any] | None = None
    ) -> list[Outcome]:
        settled: list[Outcome] = []
        async with self.connector.transaction() as tx:
            top = await tx.run("SELECT COALESCE(MAX(id), 0) FROM items")
            if meta:
                await self._put_meta(tx, meta)
            batch: list[Item] = []
            for entry in items:
                if isinstance(entry, InvalidItem):
                    await self._add_many(tx, batch)
                    batch.clear()
                    outcome = Outcome(
                        entry.vpc_id, entry.eni_id, entry.ips, status=FAILED_STATUS, line=entry.line
                    )
                    outcome.fail(entry.error)
                    await tx.run(
                        "INSERT INTO items (vpc_id, eni_id, ips, line, state, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                        (entry.vpc_id, entry.eni_id, encode(list(entry.ips)), entry.line, FINISHED,
                         encode(outcome.to_json())),
                    )  # fmt: skip
                    settled.append(outcome)
                    continue
                batch.append(entry)
                if len(batch) >= LOAD_BATCH:
                    await self._add_many(tx, batch)
                    batch.clear()
            await self._add_many(tx, batch)
            await tx.run(_LEASES_FOR, (top[0][0],))
        return settled

    @staticmethod
    async def _add_many(tx: Tx, items: list[Item]) -> None:
        if items:
            await tx.run_many(
                _ITEM_INSERT,
                [(i.vpc_id, i.eni_id, encode(list(i.ips)), i.line, PENDING) for i in items],
            )

    # -- reading -----------------------------------------------------------------------------------------

    async def item(self, key: int) -> tuple[str, dict[str, Any] | None] | None:
        async with self.connector.reading() as tx:
            rows = await tx.run("SELECT state, outcome FROM items WHERE id = ?", (key,))
        if not rows:
            return None
        state, text = rows[0]
        return state, (decode(self.where, key, "outcome", text) if text else None)

    async def counts(self) -> dict[str, int]:
        async with self.connector.reading() as tx:
            rows = await tx.run("SELECT state, COUNT(*) FROM items GROUP BY state")
        found = Counter({state: int(count) for state, count in rows})
        strange = sorted(set(found) - set(STATES), key=str)
        if strange:
            async with self.connector.reading() as tx:
                ((key,),) = await tx.run("SELECT MIN(id) FROM items WHERE state = ?", (strange[0],))
            raise damaged(
                self.where,
                key,
                "state",
                f"unknown state {strange[0]!r} (expected one of {', '.join(STATES)})",
            )
        return {state: found.get(state, 0) for state in STATES}

    async def outcome_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        async for data in self.finished_outcomes():
            counts[str(data.get("status"))] += 1
        return dict(counts)

    async def _finished_rows(self) -> AsyncIterator[Row]:
        last = 0
        while True:
            async with self.connector.reading() as tx:
                rows = await tx.run(
                    "SELECT id, outcome FROM items WHERE id > ? AND state = ? ORDER BY id LIMIT ?",
                    (last, FINISHED, PAGE),
                )
            if not rows:
                return
            last = rows[-1][0]
            for row in rows:
                yield row

    async def finished_outcomes(self) -> AsyncIterator[dict[str, Any]]:
        async for key, text in self._finished_rows():
            data = decode(self.where, key, "outcome", text)
            if not isinstance(data, dict) or not isinstance(data.get("status"), str):
                raise damaged(self.where, key, "outcome", "expected an object with a status")
            yield data

    async def finished_items(self) -> AsyncIterator[Outcome]:
        async for key, text in self._finished_rows():
            yield final_outcome(self.where, key, text)

    async def unfinished(self, *, eni_ids: Collection[str] | None = None) -> AsyncIterator[Resumed]:
        wanted = sorted(set(eni_ids)) if eni_ids is not None else None
        last = 0
        while True:
            async with self.connector.reading() as tx:
                if wanted is None:
                    rows = await tx.run(
                        "SELECT id, vpc_id, eni_id, ips, line, in_doubt, outcome, sent FROM items "
                        "WHERE id > ? AND state <> ? ORDER BY id LIMIT ?",
                        (last, FINISHED, PAGE),
                    )
                else:
                    marks = ", ".join("?" * len(wanted)) or "NULL"
                    rows = await tx.run(
                        "SELECT id, vpc_id, eni_id, ips, line, in_doubt, outcome, sent FROM items "
                        f"WHERE id > ? AND state <> ? AND eni_id IN ({marks}) ORDER BY id LIMIT ?",
                        (last, FINISHED, *wanted, PAGE),
                    )
                tasks = await self._open_tasks(tx, [row[0] for row in rows])
            if not rows:
                return
            last = rows[-1][0]
            for row in rows:
                yield self._resumed(row, tasks.get(row[0], []))

    async def _open_tasks(self, tx: Tx, keys: list[int]) -> dict[int, list[Row]]:
        found: dict[int, list[Row]] = {}
        if not keys:
            return found
        marks = ", ".join("?" * len(keys))
        for item_id, task_id, request_id, ips in await tx.run(
            f"SELECT item_id, task_id, request_id, ips FROM tasks WHERE done = 0 AND item_id IN ({marks}) "
            "ORDER BY item_id, task_id",
            keys,
        ):
            found.setdefault(item_id, []).append((task_id, request_id, ips))
        return found

    def _resumed(self, row: Row, tasks: list[Row]) -> Resumed:
        key, vpc, eni, ips_text, line, in_doubt, outcome_text, sent_text = row
        where = self.where
        ips = ip_list(where, key, "ips", decode(where, key, "ips", ips_text))
        item = Item(vpc, eni, ips, line, key=key)
        outcome = Outcome(vpc, eni, ips, line=line)
        if outcome_text:
            restore(where, key, outcome, decode(where, key, "outcome", outcome_text), final=False)
        outcome.sent.update(ip_list(where, key, "sent", decode(where, key, "sent", sent_text)))
        plan = ResumePlan(outcome)
        for task_id, request_id, task_ips in tasks:
            chunk = ip_list(where, key, "tasks.ips", decode(where, key, "tasks.ips", task_ips))
            plan.tasks.append((str(task_id), request_id, chunk))
        if in_doubt:
            plan.in_doubt = ip_list(where, key, "in_doubt", decode(where, key, "in_doubt", in_doubt))
        return Resumed(item, plan)

    # -- leases ------------------------------------------------------------------------------------------

    async def claim(self, owner: str, *, lease_s: float, limit: int) -> list[Lease]:
        async with self.connector.transaction() as tx:
            rows = await tx.run(self._sql["claim"], (limit, owner, lease_s))
        return sorted((Lease(e, o, int(n), float(t)) for e, o, n, t in rows), key=lambda lease: lease.eni_id)

    async def renew(self, lease: Lease, *, lease_s: float) -> Lease:
        async with self.connector.transaction() as tx:
            rows = await tx.run(self._sql["renew"], (lease_s, lease.eni_id, lease.owner, lease.epoch))
        if not rows:
            raise LeaseLostError(lease)
        eni, owner, epoch, expires = rows[0]
        return Lease(eni, owner, int(epoch), float(expires))

    async def give_back(self, lease: Lease) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(_GIVE_BACK, (lease.eni_id, lease.owner, lease.epoch))


_TEMPLATES = {"fence": _FENCE, "claim": _CLAIM, "renew": _RENEW}
_RELEASE_COLUMNS = (
    "seq, id, item_key, vpc_id, eni_id, ips, status, created_at, started_at, finished_at, outcome"
)


class SqlReleases(Releases):
    """The service's ``Releases`` in the journal's database; see the module docstring."""

    def __init__(self, journal: SqlJournal) -> None:
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
    ) -> tuple[list[Release], bool]:
        async with self.connector.transaction() as tx:
            if idempotency_key is not None:
                taken = await tx.run(
                    "INSERT INTO service_idempotency (key, body_hash, release_ids, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING RETURNING key",
                    (idempotency_key, body_hash, encode(list(ids)), now),
                )
                if not taken:  # recorded before (by us or another process): the database decided
                    earlier = await self._replay(tx, idempotency_key, body_hash)
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
        return [r for r in made if r is not None], True

    async def replay(self, idempotency_key: str, body_hash: str) -> list[Release] | None:
        async with self.connector.reading() as tx:
            return await self._replay(tx, idempotency_key, body_hash)

    async def _replay(self, tx: Tx, idempotency_key: str, body_hash: str) -> list[Release] | None:
        rows = await tx.run(
            "SELECT body_hash, release_ids FROM service_idempotency WHERE key = ?", (idempotency_key,)
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

    async def started(self, release_id: str, *, now: float) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(
                "UPDATE service_releases SET status = ?, started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND status = ?",
                (RUNNING, now, release_id, PENDING),
            )

    async def requeue(self, release_id: str) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(
                "UPDATE service_releases SET status = ? WHERE id = ? AND status = ?",
                (PENDING, release_id, RUNNING),
            )

    async def finish(self, release_id: str, status: str, outcome: dict[str, Any], *, now: float) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(
                "UPDATE service_releases SET status = ?, finished_at = ?, outcome = ?, "
                "started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN (?, ?)",
                (status, now, encode(outcome), now, release_id, *RELEASE_UNFINISHED),
            )

    async def page(
        self, *, status: str | None = None, limit: int = 100, before: int | None = None
    ) -> tuple[list[Release], int | None]:
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
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

    async def unfinished(self) -> list[Release]:
        async with self.connector.reading() as tx:
            rows = await tx.run(
                f"SELECT {_RELEASE_COLUMNS} FROM service_releases WHERE status IN (?, ?) ORDER BY seq",
                RELEASE_UNFINISHED,
            )
        return [self._release(row) for row in rows]

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


__all__ = ["Connector", "SqlJournal", "SqlReleases", "Tx"]
