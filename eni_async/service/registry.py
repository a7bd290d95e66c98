"""The release registry: what callers asked for, under which id and idempotency key, and where it stands.

A release is one ENI's request as a caller made it. Its work lives in the journal as one item (the engine's
durable record); the registry adds the caller's view in two tables of its own, kept in the journal's SQLite
file so that one commit records both: ``service_releases`` (id, journal key, status, timestamps, final
outcome) and ``service_idempotency`` (key, body hash, the releases the key created). A release and its
journal item are written in one transaction, before the caller hears of the release. Nothing here does
HTTP or talks to Tencent; statuses move ``pending`` -> ``running`` -> a final one and never back.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eni_async.journal import Journal
from eni_async.outcomes import SUCCEEDED, Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS service_releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    item_key INTEGER NOT NULL,
    vpc_id TEXT NOT NULL,
    eni_id TEXT NOT NULL,
    ips TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS service_releases_status ON service_releases(status, seq);
CREATE UNIQUE INDEX IF NOT EXISTS service_releases_item ON service_releases(item_key);
CREATE TABLE IF NOT EXISTS service_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_idempotency (
    key TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    release_ids TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

PENDING, RUNNING, FAILED = "pending", "running", "failed"
UNFINISHED = (PENDING, RUNNING)
# A release's status as callers see it: the batch statuses that are not ``succeeded`` count as failed.
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED)
_COLUMNS = "seq, id, item_key, vpc_id, eni_id, ips, status, created_at, started_at, finished_at, outcome"


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with another body."""


@dataclass(frozen=True)
class Release:
    """One release as the registry holds it; ``outcome`` is the final batch outcome (JSON) once finished."""

    seq: int
    id: str
    item_key: int
    vpc_id: str
    eni_id: str
    ips: tuple[str, ...]
    status: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outcome: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the release has reached its final status."""
        return self.status not in UNFINISHED

    @property
    def item(self) -> Item:
        """The journal item that does the release's work (its key doubles as ``line``, see the engine)."""
        return Item(self.vpc_id, self.eni_id, self.ips, line=self.item_key, key=self.item_key)

    def to_json(self, progress: dict[str, Any] | None = None) -> dict[str, Any]:
        """The release in the batch output format, plus id and timestamps; ``progress`` is the journal's
        outcome so far for an unfinished release."""
        data = dict(self.outcome or progress or {})
        data.pop("line", None)
        data.update(
            id=self.id,
            status=self.status,
            vpc_id=self.vpc_id,
            eni_id=self.eni_id,
            ips=list(self.ips),
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            finished_at=_iso(self.finished_at),
        )
        for key in ("released", "not_released", "unknown", "absent", "task_ids", "request_ids"):
            data.setdefault(key, [])
        data.setdefault("error", None)
        if self.outcome is not None and self.outcome.get("status") != self.status:
            data["outcome_status"] = self.outcome.get("status")
        return data


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def final_status(outcome_status: str) -> str:
    """The release status for a finished outcome: ``succeeded``, or ``failed`` for every other ending."""
    return SUCCEEDED if outcome_status == SUCCEEDED else FAILED


