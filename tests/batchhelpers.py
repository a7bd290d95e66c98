"""Helpers for batch and CLI tests: a simulator served on 127.0.0.1 and a client sharing its fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.outcomes import Item
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig, running


@dataclass
class World:
    """A running simulator, its endpoint and a client pointed at it, all on one fake clock."""

    sim: Simulator
    endpoint: str
    client: EniClient
    clock: FakeClock

    def items(self) -> list[Item]:
        """Every secondary IP of every seeded ENI, one item per ENI."""
        truth = self.sim.ground_truth()["enis"]
        return [
            Item(e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"])) for e in truth if e["secondary_ips"]
        ]

    def present(self) -> dict[str, set[str]]:
        """The simulator's ground truth: ENI -> every IP still assigned (primary included)."""
        return {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in self.sim.ground_truth()["enis"]}


@asynccontextmanager
async def world(
    *, settings: Settings | None = None, credentials: Any = None, **config: Any
) -> AsyncIterator[World]:
    """Start a seeded simulator on 127.0.0.1 and a client on the same fake clock."""
    clock = FakeClock()
    defaults: dict[str, Any] = {"enis": 6, "ips_per_eni": 3, "seed": 3, "task_latency": (1.0, 0.3)}
    sim = Simulator(SimulatorConfig(**(defaults | config)), clock=clock)
    async with running(sim, host="127.0.0.1", port=0) as server:
        base = settings or Settings(poll=PollPolicy(timeout=300.0))
        base = replace(base, endpoint=server.endpoint, region=sim.region)
        async with EniClient(credentials or sim.credentials, base, clock=clock) as client:
            yield World(sim, server.endpoint, client, clock)
