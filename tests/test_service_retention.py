"""Retention in a running service: finished releases are pruned ``service_retention`` seconds after they
finished, idempotency keys expire ``service_idempotency_ttl`` seconds after they were recorded (and the same
key then makes a new release), by the engine's periodic pass.

The client, the simulator and the engine's retention passes share a clock the test moves by hand
(``HandClock``): nothing waits on real time for a window to pass, and every moment asserted is one the test
chose.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from eni_async import ConfigError, EniClient, PollPolicy, RetryPolicy, Settings
from eni_async.journal import SqliteJournal
from eni_async.service.engine import PRUNE_EVERY_S, Engine
from eni_async.service.http import LOCAL_CALLER, make_app
from eni_async.service.registry import Registry
from eni_async.service.schema import release_body
from eni_async.settings import from_mapping
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.test_service import AUTH, service_on

RETENTION_S, TTL_S = 3600.0, 1800.0


class HandClock:
    """Time that moves only when the test says (``advance``); a sleeper wakes once time reaches its due."""

    def __init__(self, start: float) -> None:
        self._epoch = start
        self._now = 0.0
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self._now + max(0.0, seconds), next(self._seq), future))
        await future

    def due(self) -> list[float]:
        """When each sleeper wakes, in the clock's seconds."""
        return sorted(due for due, _, future in self._due if not future.done())

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._due and self._due[0][0] <= self._now:
            _, _, future = heapq.heappop(self._due)
            if not future.done():
                future.set_result(None)


@asynccontextmanager
async def retaining(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[Any, Any], Engine, HandClock, Simulator]]:
    """A service whose client and simulator run on one ``HandClock``, with short retention windows."""
    clock = HandClock(time.time())
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=9, task_latency=(0.0, 0.0)), clock=clock)
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(
            endpoint=server.endpoint,
            region=sim.region,
            poll=PollPolicy(first=0.01, initial=0.01, maximum=0.05, timeout=1e6),
            retry=RetryPolicy(initial=0.01, maximum=0.05),
            service_retention=RETENTION_S,
            service_idempotency_ttl=TTL_S,
        )
        async with (
            SqliteJournal(tmp_path / "j.db") as journal,
            EniClient(sim.credentials, settings, clock=clock) as client,
        ):
            engine = Engine(client, journal, max_unfinished=100, retention_clock=clock)
            await engine.start()
            try:
                async with TestClient(TestServer(make_app(engine), host="127.0.0.1")) as http:
                    yield http, engine, clock, sim
            finally:
                await engine.stop(0)


async def post(http: TestClient[Any, Any], body: dict[str, Any], key: str) -> tuple[int, Any]:
    resp = await http.post("/v1/releases", json=body, headers={**AUTH, "Idempotency-Key": key})
    return resp.status, await resp.json()


async def status_of(http: TestClient[Any, Any], release_id: str) -> int:
    resp = await http.get(f"/v1/releases/{release_id}", headers=AUTH)
    await resp.read()
    return resp.status


async def passed(clock: HandClock) -> None:
    """Until the retention pass woken by the last ``advance`` has run: the pruner sleeps again, due one
    interval from now."""
    for _ in range(1000):
        if clock.monotonic() + PRUNE_EVERY_S in clock.due():
            return
        await asyncio.sleep(0)
    raise AssertionError("the retention pass did not run")


async def keys_kept(engine: Engine) -> int:
    journal = engine.journal
    assert isinstance(journal, SqliteJournal)
    async with journal.connector.reading() as tx:
        ((count,),) = await tx.run("SELECT count(*) FROM service_idempotency")
    return int(count)


