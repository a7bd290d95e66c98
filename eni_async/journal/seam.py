"""The storage seam: what ``batch``, ``resume``, ``status`` and ``serve`` need of a journal, whatever holds it.

``Journal`` is the protocol (every method a coroutine, so that a journal reached over the network never
blocks the event loop); ``Releases`` is the service's part of it. Both are implemented over SQLite (the
embedded default) and PostgreSQL (shared by processes), and one contract suite holds them to the same
behaviour (``tests/test_journal_contract.py``). This module holds the values that cross the seam and the one
codec between stored rows and ``Outcome`` values: a row that cannot be read back (a tampered or damaged
journal) is a one-line ``JournalError`` naming the item and the column, never a ``KeyError``. Nothing here
does I/O.

Leases (D27): the service's work on one ENI (its unfinished releases) is claimed by one owner with a lease
``(owner, epoch, expires_at)``; an expired lease may be claimed by another owner, which bumps the epoch (an
adoption). Every write of leased work names its lease and fails with ``LeaseLostError`` (writing nothing) once
the lease has moved: the fence. A chunk is recorded as about to be sent only under a lease that has not
expired, so that nothing new is sent for an ENI another owner may be adopting. Processes sharing a journal
hear of each other's work through two notification channels (``WORK_CHANNEL``: releases were created;
``RELEASE_CHANNEL``: a release ended, its id as payload), which a journal only one process writes never sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from eni_async.outcomes import SUCCEEDED, InvalidItem, Item, Outcome

PENDING, SUBMITTING, SUBMITTED, FINISHED = "pending", "submitting", "submitted", "finished"
STATES = (PENDING, SUBMITTING, SUBMITTED, FINISHED)

# A release's status as callers see it: the batch statuses that are not ``succeeded`` count as failed;
# ``cancelled`` is a release a caller cancelled before any of its calls was sent (final, like the other two).
RUNNING, FAILED, CANCELLED = "running", "failed", "cancelled"
RELEASE_UNFINISHED = (PENDING, RUNNING)
RELEASE_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
# Notification channels between processes sharing a journal (PostgreSQL's LISTEN/NOTIFY).
WORK_CHANNEL, RELEASE_CHANNEL = "eni_async_work", "eni_async_release"
# What ``listen`` delivers besides notifications: the listening connection (re)opened, or was lost.
CONNECTED, DISCONNECTED = "connected", "disconnected"
Deliver = Callable[[str, str], None]  # (channel, payload)


class JournalError(Exception):
    """The journal cannot be used or written; ``str()`` is one line naming the journal and the cause.

    ``path`` is where the journal is, as it may be shown (a URL's password masked). Deliberately not an
    ``EniAsyncError``: it is never one item's outcome, it stops the batch (the journal holds every step
    committed so far, so ``resume`` carries on once the cause is fixed)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"journal {self.path}: {reason}")


class LeaseLostError(Exception):
    """A write of leased work was refused: the lease on the ENI has another owner or epoch now."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        super().__init__(f"lease on {lease.eni_id} (owner {lease.owner}, epoch {lease.epoch}) was lost")


class WorkCancelledError(LeaseLostError):
    """A write of an item's work was refused (writing nothing): the item was finished meanwhile, because
    its release was cancelled before any of its calls was sent. A ``LeaseLostError`` so that the batch drops
    the item as it drops work another process took over (neither yielded nor journalled); unlike a lost
    lease, the lease itself still holds, so the ENI's other work goes on."""

    def __init__(self, key: int, lease: Lease | None = None) -> None:
        self.key = key
        self.lease = lease if lease is not None else Lease("?", "", 0, 0.0)
        Exception.__init__(self, f"item {key} was finished meanwhile (its release was cancelled)")


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with another body."""


@dataclass(frozen=True)
class Cancellation:
    """What a cancel found: the release as it stands after it, whether this cancel made it ``cancelled``,
    and, when it could not (a call was sent), the tasks still in flight and whether a submit is in doubt
    (its chunk handed to the network, its task id not yet known)."""

    release: Release
    cancelled: bool
    task_ids: tuple[str, ...] = ()
    in_doubt: bool = False


@dataclass(frozen=True)
class Pruned:
    """What one retention pass removed: finished releases (with their journal items) and expired keys."""

    releases: int = 0
    keys: int = 0


@dataclass(frozen=True)
class Lease:
    """One owner's claim on an ENI's work until ``expires_at`` (seconds since the epoch, the database's
    clock); ``epoch`` grows with every claim, so an older holder's writes can be told apart and refused.
    ``adopted_from`` is the owner whose expired lease this claim took over (``None``: the ENI was free)."""

    eni_id: str
    owner: str
    epoch: int
    expires_at: float
    adopted_from: str | None = None


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
        return self.status not in RELEASE_UNFINISHED

    @property
    def item(self) -> Item:
        """The journal item that does the release's work (it came from no input file: no ``line``)."""
        return Item(self.vpc_id, self.eni_id, self.ips, key=self.item_key)

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


