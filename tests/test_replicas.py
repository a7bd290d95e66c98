"""Replicas of the service on one PostgreSQL journal: one service to callers, leased work, fencing,
and a journal that goes away and comes back. Each replica is the real composition root (``running_service``:
its own pool, engine and HTTP face on 127.0.0.1) in this process, against the in-process simulator."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from eni_async import ServiceClient, Settings
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.service.server import RunningService, running_service
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.pgserver import PostgresServer

SECRET = "r3plica-Pa55word"
FAST_POLL = PollPolicy(first=0.05, initial=0.05, maximum=0.2, timeout=60.0)
FAST_RETRY = RetryPolicy(initial=0.01, maximum=0.05)


@asynccontextmanager
async def replicas(
    sim: Simulator, url: str, *lease_s: float
) -> AsyncIterator[tuple[list[RunningService], list[ServiceClient]]]:
    """One replica per ``lease_s`` on the journal ``url``, each with a client of its own; a journal step
    that waits half a second for a connection takes the database for gone (5 s by default)."""
    async with running(sim, host="127.0.0.1", port=0) as server, AsyncExitStack() as stack:
        served, clients = [], []
        for seconds in lease_s:
            settings = Settings(
                endpoint=server.endpoint,
                region=sim.region,
                poll=FAST_POLL,
                retry=FAST_RETRY,
                confirm="task",
                lease_s=seconds,
                service_journal_timeout=0.5,
            )
            svc = await stack.enter_async_context(running_service(sim.credentials, settings, url))
            served.append(svc)
            clients.append(await stack.enter_async_context(ServiceClient(svc.endpoint)))
        yield served, clients


def bodies(sim: Simulator, n: int) -> list[tuple[str, str, list[str]]]:
    return [(e["vpc_id"], e["eni_id"], e["secondary_ips"]) for e in sim.ground_truth()["enis"][:n]]


async def until(check: Any, *, seconds: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(int(seconds / 0.02)):
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {seconds}s: {check}")


def overlapping(tasks: Sequence[dict[str, Any]]) -> bool:
    spans = sorted((t["started_s"], t["started_s"] + t["latency_s"]) for t in tasks)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


async def test_every_replica_answers_for_every_release_and_waits_for_it(postgres_url: str) -> None:
    """Releases posted to either replica are read, listed and waited for on the other, and each ENI gets
    one task; each replica's /metrics names it and counts its claims."""
    sim = Simulator(SimulatorConfig(enis=6, ips_per_eni=2, seed=11, task_latency=(0.3, 0.0)))
    async with replicas(sim, postgres_url, 10, 10) as (served, clients):
        made = [await clients[i % 2].submit(*body) for i, body in enumerate(bodies(sim, 6))]
        done = await asyncio.gather(*(clients[(i + 1) % 2].wait(r["id"], 30) for i, r in enumerate(made)))
        read = [await clients[(i + 1) % 2].get(r["id"]) for i, r in enumerate(made)]
        listed = {r["id"] for r in (await clients[1].list_releases())[0]}
        async with aiohttp.ClientSession() as http:
            scraped = [await (await http.get(f"{svc.endpoint}/metrics")).text() for svc in served]
    assert [r["status"] for r in done] == ["succeeded"] * 6
    assert [r["status"] for r in read] == ["succeeded"] * 6
    assert listed == {r["id"] for r in made}
    assert set(Counter(t["eni_id"] for t in sim.ground_truth()["tasks"]).values()) == {1}
    assert all(not e["secondary_ips"] for e in sim.ground_truth()["enis"][:6])
    for svc, text in zip(served, scraped, strict=True):
        assert f'eni_async_service_replica_info{{replica="{svc.engine.leases.owner}"}} 1.0' in text
        claimed = f"eni_async_service_leases_claimed_total {float(svc.engine.leases.counts.claimed)}"
        assert claimed in text, text
    claims = [svc.engine.leases.counts.claimed for svc in served]
    assert sum(claims) >= 6, claims


async def test_one_idempotency_key_posted_to_both_replicas_at_once_makes_one_release(
    postgres_url: str,
) -> None:
    """Ten posts of one key, split over two replicas and sent together, make one release: the database's
    unique key decides, not a process."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=2, seed=12, task_latency=(0.0, 0.0)))
    async with replicas(sim, postgres_url, 10, 10) as (_, clients):
        (body,) = bodies(sim, 1)
        answers = await asyncio.gather(*(
            clients[i % 2].submit(*body, idempotency_key="the-same-key") for i in range(10)
        ))  # fmt: skip
        listed, _ = await clients[0].list_releases()
        await clients[1].wait(answers[0]["id"], 30)
    assert len({a["id"] for a in answers}) == 1
    assert [r["id"] for r in listed] == [answers[0]["id"]]
    assert len(sim.ground_truth()["tasks"]) == 1


async def test_releases_of_one_eni_posted_to_two_replicas_run_one_at_a_time(postgres_url: str) -> None:
    """Three releases of one ENI accepted by two replicas all succeed, their tasks one after the other:
    the ENI's lease goes to one replica at a time."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=3, seed=13, task_latency=(0.2, 0.0)))
    async with replicas(sim, postgres_url, 10, 10) as (_, clients):
        ((vpc, eni, ips),) = bodies(sim, 1)
        made = [await clients[i % 2].submit(vpc, eni, [ip]) for i, ip in enumerate(ips)]
        done = await asyncio.gather(*(clients[0].wait(r["id"], 30) for r in made))
    assert [r["status"] for r in done] == ["succeeded"] * 3
    tasks = sim.ground_truth()["tasks"]
    assert len(tasks) == 3
    assert not overlapping(tasks)


