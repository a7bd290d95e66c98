"""The reliability drill in small: a hostile simulator, a batch killed and resumed, and nothing lost.

Fake time throughout. A "kill" here cancels the batch while tasks are in flight and throws the client away;
the journal is all that survives, as after ``kill -9`` (the full-size drill with real SIGKILLs is
``bench/drill.py``). The drill's other faults in small, below: credentials lost mid-batch, kills during
slow tasks, a damaged CSV.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bench.drill_faults import damaged_csv
from eni_async.client import EniClient
from eni_async.inputs import read_items
from eni_async.journal import Journal, SqliteJournal
from eni_async.outcomes import Item
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import load_fault_profile
from eni_async.testing import drill_state, verdict
from tests.batchhelpers import World, world
from tests.test_release import FailingLater

ENIS = 40


def state_file(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(drill_state(ENIS, seed=seed, per_vpc=20)))
    return path


def items_of(w: World) -> list[Item]:
    return w.items()


@pytest.mark.parametrize(("seed", "dialect"), [(1, "v2"), (2, "v2"), (3, "v2"), (1, "v3"), (2, "v3")])
async def test_hostile_straight_through_agrees_with_ground_truth(
    tmp_path: Path, seed: int, dialect: str
) -> None:
    """Against every fault kind at once, each ENI gets one outcome and every outcome matches the truth."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(
        state_file=state_file(tmp_path, seed),
        faults=load_fault_profile("hostile"),
        seed=seed,
        settings=settings,
    ) as w:
        items = items_of(w)
        outcomes = [o.to_json() async for o in w.client.unassign_many(items, concurrency=8)]
        result = verdict(outcomes, w.sim.ground_truth(), [i.eni_id for i in items])
        faults = w.sim.stats()["faults"]
    assert result.mismatches == 0, result.summary()
    assert result.reported == ENIS
    assert "eni" in {by for o in outcomes for by in o.get("confirmed_by", {}).values()}, (
        "confirmed by ENI state"
    )
    assert sum(faults.values()) > 20, "the drill really met faults"
    assert result.statuses.get("succeeded", 0) > ENIS // 2


async def _run_until_killed(client: EniClient, journal: Journal, items: Any, kill_after: int) -> int:
    """Run a journalled batch and 'kill' it after ``kill_after`` submits; return outcomes seen.

    The journal's counts are read every fourth event-loop turn (each turn, they were a third of the
    drill's CPU): the kill lands at most three turns later, still mid-flight."""
    batch = client.unassign_many(items, concurrency=6, journal=journal)
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for _ in batch:
            seen += 1

    task = asyncio.create_task(consume())
    for _ in range(5_000):
        for _ in range(4):
            await asyncio.sleep(0)
        counts = await journal.counts()
        if task.done() or counts["submitted"] + counts["finished"] >= kill_after:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seen


@pytest.mark.parametrize(("seed", "dialect"), [(4, "v2"), (5, "v2"), (4, "v3")])
async def test_killed_and_resumed_loses_nothing(tmp_path: Path, seed: int, dialect: str) -> None:
    """Killed three times mid-flight and resumed from the journal, the batch ends with every ENI right."""
    path = tmp_path / "batch.journal"
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(
        state_file=state_file(tmp_path, seed),
        faults=load_fault_profile("hostile"),
        seed=seed,
        settings=settings,
    ) as w:
        items = items_of(w)
        journal = SqliteJournal(path)
        await journal.load(items)  # as ``batch --journal`` does: the whole input first, in one transaction
        for kill_after in (5, 12, 20):
            async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
                await _run_until_killed(client, journal, journal.unfinished(), kill_after=kill_after)
        submitted_before = w.sim.stats()["requests"].get("UnassignPrivateIpAddresses", 0)
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
            async for _ in client.unassign_many(journal.unfinished(), concurrency=6, journal=journal):
                pass
        counts = await journal.counts()
        outcomes = [data async for data in journal.finished_outcomes()]
        result = verdict(outcomes, w.sim.ground_truth(), [i.eni_id for i in items])
        await journal.close()
    assert counts["finished"] == ENIS
    assert counts["pending"] == counts["submitting"] == counts["submitted"] == 0
    assert result.mismatches == 0, result.summary()
    assert submitted_before > 0


async def test_resume_polls_submitted_tasks_instead_of_resubmitting(tmp_path: Path) -> None:
    """A task recorded as submitted is polled on resume; no second UnassignPrivateIpAddresses is sent."""
    path = tmp_path / "batch.journal"
    async with world(enis=1, ips_per_eni=3, task_latency=(30.0, 0.0)) as w:
        (item,) = w.items()
        journal = SqliteJournal(path)
        await _run_until_killed(w.client, journal, [item], kill_after=1)
        assert (await journal.counts())["submitted"] == 1
        assert w.sim.stats()["requests"]["UnassignPrivateIpAddresses"] == 1
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
            outcomes = [o async for o in client.unassign_many(journal.unfinished(), journal=journal)]
        assert w.sim.stats()["requests"]["UnassignPrivateIpAddresses"] == 1
        await journal.close()
    (outcome,) = outcomes
    assert outcome.status == "succeeded"
    assert sorted(outcome.released) == sorted(item.ips)
    assert any("resumed: polling task" in d for d in outcome.decisions)