Request = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class ReleaseFilter:
    """Which releases a page lists: each field ``None`` for any; ``created_after`` and ``created_before``
    are seconds since the epoch (inclusive and exclusive)."""

    status: str | None = None
    eni_id: str | None = None
    vpc_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None


class Releases(Protocol):
    """The service's release registry in the journal: releases, their items and idempotency keys."""

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
        """Record ``requests`` as pending releases named ``ids``, with their journal items, in one
        transaction; with an ``idempotency_key`` already recorded (the database's unique key decides, also
        between processes), record nothing and return the releases it made and ``False``, or raise
        ``IdempotencyConflictError`` when ``body_hash`` differs. A key recorded before
        ``keys_expire_before`` has expired: it is taken anew, as if never used."""
        ...

    async def replay(
        self, idempotency_key: str, body_hash: str, *, keys_expire_before: float | None = None
    ) -> list[Release] | None:
        """The releases an earlier request with this key created (``None``: the key is new, or expired)."""
        ...

    async def get(self, release_id: str) -> Release | None: ...

    async def by_item(self, item_key: int) -> Release | None: ...

    async def started(self, release_id: str, *, now: float, lease: Lease | None = None) -> None:
        """The release is running (fenced by ``lease``, like every write of leased work)."""
        ...

    async def started_many(self, release_ids: Collection[str], *, now: float, owner: str) -> None:
        """Releases taken up by ``owner`` are running: those on ENIs it holds a lease on (the fence), in one
        transaction."""
        ...

    async def requeue(self, release_id: str, *, lease: Lease | None = None) -> None: ...

    async def finish(
        self, release_id: str, status: str, outcome: dict[str, Any], *, now: float, lease: Lease | None = None
    ) -> None:
        """Record the final status and outcome (once: a finished release is left as it is)."""
        ...

    async def page(
        self, *, limit: int = 100, before: int | None = None, filters: ReleaseFilter | None = None
    ) -> tuple[list[Release], int | None]:
        """Releases newest first (by ``seq``), ``limit`` at a time, older than ``before``, matching
        ``filters``; and the next ``before``, or ``None`` on the last page."""
        ...

    async def cancel(self, release_id: str, *, now: float) -> Cancellation | None:
        """Cancel the release if none of its calls was sent, in one transaction that the database decides
        against a concurrent submit (the item's ``submitting`` step refuses a finished item, and this
        refuses an item with anything sent): its item is finished with every IP ``not_released`` (never
        sent) and the release is ``cancelled``. ``None`` for an unknown id; a finished release is left as
        it is."""
        ...

    async def prune(self, *, finished_before: float, keys_before: float, limit: int = 500) -> Pruned:
        """Delete releases finished before ``finished_before`` (with their journal items and tasks) and
        idempotency keys recorded before ``keys_before``, ``limit`` rows per transaction."""
        ...

    async def unfinished(self, *, eni_ids: Collection[str] | None = None) -> list[Release]:
        """Every release not finished (of ``eni_ids`` only, when given), oldest first."""
        ...

    async def statuses(self, release_ids: Collection[str]) -> dict[str, str]:
        """The status of each of ``release_ids`` that exists."""
        ...

    async def unfinished_count(self) -> int:
        """How many releases are not finished."""
        ...

    async def counts(self) -> dict[str, int]: ...

    async def heartbeat(self, now: float) -> None:
        """Write to the database (the readiness check): raises ``JournalError`` when it cannot."""
        ...


