"""A test's hand on the simulator's tasks: hold new ones RUNNING whatever their latency, finish them on demand
(``Simulator.hold_tasks`` / ``finish_tasks``, ``POST /_sim/hold`` / ``/_sim/finish``)."""

from __future__ import annotations

import json
from typing import Any

from eni_async.clock import FakeClock
from eni_async.simulator.faults import FaultProfile, FaultRates
from tests.simhelpers import JSON, V2, client_for, make_sim


def _statuses(truth: dict[str, Any]) -> dict[str, str]:
    return {t["task_id"]: t["status"] for t in truth["tasks"]}


async def test_held_tasks_outlive_their_latency_and_end_when_finished_oldest_first() -> None:
    """Held, tasks stay RUNNING (mutex held, IPs in place, no latency yet) long after their latency; ``count``
    ends the oldest, no argument ends the rest, and each ends as it would have (IPs released)."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(1.0, 0.0))
    sim.hold_tasks()
    enis = sim.ground_truth()["enis"][:3]
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        ids = [
            str((await v2.unassign(e["vpc_id"], e["eni_id"], e["secondary_ips"][:1]))["data"]["taskId"])
            for e in enis
        ]
        clock.advance(3600.0)
        truth = sim.ground_truth()
        assert set(_statuses(truth).values()) == {"RUNNING"}
        assert all(t["latency_s"] is None for t in truth["tasks"])
        busy = await v2.unassign(enis[0]["vpc_id"], enis[0]["eni_id"], enis[0]["secondary_ips"][1:2])
        assert busy["code"] != 0, "a held task keeps its ENI's mutex"
        assert sim.finish_tasks(count=1) == ids[:1]
        assert (await v2.task_status(ids[0]))["data"]["status"] == 0
        assert (await v2.task_status(ids[1]))["data"]["status"] == 2
        assert sim.finish_tasks() == ids[1:]
    truth = sim.ground_truth()
    assert set(_statuses(truth).values()) == {"SUCCESS"}
    assert [t["latency_s"] for t in truth["tasks"]] == [3600.0] * 3
    for before, after in zip(enis, truth["enis"][:3], strict=True):
        assert after["secondary_ips"] == before["secondary_ips"][1:]
    assert sim.stats()["tasks"]["RUNNING"] == 0
    assert sim.finish_tasks() == [], "nothing left to end"


async def test_a_held_task_ends_as_its_fate_says_and_unholding_brings_latencies_back() -> None:
    """A task drawn to fail fails when finished; after ``hold_tasks(False)`` new tasks end after their latency
    while a task held before waits for ``finish_tasks``."""
    clock = FakeClock()
    sim = make_sim(
        clock, task_latency=(1.0, 0.0), faults=FaultProfile(name="fail", rates=FaultRates(task_failed=1.0))
    )
    sim.hold_tasks()
    a, b = sim.ground_truth()["enis"][:2]
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        held = str((await v2.unassign(a["vpc_id"], a["eni_id"], a["secondary_ips"][:1]))["data"]["taskId"])
        sim.hold_tasks(False)
        free = str((await v2.unassign(b["vpc_id"], b["eni_id"], b["secondary_ips"][:1]))["data"]["taskId"])
        clock.advance(1.5)
        assert _statuses(sim.ground_truth()) == {held: "RUNNING", free: "FAILED"}
        assert sim.finish_tasks([held, free]) == [held], "a task that already ended is left as it is"
    assert _statuses(sim.ground_truth()) == {held: "FAILED", free: "FAILED"}


async def test_the_http_controls_hold_and_finish_and_refuse_bad_bodies() -> None:
    """``POST /_sim/hold`` and ``/_sim/finish`` do what the methods do; a bad body is a 400 naming the field,
    an unknown task a 404, and neither changes anything."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(1.0, 0.0))
    eni = sim.ground_truth()["enis"][0]
    async with client_for(sim) as client:
        resp = await client.post("/_sim/hold", json={"hold": True})
        assert (resp.status, resp.headers["Content-Type"], await resp.json()) == (200, JSON, {"hold": True})
        task = await V2(client, clock).unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
        task_id = str(task["data"]["taskId"])
        clock.advance(10.0)
        for path, body, field in [
            ("/_sim/hold", {"hold": "yes"}, "hold"),
            ("/_sim/finish", {"count": -1}, "count"),
            ("/_sim/finish", {"task_ids": task_id}, "task_ids"),
            ("/_sim/finish", [1], "JSON object"),
        ]:
            resp = await client.post(path, data=json.dumps(body))
            assert resp.status == 400
            assert field in (await resp.json())["error"]
        resp = await client.post("/_sim/finish", json={"task_ids": ["no-such-task"]})
        assert resp.status == 404
        assert "no-such-task" in (await resp.json())["error"]
        assert _statuses(sim.ground_truth()) == {task_id: "RUNNING"}
        resp = await client.post("/_sim/finish")
        assert (resp.status, await resp.json()) == (200, {"finished": [task_id]})
        assert _statuses(sim.ground_truth()) == {task_id: "SUCCESS"}
        resp = await client.post("/_sim/hold", json={"hold": False})
        assert await resp.json() == {"hold": False}
    assert sim.world.held is False
