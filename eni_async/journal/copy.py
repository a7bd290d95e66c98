"""``copy_journal``: move a journal between SQLite and PostgreSQL (either way), losing nothing.

The source is opened as its writer (so it is refused while a batch or ``serve`` uses it, and a journal of
an older format is first brought to the current one) and read page by page; the destination must hold no
journal yet, and receives every row in ONE transaction, keys kept: after a failure it holds nothing, and
``resume`` or ``serve`` on it carries on exactly where the source stood (items, tasks, the IPs sent,
releases and idempotency keys). Leases are copied without their owners: a claim held on the source means
nothing on the destination. Rows move as stored (JSON text), unread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from eni_async.journal import JournalError, open_journal
from eni_async.journal.postgres import PostgresJournal
from eni_async.journal.sql import PAGE, Row, SqlJournal

# Table -> (columns, the key columns rows are paged by). Order matters: items before what refers to them.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "meta": (("key", "value"), ("key",)),
    "items": (("id", "vpc_id", "eni_id", "ips", "line", "state", "in_doubt", "outcome", "sent"), ("id",)),
    "tasks": (("item_id", "task_id", "request_id", "ips", "done"), ("item_id", "task_id")),
    "leases": (("eni_id", "epoch"), ("eni_id",)),
    "service_releases": (
        (
            "seq",
            "id",
            "item_key",
            "vpc_id",
            "eni_id",
            "ips",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "outcome",
        ),
        ("seq",),
    ),
    "service_idempotency": (("key", "body_hash", "release_ids", "created_at"), ("key",)),
}
SUMMARY = (
    ("items", "items"),
    ("tasks", "tasks"),
    ("service_releases", "releases"),
    ("service_idempotency", "idempotency keys"),
)
# Identity columns whose sequence must pass the copied keys (PostgreSQL).
IDENTITIES = (("items", "id"), ("service_releases", "seq"))


@dataclass(frozen=True)
class Copied:
    """What a copy moved: rows per table."""

    rows: dict[str, int]

    def summary(self) -> str:
        """One line: the counts that matter to an operator."""
        return ", ".join(f"{self.rows.get(table, 0)} {label}" for table, label in SUMMARY)


async def _pages(journal: SqlJournal, table: str) -> AsyncIterator[list[Row]]:
    columns, keys = TABLES[table]
    after: tuple[object, ...] | None = None
    order = ", ".join(keys)
    while True:
        where = f"WHERE ({order}) > ({', '.join('?' * len(keys))})" if after is not None else ""
        async with journal.connector.reading() as tx:
            rows = await tx.run(
                f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY {order} LIMIT ?",
                (*(after or ()), PAGE),
            )
        if not rows:
            return
        yield rows
        last = rows[-1]
        after = tuple(last[columns.index(k)] for k in keys)


async def copy_journal(source: str, destination: str) -> Copied:
    """Copy the journal ``source`` into the empty journal ``destination`` (URLs or paths); see the module
    docstring. Raises ``JournalError``."""
    src = await open_journal(source)
    try:
        if src.where == destination or src.where == str(destination):
            raise JournalError(src.where, "cannot be copied onto itself")
        dst = await open_journal(destination)
        try:
            assert isinstance(src, SqlJournal)
            assert isinstance(dst, SqlJournal)
            return await _copy(src, dst)
        finally:
            await dst.close()
    finally:
        await src.close()


async def _copy(src: SqlJournal, dst: SqlJournal) -> Copied:
    items, releases = await dst.counts(), await dst.releases.counts()
    if any(items.values()) or any(releases.values()):
        raise JournalError(dst.where, "already holds a journal; copy into an empty one")
    counts: dict[str, int] = {}
    async with dst.connector.transaction() as tx:
        await tx.run("DELETE FROM leases")  # an empty journal's: none, but never two rows for one ENI
        for table, (columns, _) in TABLES.items():
            marks = ", ".join("?" * len(columns))
            async for rows in _pages(src, table):
                await tx.run_many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
                counts[table] = counts.get(table, 0) + len(rows)
        if isinstance(dst, PostgresJournal):
            for table, column in IDENTITIES:
                await tx.run(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                    f"GREATEST((SELECT MAX({column}) FROM {table}), 1))"
                )
    return Copied(counts)


__all__ = ["Copied", "copy_journal"]
