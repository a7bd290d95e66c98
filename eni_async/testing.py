"""Helpers for testing code that uses eni_async, and for our own drills: a transport to script, inputs to
write, worlds to seed, verdicts to reach.

``MockTransport(handler)`` stands in for the aiohttp adapter under the real call pipeline
(``EniClient(..., transport=MockTransport(handler))``), as httpx's does: ``handler`` gets each
``HttpRequest`` and returns an ``HttpResponse`` (or raises a ``TransportError``), so a test states an
exchange as a function. ``jsonl_lines`` writes batch input. ``drill_state`` builds a simulator state (the
``/_sim/state`` shape) with a varied number of IPs per ENI; ``verdict`` compares reported outcomes with the
simulator's ground truth (``outcomes.disagreements``, the one checker) and counts every kind of
disagreement. ``simulator_process`` runs ``eni-async simulate`` in a process of its own, for tests and
drills that kill or signal real processes; nothing else here starts a server.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import random
import string
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eni_async.models import HttpRequest, HttpResponse
from eni_async.outcomes import disagreements

_ALPHABET = string.ascii_lowercase + string.digits

Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class MockTransport:
    """A ``Transport`` that answers every request with ``handler(request)`` (a function or a coroutine
    function); ``requests`` lists what was sent, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    def __repr__(self) -> str:
        return f"MockTransport(sent={len(self.requests)})"

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        answer = self.handler(request)
        return await answer if inspect.isawaitable(answer) else answer


def jsonl_lines(enis: Iterable[Mapping[str, Any]], *, ips: str = "secondary_ips") -> str:
    """Batch input in JSON Lines, one line per ENI: ``{"vpc_id", "eni_id", "ips"}`` from ENIs in the
    ``/_sim/state`` shape (``ips`` names the key holding each ENI's IPs), each line ending in a newline."""
    return "".join(
        json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": list(e[ips])}) + "\n" for e in enis
    )


@contextmanager
def simulator_process(*args: str) -> Iterator[dict[str, Any]]:
    """``eni-async simulate ARGS`` on 127.0.0.1, any free port, in its own process: yields its ready line
    (``endpoint``, ``region``, ``secret_id``, ``secret_key``) and ends the process on exit."""
    command = [sys.executable, "-m", "eni_async", "simulate", "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        ready: dict[str, Any] = json.loads(proc.stdout.readline())
        yield ready
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _rid(rng: random.Random, prefix: str, taken: set[str]) -> str:
    while True:
        rid = prefix + "-" + "".join(rng.choice(_ALPHABET) for _ in range(8))
        if rid not in taken:
            taken.add(rid)
            return rid


def drill_state(
    enis: int, *, seed: int = 1, min_ips: int = 1, max_ips: int = 25, per_vpc: int = 500
) -> dict[str, Any]:
    """A world of ``enis`` ENIs with ``min_ips``..``max_ips`` secondary IPs each, reproducible by ``seed``."""
    rng = random.Random(seed)
    taken: set[str] = set()
    out: list[dict[str, Any]] = []
    vpc = ""
    base = 0
    for n in range(enis):
        if n % per_vpc == 0:
            vpc = _rid(rng, "vpc", taken)
            network = ipaddress.IPv4Network(f"10.{(n // per_vpc) % 256}.0.0/16")
            base = int(network.network_address) + 2
        count = rng.randint(min_ips, max_ips)
        primary = str(ipaddress.IPv4Address(base))
        secondary = [str(ipaddress.IPv4Address(base + 1 + i)) for i in range(count)]
        base += count + 1
        eips = {ip: _rid(rng, "eip", taken) for ip in secondary if rng.random() < 0.2}
        out.append(
            {
                "vpc_id": vpc,
                "eni_id": _rid(rng, "eni", taken),
                "primary_ip": primary,
                "secondary_ips": secondary,
                "eips": eips,
                "cidr": f"{primary.rsplit('.', 2)[0]}.0.0/16",
            }
        )
    return {"enis": out, "tasks": []}


# ``Disagreement.kind`` -> the ``Verdict`` list that counts it.
_KINDS = {
    "listed_twice": "listed_twice",
    "released_but_assigned": "released_but_assigned",
    "not_released_but_gone": "unreleased_but_gone",
    "absent_but_assigned": "absent_but_assigned",
    "succeeded_but_assigned": "succeeded_but_assigned",
}


@dataclass
class Verdict:
    """What a drill found: outcomes against ground truth, item by item and IP by IP."""

    expected: int = 0
    reported: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    released_but_assigned: list[str] = field(default_factory=list)
    unreleased_but_gone: list[str] = field(default_factory=list)
    absent_but_assigned: list[str] = field(default_factory=list)
    succeeded_but_assigned: list[str] = field(default_factory=list)
    listed_twice: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return (
            len(self.lost) + len(self.duplicated) + sum(len(getattr(self, name)) for name in _KINDS.values())
        )

    def summary(self) -> dict[str, Any]:
        return {
            "expected_items": self.expected,
            "reported_items": self.reported,
            "lost_items": len(self.lost),
            "duplicated_items": len(self.duplicated),
            "released_but_still_assigned": len(self.released_but_assigned),
            "not_released_but_gone": len(self.unreleased_but_gone),
            "absent_but_still_assigned": len(self.absent_but_assigned),
            "succeeded_but_still_assigned": len(self.succeeded_but_assigned),
            "listed_twice": len(self.listed_twice),
            "statuses": self.statuses,
            "mismatches": self.mismatches,
        }


def verdict(
    outcomes: Iterable[Mapping[str, Any]], truth: Mapping[str, Any], expected_enis: Iterable[str]
) -> Verdict:
    """Compare outcomes (batch output JSON) with ``/_sim/state``; every expected ENI must appear once."""
    present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in truth["enis"]}
    result = Verdict()
    seen: set[str] = set()
    expected = list(expected_enis)
    result.expected = len(expected)
    for outcome in outcomes:
        eni = outcome["eni_id"]
        result.reported += 1
        result.statuses[outcome["status"]] = result.statuses.get(outcome["status"], 0) + 1
        if eni in seen:
            result.duplicated.append(eni)
        seen.add(eni)
        for found in disagreements(outcome, present):
            getattr(result, _KINDS[found.kind]).append(f"{eni} {found.ip}")
    result.lost = [eni for eni in expected if eni not in seen]
    return result