class Registry:
    """Releases and idempotency keys in the journal's database; see the module docstring."""

    def __init__(self, journal: Journal, *, now: Callable[[], float]) -> None:
        self.journal = journal
        self._db: sqlite3.Connection = journal.connection
        self._now = now
        self._db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"Registry({self.journal!r})"

    def replay(self, idempotency_key: str, body_hash: str) -> list[Release] | None:
        """The releases an earlier request with this key created (``None`` if the key is new); raise
        ``IdempotencyConflictError`` when that request had another body."""
        row = self._db.execute(
            "SELECT body_hash, release_ids FROM service_idempotency WHERE key = ?", (idempotency_key,)
        ).fetchone()
        if row is None:
            return None
        if row[0] != body_hash:
            raise IdempotencyConflictError(idempotency_key)
        found = [self.get(rid) for rid in json.loads(row[1])]
        return [r for r in found if r is not None]

    def heartbeat(self) -> None:
        """Write to the database (the readiness check: raises ``sqlite3.Error`` when it cannot)."""
        self._db.execute("INSERT OR REPLACE INTO service_meta VALUES ('heartbeat', ?)", (str(self._now()),))

    def create(
        self,
        requests: Sequence[tuple[str, str, tuple[str, ...]]],
        *,
        idempotency_key: str | None = None,
        body_hash: str = "",
    ) -> tuple[list[Release], bool]:
        """Record checked ``(vpc_id, eni_id, ips)`` requests as pending releases, with their journal items.

        With an ``idempotency_key`` seen before, return the releases it created (and ``False``) when
        ``body_hash`` matches, or raise ``IdempotencyConflictError``. Synchronous, so two identical
        requests on one event loop can never both create.
        """
        if idempotency_key is not None:
            earlier = self.replay(idempotency_key, body_hash)
            if earlier is not None:
                return earlier, False
        now = self._now()
        ids = [f"rel-{uuid.uuid4().hex}" for _ in requests]

        def record(db: sqlite3.Connection, keys: list[int]) -> None:
            db.executemany(
                "INSERT INTO service_releases (id, item_key, vpc_id, eni_id, ips, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (rid, key, vpc, eni, json.dumps(list(ips)), PENDING, now)
                    for rid, key, (vpc, eni, ips) in zip(ids, keys, requests, strict=True)
                ],
            )
            if idempotency_key is not None:
                db.execute(
                    "INSERT INTO service_idempotency VALUES (?, ?, ?, ?)",
                    (idempotency_key, body_hash, json.dumps(ids), now),
                )

        self.journal.add_many([Item(vpc, eni, ips) for vpc, eni, ips in requests], also=record)
        made = [self.get(rid) for rid in ids]
        return [r for r in made if r is not None], True

    def started(self, release_id: str) -> None:
        """A worker took the release: it is running."""
        self._db.execute(
            "UPDATE service_releases SET status = ?, started_at = COALESCE(started_at, ?) "
            "WHERE id = ? AND status = ?",
            (RUNNING, self._now(), release_id, PENDING),
        )

    def requeue(self, release_id: str) -> None:
        """Work on the release was cut short and will start again (on the next start): pending."""
        self._db.execute(
            "UPDATE service_releases SET status = ? WHERE id = ? AND status = ?",
            (PENDING, release_id, RUNNING),
        )

    def finish(self, release_id: str, outcome: dict[str, Any]) -> Release | None:
        """Record the final outcome; return the release as it now stands."""
        self._db.execute(
            "UPDATE service_releases SET status = ?, finished_at = ?, outcome = ?, "
            "started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN (?, ?)",
            (
                final_status(outcome["status"]),
                self._now(),
                json.dumps(outcome),
                self._now(),
                release_id,
                *UNFINISHED,
            ),
        )
        return self.get(release_id)

    def get(self, release_id: str) -> Release | None:
        """The release with this id, or ``None``."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM service_releases WHERE id = ?", (release_id,)
        ).fetchone()
        return _release(row) if row else None

    def by_item(self, item_key: int) -> Release | None:
        """The release whose work is the journal item ``item_key``."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM service_releases WHERE item_key = ?", (item_key,)
        ).fetchone()
        return _release(row) if row else None

    def page(
        self, *, status: str | None = None, limit: int = 100, before: int | None = None
    ) -> tuple[list[Release], int | None]:
        """Releases newest first, ``limit`` at a time, older than ``before`` (a ``seq``); and the next
        ``before``, or ``None`` when this is the last page."""
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM service_releases WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        releases = [_release(row) for row in rows[:limit]]
        more = len(rows) > limit
        return releases, (releases[-1].seq if more and releases else None)

    def unfinished(self) -> list[Release]:
        """Every release not finished, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM service_releases WHERE status IN (?, ?) ORDER BY seq", UNFINISHED
        ).fetchall()
        return [_release(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Releases by status, every status present."""
        found = dict(
            self._db.execute("SELECT status, COUNT(*) FROM service_releases GROUP BY status").fetchall()
        )
        return {status: int(found.get(status, 0)) for status in STATUSES}


def _release(row: Any) -> Release:
    seq, rid, key, vpc, eni, ips, status, created, started, finished, outcome = row
    return Release(
        seq=seq,
        id=rid,
        item_key=key,
        vpc_id=vpc,
        eni_id=eni,
        ips=tuple(json.loads(ips)),
        status=status,
        created_at=created,
        started_at=started,
        finished_at=finished,
        outcome=json.loads(outcome) if outcome else None,
    )


__all__ = ["STATUSES", "IdempotencyConflictError", "Registry", "Release", "final_status"]
