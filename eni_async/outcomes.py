"""Per-ENI outcomes of a batch, and the items that go in: plain values, no I/O.

An ``Outcome`` says exactly what happened to one ENI: which IPs are released (gone from the ENI), which are
not (still on it), the tasks and requests involved, and every reconciliation decision taken on the way.
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
    task_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    attempts: int = 0
    elapsed_s: float = 0.0
    line: int | None = None
    decisions: list[str] = field(default_factory=list)
    confirmed_by: dict[str, str] = field(default_factory=dict)  # IP -> "eni" or "task": how its fate was seen

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the outcome's error (the first one wins)."""
        if self.error is None:
            self.error = error_info(exc)

    def settle(self) -> Outcome:
        """Derive the status from what was released; call once all work on the item is over."""
        if self.status == SKIPPED and not self.released and not self.task_ids:
            return self
        accounted = {*self.released, *self.not_released, *self.unknown}
        missing = [ip for ip in self.ips if ip not in accounted]
        if missing and self.error is not None:  # never submitted after the error: still on the ENI
            self.not_released.extend(missing)
        ok = self.error is None and not self.not_released and not self.unknown
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
            "task_ids": self.task_ids,
            "request_ids": self.request_ids,
            "error": self.error,
            "attempts": self.attempts,
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self.unknown:
            data["unknown"] = self.unknown
        if self.line is not None:
            data["line"] = self.line
        if self.decisions:
            data["decisions"] = self.decisions
        if self.confirmed_by:
            data["confirmed_by"] = self.confirmed_by
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
    """Disagreements between one reported outcome and the simulator's ground truth ``{eni_id: ips}``."""
    eni = outcome["eni_id"]
    if eni not in truth:
        return []
    present = truth[eni]
    problems = [
        f"{eni}: {ip} reported released but still assigned" for ip in outcome["released"] if ip in present
    ]
    problems += [
        f"{eni}: {ip} reported not released but gone" for ip in outcome["not_released"] if ip not in present
    ]
    if outcome["status"] == SUCCEEDED:
        problems += [f"{eni}: succeeded but {ip} still assigned" for ip in outcome["ips"] if ip in present]
    return problems
