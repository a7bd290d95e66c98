"""The journal's logic once, in SQL both databases speak, over a small ``Connector`` each database provides.

Every step is one short transaction on the connector (committed before the work it announces goes on);
reads are paged by key, one short read per page, so that no reader holds a transaction while the batch
works. Statements use ``?`` placeholders and three markers the connector fills: ``{now}`` (the database's
clock, seconds since the epoch), ``{skip_locked}`` (``FOR UPDATE OF l SKIP LOCKED`` where rows can be
locked) and ``{for_share}``. Leases follow procrastinate's claim: in one transaction, free ENIs (those whose
unfinished releases wait longest first) are picked with ``SKIP LOCKED`` and their epoch bumped; a write of
leased work first reads its lease row ``FOR SHARE`` with ``owner`` and ``epoch`` in the ``WHERE``, so a
claim skips the ENI while the write is under way, and a writer that lost its lease writes nothing. The
service's ``Releases`` share the connector, so a release and its item commit together; the connector's
``notify`` tells other processes sharing the journal, at commit, of new work and of ended releases. The
steps of work not yet done (``submitting``, ``progressed``, ``finished``) update an item only while it is not
finished, and raise ``WorkCancelledError`` otherwise: that is how a cancel (``Releases.cancel``) wins against
a submit that comes after it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any, Self

from eni_async.journal.connector import IN_LIST, PAGE, Connector, Row, Tx
from eni_async.journal.releases import SqlReleases
from eni_async.journal.seam import (
    FINISHED,
    PENDING,
    STATES,
    SUBMITTED,
    SUBMITTING,
    Deliver,
    Journal,
    Lease,
    LeaseLostError,
    Resumed,
    ResumePlan,
    WorkCancelledError,
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

LOAD_BATCH = 1000


_ITEM_INSERT = "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)"
_LEASES_FOR = "INSERT INTO leases (eni_id) SELECT DISTINCT eni_id FROM items WHERE id > ? ON CONFLICT (eni_id) DO NOTHING"
_STEP = "UPDATE items SET state = ?, in_doubt = ?, outcome = ?, sent = ? WHERE id = ?"
# A step of work not yet done: refused (no row) once the item is finished, as a cancelled release's is. The
# cancel's own update refuses an item with anything sent, so the database decides which of the two wins.
_OPEN_STEP = _STEP + " AND state <> 'finished' RETURNING id"
# Progress so far, also refused once finished: it never erases a submit in doubt (the chunk stays in doubt,
# the item ``submitting``, unless the try is ``taken_back``: it surely had no effect), and the item's tasks
# stay to be polled until each is seen ending (``progressed``'s ``ended``).
_PROGRESS = (
    "UPDATE items SET state = CASE WHEN in_doubt IS NULL OR ? THEN 'submitted' ELSE state END, "
    "in_doubt = CASE WHEN ? THEN NULL ELSE in_doubt END, outcome = ?, sent = ? "
    "WHERE id = ? AND state <> 'finished' RETURNING id"
)
# The lease held, on the row's own ENI (``{{table}}``: items or service_releases), in one statement.
_FENCE = (
    "SELECT l.epoch FROM leases l JOIN {{table}} t ON t.eni_id = l.eni_id "
    "WHERE t.id = ? AND l.eni_id = ? AND l.owner = ? AND l.epoch = ? {for_share}"
)
# Before a send: the lease must also not have expired (another owner may be adopting the ENI).
_FENCE_LIVE = (
    "SELECT l.epoch FROM leases l JOIN {{table}} t ON t.eni_id = l.eni_id "
    "WHERE t.id = ? AND l.eni_id = ? AND l.owner = ? AND l.epoch = ? AND l.expires_at > {now} {for_share}"
)
# ENIs with unfinished releases that nobody holds, those whose oldest release waits longest first.
_CLAIMABLE = """
SELECT l.eni_id, l.owner FROM leases l
JOIN (
    SELECT eni_id, MIN(seq) AS first FROM service_releases WHERE status IN ('pending', 'running')
    GROUP BY eni_id
) w ON w.eni_id = l.eni_id
WHERE l.owner IS NULL OR l.expires_at <= {now}
ORDER BY w.first LIMIT ? {skip_locked}
"""
_TAKE = (
    "UPDATE leases SET owner = ?, epoch = epoch + 1, expires_at = {now} + ? WHERE eni_id IN ({{marks}}) "
    "RETURNING eni_id, owner, epoch, expires_at"
)
_RENEW = (
    "UPDATE leases SET expires_at = {now} + ? WHERE eni_id = ? AND owner = ? AND epoch = ? "
    "RETURNING eni_id, owner, epoch, expires_at"
)
_RENEW_MANY = (
    "UPDATE leases SET expires_at = {now} + ? WHERE owner = ? AND eni_id IN ({{marks}}) "
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

    async def fence(
        self, tx: Tx, lease: Lease | None, *, table: str = "items", key: object, live: bool = False
    ) -> None:
        """Raise ``LeaseLostError`` inside ``tx`` unless ``lease`` is still held (``live``: and not expired)
        and covers the row ``key`` of ``table`` (an item, or a release); its lease row is then share-locked
        until ``tx`` ends, so that no claim takes the ENI meanwhile. No lease: nothing to check."""
        if lease is None:
            return
        sql = self._sql["fence_live" if live else "fence"].replace("{table}", _FENCED[table])
        if not await tx.run(sql, (key, lease.eni_id, lease.owner, lease.epoch)):
            raise LeaseLostError(lease)

    async def submitting(
        self, key: int, chunk: tuple[str, ...], outcome: Outcome, *, lease: Lease | None = None
    ) -> None:
        async with self.connector.transaction() as tx:
            await self.fence(tx, lease, key=key, live=True)
            sent = encode(sorted({*outcome.sent, *chunk}))  # recorded as sent before it is sent (D25)
            step = (SUBMITTING, encode(list(chunk)), encode(outcome.to_json()), sent, key)
            if not await tx.run(_OPEN_STEP, step):  # cancelled meanwhile: nothing is sent
                raise WorkCancelledError(key, lease)

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
            await self.fence(tx, lease, key=key)
            await tx.run(
                "INSERT INTO tasks (item_id, task_id, request_id, ips, done) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT (item_id, task_id) DO UPDATE SET request_id = excluded.request_id, "
                "ips = excluded.ips, done = 0",
                (key, task_id, request_id, encode(list(chunk))),
            )
            await tx.run(_STEP, (SUBMITTED, None, encode(outcome.to_json()), encode_sent(outcome), key))

    async def progressed(
        self,
        key: int,
        outcome: Outcome,
        *,
        lease: Lease | None = None,
        ended: Collection[str] = (),
        taken_back: bool = False,
    ) -> None:
        async with self.connector.transaction() as tx:
            await self.fence(tx, lease, key=key)
            step = (taken_back, taken_back, encode(outcome.to_json()), encode_sent(outcome), key)
            if not await tx.run(_PROGRESS, step):  # finished meanwhile (cancelled): left as it is
                raise WorkCancelledError(key, lease)
            if ended:
                marks = ", ".join("?" * len(ended))
                await tx.run(
                    f"UPDATE tasks SET done = 1 WHERE item_id = ? AND task_id IN ({marks})", (key, *ended)
                )

    async def finished(self, key: int, outcome: Outcome, *, lease: Lease | None = None) -> None:
        async with self.connector.transaction() as tx:
            await self.fence(tx, lease, key=key)
            step = (FINISHED, None, encode(outcome.to_json()), encode_sent(outcome), key)
            if not await tx.run(_OPEN_STEP, step):  # finished meanwhile (cancelled): left as it is
                raise WorkCancelledError(key, lease)
            await tx.run("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))

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

    @property
    def shared(self) -> bool:
        return self.connector.shared

    async def claim(self, owner: str, *, lease_s: float, limit: int) -> list[Lease]:
        async with self.connector.transaction() as tx:
            free = await tx.run(self._sql["claimable"], (max(0, min(limit, IN_LIST)),))
            if not free:
                return []
            was = {eni: previous for eni, previous in free}
            marks = ", ".join("?" * len(free))
            rows = await tx.run(
                self._sql["take"].replace("{marks}", marks), (owner, lease_s, *(eni for eni, _ in free))
            )
        leases = [Lease(e, o, int(n), float(t), adopted_from=was.get(e)) for e, o, n, t in rows]
        return sorted(leases, key=lambda lease: lease.eni_id)

    async def renew(self, lease: Lease, *, lease_s: float) -> Lease:
        async with self.connector.transaction() as tx:
            rows = await tx.run(self._sql["renew"], (lease_s, lease.eni_id, lease.owner, lease.epoch))
        if not rows:
            raise LeaseLostError(lease)
        eni, owner, epoch, expires = rows[0]
        return Lease(eni, owner, int(epoch), float(expires))

    async def renew_many(self, leases: Collection[Lease], *, lease_s: float) -> list[Lease]:
        by_owner: dict[str, dict[str, Lease]] = {}
        for lease in leases:
            by_owner.setdefault(lease.owner, {})[lease.eni_id] = lease
        renewed: list[Lease] = []
        async with self.connector.transaction() as tx:
            for owner, held in by_owner.items():
                enis = sorted(held)
                for start in range(0, len(enis), IN_LIST):
                    part = enis[start : start + IN_LIST]
                    sql = self._sql["renew_many"].replace("{marks}", ", ".join("?" * len(part)))
                    for eni, who, epoch, expires in await tx.run(sql, (lease_s, owner, *part)):
                        if int(epoch) == held[eni].epoch:  # the same claim still: the owner is this one
                            renewed.append(Lease(eni, who, int(epoch), float(expires)))
        return sorted(renewed, key=lambda lease: lease.eni_id)

    async def give_back(self, lease: Lease) -> None:
        async with self.connector.transaction() as tx:
            await tx.run(_GIVE_BACK, (lease.eni_id, lease.owner, lease.epoch))

    async def give_back_many(self, leases: Collection[Lease]) -> None:
        async with self.connector.transaction() as tx:
            await tx.run_many(_GIVE_BACK, [(lease.eni_id, lease.owner, lease.epoch) for lease in leases])

    async def clear_leases(self) -> None:
        async with self.connector.transaction() as tx:
            await tx.run("UPDATE leases SET owner = NULL, expires_at = NULL WHERE owner IS NOT NULL")

    async def listen(self, deliver: Deliver) -> None:
        await self.connector.listen(deliver)

    async def hold(self) -> None:
        await self.connector.hold()


_FENCED = {"items": "items", "service_releases": "service_releases"}  # the tables a fence may name
_TEMPLATES = {
    "fence": _FENCE,
    "fence_live": _FENCE_LIVE,
    "claimable": _CLAIMABLE,
    "take": _TAKE,
    "renew": _RENEW,
    "renew_many": _RENEW_MANY,
}
__all__ = ["PAGE", "Connector", "Row", "SqlJournal", "Tx"]