async def test_a_replica_that_lost_its_lease_cannot_write_over_the_adopter(
    postgres_url: str, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose lease expired while its task ran is fenced off: its write is refused and its item
    dropped, and the replica that adopted the ENI polls the same task (never resubmitted) and reports it.
    The task is held RUNNING until the ENI was adopted, so both replicas watch it when it ends."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=2, seed=14, task_latency=(0.0, 0.0)))
    sim.hold_tasks()
    database = postgres_url.rsplit("/", 1)[1]
    async with running(sim, host="127.0.0.1", port=0) as server, AsyncExitStack() as stack:

        async def replica(lease_s: float) -> tuple[RunningService, ServiceClient]:
            settings = Settings(
                endpoint=server.endpoint, region=sim.region, poll=FAST_POLL, retry=FAST_RETRY,
                confirm="task", lease_s=lease_s,
            )  # fmt: skip
            svc = await stack.enter_async_context(running_service(sim.credentials, settings, postgres_url))
            return svc, await stack.enter_async_context(ServiceClient(svc.endpoint))

        first, to_first = await replica(60)  # renews only every 20 s: its lease is ended below instead
        release = await to_first.submit(*bodies(sim, 1)[0])
        await until(lambda: len(sim.ground_truth()["tasks"]) == 1)
        second, to_second = await replica(10)
        owner = first.engine.leases.owner

        async def claims_nothing(limit: int) -> list[Any]:
            return []

        # Both replicas claim on every tick: once its lease is ended the first could claim its ENI back (a
        # new epoch of its own, no adopter); here the adopter is the one that gets to it.
        monkeypatch.setattr(first.engine.leases, "claim", claims_nothing)
        await postgres_server.asql(f"UPDATE leases SET expires_at = 0 WHERE owner = '{owner}'", database)
        await until(lambda: second.engine.leases.counts.adopted == 1)
        assert sim.stats()["tasks"]["RUNNING"] == 1
        sim.finish_tasks()
        done = await to_second.wait(release["id"], 30)
        await until(lambda: first.engine.leases.counts.lost == 1)
        await until(lambda: first.engine.stats is not None and first.engine.stats.dropped == 1)
    assert done["status"] == "succeeded"
    assert any("resumed: polling task" in d for d in done["decisions"]), done["decisions"]
    assert len(sim.ground_truth()["tasks"]) == 1
    assert second.engine.leases.counts.adopted == 1
    assert second.engine.leases.counts.adopted_releases == 1


async def test_a_replica_that_loses_the_journal_stops_taking_work_and_goes_on_when_it_returns(
    postgres_database: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With its database unreachable a replica answers /readyz, POST and GET 503, finishes the release it had
    in flight once the database is back, and never shows the URL's password (logs, answers, /metrics).
    The simulator holds the task RUNNING until the replica is ready again, so it is in flight throughout; a
    1.5 s lease (renewed, and the journal checked, every 0.5 s) finds the outage and its end sooner than 3 s."""
    caplog.set_level(logging.DEBUG)
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=15, task_latency=(0.0, 0.0)))
    sim.hold_tasks()
    url = postgres_database.replace("postgres@", f"postgres:{SECRET}@")  # trust: any password passes
    database = postgres_database.rsplit("/", 1)[1]
    seen: list[str] = []
    async with replicas(sim, url, 1.5) as (served, clients), aiohttp.ClientSession() as http:

        async def ready() -> int:
            answer = await http.get(f"{served[0].endpoint}/readyz")
            seen.append(await answer.text())
            return answer.status

        first, second = bodies(sim, 2)
        release = await clients[0].submit(*first)
        await until(lambda: len(sim.ground_truth()["tasks"]) == 1)
        await postgres_server.asql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        await postgres_server.asql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )
        try:
            await until(lambda: served[0].engine.leases.journal_error is not None)
            assert await ready() == 503
            refused = await http.post(
                f"{served[0].endpoint}/v1/releases",
                json={"vpc_id": second[0], "eni_id": second[1], "ips": second[2]},
            )
            seen.append(await refused.text())
            assert refused.status == 503
            read = await http.get(f"{served[0].endpoint}/v1/releases/{release['id']}")
            seen.append(await read.text())
            assert (read.status, (await read.json())["error"]["code"]) == (503, "JournalUnavailable")
        finally:
            await postgres_server.asql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        await until(lambda: served[0].engine.leases.journal_error is None, seconds=20)

        async def back() -> bool:
            return await ready() == 200

        await until(back, seconds=20)
        assert sim.stats()["tasks"]["RUNNING"] == 1, "the task was in flight throughout the outage"
        sim.finish_tasks()
        done = await clients[0].wait(release["id"], 30)
        seen.append(await (await http.get(f"{served[0].endpoint}/metrics")).text())
    assert done["status"] == "succeeded"
    assert len(sim.ground_truth()["tasks"]) == 1, "the task in flight was observed, never resubmitted"
    assert "not taking work" in seen[0]
    logged = [record.getMessage() for record in caplog.records]
    assert any("journal unreachable" in line for line in logged)
    for text in [*seen, *logged]:
        assert SECRET not in text