async def test_journal_holds_no_secret(tmp_path: Path) -> None:
    """The journal file never contains the secret key."""
    path = tmp_path / "batch.journal"
    async with world(enis=3) as w:
        async with SqliteJournal(path) as journal:
            async for _ in w.client.unassign_many(w.items(), journal=journal):
                pass
        secret = w.sim.credentials.secret_key.encode()
    assert not files_containing(tmp_path, secret)


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [file for file in folder.iterdir() if needle in file.read_bytes()]


# -- the drill's fault runs in small (bench/drill_faults.py at full size; the full disk under serve is
# tests/test_service_storage.py) ----------------------------------------------------------------------------


async def _journalled(client: EniClient, journal: Journal, items: Any) -> list[dict[str, Any]]:
    return [o.to_json() async for o in client.unassign_many(items, concurrency=6, journal=journal)]


async def test_credentials_lost_mid_batch_contradict_nothing_and_resume_finishes(tmp_path: Path) -> None:
    """Against the hostile world, credentials lost mid-batch (a metadata service gone, short-lived keys):
    what the batch reports contradicts nothing (IPs sent and not observed are ``unknown``); resumed with
    credentials again, every ENI ends in agreement with the simulator."""
    path = tmp_path / "batch.journal"
    settings = Settings(poll=PollPolicy(timeout=300.0))
    async with world(
        state_file=state_file(tmp_path, 6), faults=load_fault_profile("hostile"), seed=6, settings=settings
    ) as w:
        items = items_of(w)
        journal = SqliteJournal(path)
        await journal.load(items)
        w.client.credentials = FailingLater(w.sim.credentials, w.clock, at=w.clock.monotonic() + 4.0)
        cut = await _journalled(w.client, journal, journal.unfinished())
        await w.clock.sleep(600.0)  # the tasks end at Tencent all the same
        at_stop = verdict(cut, w.sim.ground_truth(), [])
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
            await _journalled(client, journal, journal.unfinished())
        final = verdict(
            [d async for d in journal.finished_outcomes()], w.sim.ground_truth(), [i.eni_id for i in items]
        )
        await journal.close()
    cut_after_submit = [
        o for o in cut if o["task_ids"] and (o["error"] or {}).get("code") == "CredentialsUnavailable"
    ]
    assert cut_after_submit, "the credentials ran out with submits in flight"
    assert at_stop.mismatches == 0, at_stop.summary()
    assert sum(len(o["unknown"]) for o in cut_after_submit) > 0
    assert final.mismatches == 0, final.summary()
    assert final.reported == ENIS


async def test_killed_twice_during_slow_tasks_then_resumed_finishes_every_item(tmp_path: Path) -> None:
    """Killed twice while tasks are still running (3 s tasks: each kill lands a couple of rounds in, with
    six tasks submitted and running, as with the drill's 10 s ones, for a tenth of the describes), the last
    resume finishes every item, none resubmitted, all agreeing with the simulator."""
    path = tmp_path / "batch.journal"
    async with world(state_file=state_file(tmp_path, 7), seed=7, task_latency=(3.0, 0.0)) as w:
        items = items_of(w)
        journal = SqliteJournal(path)
        await journal.load(items)
        for kill_after in (8, 16):
            async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
                await _run_until_killed(client, journal, journal.unfinished(), kill_after=kill_after)
        left = await journal.counts()
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as client:
            resumed = await _journalled(client, journal, journal.unfinished())
        counts = await journal.counts()
        outcomes = [d async for d in journal.finished_outcomes()]
        result = verdict(outcomes, w.sim.ground_truth(), [i.eni_id for i in items])
        tasks = len(w.sim.ground_truth()["tasks"])
        await journal.close()
    assert left["pending"] > 0, left
    assert left["submitted"] > 0, left
    assert len(resumed) == ENIS - left["finished"]
    assert counts == {"pending": 0, "submitting": 0, "submitted": 0, "finished": ENIS}
    assert result.mismatches == 0, result.summary()
    assert tasks == sum((len(i.ips) + 9) // 10 for i in items), "no chunk was submitted twice"


async def test_a_damaged_csv_attempts_every_good_row_and_names_each_bad_line(tmp_path: Path) -> None:
    """A CSV with a stray quote on line 2, truncated lines, short rows, a bad IP and its last line cut
    off, against the hostile world: every good ENI is attempted and agrees with the simulator, and each bad
    line is its own failed outcome naming that line."""
    path = state_file(tmp_path, 8)
    csv_path = tmp_path / "damaged.csv"
    bad = damaged_csv(json.loads(path.read_text()), csv_path, seed=8)
    async with world(state_file=path, faults=load_fault_profile("hostile"), seed=8) as w:
        enis = {i.eni_id for i in items_of(w)}
        outcomes = [
            o.to_json() async for o in w.client.unassign_many(read_items(str(csv_path)), concurrency=8)
        ]
        good = [o for o in outcomes if o["eni_id"] in enis]
        result = verdict(good, w.sim.ground_truth(), sorted(enis))
    errors = [o for o in outcomes if o["eni_id"] not in enis]
    assert sorted(o["line"] for o in errors) == sorted(bad)
    assert all(o["status"] == "failed" and f"line {o['line']}" in o["error"]["message"] for o in errors)
    assert result.reported == ENIS
    assert not [o for o in good if o["status"] == "not_attempted"]
    assert result.mismatches == 0, result.summary()
