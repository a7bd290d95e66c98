"""The service outlasts outages: the API unreachable, answering 503 or refusing the credentials, on a fake clock.

The simulator and the client share one ``FakeClock``, so outages of 30 s and 5 minutes take milliseconds; the
service's HTTP face and journal are real (127.0.0.1, SQLite).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eni_async import EniClient, PollPolicy, Settings
from eni_async.clock import FakeClock
from eni_async.credentials import CredentialProvider, credential_chain
from eni_async.errors import OutcomeUnknownError, ProtocolError
from eni_async.journal import SqliteJournal
from eni_async.release import UNASSIGN
from eni_async.service.engine import Engine
from eni_async.service.health import PROBE_WAIT
from eni_async.service.http import make_app
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.servehelpers import AUTH as SERVE_AUTH
from tests.servehelpers import read, serve_process, simulated
from tests.test_release_outage import flap_submits

TOKEN = "outage-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = {
    "AKID" + "1" * 32: "first-secret-key-000000000000000",
    "AKID" + "2" * 32: "second-secret-key-00000000000000",
}
FIRST, SECOND = list(KEYS)


@dataclass
class Svc:
    """A service on a fake clock, the simulator it talks to, and its HTTP test client."""

    http: TestClient[Any, Any]
    engine: Engine
    sim: Simulator
    clock: FakeClock

    def bodies(self) -> list[dict[str, Any]]:
        return [
            {"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]}
            for e in self.sim.ground_truth()["enis"]
        ]

    def tasks_by_eni(self) -> Counter[str]:
        return Counter(t["eni_id"] for t in self.sim.ground_truth()["tasks"])

    async def post(self, bodies: list[dict[str, Any]]) -> list[str]:
        resp = await self.http.post("/v1/releases", json={"releases": bodies}, headers=AUTH)
        assert resp.status == 202, await resp.text()
        return [r["id"] for r in (await resp.json())["releases"]]

    async def get(self, release_id: str, wait: float = 0) -> dict[str, Any]:
        resp = await self.http.get(f"/v1/releases/{release_id}?wait={wait:g}", headers=AUTH)
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data

    async def finished(self, ids: list[str]) -> list[dict[str, Any]]:
        return [await self.get(release_id, wait=20) for release_id in ids]

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        resp = await self.http.get("/readyz")
        return resp.status, await resp.json()


@asynccontextmanager
async def service(
    tmp_path: Path,
    *,
    credentials: CredentialProvider | None = None,
    reload: Callable[[], Awaitable[CredentialProvider]] | None = None,
    deadline: float = 21_600.0,
    dialect: str = "v3",
    outage: tuple[str, float] | None = None,
    enis: int = 4,
) -> AsyncIterator[Svc]:
    """A service (``dialect``, release deadline ``deadline``) on a simulator of ``enis`` ENIs, one fake
    clock; ``outage`` (kind, seconds) starts before the service does."""
    clock = FakeClock()
    sim = Simulator(
        SimulatorConfig(enis=enis, ips_per_eni=3, seed=5, task_latency=(1.0, 0.3), keys=KEYS), clock=clock
    )
    async with running(sim, host="127.0.0.1", port=0) as server:
        if outage is not None:
            sim.outage.start(*outage)
        settings = Settings(
            endpoint=server.endpoint,
            region=sim.region,
            dialect=dialect,
            poll=PollPolicy(timeout=60.0),
            concurrency=16,
            service_release_deadline=deadline,
        )
        async with (
            SqliteJournal(tmp_path / "j.db") as journal,
            EniClient(credentials or sim.credentials, settings, clock=clock) as client,
        ):
            engine = Engine(client, journal, max_unfinished=1000, reload=reload)
            await engine.start()
            try:
                async with TestClient(
                    TestServer(make_app(engine, tokens=(TOKEN,)), host="127.0.0.1")
                ) as http:
                    yield Svc(http, engine, sim, clock)
            finally:
                await engine.stop(0)


async def until(check: Callable[[], Awaitable[bool]], *, tries: int = 2000) -> None:
    """Wait (a few real milliseconds at a time, bounded) until ``check()`` holds."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


