"""The simulated world: seeded reproducibly and fast, loaded from a state file, checked configuration, and
the ground truth under /_sim/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eni_async.clock import FakeClock
from eni_async.errors import ConfigError
from eni_async.simulator import Simulator, SimulatorConfig
from tests.simhelpers import JSON, V2, client_for, first_eni, make_sim


def test_same_seed_same_world() -> None:
    """Two simulators with one seed hold identical ENIs, IPs, EIPs and keys; another seed differs."""
    a, b, c = (Simulator(SimulatorConfig(enis=50, seed=s)) for s in (1, 1, 2))
    assert a.ground_truth() == b.ground_truth()
    assert a.credentials == b.credentials
    assert a.ground_truth() != c.ground_truth()
    enis = a.ground_truth()["enis"]
    assert len(enis) == 50
    assert all(len(e["secondary_ips"]) == 3 for e in enis)
    eips = sum(len(e["eips"]) for e in enis)
    assert 20 < eips < 80  # about 30% of 150 secondary IPs


async def test_same_seed_same_task_timing() -> None:
    """With one seed, the same calls give tasks that end at the same fake times."""
    outcomes = []
    for _ in range(2):
        clock = FakeClock()
        sim = make_sim(clock, enis=6, task_latency=(1.0, 1.0))
        async with client_for(sim) as client:
            v2 = V2(client, clock)
            for eni in sim.ground_truth()["enis"]:
                await v2.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
        clock.advance(1.0)
        outcomes.append(sim.ground_truth())
    assert outcomes[0] == outcomes[1]
    assert {t["status"] for t in outcomes[0]["tasks"]} == {"RUNNING", "SUCCESS"}


def test_hundred_thousand_enis_are_seeded_and_indexed() -> None:
    """Seeding 100,000 ENIs with one IP each indexes every ENI, and a VPC's pages reach its last one."""
    sim = Simulator(SimulatorConfig(enis=100_000, ips_per_eni=1, seed=9))
    assert len(sim.world.enis) == 100_000
    page, total = sim.world.describe(vpc_ids=[sim.world.all_enis[-1].vpc_id], offset=990, limit=50)
    assert (total, len(page)) == (1000, 10)


async def test_state_file_round_trip(tmp_path: Path) -> None:
    """A /_sim/state document saved to a file loads back into the same world, running tasks included."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(5.0, 0.0))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        await V2(client, clock).unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
    truth = sim.ground_truth()
    path = tmp_path / "state.json"
    path.write_text(json.dumps(truth))
    clock2 = FakeClock()
    loaded = Simulator(SimulatorConfig(state_file=path, task_latency=(5.0, 0.0)), clock=clock2)
    assert loaded.ground_truth() == truth
    clock2.advance(5.0)
    assert first_eni(loaded)["secondary_ips"] == eni["secondary_ips"][1:]
    assert loaded.ground_truth()["tasks"][0]["status"] == "SUCCESS"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"enis": [{"vpc_id": "vpc-1", "eni_id": "eni-abcdefgh", "primary_ip": "10.0.0.2"}]}',
        '{"enis": [{"vpc_id": "vpc-abcdefgh", "eni_id": "eni-abcdefgh", "primary_ip": "10.0.0.300"}]}',
    ],
)
def test_bad_state_file(tmp_path: Path, content: str) -> None:
    """A malformed state file raises ConfigError naming the state file."""
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="state_file"):
        Simulator(SimulatorConfig(state_file=path))


@pytest.mark.parametrize(
    "settings",
    [
        {"enis": -1},
        {"task_latency": (-1.0, 0.0)},
        {"eip_fraction": 1.5},
        {"rate_limits": {"Reboot": 5}},
        {"keys": {}},
    ],
)
def test_bad_config_is_rejected(settings: dict[str, object]) -> None:
    """An invalid SimulatorConfig value raises ConfigError."""
    with pytest.raises(ConfigError):
        SimulatorConfig(**settings)  # type: ignore[arg-type]


def test_generated_keys_are_hidden_in_repr() -> None:
    """Without keys the simulator generates one pair; reprs never show the secret."""
    sim = Simulator(SimulatorConfig(enis=1))
    assert sim.credentials.secret_id.startswith("AKID")
    assert sim.credentials.secret_key not in repr(sim.credentials)
    assert sim.credentials.secret_key not in repr(sim.config)


async def test_sim_endpoints_need_no_auth_and_match() -> None:
    """GET /_sim/state and /_sim/stats answer without auth, as application/json, equal to the methods."""
    clock = FakeClock()
    sim = make_sim(clock)
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        await v2.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
        await v2.call("DescribeNetworkInterfaces")
        state = await client.get("/_sim/state")
        stats = await client.get("/_sim/stats")
        state_body, stats_body = json.loads(await state.read()), json.loads(await stats.read())
    assert state.headers["Content-Type"] == JSON
    assert stats.headers["Content-Type"] == JSON
    assert state_body == sim.ground_truth()
    assert stats_body == sim.stats()
    assert stats_body["requests"] == {"UnassignPrivateIpAddresses": 1, "DescribeNetworkInterfaces": 1}
    assert stats_body["tasks"] == {"RUNNING": 1, "SUCCESS": 0, "FAILED": 0}
    assert stats_body["throttled"] == {}
    assert set(stats_body["faults"].values()) == {0}
    assert state_body["tasks"][0]["task_id"].isdigit()