async def test_keys_expire_and_finished_releases_are_pruned_after_their_windows(tmp_path: Path) -> None:
    """Within the key's TTL the same key replays (or conflicts); past it the periodic pass forgets the key
    and the key makes a new release; a pass just before the finished release's retention has passed keeps
    it, the next pass prunes it; the newer release stays."""
    async with retaining(tmp_path) as (http, engine, clock, sim):
        enis = sim.ground_truth()["enis"]
        body = {"vpc_id": enis[0]["vpc_id"], "eni_id": enis[0]["eni_id"], "ips": enis[0]["secondary_ips"]}
        other = {"vpc_id": enis[1]["vpc_id"], "eni_id": enis[1]["eni_id"], "ips": enis[1]["secondary_ips"]}
        keyed_at = clock.time()
        status, first = await post(http, body, "key-1")
        assert status == 202
        for _ in range(2000):  # the client's polls wait on the hand clock: move it in small steps
            clock.advance(0.05)
            resp = await http.get(f"/v1/releases/{first['id']}", headers=AUTH)
            done = await resp.json()
            if done["status"] == "succeeded":
                break
        assert done["status"] == "succeeded"
        finished_at = clock.time()  # at or after the release's finish (read just after)

        clock.advance(keyed_at + TTL_S - 1 - clock.time())  # one second before the key expires
        await passed(clock)
        assert await keys_kept(engine) == 1
        assert (await post(http, other, "key-1"))[0] == 409
        status, again = await post(http, body, "key-1")
        assert (status, again["id"]) == (202, first["id"])

        clock.advance(PRUNE_EVERY_S + 2)  # past the TTL, and a pass is due
        await passed(clock)
        assert await keys_kept(engine) == 0
        status, fresh = await post(http, other, "key-1")
        assert status == 202
        assert fresh["id"] != first["id"]

        clock.advance(finished_at - 0.05 + RETENTION_S - 1 - clock.time())  # a pass just before the window
        await passed(clock)
        assert await status_of(http, first["id"]) == 200
        clock.advance(PRUNE_EVERY_S + 2)  # the next pass, just after it
        await passed(clock)
        assert await status_of(http, first["id"]) == 404
        assert await status_of(http, fresh["id"]) == 200


@pytest.mark.parametrize("name", ["service_retention", "service_idempotency_ttl"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_a_retention_window_is_a_finite_positive_number_of_seconds(name: str, value: float) -> None:
    """A window of 0, below 0 or not finite is refused in one line naming the setting."""
    with pytest.raises(ConfigError) as caught:
        from_mapping({name: value})
    assert caught.value.field == name
    assert "\n" not in str(caught.value)


async def test_a_key_never_outlives_the_releases_it_made(tmp_path: Path) -> None:
    """With a retention shorter than the TTL, keys expire with the retention: a replay always finds its
    releases (the key is older than they are)."""
    async with SqliteJournal(tmp_path / "j.db") as journal:
        registry = Registry(journal, now=lambda: 0.0, retention=100.0, idempotency_ttl=1000.0)
        assert (registry.retention, registry.idempotency_ttl) == (100.0, 100.0)
        assert Registry(journal, now=lambda: 0.0, retention=None, idempotency_ttl=5.0).idempotency_ttl == 5.0
        assert Registry(journal, now=lambda: 0.0).idempotency_ttl is None


async def test_a_live_key_whose_releases_were_pruned_is_409_not_a_crash(tmp_path: Path) -> None:
    """A key still alive whose releases another replica's shorter retention pruned answers 409 naming the
    key (and why), never a 500."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=2, seed=9, task_latency=(0.0, 0.0)))
    eni = sim.ground_truth()["enis"][0]
    body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
    checked = release_body(json.dumps(body).encode())
    journal = tmp_path / "j.db"
    async with SqliteJournal(journal) as jr:
        registry = Registry(jr, now=time.time)
        (release,), _ = await registry.create(
            checked.requests, idempotency_key=f"{LOCAL_CALLER}/k", body_hash=checked.body_hash
        )
        await jr.releases.finish(release.id, "failed", {"status": "failed"}, now=time.time())
        assert (await jr.releases.prune(finished_before=math.inf, keys_before=-math.inf)).releases == 1
    async with service_on(sim, journal, tokens=()) as svc:
        resp = await svc.http.post("/v1/releases", json=body, headers={"Idempotency-Key": "k"})
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["field"]) == (409, "IdempotencyConflict", "Idempotency-Key")
        assert "pruned" in error["message"]