@pytest.mark.parametrize(
    ("kind", "seconds"),
    [("unreachable", 30), ("unreachable", 300), ("http_503", 30), ("http_503", 300), ("throttle", 30)],
)
async def test_an_outage_fails_no_accepted_release(tmp_path: Path, kind: str, seconds: float) -> None:
    """Releases accepted while the API is unreachable, answers 503 or throttles, for 30 s or 5 minutes, all
    succeed once it is back (before: about 9 s of unreachability failed them with ConnectFailed)."""
    async with service(tmp_path) as svc:
        svc.sim.outage.start(kind, seconds)
        ids = await svc.post(svc.bodies())
        done = await svc.finished(ids)
        assert [r["status"] for r in done] == ["succeeded"] * 4
        assert all(e["secondary_ips"] == [] for e in svc.sim.ground_truth()["enis"])
        assert svc.sim.outage.state()["struck"][kind] > 0
        assert svc.clock.monotonic() >= seconds
        for release in done:
            assert release["error"] is None
            assert any("waiting for the API" in d for d in release["decisions"])
            assert any("the API answered again" in d for d in release["decisions"])
        assert svc.tasks_by_eni() == Counter({body["eni_id"]: 1 for body in svc.bodies()})
        status, body = await svc.readyz()
        assert (status, body["api"]) == (200, "ok")


@pytest.mark.parametrize("seconds", [30, 300])
async def test_an_outage_while_tasks_run_is_outlasted_without_resubmitting(
    tmp_path: Path, seconds: float
) -> None:
    """The API unreachable for 30 s or 5 minutes right after the submits were accepted: every release
    succeeds, each ENI had one task, and the tasks' fate was observed (no IP unknown)."""
    async with service(tmp_path) as svc:

        async def outage_once_submitted() -> None:
            while not svc.sim.ground_truth()["tasks"] or len(svc.tasks_by_eni()) < 4:
                await svc.clock.sleep(0.01)
            svc.sim.outage.start("unreachable", seconds)

        starter = asyncio.create_task(outage_once_submitted())
        ids = await svc.post(svc.bodies())
        done = await svc.finished(ids)
        await starter
        assert [r["status"] for r in done] == ["succeeded"] * 4
        assert svc.tasks_by_eni() == Counter({body["eni_id"]: 1 for body in svc.bodies()})
        assert all(r["unknown"] == [] and r["not_released"] == [] for r in done)
        assert svc.clock.monotonic() >= seconds


async def test_while_an_outage_lasts_the_release_runs_showing_its_last_error(tmp_path: Path) -> None:
    """During an outage a release stays pending or running with the last error in its GET body, and
    /readyz answers 503 naming the API's state; when the API answers again, both recover by themselves."""
    async with service(tmp_path) as svc:
        svc.sim.outage.start("unreachable", 20_000)  # ended by hand below, before the deadline (6 h)
        [release_id] = await svc.post(svc.bodies()[:1])

        async def shows_error() -> bool:
            return (await svc.get(release_id))["error"] is not None

        await until(shows_error)
        during = await svc.get(release_id)
        assert during["status"] in ("pending", "running")
        assert during["error"]["code"] == "ConnectFailed"
        status, body = await svc.readyz()
        assert status == 503
        assert body["api"] == "unreachable (ConnectFailed)"
        svc.sim.outage.end()
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"
        assert done["error"] is None
        status, body = await svc.readyz()
        assert (status, body["api"]) == (200, "ok")


async def test_at_the_deadline_ips_sent_and_not_seen_are_unknown(tmp_path: Path) -> None:
    """A release whose deadline (2 minutes) passes while the API is unreachable after its submit was
    accepted fails with every IP unknown, none not released; the task did release them."""
    async with service(tmp_path, deadline=120.0) as svc:

        async def outage_once_submitted() -> None:
            while len(svc.tasks_by_eni()) < 1:
                await svc.clock.sleep(0.01)
            svc.sim.outage.start("unreachable", 3600)

        starter = asyncio.create_task(outage_once_submitted())
        body = svc.bodies()[0]
        [release_id] = await svc.post([body])
        [done] = await svc.finished([release_id])
        await starter
        assert done["status"] == "failed"
        assert sorted(done["unknown"]) == sorted(body["ips"])
        assert done["not_released"] == []
        assert 120 <= svc.clock.monotonic() < 3600
        svc.sim.outage.end()
        assert svc.sim.ground_truth()["enis"][0]["secondary_ips"] == []


async def test_readyz_at_start_checks_the_credentials_with_one_cheap_call(tmp_path: Path) -> None:
    """At start /readyz has checked the credentials with one DescribeNetworkInterfaces call: ``ok``."""
    async with service(tmp_path) as svc:
        status, body = await svc.readyz()
        assert (status, body["api"], body["reason"]) == (200, "ok", "ready")
        assert svc.sim.stats()["requests"] == {"DescribeNetworkInterfaces": 1}


