"""Helpers for testing code that uses eni_async, and for our own drills: worlds to seed, verdicts to reach.

``drill_state`` builds a simulator state (the ``/_sim/state`` shape) with a varied number of IPs per ENI;
``verdict`` compares reported outcomes with the simulator's ground truth and counts every kind of
disagreement. ``simulator_process`` runs ``eni-async simulate`` in a process of its own, for tests and
drills that kill or signal real processes; nothing else here starts a server.
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eni_async.outcomes import SUCCEEDED

_ALPHABET = string.ascii_lowercase + string.digits


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


@dataclass
class Verdict:
    """What a drill found: outcomes against ground truth, item by item and IP by IP."""

    expected: int = 0
    reported: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    released_but_assigned: list[str] = field(default_factory=list)
    unreleased_but_gone: list[str] = field(default_factory=list)
    succeeded_but_assigned: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return (
            len(self.lost)
            + len(self.duplicated)
            + len(self.released_but_assigned)
            + len(self.unreleased_but_gone)
            + len(self.succeeded_but_assigned)
        )

    def summary(self) -> dict[str, Any]:
        return {
            "expected_items": self.expected,
            "reported_items": self.reported,
            "lost_items": len(self.lost),
            "duplicated_items": len(self.duplicated),
            "released_but_still_assigned": len(self.released_but_assigned),
            "not_released_but_gone": len(self.unreleased_but_gone),
            "succeeded_but_still_assigned": len(self.succeeded_but_assigned),
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
        on_eni = present.get(eni, set())
        result.released_but_assigned += [f"{eni} {ip}" for ip in outcome["released"] if ip in on_eni]
        result.unreleased_but_gone += [f"{eni} {ip}" for ip in outcome["not_released"] if ip not in on_eni]
        if outcome["status"] == SUCCEEDED:
            result.succeeded_but_assigned += [f"{eni} {ip}" for ip in outcome["ips"] if ip in on_eni]
    result.lost = [eni for eni in expected if eni not in seen]
    return result
