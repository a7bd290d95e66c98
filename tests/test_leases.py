"""A replica's tenures on a real journal: when a lease allows a send, and what a write does while it does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eni_async.journal import LeaseLostError, SqliteJournal
from eni_async.outcomes import Item, Outcome
from eni_async.service.leases import FencedRecorder, Leases, Tenure

VPC, ENI, IPS = "vpc-7t9nf3pu", "eni-00000001", ("10.0.0.2",)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def held(tmp_path: Path) -> tuple[SqliteJournal, Leases, Tenure, Clock, int]:
    journal = SqliteJournal(tmp_path / "j.db")
    [release], _ = await journal.releases.create([(VPC, ENI, IPS)], ["rel-1"], now=1.0)
    clock = Clock()
    leases = Leases(journal, owner="me", lease_s=3.0, monotonic=clock)
    (tenure,) = await leases.claim(5)
    return journal, leases, tenure, clock, release.item_key


async def test_a_tenure_allows_a_send_while_a_renewal_interval_of_its_lease_is_left(tmp_path: Path) -> None:
    """Held for two thirds of the lease after it was set, doubtful after that, and lost once given back."""
    journal, leases, tenure, clock, _ = await held(tmp_path)
    async with journal:
        assert leases.valid(tenure)
        clock.now += 1.9
        leases.guard(tenure)
        clock.now += 0.2
        assert not leases.valid(tenure)
        with pytest.raises(LeaseLostError):
            leases.guard(tenure)
        assert await leases.renew() == []  # the journal still says it is ours: held again
        assert leases.valid(tenure)
        await leases.give_back([tenure])
        assert not leases.valid(tenure)
        assert (leases.counts.claimed, leases.counts.renewed, leases.counts.given_back) == (1, 1, 1)


async def test_a_send_waits_while_the_lease_is_in_doubt_and_what_was_seen_is_written(tmp_path: Path) -> None:
    """While the tenure is doubtful a chunk about to be sent waits (nothing recorded, so nothing sent) until a
    renewal holds it again; the record of a task already accepted is written meanwhile; a tenure found lost
    drops the item, telling the engine."""
    journal, leases, tenure, clock, key = await held(tmp_path)
    dropped: list[int] = []
    recorder = FencedRecorder(journal, leases, tenure_of=lambda k: tenure, dropped=dropped.append)
    item, outcome = Item(VPC, ENI, IPS, key=key), Outcome(VPC, ENI, IPS)
    async with journal:
        clock.now += 2.5
        sending = asyncio.create_task(recorder.submitting(item, IPS, outcome))
        await asyncio.sleep(0.3)
        assert not sending.done()
        assert await journal.item(key) == ("pending", None)
        await recorder.submitted(item, "77", None, IPS, outcome)  # an observation: written at once
        assert (await journal.item(key))[0] == "submitted"  # type: ignore[index]
        await leases.renew()
        await asyncio.wait_for(sending, 5)
        assert (await journal.item(key))[0] == "submitting"  # type: ignore[index]
        leases.lose(tenure, "test")
        with pytest.raises(LeaseLostError):
            recorder.guard(item)
        with pytest.raises(LeaseLostError):
            await recorder.finished(key, outcome)
        assert dropped == [key, key]
        assert (await journal.item(key))[0] == "submitting"  # type: ignore[index]