async def test_an_api_unreachable_at_start_is_probed_until_the_service_is_ready(tmp_path: Path) -> None:
    """Unreachable at start, /readyz answers 503 naming it; with no release to tell, the service probes
    the API on its backoff and is ready by itself within a minute of the outage's end."""
    async with service(tmp_path, outage=("unreachable", 20_000)) as svc:  # ended by hand below
        status, body = await svc.readyz()
        assert (status, body["api"]) == (503, "unreachable (ConnectFailed)")
        svc.sim.outage.end()
        ended = svc.clock.monotonic()

        async def ready() -> bool:
            return (await svc.readyz())[0] == 200

        await until(ready)
        assert svc.clock.monotonic() - ended <= 61
        assert (await svc.readyz())[1]["api"] == "ok"


async def test_readyz_at_start_says_the_credentials_are_refused_without_a_secret(tmp_path: Path) -> None:
    """Credentials the API refuses at start: /readyz 503 naming the code (and no secret), POST 503."""
    clock = FakeClock()
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=5, keys=KEYS), clock=clock)
    sim.outage.refuse([FIRST])
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, dialect="v3")
        async with (
            SqliteJournal(tmp_path / "start.db") as journal,
            EniClient(sim.credentials, settings, clock=clock) as client,
        ):
            engine = Engine(client, journal, max_unfinished=10)
            await engine.start()
            try:
                async with TestClient(
                    TestServer(make_app(engine, tokens=(TOKEN,)), host="127.0.0.1")
                ) as http:
                    resp = await http.get("/readyz")
                    text = await resp.text()
                    assert resp.status == 503
                    assert json.loads(text)["api"] == "credentials refused: AuthFailure.SecretIdNotFound"
                    assert KEYS[FIRST] not in text
                    eni = sim.ground_truth()["enis"][0]
                    body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
                    resp = await http.post("/v1/releases", json={"releases": [body]}, headers=AUTH)
                    assert resp.status == 503
                    assert "AuthFailure.SecretIdNotFound" in (await resp.json())["error"]["message"]
            finally:
                await engine.stop(0)


async def test_refused_credentials_are_read_again_from_their_file_and_work_goes_on(tmp_path: Path) -> None:
    """Keys the API stops taking pause the work (release pending, /readyz 503 with the reason, nothing
    failed); once the credentials file names working keys, the service reads it again and the release
    succeeds by itself, without a restart."""
    keyfile = tmp_path / "credentials"
    keyfile.write_text(f"[default]\nsecret_id = {FIRST}\nsecret_key = {KEYS[FIRST]}\n")

    async def from_file() -> CredentialProvider:
        return await credential_chain(environ={}, profile_files=(keyfile,), tccli_dir=tmp_path / "no-tccli")

    async with service(tmp_path, credentials=await from_file(), reload=from_file) as svc:
        svc.sim.outage.refuse([FIRST])
        body = svc.bodies()[0]
        [release_id] = await svc.post([body])

        async def refused() -> bool:
            return (await svc.readyz())[0] == 503 and svc.engine.api.refused

        await until(refused)
        status, ready = await svc.readyz()
        assert ready["api"] == "credentials refused: AuthFailure.SecretIdNotFound"
        assert (await svc.get(release_id))["status"] == "pending"
        keyfile.write_text(f"[default]\nsecret_id = {SECOND}\nsecret_key = {KEYS[SECOND]}\n")
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"
        assert svc.sim.ground_truth()["enis"][0]["secondary_ips"] == []
        assert str(keyfile) in svc.engine.client.credentials.source
        status, ready = await svc.readyz()
        assert (status, ready["api"]) == (200, "ok")


async def test_a_release_waiting_for_refused_credentials_says_why(tmp_path: Path) -> None:
    """While the API refuses the credentials, the pending release shows the refusal's code as its error and
    a decision saying it waits for them (no secret in it, before: error null, no decision); once they work
    it succeeds with no error, the wait among its decisions."""
    async with service(tmp_path) as svc:
        svc.sim.outage.refuse([FIRST])
        [release_id] = await svc.post(svc.bodies()[:1])

        async def says_why() -> bool:
            return svc.engine.api.refused and (await svc.get(release_id))["error"] is not None

        await until(says_why)
        resp = await svc.http.get(f"/v1/releases/{release_id}", headers=AUTH)
        text = await resp.text()
        during = json.loads(text)
        assert during["status"] == "pending"
        assert during["error"]["code"] == "AuthFailure.SecretIdNotFound"
        assert any("refused the credentials (AuthFailure.SecretIdNotFound)" in d for d in during["decisions"])
        assert all(secret not in text for secret in KEYS.values())
        svc.sim.outage.accept([FIRST])
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"
        assert done["error"] is None
        assert any("refused the credentials" in d for d in done["decisions"])