class Journal(Protocol):
    """A journal of items (see ``eni_async.journal``); ``where`` names it as it may be shown."""

    @property
    def where(self) -> str: ...

    @property
    def releases(self) -> Releases: ...

    @property
    def shared(self) -> bool:
        """Whether other processes may write this journal at the same time (PostgreSQL opened without the
        one-writer lock): then leases decide who works on what, and notifications say what others did."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Journal: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def set_meta(self, data: dict[str, Any]) -> None:
        """Record settings needed to resume (endpoint, dialect, region); never credentials."""
        ...

    async def meta(self) -> dict[str, Any]: ...

    async def load(
        self, items: Iterable[Item | InvalidItem], *, meta: dict[str, Any] | None = None
    ) -> list[Outcome]:
        """Record every input item (and ``meta``) in ONE transaction; return the outcomes of the items
        that could not be read (recorded finished at once)."""
        ...

    async def add(self, item: Item) -> int:
        """Record a new pending item and return its key."""
        ...

    async def submitting(
        self, key: int, chunk: tuple[str, ...], outcome: Outcome, *, lease: Lease | None = None
    ) -> None:
        """A chunk is about to be sent: recorded as in doubt, and its IPs as sent, before the send."""
        ...

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
        """The server accepted the chunk as ``task_id``: from now on it is polled, never resubmitted."""
        ...

    async def progressed(
        self,
        key: int,
        outcome: Outcome,
        *,
        lease: Lease | None = None,
        ended: Collection[str] = (),
        taken_back: bool = False,
    ) -> None:
        """The outcome so far. The tasks ``ended`` were seen ending (no longer polled on resume); every other
        task of the item is still to be polled, and a chunk in doubt stays in doubt unless ``taken_back``
        (its last try surely had no effect)."""
        ...

    async def finished(self, key: int, outcome: Outcome, *, lease: Lease | None = None) -> None: ...

    async def item(self, key: int) -> tuple[str, dict[str, Any] | None] | None:
        """One item's state and outcome so far (``None`` for an unknown key)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Items by state, every state present; an item in a state this code does not know is a
        ``JournalError`` (a damaged journal), never counted as nothing."""
        ...

    async def outcome_counts(self) -> dict[str, int]: ...

    def finished_outcomes(self) -> AsyncIterator[dict[str, Any]]: ...

    def finished_items(self) -> AsyncIterator[Outcome]: ...

    def unfinished(self, *, eni_ids: Collection[str] | None = None) -> AsyncIterator[Resumed]:
        """Every item not finished (of ``eni_ids`` only, when given), with its plan, in input order."""
        ...

    async def claim(self, owner: str, *, lease_s: float, limit: int) -> list[Lease]:
        """Lease up to ``limit`` ENIs with unfinished releases that nobody holds (or whose lease expired),
        those waiting longest first, for ``lease_s`` seconds of the database's clock."""
        ...

    async def renew(self, lease: Lease, *, lease_s: float) -> Lease:
        """Extend ``lease``; ``LeaseLostError`` when it has moved."""
        ...

    async def renew_many(self, leases: Collection[Lease], *, lease_s: float) -> list[Lease]:
        """Extend every one of ``leases`` still held (one statement per few hundred); return those renewed:
        a lease missing from the answer was lost."""
        ...

    async def give_back(self, lease: Lease) -> None:
        """End ``lease`` early (its ENI may be claimed at once); a lease already lost is left alone."""
        ...

    async def give_back_many(self, leases: Collection[Lease]) -> None:
        """``give_back`` for each of ``leases``, in one transaction."""
        ...

    async def clear_leases(self) -> None:
        """Free every lease: only for the journal's one writer (whose lock proves no other process holds
        one), when it starts."""
        ...

    async def listen(self, deliver: Deliver) -> None:
        """Run until cancelled, calling ``deliver(channel, payload)`` for every notification of the two
        channels, ``(CONNECTED, "")`` each time the listening connection is (re)opened and
        ``(DISCONNECTED, reason)`` when it is lost (it reconnects by itself); returns at once for a journal
        no other process writes."""
        ...

    async def hold(self) -> None:
        """Make sure this process still holds the lock it opened the journal with (taken again after the
        database restarted); ``JournalError`` when it cannot."""
        ...


# -- the row codec -------------------------------------------------------------------------------------


