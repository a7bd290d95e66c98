"""The durable record of a batch, in SQLite, so that a crash or ``kill -9`` loses nothing.

Each item moves ``pending`` -> ``submitting`` (a chunk is about to be sent) -> ``submitted`` (task id,
request id and IPs known) -> ... -> ``finished`` (the outcome). Every step is committed before the work it
announces goes on, in WAL mode (a commit survives the process dying). Resuming never resubmits a known task:
submitted tasks are polled, a chunk caught ``submitting`` is reconciled against the ENI first, and pending
IPs run. The journal holds ids, IPs, task ids and outcomes, never a credential.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eni_async.errors import InputError
from eni_async.outcomes import FAILED as FAILED_STATUS
from eni_async.outcomes import InvalidItem, Item, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    vpc_id TEXT NOT NULL,
    eni_id TEXT NOT NULL,
    ips TEXT NOT NULL,
    line INTEGER,
    state TEXT NOT NULL,
    in_doubt TEXT,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    item_id INTEGER NOT NULL REFERENCES items(id),
    task_id TEXT NOT NULL,
    request_id TEXT,
    ips TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, task_id)
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
"""

PENDING, SUBMITTING, SUBMITTED, FINISHED = "pending", "submitting", "submitted", "finished"
STATES = (PENDING, SUBMITTING, SUBMITTED, FINISHED)


@dataclass
class ResumePlan:
    """Where an unfinished item stood: its outcome so far, tasks to poll, and a chunk in doubt."""

    outcome: Outcome
    tasks: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)
    in_doubt: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resumed:
    """An unfinished item read back from a journal, with its plan."""

    item: Item
    plan: ResumePlan


