"""Per-ENI outcomes of a release, and the items that go in: plain values, no I/O.

An ``Outcome`` says exactly what happened to one ENI. Every IP asked for ends in exactly one list:
``released`` (a call of ours was accepted and the IP is gone), ``not_released`` (still on the ENI, or never
sent), ``unknown`` (its fate was not observed: a task still running at a deadline or an interruption, an ENI
that could not be described, credentials lost while a task ran) or ``absent`` (not on the ENI when we looked,
so there was nothing to release). An IP handed to the network in a submit (``sent``) can leave ``unknown``
only by an observation (D25): whatever ends the work early files such an IP ``unknown``, never
``not_released``. The outcome also lists the tasks and requests involved and every reconciliation decision
taken on the way.

Statuses, one meaning each (D24): ``succeeded`` every IP asked for is released or absent, which is what the
caller wanted; ``failed`` any IP is not released or unknown; ``not_attempted`` nothing was sent (the batch
stopped first); ``submitted`` accepted and deliberately not watched (``unassign --no-wait``).
``raise_for_failure`` is the one place an outcome becomes an exception, as httpx's ``raise_for_status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eni_async.errors import (
    AuthError,
    EniAsyncError,
    OutcomeUnknownError,
    TaskFailedError,
    error_from_info,
    error_info,
)
from eni_async.models import ChunkFate, UnassignResult, quick_init

SUCCEEDED, FAILED, NOT_ATTEMPTED, SUBMITTED = "succeeded", "failed", "not_attempted", "submitted"
STATUSES = (SUCCEEDED, FAILED, NOT_ATTEMPTED, SUBMITTED)
LISTS = ("released", "not_released", "unknown", "absent")


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Item:
    """One ENI's release request. ``line`` is where it came from in an input file, when it did; ``key`` is
    its journal's key, when journalled (the service finds a release by it)."""

    vpc_id: str
    eni_id: str
    ips: tuple[str, ...]
    line: int | None = None
    key: int | None = None


@dataclass(frozen=True, slots=True, weakref_slot=True)
class InvalidItem:
    """An input entry that could not be read; it becomes its own failed outcome."""

    line: int | None
    error: Exception
    vpc_id: str = ""
    eni_id: str = ""
    ips: tuple[str, ...] = ()
    key: int | None = None