def encode(value: object) -> str:
    """A value as stored in a JSON column."""
    return json.dumps(value)


def encode_sent(outcome: Outcome) -> str:
    """The IPs an outcome has sent (D25: kept in the journal across every resume)."""
    return json.dumps(sorted(outcome.sent))


def decode(where: str, key: object, column: str, text: object) -> Any:
    """A JSON column read back; bad JSON is a ``JournalError`` naming the item and the column."""
    if not isinstance(text, str):
        raise damaged(where, key, column, f"expected JSON text, found {type(text).__name__}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise damaged(where, key, column, f"not JSON: {exc}") from None


def damaged(where: str, key: object, column: str, why: str) -> JournalError:
    """The one-line error for a row that cannot be read back."""
    return JournalError(
        where, f"item {key} is damaged ({column}: {why}); the journal was changed by something else"
    )


def ip_list(where: str, key: object, column: str, value: Any) -> tuple[str, ...]:
    """A list of IPs read back (each a string)."""
    if not isinstance(value, list) or not all(isinstance(ip, str) for ip in value):
        raise damaged(where, key, column, "expected a list of IP strings")
    return tuple(value)


def restore(where: str, key: object, outcome: Outcome, data: Any, *, final: bool) -> None:
    """Fill ``outcome`` from its stored JSON. Unfinished: IPs of unknown fate were sent by an earlier run, so
    a resumed run retries them (and counts those found gone as released by that earlier call, not as
    absent). Final: as reported."""
    if not isinstance(data, dict):
        raise damaged(where, key, "outcome", "expected a JSON object")
    try:
        outcome.released = list(ip_list(where, key, "outcome.released", data.get("released", [])))
        outcome.not_released = list(ip_list(where, key, "outcome.not_released", data.get("not_released", [])))
        outcome.absent = list(ip_list(where, key, "outcome.absent", data.get("absent", [])))
        unknown = ip_list(where, key, "outcome.unknown", data.get("unknown", []))
        if final:
            outcome.unknown = list(unknown)
        else:
            outcome.sent.update(unknown)
        outcome.task_ids = [str(t) for t in data.get("task_ids", [])]
        outcome.request_ids = [str(r) for r in data.get("request_ids", [])]
        error = data.get("error")
        outcome.error = {str(k): str(v) for k, v in error.items()} if error is not None else None
        outcome.attempts = int(data.get("attempts", 0))
        outcome.elapsed_s = float(data.get("elapsed_s", 0.0))
        outcome.decisions = [str(d) for d in data.get("decisions", [])]
        outcome.confirmed_by = {str(ip): str(by) for ip, by in dict(data.get("confirmed_by") or {}).items()}
        if final:
            outcome.status = str(data["status"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise damaged(where, key, "outcome", f"{type(exc).__name__}: {exc}") from None


def final_outcome(where: str, key: object, text: object) -> Outcome:
    """A finished item's stored outcome as an ``Outcome``."""
    data = decode(where, key, "outcome", text)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("vpc_id", "eni_id")):
        raise damaged(where, key, "outcome", "expected an object with vpc_id and eni_id")
    ips = ip_list(where, key, "outcome.ips", data.get("ips"))
    line = data.get("line")
    outcome = Outcome(data["vpc_id"], data["eni_id"], ips, line=line if isinstance(line, int) else None)
    restore(where, key, outcome, data, final=True)
    return outcome


class JournalRecorder:
    """Adapts a ``Journal`` to the ``Recorder`` hooks of the release path (items carry their journal key)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __repr__(self) -> str:
        return f"JournalRecorder({self.journal!r})"

    async def add(self, item: Item) -> int:
        return await self.journal.add(item)

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        if item.key is not None:
            await self.journal.submitting(item.key, chunk, outcome)

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        if item.key is not None:
            await self.journal.submitted(item.key, task_id, request_id, chunk, outcome)

    async def progressed(
        self, item: Item, outcome: Outcome, *, ended: Collection[str] = (), taken_back: bool = False
    ) -> None:
        if item.key is not None:
            await self.journal.progressed(item.key, outcome, ended=ended, taken_back=taken_back)

    async def finished(self, key: int, outcome: Outcome) -> None:
        await self.journal.finished(key, outcome)