class Journal:
    """A batch journal in one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError("journal", str(path), f"not a usable journal ({exc})") from None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def close(self) -> None:
        """Close the database (every step is already committed)."""
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ------------------------------------------------------------------------------------------

    def set_meta(self, data: dict[str, Any]) -> None:
        """Record settings needed to resume (endpoint, dialect, region); never credentials."""
        with self._db:
            for key, value in data.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict[str, Any]:
        """The settings recorded by ``set_meta``."""
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # -- steps -----------------------------------------------------------------------------------------

    def add(self, item: Item) -> int:
        """Record a new pending item and return its key."""
        cur = self._db.execute(
            "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
            (item.vpc_id, item.eni_id, json.dumps(list(item.ips)), item.line, PENDING),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_many(
        self, items: Sequence[Item], *, also: Callable[[sqlite3.Connection, list[int]], None] | None = None
    ) -> list[int]:
        """Record new pending items in one transaction and return their keys; ``also(db, keys)`` runs in
        the same transaction, so a layer that keeps its own tables beside the journal's (the service's
        release registry) commits its rows together with the items, or neither."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            keys = []
            for item in items:
                cur = self._db.execute(
                    "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
                    (item.vpc_id, item.eni_id, json.dumps(list(item.ips)), item.line, PENDING),
                )
                assert cur.lastrowid is not None
                keys.append(cur.lastrowid)
            if also is not None:
                also(self._db, keys)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return keys

    def submitting(self, key: int, chunk: tuple[str, ...], outcome: Outcome) -> None:
        """A chunk is about to be sent: if we die now, the chunk is in doubt."""
        self._db.execute(
            "UPDATE items SET state = ?, in_doubt = ?, outcome = ? WHERE id = ?",
            (SUBMITTING, json.dumps(list(chunk)), json.dumps(outcome.to_json()), key),
        )

    def submitted(
        self, key: int, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        """The server accepted the chunk as ``task_id``; from now on it is polled, never resubmitted."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO tasks (item_id, task_id, request_id, ips, done) VALUES (?, ?, ?, ?, 0)",
                (key, task_id, request_id, json.dumps(list(chunk))),
            )
            self._db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (SUBMITTED, json.dumps(outcome.to_json()), key),
            )

    def progressed(self, key: int, outcome: Outcome) -> None:
        """A chunk settled: its tasks are done and the outcome so far is recorded."""
        with self._db:
            self._db.execute("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))
            self._db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (SUBMITTED, json.dumps(outcome.to_json()), key),
            )

    def finished(self, key: int, outcome: Outcome) -> None:
        """The item is over; its outcome is final."""
        with self._db:
            self._db.execute("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))
            self._db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (FINISHED, json.dumps(outcome.to_json()), key),
            )

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The open database, for layers that keep their own tables beside the journal's (the service)."""
        return self._db

    def item(self, key: int) -> tuple[str, dict[str, Any] | None] | None:
        """One item's state and outcome so far (``None`` for an unknown key)."""
        row = self._db.execute("SELECT state, outcome FROM items WHERE id = ?", (key,)).fetchone()
        if row is None:
            return None
        state, text = row
        return state, (json.loads(text) if text else None)

    def counts(self) -> dict[str, int]:
        """Items by state (every state present, zero included)."""
        found = Counter(dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()))
        return {state: found.get(state, 0) for state in STATES}

    def outcome_counts(self) -> dict[str, int]:
        """Finished items by outcome status."""
        counts: Counter[str] = Counter()
        for (text,) in self._db.execute("SELECT outcome FROM items WHERE state = ?", (FINISHED,)):
            counts[json.loads(text)["status"]] += 1
        return dict(counts)

    def finished_outcomes(self) -> Iterator[dict[str, Any]]:
        """The final outcomes, as JSON objects, in input order."""
        for (text,) in self._db.execute("SELECT outcome FROM items WHERE state = ? ORDER BY id", (FINISHED,)):
            yield json.loads(text)

    def load(self, items: Iterable[Item | InvalidItem]) -> Iterator[Outcome]:
        """Record every input item as pending before any work starts, so a crash can lose none of them.

        Items that could not be read are finished at once; their outcomes are yielded for reporting.
        """
        batch: list[Item] = []
        for entry in items:
            if isinstance(entry, InvalidItem):
                outcome = Outcome(
                    entry.vpc_id, entry.eni_id, entry.ips, status=FAILED_STATUS, line=entry.line
                )
                outcome.fail(entry.error)
                key = self.add(Item(entry.vpc_id, entry.eni_id, entry.ips, entry.line))
                self.finished(key, outcome)
                yield outcome
                continue
            batch.append(entry)
            if len(batch) >= 1000:
                self._add_many(batch)
                batch.clear()
        self._add_many(batch)

    def _add_many(self, items: list[Item]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
                [(i.vpc_id, i.eni_id, json.dumps(list(i.ips)), i.line, PENDING) for i in items],
            )

    def unfinished(self) -> Iterator[Resumed]:
        """Every item not finished, with what is known of it, in input order (read page by page)."""
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT id, vpc_id, eni_id, ips, line, in_doubt, outcome FROM items "
                "WHERE id > ? AND state != ? ORDER BY id LIMIT 500",
                (last, FINISHED),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from self._resumed(rows)

    def _resumed(self, rows: list[Any]) -> Iterator[Resumed]:
        for key, vpc, eni, ips, line, in_doubt, outcome_text in rows:
            item = Item(vpc, eni, tuple(json.loads(ips)), line, key=key)
            outcome = Outcome(vpc, eni, item.ips, line=line)
            if outcome_text:
                _restore(outcome, json.loads(outcome_text))
            plan = ResumePlan(outcome)
            for task_id, request_id, task_ips in self._db.execute(
                "SELECT task_id, request_id, ips FROM tasks WHERE item_id = ? AND done = 0", (key,)
            ):
                plan.tasks.append((task_id, request_id, tuple(json.loads(task_ips))))
            if in_doubt:
                plan.in_doubt = tuple(json.loads(in_doubt))
            yield Resumed(item, plan)


def _restore(outcome: Outcome, data: dict[str, Any]) -> None:
    outcome.released = list(data.get("released", []))
    outcome.not_released = list(data.get("not_released", []))
    outcome.absent = list(data.get("absent", []))
    # IPs of unknown fate were sent by an earlier run: a resumed run retries them, and counts those found gone
    # as released by that earlier call (not as absent).
    outcome.sent.update(data.get("unknown", []))
    outcome.task_ids = list(data.get("task_ids", []))
    outcome.request_ids = list(data.get("request_ids", []))
    outcome.error = data.get("error")
    outcome.attempts = int(data.get("attempts", 0))
    outcome.elapsed_s = float(data.get("elapsed_s", 0.0))
    outcome.decisions = list(data.get("decisions", []))


class JournalRecorder:
    """Adapts a ``Journal`` to the ``Recorder`` hooks of ``reconcile`` (items carry their journal key)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        if item.key is not None:
            self.journal.submitting(item.key, chunk, outcome)

    def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        if item.key is not None:
            self.journal.submitted(item.key, task_id, request_id, chunk, outcome)

    def progressed(self, item: Item, outcome: Outcome) -> None:
        if item.key is not None:
            self.journal.progressed(item.key, outcome)