async def test_refused_credentials_that_come_back_let_the_work_go_on(tmp_path: Path) -> None:
    """Without a source to read again (fixed keys), the service tries them on its backoff: once the API
    takes them again the pending release succeeds by itself."""
    async with service(tmp_path) as svc:
        svc.sim.outage.refuse([FIRST])
        [release_id] = await svc.post(svc.bodies()[:1])

        async def refused() -> bool:
            return svc.engine.api.refused

        await until(refused)
        svc.sim.outage.accept([FIRST])
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"
        assert (await svc.readyz())[0] == 200


async def test_serve_reads_refused_credentials_again_from_its_profile_file(tmp_path: Path) -> None:
    """``eni-async serve`` with keys in ~/.tencentcloud/credentials that the API refuses from the start:
    /readyz 503 says so; once the file holds working keys, the process goes on by itself and a release
    succeeds, with no restart."""
    home = tmp_path / "home"
    keyfile = home / ".tencentcloud" / "credentials"
    keyfile.parent.mkdir(parents=True)
    keyfile.write_text(f"[default]\nsecret_id = {FIRST}\nsecret_key = {KEYS[FIRST]}\n")
    async with simulated(
        tmp_path, grace=0.5, enis=1, ips_per_eni=2, seed=3, keys=KEYS, task_latency=(0.0, 0.0)
    ) as served:
        served.sim.outage.refuse([FIRST])
        env = {k: v for k, v in served.env.items() if not k.startswith("TENCENTCLOUD_")}
        served.env = {**env, "HOME": str(home)}
        async with (
            serve_process(served, tmp_path / "j.db", tmp_path / "serve.log") as (_, endpoint),
            aiohttp.ClientSession() as http,
        ):
            async with http.get(f"{endpoint}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["api"] == "credentials refused: SecretIdNotFound"
            keyfile.write_text(f"[default]\nsecret_id = {SECOND}\nsecret_key = {KEYS[SECOND]}\n")
            for _ in range(300):  # the backoff starts at 1 s: a few seconds at most
                async with http.get(f"{endpoint}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 200
            eni = served.sim.ground_truth()["enis"][0]
            body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
            async with http.post(
                f"{endpoint}/v1/releases", json={"releases": [body]}, headers=SERVE_AUTH
            ) as resp:
                [release] = (await resp.json())["releases"]
            async with http.get(
                f"{endpoint}/v1/releases/{release['id']}?wait=20", headers=SERVE_AUTH
            ) as resp:
                assert (await resp.json())["status"] == "succeeded"
        assert KEYS[FIRST] not in read(tmp_path / "serve.log")
        assert KEYS[SECOND] not in read(tmp_path / "serve.log")


async def test_an_outage_of_task_watching_alone_makes_readyz_unreachable(tmp_path: Path) -> None:
    """The API unreachable once every submit was accepted, so that only the watching calls (describes, task
    queries) fail: /readyz answers 503 naming it while they fail (before: ``ok`` throughout, since no submit
    waited), and 200 ``ok`` again once a call is answered; the release succeeds."""
    async with service(tmp_path) as svc:
        body = svc.bodies()[0]

        async def outage_once_submitted() -> None:
            while not svc.tasks_by_eni():
                await svc.clock.sleep(0.01)
            svc.sim.outage.start("unreachable", 20_000)  # ended by hand below, before the deadline (6 h)

        starter = asyncio.create_task(outage_once_submitted())
        [release_id] = await svc.post([body])
        await starter

        async def unready() -> bool:
            return (await svc.readyz())[0] == 503

        await until(unready)
        status, ready = await svc.readyz()
        assert (status, ready["api"]) == (503, "unreachable (ConnectFailed)")
        assert (await svc.get(release_id))["status"] == "running"
        assert svc.sim.requests["UnassignPrivateIpAddresses"] == 1  # nothing but the watch was failing
        svc.sim.outage.end()
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"
        assert svc.tasks_by_eni() == Counter({body["eni_id"]: 1})

        async def ready_again() -> bool:
            return (await svc.readyz())[0] == 200

        await until(ready_again)
        assert (await svc.readyz())[1]["api"] == "ok"


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_releases_waiting_for_one_outage_share_one_probe(tmp_path: Path, dialect: str) -> None:
    """Sixteen releases accepted in a 5-minute 503 outage do not each retry on a backoff of their own: once
    its first minute is over, the API gets fewer than one call every two seconds (the probe's), then every
    release succeeds with one task per ENI (before: each item's own tries, over 5 calls a second)."""
    async with service(tmp_path, dialect=dialect, enis=16) as svc:
        svc.sim.outage.start("http_503", 300)
        received: list[int] = []

        async def sample() -> None:
            for at in (60, 300):
                await svc.clock.sleep(at - svc.clock.monotonic())
                received.append(sum(svc.sim.requests.values()))

        sampler = asyncio.create_task(sample())
        ids = await svc.post(svc.bodies())
        done = await svc.finished(ids)
        await sampler
        assert [r["status"] for r in done] == ["succeeded"] * 16
        assert svc.tasks_by_eni() == Counter({body["eni_id"]: 1 for body in svc.bodies()})
        first_minute, whole = received
        assert whole - first_minute < 240 / 2
        assert svc.sim.outage.state()["struck"]["http_503"] >= 240 / PROBE_WAIT.maximum


async def test_a_release_outlasts_a_flapping_503_on_its_submits(tmp_path: Path) -> None:
    """Ten submits in a row answered 503, the ENI answering each look in between: the accepted release
    succeeds with one task (before: failed after six rounds, "too many ambiguous rounds")."""
    async with service(tmp_path, dialect="v2") as svc:
        body = svc.bodies()[0]
        flapping = asyncio.create_task(flap_submits(svc.sim, 10))
        [release_id] = await svc.post([body])
        [done] = await svc.finished([release_id])
        await flapping
        assert done["status"] == "succeeded", done["decisions"]
        assert done["attempts"] == 11
        assert svc.tasks_by_eni() == Counter({body["eni_id"]: 1})


async def test_a_sustained_throttle_makes_readyz_say_throttled_not_unreachable(tmp_path: Path) -> None:
    """Every call answered RequestLimitExceeded: /readyz answers 503 saying the API throttles (it answers:
    it is not unreachable), the waiting release shows the code; once the throttling ends, both recover."""
    async with service(tmp_path) as svc:
        svc.sim.outage.start("throttle", 20_000)  # ended by hand below, before the deadline (6 h)
        [release_id] = await svc.post(svc.bodies()[:1])

        async def unready() -> bool:
            return (await svc.readyz())[0] == 503

        await until(unready)
        status, body = await svc.readyz()
        assert (status, body["api"], body["reason"]) == (
            503,
            "throttled (RequestLimitExceeded)",
            "API throttled (RequestLimitExceeded)",
        )
        assert "unreachable" not in json.dumps(body)
        svc.sim.outage.end()
        [done] = await svc.finished([release_id])
        assert done["status"] == "succeeded"

        async def ready_again() -> bool:
            return (await svc.readyz())[0] == 200

        await until(ready_again)
        assert (await svc.readyz())[1]["api"] == "ok"


async def test_an_ambiguous_submit_is_logged_once_saying_each_thing_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A submit answered 503 logs one WARNING that names the ENI, the call and the advice to look before
    resubmitting once each (before: the ENI twice, and "look at the ENI before resubmitting; describing the
    ENI before resubmitting"); the release still succeeds."""
    async with service(tmp_path, dialect="v2") as svc:
        body = svc.bodies()[0]
        flapping = asyncio.create_task(flap_submits(svc.sim, 1))
        with caplog.at_level("WARNING", logger="eni_async.release"):
            [release_id] = await svc.post([body])
            [done] = await svc.finished([release_id])
        await flapping
        assert done["status"] == "succeeded"
        [record] = [r for r in caplog.records if "outcome unknown" in r.getMessage()]
        line = record.getMessage()
        assert line.startswith(f"{body['eni_id']}: ")
        for once in (body["eni_id"], "UnassignPrivateIpAddresses", "before resubmitting", "ENI"):
            assert line.count(once) == 1, (once, line)
        cause = record.args[-1]  # type: ignore[index]
        assert isinstance(cause, ProtocolError)
        unknown = str(OutcomeUnknownError(UNASSIGN, body["vpc_id"], body["eni_id"], body["ips"], cause))
        for once in (body["eni_id"], UNASSIGN, "before resubmitting", "HTTP 503"):
            assert unknown.count(once) == 1, (once, unknown)
