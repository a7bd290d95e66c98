"""Cancelling a release over HTTP (``POST /v1/releases/{id}:cancel``) and through ``ServiceClient``: a
release none of whose calls was sent ends ``cancelled`` and is never submitted, one already submitted is
refused with its tasks, on one service (SQLite) and across two replicas (PostgreSQL).

The simulator runs on a ``FakeClock`` advanced by hand, so a task stays RUNNING until the test lets it end:
the release queued behind it on the same ENI (the batch runs one task per ENI at a time) is surely not sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eni_async import ReleaseCancelledError, ServiceClient, ServiceError
from eni_async.clock import FakeClock
from eni_async.service.engine import Engine
from eni_async.simulator import Simulator, SimulatorConfig
from tests.test_replicas import replicas
from tests.test_service import AUTH, Service, service_on
from tests.test_service_outage import AUTH as OUTAGE_AUTH
from tests.test_service_outage import service as outage_service

SLOW_S = 100.0  # a task's latency on the simulator's hand-advanced clock


def stalled_simulator(ips: int = 4) -> tuple[Simulator, FakeClock]:
    clock = FakeClock(start=time.time())  # the simulator checks signing timestamps against its clock
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=ips, seed=5, task_latency=(SLOW_S, 0.0)), clock=clock)
    return sim, clock


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until ``check()`` holds, bounded (each check is a request or a read: it yields to the service)."""
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


async def call(svc: Service, method: str, path: str) -> tuple[int, Any]:
    resp = await svc.http.request(method, path, headers=AUTH)
    return resp.status, await resp.json()


