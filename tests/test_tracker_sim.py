"""The tracker against the simulator: both dialects, failing and part-failing tasks, outcomes vs ground truth."""

from __future__ import annotations

from dataclasses import replace

import pytest

from eni_async.dialects import DESCRIBE, TASK_QUERY
from eni_async.outcomes import check_against_truth
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator.faults import FaultProfile, FaultRates
from tests.batchhelpers import world

BASE = Settings(poll=PollPolicy(timeout=300.0))


@pytest.mark.parametrize("dialect", ["v2", "v3"])
@pytest.mark.parametrize("confirm", ["eni", "task"])
async def test_failing_and_part_failing_tasks_are_reported_ip_by_ip(dialect: str, confirm: str) -> None:
    """With a third of tasks failing (some part-way), every IP's reported fate matches the simulator's truth."""
    faults = FaultProfile(name="tasks", seed=5, rates=FaultRates(task_failed=0.15, task_partial=0.2))
    settings = replace(BASE, dialect=dialect, confirm=confirm)
    async with world(settings=settings, enis=30, ips_per_eni=4, faults=faults, seed=11) as w:
        outcomes = [o.to_json() async for o in w.client.unassign_many(w.items())]
        truth = w.present()
        stats = w.sim.stats()
    assert len(outcomes) == 30
    assert [p for o in outcomes for p in check_against_truth(o, truth)] == []
    assert all(not o.get("unknown") for o in outcomes)
    failed = [o for o in outcomes if o["status"] == "failed"]
    assert failed, "the profile makes some tasks fail"
    assert any(o["released"] and o["not_released"] for o in failed), "a part-failed task, IP by IP"
    for o in outcomes:
        assert set(o["confirmed_by"]) == {*o["released"], *o["not_released"]}
    if confirm == "eni":
        assert stats["requests"].get(TASK_QUERY, 0) <= len(failed) * 3
        assert "eni" in {by for o in outcomes for by in o["confirmed_by"].values()}
    else:
        assert stats["requests"][TASK_QUERY] >= 30


async def test_v3_successes_cost_no_task_query() -> None:
    """API 3.0 without faults: every release is confirmed from ENI state; not one task query is spent."""
    async with world(settings=replace(BASE, dialect="v3"), enis=40, ips_per_eni=2) as w:
        outcomes = [o.to_json() async for o in w.client.unassign_many(w.items())]
        stats = w.sim.stats()
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert stats["requests"].get(TASK_QUERY, 0) == 0
    assert stats["requests"][DESCRIBE] < 40, "ENIs described together, not one call each"


async def test_unassign_reports_a_part_failed_chunk_ip_by_ip() -> None:
    """``unassign`` of a part-failing task raises TaskFailedError whose result lists the IPs it did release."""
    from eni_async.errors import TaskFailedError

    faults = FaultProfile(name="partial", seed=5, rates=FaultRates(task_partial=1.0))
    async with world(settings=replace(BASE, dialect="v3"), enis=1, ips_per_eni=4, faults=faults) as w:
        item = w.items()[0]
        with pytest.raises(TaskFailedError) as info:
            await w.client.unassign(item.vpc_id, item.eni_id, item.ips)
        truth = w.present()[item.eni_id]
    result = info.value.result
    assert result.released
    assert not set(result.released) & truth
