"""The replicas drill in small (``bench/replicas_drill.py`` at full size): real ``serve`` processes on one real
PostgreSQL journal and one real Redis quota, one of them SIGKILLed and restarted, the database restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.replicas_drill import Plan, World, drill, releases_of
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.conftest import RedisServer
from tests.pgserver import PostgresServer

LIMITS = {"UnassignPrivateIpAddresses": 400, "DescribeVpcTaskResult": 100, "DescribeNetworkInterfaces": 400}


async def test_killed_replicas_and_a_restarted_database_lose_nothing_and_double_nothing(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    """Two replicas take 30 releases (some ENIs split between them); one is SIGKILLed and restarted and the
    database restarts: every release ends, agrees with the simulator, is made once, and no IP was in two
    accepted tasks or left unknown."""
    sim = Simulator(
        SimulatorConfig(enis=24, ips_per_eni=2, seed=21, task_latency=(0.4, 0.2), rate_limits=LIMITS)
    )

    async def restart_db() -> None:
        await asyncio.to_thread(postgres_server.restart)

    async with running(sim, host="127.0.0.1", port=0) as server:
        world = World(
            server.endpoint, sim.region, sim.credentials.secret_id, sim.credentials.secret_key,
            postgres_server.database(), redis_server.url, tmp_path, restart_db,
        )  # fmt: skip
        plan = Plan(
            2,
            releases_of(sim.ground_truth(), count=30, seed=21),
            kills=1,
            restart_db=True,
            lease_s=1.0,
            seed=21,
            timeout_s=60.0,
            kill_gap_s=(0.3, 0.5),
            down_s=(0.1, 0.3),
            poll={"first": 0.1, "initial": 0.1, "maximum": 0.3, "timeout": 60.0},
        )
        row = await drill("small", world, plan)
    table = row.table()
    assert (row.kills, row.db_restarts) == (1, 1), table
    assert row.clean, table
    assert sum(row.statuses.values()) == 30, table
    assert row.statuses.get("succeeded") == 30, table
