"""The library's release path outlasts outages when given a deadline, and keeps its bounds without one.

Against the simulator on 127.0.0.1, sharing a fake clock with the client: outages of 30 s and 5 minutes.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from eni_async import InputError, PollPolicy, Settings
from eni_async.clock import FakeClock
from eni_async.outcomes import Item
from eni_async.policy import OutagePolicy, outlasting
from eni_async.release import MAX_ROUNDS
from eni_async.simulator import Simulator
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


async def flap_submits(sim: Simulator, times: int) -> list[str]:
    """Answer 503 (a ``/_sim/outage`` of kind ``http_503``) to each of the next ``times`` submits while every
    look in between is answered: the outage is started after each describe and ended once a submit met it.
    Return the calls in the order the simulator saw them (``U``: a submit, ``D``: a describe)."""
    seen: list[str] = []
    actions = {"U": "UnassignPrivateIpAddresses", "D": "DescribeNetworkInterfaces"}
    counts = {short: sim.requests[action] for short, action in actions.items()}  # from now on
    struck = 0
    sim.outage.start("http_503", 3600)  # for the first submit (API 3.0 looks first: that look ends it)
    for _ in range(200_000):  # loop turns, each a few microseconds: ample for a dozen rounds
        for short, action in actions.items():
            for _ in range(sim.requests[action] - counts[short]):
                counts[short] += 1
                seen.append(short)
                if sim.outage.active() is not None:  # this call met the outage: let the next one through
                    sim.outage.end()
                    struck += short == "U"
                elif short == "D" and struck < times:
                    sim.outage.start("http_503", 3600)
        if struck >= times and sim.outage.active() is None:
            return seen
        await asyncio.sleep(0)
    raise AssertionError(f"the submits never met {times} outages: {''.join(seen)}")


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_a_flapping_503_outlasts_more_rounds_than_the_bound_under_a_deadline(dialect: str) -> None:
    """Under a deadline, ten submits in a row answered 503 (each looked at, the ENI answering in between)
    do not fail the item: it succeeds with one task, every resubmit after a look at the ENI, and the rounds
    paced on the outage backoff (before: failed at MAX_ROUNDS, "too many ambiguous rounds")."""
    async with world(settings=Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))) as w:
        item = w.items()[0]
        flapping = asyncio.create_task(flap_submits(w.sim, 10))
        [outcome] = [o async for o in w.client.unassign_many([item], release_deadline=3600)]
        seen = await flapping
        assert outcome.status == "succeeded", outcome.decisions
        assert sorted(outcome.released) == sorted(item.ips)
        assert outcome.attempts == 11
        assert len(w.sim.ground_truth()["tasks"]) == 1
        submits = [i for i, call in enumerate(seen) if call == "U"]
        assert all(seen[i - 1] == "D" for i in submits[1:])  # looked at before every resubmit
        assert MAX_ROUNDS < 10
        assert 0 < w.clock.monotonic() < 3600  # paced, and well within the deadline


async def test_a_flapping_503_until_the_deadline_leaves_the_ips_unknown() -> None:
    """Submits answered 503 until the deadline (2 minutes): the item ends at its deadline, each resubmit
    after a look, and its IPs are unknown (an ambiguous submit may have started a task), never guessed."""
    async with world() as w:
        item = w.items()[0]
        flapping = asyncio.create_task(flap_submits(w.sim, 1000))
        [outcome] = [o async for o in w.client.unassign_many([item], release_deadline=120)]
        flapping.cancel()
        w.sim.outage.end()
        assert outcome.status == "failed"
        assert sorted(outcome.unknown) == sorted(item.ips)
        assert outcome.not_released == []
        assert outcome.attempts > MAX_ROUNDS
        assert 120 <= w.clock.monotonic() < 180


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_the_last_watch_ends_at_the_deadline_with_the_ips_unknown(dialect: str) -> None:
    """The API unreachable from the moment the task was accepted until long after the deadline (15 minutes,
    past one 10-minute watch): the item ends at its deadline, within one call's retries, with every IP sent
    ``unknown`` and none ``not_released`` (before: the last watch ran its full 600 s past it)."""
    async with world(settings=Settings(dialect=dialect)) as w:
        item = w.items()[0]
        assert w.client.settings.poll.timeout == 600

        async def outage_once_submitted() -> None:
            while not w.sim.ground_truth()["tasks"]:
                await w.clock.sleep(0.01)
            w.sim.outage.start("unreachable", 20_000)

        starter = asyncio.create_task(outage_once_submitted())
        [outcome] = [o async for o in w.client.unassign_many([item], release_deadline=900)]
        await starter
        ended = w.clock.monotonic()
        w.sim.outage.end()
        assert outcome.status == "failed"
        assert sorted(outcome.unknown) == sorted(item.ips)
        assert outcome.not_released == []
        retry = w.client.settings.retry
        assert 900 <= ended <= 900 + retry.attempts * retry.maximum, ended  # a call in flight ends first
