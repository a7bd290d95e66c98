"""Per-ENI outcomes of a batch, and the items that go in: plain values, no I/O.

An ``Outcome`` says exactly what happened to one ENI. Every IP asked for ends in exactly one list:
``released`` (a call of ours was accepted and the IP is gone), ``not_released`` (still on the ENI, or never
sent), ``unknown`` (its fate was not observed: a task still running at a deadline or an interruption, an ENI
that could not be described) or ``absent`` (not on the ENI when we looked, so there was nothing to release).
The outcome also lists the tasks and requests involved and every reconciliation decision taken on the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eni_async.errors import error_info

SUCCEEDED, FAILED, SKIPPED, NOT_ATTEMPTED = "succeeded", "failed", "skipped", "not_attempted"
STATUSES = (SUCCEEDED, FAILED, SKIPPED, NOT_ATTEMPTED)


@dataclass(frozen=True)
class Item:
    """One ENI's release request. ``line`` is where it came from in an input file, when it did."""

    vpc_id: str
    eni_id: str
    ips: tuple[str, ...]
    line: int | None = None
    key: int | None = None  # the journal's row, when journalled


@dataclass(frozen=True)
class InvalidItem:
    """An input entry that could not be read; it becomes its own failed outcome."""

    line: int | None
    error: Exception
    vpc_id: str = ""
    eni_id: str = ""
    ips: tuple[str, ...] = ()
    key: int | None = None


@dataclass
class Outcome:
    """What happened to one ENI."""

    vpc_id: str
    eni_id: str
    ips: tuple[str, ...]
    status: str = NOT_ATTEMPTED
    released: list[str] = field(default_factory=list)
    not_released: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # fate not established (e.g. a task still running)
    absent: list[str] = field(default_factory=list)  # not on the ENI when we looked: nothing to release
    task_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    line: int | None = None
    decisions: list[str] = field(default_factory=list)
    confirmed_by: dict[str, str] = field(default_factory=dict)  # IP -> "eni" or "task": how its fate was seen
    # IPs that were part of a submit we started (its effect may be unknown); not part of the output.
    sent: set[str] = field(default_factory=set, repr=False, compare=False)

    def accounted(self) -> set[str]:
        """IPs already in one of the four lists."""
        return {*self.released, *self.not_released, *self.unknown, *self.absent}

    def interrupt(self, why: str) -> Outcome:
        """Close an outcome whose work was stopped part-way: every IP not yet accounted for that was part of
        a submit is ``unknown`` (the server may have acted), every other one ``not_released`` (never sent);
        with nothing ever sent the item is ``not_attempted``."""
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

    def settle(self) -> Outcome:
        """Derive the status; call once all work on the item is over.

        ``succeeded``: every IP released or absent, and no error. ``skipped``: every IP absent (nothing to
        do). Otherwise ``failed``; IPs never submitted after an error are ``not_released``.
        """
        if self.status == SKIPPED and not self.released and not self.task_ids:
            return self
        if self.ips and set(self.absent) == set(self.ips) and self.error is None:  # nothing was there
            self.status = SKIPPED
            self.error = {
                "code": "InvalidPrivateIpAddress.NotFound",
                "message": "no IP asked for is on the ENI",
            }
            return self
        accounted = self.accounted()
        missing = [ip for ip in self.ips if ip not in accounted]
        if missing and self.error is not None:  # never submitted after the error: still on the ENI
            self.not_released.extend(missing)
        ok = self.error is None and not self.not_released and not self.unknown and not missing
        self.status = SUCCEEDED if ok else FAILED
        return self

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


def check_against_truth(outcome: dict[str, Any], truth: dict[str, set[str]]) -> list[str]:
    """Disagreements between one reported outcome and the simulator's ground truth ``{eni_id: ips}``.

    ``released`` IPs must be gone, ``not_released`` ones still there, ``absent`` ones not there either;
    ``unknown`` claims nothing. An IP may be in at most one list, and a succeeded outcome has every IP gone.
    """
    eni = outcome["eni_id"]
    if eni not in truth:
        return []
    present = truth[eni]
    lists = ("released", "not_released", "unknown", "absent")
    seen: dict[str, str] = {}
    problems: list[str] = []
    for name in lists:
        for ip in outcome.get(name, []):
            if ip in seen:
                where = f"twice under {name}" if seen[ip] == name else f"under both {seen[ip]} and {name}"
                problems.append(f"{eni}: {ip} listed {where}")
            seen[ip] = name
    problems += [
        f"{eni}: {ip} reported absent but assigned" for ip in outcome.get("absent", []) if ip in present
    ]
    problems += [
        f"{eni}: {ip} reported released but still assigned" for ip in outcome["released"] if ip in present
    ]
    problems += [
        f"{eni}: {ip} reported not released but gone" for ip in outcome["not_released"] if ip not in present
    ]
    if outcome["status"] == SUCCEEDED:
        problems += [f"{eni}: succeeded but {ip} still assigned" for ip in outcome["ips"] if ip in present]
    return problems
