"""Every example in examples/ runs against the simulator, as the README promises."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from eni_async import PollPolicy, Settings
from eni_async.service.server import running_service
from eni_async.simulator import Simulator, SimulatorConfig, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = PollPolicy(first=0.01, initial=0.01, maximum=0.05)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, Settings]]:
    simulator = Simulator(SimulatorConfig(enis=5, ips_per_eni=3, seed=9, task_latency=(0.0, 0.0)))
    async with running(simulator) as server:
        yield simulator, Settings(endpoint=server.endpoint, region=simulator.region, poll=FAST)


def test_every_example_is_tested() -> None:
    """Each file in examples/ has a test here."""
    tested = {"release_one", "release_many", "aiohttp_service"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


async def test_release_one(sim: tuple[Simulator, Settings]) -> None:
    """release_one.release frees the ENI's IPs, as the simulator confirms."""
    simulator, settings = sim
    eni = simulator.ground_truth()["enis"][0]
    released = await load("release_one").release(
        simulator.credentials, settings, eni["vpc_id"], eni["eni_id"], eni["secondary_ips"]
    )
    assert released == eni["secondary_ips"]
    assert simulator.ground_truth()["enis"][0]["secondary_ips"] == []


async def test_release_many(sim: tuple[Simulator, Settings]) -> None:
    """release_many.release_all releases every ENI and counts them all as succeeded."""
    simulator, settings = sim
    items = [(e["vpc_id"], e["eni_id"], e["secondary_ips"]) for e in simulator.ground_truth()["enis"]]
    statuses = await load("release_many").release_all(simulator.credentials, settings, items)
    assert statuses == {"succeeded": 5}
    assert all(not e["secondary_ips"] for e in simulator.ground_truth()["enis"])


async def test_aiohttp_service(sim: tuple[Simulator, Settings], tmp_path: Path) -> None:
    """The controller app hands a release to the service (202), reads it back succeeded, and passes on 400s."""
    simulator, settings = sim
    module = load("aiohttp_service")
    eni = simulator.ground_truth()["enis"][0]
    token = "example-test-token-0123456789"
    async with running_service(simulator.credentials, settings, tmp_path / "r.db", tokens=[token]) as service:
        app = module.make_app(service.endpoint, token)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            body: dict[str, Any] = {
                "vpc_id": eni["vpc_id"],
                "eni_id": eni["eni_id"],
                "ips": eni["secondary_ips"],
            }
            accepted = await client.post("/recycle", json=body)
            assert accepted.status == 202
            release_id = (await accepted.json())["release"]
            done = await client.get(f"/recycle/{release_id}?wait=10")
            assert (await done.json())["status"] == "succeeded"
            assert simulator.ground_truth()["enis"][0]["secondary_ips"] == []
            bad = await client.post("/recycle", json={**body, "eni_id": "eni-BAD"})
            assert bad.status == 400
            assert (await bad.json())["error"]["field"] == "eni_id"