@quick_init
@dataclass(slots=True, weakref_slot=True)
class Outcome:
    """What happened to one ENI (see the module docstring)."""

    vpc_id: str
    eni_id: str
    ips: tuple[str, ...]
    status: str = NOT_ATTEMPTED
    released: list[str] = field(default_factory=list)
    not_released: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # fate not observed (e.g. a task still running)
    absent: list[str] = field(default_factory=list)  # not on the ENI when we looked: nothing to release
    task_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    line: int | None = None
    decisions: list[str] = field(default_factory=list)
    confirmed_by: dict[str, str] = field(default_factory=dict)  # IP -> "eni" or "task": how its fate was seen
    # Not part of the output. ``key``: the item's journal key. ``sent``: IPs handed to the network in a
    # submit of ours whose effect was not proven nil (the journal keeps them: D25). ``exception``: the error
    # ``error`` was made from; ``fate``: the last watched chunk's; ``interrupted``: stopped part-way;
    # ``credentials_error``: the credential failure that ended the work (a batch stops on it).
    key: int | None = field(default=None, compare=False)
    sent: set[str] = field(default_factory=set, repr=False, compare=False)
    exception: EniAsyncError | None = field(default=None, repr=False, compare=False)
    fate: ChunkFate | None = field(default=None, repr=False, compare=False)
    interrupted: bool = field(default=False, repr=False, compare=False)
    credentials_error: AuthError | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_item(cls, item: Item | InvalidItem) -> Outcome:
        """A fresh outcome for ``item``, carrying its line and journal key."""
        outcome = cls(item.vpc_id, item.eni_id, item.ips)  # (keywords cost more than the two stores)
        outcome.line = item.line
        outcome.key = item.key
        return outcome

    def accounted(self) -> set[str]:
        """IPs already in one of the four lists."""
        return {*self.released, *self.not_released, *self.unknown, *self.absent}

    def interrupt(self, why: str) -> Outcome:
        """Close an outcome whose work was stopped part-way: every IP not yet accounted for that was part of
        a submit is ``unknown`` (the server may have acted), every other one ``not_released`` (never sent);
        with nothing ever sent the item is ``not_attempted``."""
        self.interrupted = True
        done = self.accounted()
        open_ips = [ip for ip in self.ips if ip not in done]
        if not self.sent and not self.task_ids and not done:
            self.status = NOT_ATTEMPTED
            self.not_released = list(self.ips)
            self.error = {"code": "Interrupted", "message": f"{why} before anything was submitted"}
            return self
        self.unknown.extend(ip for ip in open_ips if ip in self.sent)
        self.not_released.extend(ip for ip in open_ips if ip not in self.sent)
        if self.unknown:
            tasks = f"; task(s) {', '.join(self.task_ids)}" if self.task_ids else ""
            self.decisions.append(f"{why}: {len(self.unknown)} IP(s) submitted but not confirmed{tasks}")
        self.error = {
            "code": "Interrupted",
            "message": f"{why}; {len(self.unknown)} IP(s) of unknown fate"
            + (f" (error before: {self.error['message']})" if self.error else ""),
        }
        self.status = FAILED
        return self

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the outcome's error (the first one wins)."""
        if self.error is None:
            self.error = error_info(exc)
            self.exception = exc if isinstance(exc, EniAsyncError) else None

    def settle(self, *, watched: bool = True) -> Outcome:
        """Derive the status (the module docstring's table); call once all work on the item is over.

        IPs in no list yet are ``unknown`` when they were sent (D25) and ``not_released`` when they were
        never sent because of an error. An error met on the way by an item that still succeeded is kept
        among the decisions. ``watched=False`` (``--no-wait``): an item whose only open IPs are of accepted
        tasks nobody watches is ``submitted``.
        """
        if self.error is None and self.ips and self.released == [*self.ips]:
            # Every IP released, in order, and no error met (most items): what ``_derive`` finds, at once.
            self.status = SUCCEEDED
            return self
        return self._derive(watched)

    def _derive(self, watched: bool) -> Outcome:
        accounted = self.accounted()
        open_ips = [ip for ip in self.ips if ip not in accounted]
        self.unknown.extend(ip for ip in open_ips if ip in self.sent)
        if self.error is not None:
            self.not_released.extend(ip for ip in open_ips if ip not in self.sent)
        done = {*self.released, *self.absent}
        if self.ips and all(ip in done for ip in self.ips):
            self.status = SUCCEEDED
            if self.error is not None:
                self.decisions.append(
                    f"met on the way, without effect on the result: {self.error['message']}"
                )
                self.error = self.exception = None
        elif not watched and self.task_ids and self.error is None and not self.not_released:
            self.status = SUBMITTED
        else:
            self.status = FAILED
        return self

    def result(self) -> UnassignResult:
        """The outcome as ``EniClient.unassign`` returns it."""
        return UnassignResult(
            self.vpc_id,
            self.eni_id,
            tuple(self.released),
            tuple(self.task_ids),
            tuple(self.request_ids),
            tuple(self.absent),
        )

    def failure(self) -> EniAsyncError | None:
        """The exception a settled outcome that did not succeed stands for (``None`` when it succeeded or
        was submitted): the error recorded on the way (rebuilt from its code when read back from JSON), with
        ``.result`` once a task was submitted and ``.fate`` when a chunk was watched."""
        if self.status in (SUCCEEDED, SUBMITTED):
            return None
        exc = self.exception
        if exc is None:
            exc = self._rebuilt()
        if self.task_ids:
            exc.result = self.result()
        if self.fate is not None:
            exc.fate = self.fate
        return exc

    def raise_for_failure(self) -> UnassignResult:
        """Return the result when the outcome succeeded (or was submitted); else raise ``failure()``."""
        exc = self.failure()
        if exc is not None:
            raise exc
        return self.result()

    def _rebuilt(self) -> EniAsyncError:
        if self.error is not None:
            return error_from_info(
                self.error,
                vpc_id=self.vpc_id,
                eni_id=self.eni_id,
                ips=self.unknown or self.not_released or self.ips,
                task_id=self.task_ids[-1] if self.task_ids else None,
            )
        if self.unknown:
            return OutcomeUnknownError(
                "UnassignPrivateIpAddresses",
                self.vpc_id,
                self.eni_id,
                self.unknown,
                RuntimeError("not observed"),
            )
        last = self.task_ids[-1] if self.task_ids else "(none)"
        return TaskFailedError(last, eni_id=self.eni_id, ips=self.not_released)

    def to_json(self) -> dict[str, Any]:
        """The outcome as one JSON object, in the batch output format."""
        data: dict[str, Any] = {
            "vpc_id": self.vpc_id,
            "eni_id": self.eni_id,
            "ips": list(self.ips),
            "status": self.status,
            "released": self.released,
            "not_released": self.not_released,
            "unknown": self.unknown,
            "absent": self.absent,
            "confirmed_by": self.confirmed_by,
            "task_ids": self.task_ids,
            "request_ids": self.request_ids,
            "error": self.error,
            "attempts": self.attempts,
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self.line is not None:
            data["line"] = self.line
        if self.decisions:
            data["decisions"] = self.decisions
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        """An outcome read back from ``to_json``'s shape (a release the service reports, a line of output)."""
        return cls(
            str(data["vpc_id"]),
            str(data["eni_id"]),
            tuple(data.get("ips") or ()),
            status=str(data.get("status") or NOT_ATTEMPTED),
            released=list(data.get("released") or []),
            not_released=list(data.get("not_released") or []),
            unknown=list(data.get("unknown") or []),
            absent=list(data.get("absent") or []),
            task_ids=list(data.get("task_ids") or []),
            request_ids=list(data.get("request_ids") or []),
            error=dict(data["error"]) if data.get("error") else None,
            attempts=int(data.get("attempts") or 0),
            elapsed_s=float(data.get("elapsed_s") or 0.0),
            line=data.get("line"),
            decisions=list(data.get("decisions") or []),
            confirmed_by=dict(data.get("confirmed_by") or {}),
        )


def as_item(entry: object) -> Item | InvalidItem:
    """Accept an ``Item``, an ``InvalidItem`` or a ``(vpc_id, eni_id, ips)`` triple."""
    if isinstance(entry, Item | InvalidItem):
        return entry
    if isinstance(entry, tuple | list) and len(entry) == 3:
        vpc, eni, ips = entry
        if isinstance(ips, str) or not isinstance(ips, Iterable):
            ips = (ips,)
        return Item(str(vpc), str(eni), tuple(str(ip) for ip in ips))
    return InvalidItem(None, ValueError(f"expected (vpc_id, eni_id, ips), got {entry!r}"[:200]))


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Disagreement:
    """One way a reported outcome contradicts the ground truth (``kind`` names it; ``text`` says it)."""

    kind: str
    eni_id: str
    ip: str
    text: str


# What each list claims about an IP, by whether it is still assigned: the claim is broken when it is.
_CLAIMS: Mapping[str, tuple[bool, str, str]] = {
    "absent": (True, "absent_but_assigned", "reported absent but assigned"),
    "released": (True, "released_but_assigned", "reported released but still assigned"),
    "not_released": (False, "not_released_but_gone", "reported not released but gone"),
}


def disagreements(outcome: Mapping[str, Any], truth: Mapping[str, set[str]]) -> list[Disagreement]:
    """Every contradiction between one reported outcome (``to_json``'s shape) and the ground truth
    ``{eni_id: IPs still assigned}``: an IP in two lists; ``released`` or ``absent`` IPs still there,
    ``not_released`` ones gone; a ``succeeded`` outcome with an IP still there. ``unknown`` claims nothing.
    An ENI the truth does not hold is judged on its lists alone."""
    eni = outcome["eni_id"]
    found: list[Disagreement] = []
    seen: dict[str, str] = {}
    for name in LISTS:
        for ip in outcome.get(name, []):
            if ip in seen:
                where = f"twice under {name}" if seen[ip] == name else f"under both {seen[ip]} and {name}"
                found.append(Disagreement("listed_twice", eni, ip, f"{eni}: {ip} listed {where}"))
            seen[ip] = name
    present = truth.get(eni)
    if present is None:
        return found
    for name, (broken_if_present, kind, says) in _CLAIMS.items():
        for ip in outcome.get(name, []):
            if (ip in present) == broken_if_present:
                found.append(Disagreement(kind, eni, ip, f"{eni}: {ip} {says}"))
    if outcome["status"] == SUCCEEDED:
        found += [
            Disagreement("succeeded_but_assigned", eni, ip, f"{eni}: succeeded but {ip} still assigned")
            for ip in outcome["ips"]
            if ip in present
        ]
    return found


def check_against_truth(outcome: Mapping[str, Any], truth: Mapping[str, set[str]]) -> list[str]:
    """``disagreements`` as sentences (empty when the outcome agrees with the truth)."""
    return [d.text for d in disagreements(outcome, truth)]
