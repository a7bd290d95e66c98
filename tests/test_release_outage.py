"""The library's release path outlasts outages when given a deadline, and keeps its bounds without one.

Against the simulator on 127.0.0.1, sharing a fake clock with the client: outages of 30 s and 5 minutes.
"""

from __future__ import annotations

import itertools

import pytest

from eni_async import InputError
from eni_async.clock import FakeClock
from eni_async.outcomes import Item
from eni_async.policy import OutagePolicy, outlasting
from tests.batchhelpers import world


@pytest.mark.parametrize(("kind", "seconds"), [("unreachable", 30), ("unreachable", 300), ("http_503", 300)])
async def test_unassign_many_with_a_deadline_outlasts_an_outage(kind: str, seconds: float) -> None:
    """With ``release_deadline`` every item of a batch started in an outage of 30 s or 5 minutes succeeds."""
    async with world() as w:
        items = w.items()
        w.sim.outage.start(kind, seconds)
        outcomes = [o async for o in w.client.unassign_many(items, release_deadline=3600)]
        assert sorted(o.status for o in outcomes) == ["succeeded"] * len(items)
        assert all(len(ips) == 1 for ips in w.present().values())  # the primary IP alone is left
        assert w.clock.monotonic() >= seconds
        for outcome in outcomes:
            assert outcome.error is None
            assert any("waiting for the API" in d for d in outcome.decisions)


async def test_unassign_with_a_deadline_outlasts_five_minutes_of_503() -> None:
    """``EniClient.unassign(release_deadline=...)`` returns the released IPs after a 5-minute 503 outage."""
    async with world() as w:
        item = w.items()[0]
        w.sim.outage.start("http_503", 300)
        result = await w.client.unassign(item.vpc_id, item.eni_id, item.ips, release_deadline=3600)
        assert sorted(result.released) == sorted(item.ips)


async def test_without_a_deadline_the_library_keeps_its_bounded_retries() -> None:
    """By default (no ``release_deadline``) a 30 s outage outlasts the call's RetryPolicy: the item fails
    with ConnectFailed within seconds and nothing was sent (every IP not released)."""
    async with world() as w:
        item = w.items()[0]
        w.sim.outage.start("unreachable", 30)
        [outcome] = [o async for o in w.client.unassign_many([item])]
        assert outcome.status == "failed"
        assert outcome.error is not None
        assert outcome.error["code"] == "ConnectFailed"
        assert sorted(outcome.not_released) == sorted(item.ips)
        assert w.clock.monotonic() < 30


@pytest.mark.parametrize("refusal", ["eni_not_found", "permission_denied"])
async def test_a_permanent_refusal_fails_at_once_even_with_a_deadline(refusal: str) -> None:
    """An ENI that does not exist, or one the keys may not touch, fails at once under a six-hour deadline:
    nothing to wait for, and nothing released."""
    async with world() as w:
        real = w.items()[0]
        item = Item(real.vpc_id, "eni-00000000", real.ips) if refusal == "eni_not_found" else real
        if refusal == "permission_denied":
            w.sim.denied_enis.add(real.eni_id)
        [outcome] = [o async for o in w.client.unassign_many([item], release_deadline=21_600)]
        assert outcome.status == "failed"
        assert outcome.error is not None
        code = outcome.error["code"]
        assert code.endswith("NotFound") if refusal == "eni_not_found" else code == "UnauthorizedOperation"
        assert sorted(outcome.not_released) == sorted(item.ips)
        assert w.clock.monotonic() < 5


async def test_the_outage_backoff_never_waits_past_the_deadline() -> None:
    """The outage retrier's waits are jittered, capped at ``maximum`` and cut at the deadline, where the
    last try is made."""
    clock = FakeClock()
    tries: list[float] = []

    async def down() -> None:
        tries.append(clock.monotonic())
        raise InputError("x", 1, "still down")

    retrying = outlasting(OutagePolicy(initial=1.0, maximum=30.0), clock, 300.0, retry=lambda e: True)
    with pytest.raises(InputError):
        await retrying(down)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert max(gaps) <= 30.0
    assert tries[-1] == pytest.approx(300.0)
    assert len(tries) >= 300 / 30