async def two_on_one_eni(svc: Service) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two releases of ENI 0 (the first one's task runs until the clock is advanced); once the first has its
    task, both."""
    eni = svc.enis()[0]
    ips = eni["secondary_ips"]
    body = {"releases": [svc.body(0, ips[:2]), svc.body(0, ips[2:])]}
    resp = await svc.http.post("/v1/releases", json=body, headers=AUTH)
    first, second = (await resp.json())["releases"]

    async def first_sent() -> bool:
        return bool((await call(svc, "GET", f"/v1/releases/{first['id']}"))[1]["task_ids"])

    await until(first_sent, "the first release's task is recorded")
    return first, second


async def test_a_release_not_yet_sent_is_cancelled_and_never_submitted(tmp_path: Path) -> None:
    """The release queued behind a running task is cancelled (200, final, its IPs not released); again is
    the same answer; once the ENI is free the engine drops it without a call: one task, its IPs still
    there."""
    sim, clock = stalled_simulator()
    async with service_on(sim, tmp_path / "j.db") as svc:
        first, second = await two_on_one_eni(svc)
        status, cancelled = await call(svc, "POST", f"/v1/releases/{second['id']}:cancel")
        assert status == 200
        assert cancelled["status"] == "cancelled"
        assert cancelled["not_released"] == second["ips"]
        assert cancelled["released"] == cancelled["unknown"] == cancelled["task_ids"] == []
        assert cancelled["error"]["code"] == "Cancelled"
        assert cancelled["outcome_status"] == "not_attempted"
        assert cancelled["finished_at"] is not None
        assert await call(svc, "POST", f"/v1/releases/{second['id']}:cancel") == (200, cancelled)
        _, waited = await call(svc, "GET", f"/v1/releases/{second['id']}?wait=10")
        assert waited == cancelled
        clock.advance(2 * SLOW_S)
        _, done = await call(svc, "GET", f"/v1/releases/{first['id']}?wait=10")
        assert done["status"] == "succeeded"

        async def dropped() -> bool:
            stats = svc.engine.stats
            return stats is not None and stats.dropped == 1 and not svc.engine.holdings.work

        await until(dropped, "the batch dropped the cancelled release")
        assert len(sim.ground_truth()["tasks"]) == 1
        assert sorted(svc.enis()[0]["secondary_ips"]) == sorted(second["ips"])
        assert (await call(svc, "GET", f"/v1/releases/{second['id']}"))[1] == cancelled
        counts = await svc.engine.registry.counts()
        assert (counts["cancelled"], counts["succeeded"]) == (1, 1)


async def test_a_submitted_release_is_409_with_its_tasks_in_flight(tmp_path: Path) -> None:
    """Cancelling the release whose task runs answers 409 AlreadySubmitted naming that task; it runs on."""
    sim, clock = stalled_simulator()
    async with service_on(sim, tmp_path / "j.db") as svc:
        first, _ = await two_on_one_eni(svc)
        status, refused = await call(svc, "POST", f"/v1/releases/{first['id']}:cancel")
        assert status == 409
        tasks = [t["task_id"] for t in sim.ground_truth()["tasks"]]
        assert refused["error"]["code"] == "AlreadySubmitted"
        assert refused["error"]["task_ids"] == tasks
        assert refused["error"]["field"] == "id"
        clock.advance(2 * SLOW_S)
        _, done = await call(svc, "GET", f"/v1/releases/{first['id']}?wait=10")
        assert done["status"] == "succeeded"
        status, finished = await call(svc, "POST", f"/v1/releases/{first['id']}:cancel")
        assert status == 409
        assert finished["error"]["code"] == "AlreadyFinished"
        assert "task_ids" not in finished["error"]


async def test_cancel_of_an_unknown_id_is_404_a_query_400_and_a_get_405(tmp_path: Path) -> None:
    """An id the service never gave answers 404; a query parameter on cancel answers 400 naming it; a GET
    of the cancel's path 405 allowing POST only; all in the JSON error shape."""
    sim, _ = stalled_simulator()
    async with service_on(sim, tmp_path / "j.db") as svc:
        status, missing = await call(svc, "POST", "/v1/releases/rel-nope:cancel")
        assert (status, missing["error"]["code"], missing["error"]["field"]) == (404, "NotFound", "id")
        status, bad = await call(svc, "POST", "/v1/releases/rel-nope:cancel?force=1")
        assert (status, bad["error"]["field"]) == (400, "force")
        resp = await svc.http.get("/v1/releases/rel-nope:cancel", headers=AUTH)
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
        assert (await resp.json())["error"]["code"] == "MethodNotAllowed"


async def test_service_client_cancels_and_an_unassign_waiting_on_it_raises(tmp_path: Path) -> None:
    """``ServiceClient.cancel`` answers the cancelled release; an ``unassign`` waiting on it raises
    ``ReleaseCancelledError``; a refused cancel is a ``ServiceError`` carrying the tasks in flight."""
    sim, clock = stalled_simulator()
    async with (
        service_on(sim, tmp_path / "j.db") as svc,
        ServiceClient(svc.url, "test-token-0123456789abcdef") as client,
    ):
        eni = svc.enis()[0]
        ips = eni["secondary_ips"]
        first = await client.submit(eni["vpc_id"], eni["eni_id"], ips[:2])
        waiting = asyncio.create_task(client.unassign(eni["vpc_id"], eni["eni_id"], ips[2:], timeout=30))

        async def both_listed() -> bool:
            return len((await client.list_releases(eni_id=eni["eni_id"]))[0]) == 2

        await until(both_listed, "both releases are listed")
        (second,), _ = await client.list_releases(eni_id=eni["eni_id"], limit=1)
        assert second["id"] != first["id"]
        cancelled = await client.cancel(second["id"])
        assert cancelled["status"] == "cancelled"
        with pytest.raises(ReleaseCancelledError) as caught:
            await waiting
        assert caught.value.release["id"] == second["id"]
        assert (await client.wait(second["id"], 5))["status"] == "cancelled"

        async def first_sent() -> bool:
            return bool((await client.get(first["id"]))["task_ids"])

        await until(first_sent, "the first release's task is recorded")
        with pytest.raises(ServiceError) as refused:
            await client.cancel(first["id"])
        assert (refused.value.status, refused.value.code) == (409, "AlreadySubmitted")
        assert refused.value.task_ids == tuple(t["task_id"] for t in sim.ground_truth()["tasks"])
        clock.advance(2 * SLOW_S)
        assert (await client.wait(first["id"], 10))["status"] == "succeeded"


async def test_a_replica_cancels_a_release_another_replica_holds(postgres_url: str) -> None:
    """On one PostgreSQL journal, the replica that does not hold the ENI cancels its queued release; the
    holder never submits it (one task), and the first release still succeeds."""
    sim, clock = stalled_simulator()
    async with replicas(sim, postgres_url, 10, 10) as (served, clients):
        eni = sim.ground_truth()["enis"][0]
        ips = eni["secondary_ips"]
        first, second = await clients[0].submit_many(
            [(eni["vpc_id"], eni["eni_id"], ips[:2]), (eni["vpc_id"], eni["eni_id"], ips[2:])]
        )

        async def first_sent() -> bool:
            return bool((await clients[1].get(first["id"]))["task_ids"])

        await until(first_sent, "the first release's task is recorded")
        (holder,) = [i for i, svc in enumerate(served) if eni["eni_id"] in svc.engine.leases.held]
        other = clients[1 - holder]
        assert (await other.cancel(second["id"]))["status"] == "cancelled"
        with pytest.raises(ServiceError) as refused:
            await other.cancel(first["id"])
        assert refused.value.code == "AlreadySubmitted"
        clock.advance(2 * SLOW_S)
        assert (await clients[holder].wait(first["id"], 10))["status"] == "succeeded"

        async def dropped() -> bool:
            stats = served[holder].engine.stats
            return stats is not None and stats.dropped == 1 and not served[holder].engine.holdings.work

        await until(dropped, "the holder dropped the cancelled release")
        assert len(sim.ground_truth()["tasks"]) == 1
        assert (await clients[holder].get(second["id"]))["status"] == "cancelled"


@pytest.mark.parametrize("started", ["before", "after"])
async def test_a_release_waiting_out_an_outage_is_cancelled_and_never_sent(
    tmp_path: Path, started: str
) -> None:
    """A release waiting for an API that refuses every connection (down before the service started: the
    probe says so) or throttles every call (from after the start) had no call that may have taken effect:
    the cancel wins (200 ``cancelled``, its IPs never sent, none unknown), and once the API is back nothing
    of it is submitted (before: 409 "being sent", until the release's deadline)."""
    down = ("unreachable", 20_000.0) if started == "before" else None  # ended by hand below
    async with outage_service(tmp_path, dialect="v2", outage=down) as svc:
        if down is None:
            svc.sim.outage.control({"kind": "throttle", "seconds": 20_000})
        body = svc.bodies()[0]
        [release_id] = await svc.post([body])

        async def waiting() -> bool:
            return (await svc.get(release_id))["error"] is not None

        await until(waiting, "the release shows it waits for the API")
        if down is not None:  # no call of it was made: its decision does not say one failed
            [decision] = (await svc.get(release_id))["decisions"]
            assert decision.startswith("submitting not tried: the API is down ("), decision
        resp = await svc.http.post(f"/v1/releases/{release_id}:cancel", headers=OUTAGE_AUTH)
        cancelled = await resp.json()
        assert resp.status == 200, cancelled
        assert cancelled["status"] == "cancelled"
        assert cancelled["not_released"] == body["ips"]
        assert cancelled["unknown"] == cancelled["task_ids"] == []
        svc.sim.outage.end()

        async def dropped() -> bool:
            stats = svc.engine.stats
            return stats is not None and stats.dropped == 1 and not svc.engine.holdings.work

        await until(dropped, "the batch dropped the cancelled release")
        assert svc.tasks_by_eni() == Counter()
        assert sorted(svc.sim.ground_truth()["enis"][0]["secondary_ips"]) == sorted(body["ips"])
        assert (await svc.get(release_id))["status"] == "cancelled"


@pytest.mark.parametrize("restart", [False, True])
async def test_a_release_whose_task_is_watched_again_is_409_naming_that_task(
    tmp_path: Path, restart: bool
) -> None:
    """A task held past its watch is watched again (progress journalled meanwhile): the journal still has
    it in flight, so a cancel answers 409 naming it (never "its tasks ended"); once it ends, the release
    succeeds without another submit, also when the service restarted meanwhile (the new engine polls it)."""
    async with outage_service(tmp_path, deadline=1e6) as svc:
        svc.sim.hold_tasks()
        body = svc.bodies()[0]
        [release_id] = await svc.post([body])

        async def watched_again() -> bool:
            return any("watching it again" in d for d in (await svc.get(release_id))["decisions"])

        await until(watched_again, "the release's task is watched again")
        resp = await svc.http.post(f"/v1/releases/{release_id}:cancel", headers=OUTAGE_AUTH)
        refused = await resp.json()
        assert resp.status == 409, refused
        [task] = [t["task_id"] for t in svc.sim.ground_truth()["tasks"]]
        assert refused["error"]["task_ids"] == [task]
        assert "runs to its end" in refused["error"]["message"]
        assert "ended" not in refused["error"]["message"]
        engine = svc.engine
        if restart:
            await engine.stop(0)
            engine = Engine(svc.engine.client, svc.engine.journal, max_unfinished=1000)
            await engine.start()
        try:
            svc.sim.hold_tasks(False)
            assert svc.sim.finish_tasks() == [task]

            async def succeeded() -> bool:
                release = await engine.registry.get(release_id)
                return release is not None and release.status == "succeeded"

            await until(succeeded, "the release succeeds")
        finally:
            if restart:
                await engine.stop(0)
        assert len(svc.sim.ground_truth()["tasks"]) == 1
        assert svc.sim.ground_truth()["enis"][0]["secondary_ips"] == []
