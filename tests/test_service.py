"""The release service over real HTTP on 127.0.0.1, against the in-process simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from eni_async import (
    ConfigError,
    EniClient,
    PollPolicy,
    PrimaryIpError,
    RetryPolicy,
    ServiceClient,
    ServiceError,
    Settings,
    TaskTimeoutError,
    validation,
)
from eni_async.client_metrics import Metrics
from eni_async.journal import SqliteJournal
from eni_async.outcomes import Outcome, check_against_truth
from eni_async.service.engine import Engine, NotAcceptingError
from eni_async.service.http import make_app
from eni_async.service.openapi import DOCUMENT, RELEASE_ID_PATTERN, document
from eni_async.service.registry import Registry
from eni_async.service.schema import IPV4_PATTERN
from eni_async.service.service_metrics import ServiceMetrics
from eni_async.simulator import Simulator, SimulatorConfig, running

TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "other-caller-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = Settings(
    poll=PollPolicy(first=0.01, initial=0.01, maximum=0.05, timeout=30.0),
    retry=RetryPolicy(initial=0.01, maximum=0.05),
)


@dataclass
class Service:
    """One running service: its HTTP test client, engine, simulator and journal path."""

    http: TestClient[Any, Any]
    engine: Engine
    sim: Simulator
    journal: Path
    metrics: ServiceMetrics

    def enis(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.sim.ground_truth()["enis"]
        return found

    def body(self, index: int = 0, ips: list[str] | None = None) -> dict[str, Any]:
        eni = self.enis()[index]
        return {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": ips or eni["secondary_ips"]}

    def tasks_by_eni(self) -> Counter[str]:
        return Counter(t["eni_id"] for t in self.sim.ground_truth()["tasks"])

    @property
    def url(self) -> str:
        return str(self.http.make_url("")).rstrip("/")


Starter = Callable[..., AbstractAsyncContextManager[Service]]


@asynccontextmanager
async def service_on(
    sim: Simulator,
    journal: Path,
    *,
    tokens: tuple[str, ...] = (TOKEN, OTHER_TOKEN),
    max_unfinished: int = 10_000,
    max_body: int = 1_048_576,
) -> AsyncIterator[Service]:
    """A service on ``journal`` for ``sim``, served on 127.0.0.1, stopped at the end (grace 0)."""
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(
            endpoint=server.endpoint, region=sim.region, poll=FAST.poll, retry=FAST.retry, concurrency=16
        )
        metrics = ServiceMetrics.create()
        async with (
            SqliteJournal(journal) as jr,
            EniClient(sim.credentials, settings, metrics=metrics.client) as client,
        ):
            engine = Engine(client, jr, max_unfinished=max_unfinished)
            await engine.start()
            metrics.watch(engine.registry, engine.ready)
            app = make_app(
                engine,
                tokens=tokens,
                max_body=max_body,
                metrics_registry=metrics.registry,
                requests_counter=metrics.requests,
                before_scrape=metrics.refresh,
            )
            try:
                async with TestClient(TestServer(app, host="127.0.0.1")) as http:
                    yield Service(http, engine, sim, journal, metrics)
            finally:
                await engine.stop(0)


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    """A service with tasks that end at once: 8 ENIs of 12 secondary IPs each."""
    sim = Simulator(SimulatorConfig(enis=8, ips_per_eni=12, seed=3, task_latency=(0.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as service:
        yield service


async def post(svc: Service, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await svc.http.post("/v1/releases", json=body, headers={**AUTH, **(headers or {})})
    return resp.status, await resp.json()


async def get(svc: Service, path: str) -> tuple[int, Any]:
    resp = await svc.http.get(path, headers=AUTH)
    return resp.status, await resp.json()


# -- the release routes --------------------------------------------------------------------------------


async def test_post_answers_202_pending_and_the_release_ends_succeeded(svc: Service) -> None:
    """POST answers 202 with a pending release and its Location; GET ?wait= answers it succeeded."""
    body = svc.body(0)
    resp = await svc.http.post("/v1/releases", json=body, headers=AUTH)
    assert resp.status == 202
    release = await resp.json()
    assert release["status"] in ("pending", "running")
    assert resp.headers["Location"] == f"/v1/releases/{release['id']}"
    assert resp.headers["Content-Type"] == "application/json"
    status, done = await get(svc, f"/v1/releases/{release['id']}?wait=10")
    assert status == 200
    assert done["status"] == "succeeded"
    assert sorted(done["released"]) == sorted(body["ips"])
    assert len(done["task_ids"]) == 2  # 12 IPs: two chunks, one task each, one after another
    assert done["not_released"] == []
    assert done["unknown"] == []
    assert done["created_at"]
    assert done["started_at"]
    assert done["finished_at"]
    assert svc.enis()[0]["secondary_ips"] == []


async def test_batch_form_answers_one_release_per_entry_in_order(svc: Service) -> None:
    """The batch form answers 202 with one release per entry, in the order given, and all succeed."""
    bodies = [svc.body(i, svc.enis()[i]["secondary_ips"][:2]) for i in (3, 1, 2)]
    status, data = await post(svc, {"releases": bodies})
    assert status == 202
    assert [r["eni_id"] for r in data["releases"]] == [b["eni_id"] for b in bodies]
    assert len({r["id"] for r in data["releases"]}) == 3
    for release in data["releases"]:
        _, done = await get(svc, f"/v1/releases/{release['id']}?wait=10")
        assert done["status"] == "succeeded"
    problems = [p for r in data["releases"] for p in check_against_truth(r | {"status": "pending"}, {})]
    assert problems == []


async def test_same_eni_releases_run_one_task_at_a_time(svc: Service) -> None:
    """Several releases on one ENI all succeed: the service serialises them (no mutex errors)."""
    ips = svc.enis()[0]["secondary_ips"]
    bodies = [svc.body(0, ips[i : i + 3]) for i in range(0, 12, 3)]
    _, data = await post(svc, {"releases": bodies})
    finals = [(await get(svc, f"/v1/releases/{r['id']}?wait=10"))[1] for r in data["releases"]]
    assert [f["status"] for f in finals] == ["succeeded"] * 4
    assert all(not f["decisions"] for f in finals if "decisions" in f)
    assert svc.tasks_by_eni()[svc.enis()[0]["eni_id"]] == 4


async def test_unknown_release_is_404(svc: Service) -> None:
    """GET of an id the service never gave answers 404 in the JSON error shape."""
    status, data = await get(svc, "/v1/releases/rel-nope")
    assert status == 404
    assert data["error"]["code"] == "NotFound"


async def test_failed_release_carries_the_api_error(svc: Service) -> None:
    """A primary IP ends the release failed, with the API's code and the IP not released."""
    primary = svc.enis()[0]["primary_ip"]
    _, release = await post(svc, svc.body(0, [primary]))
    _, done = await get(svc, f"/v1/releases/{release['id']}?wait=10")
    assert done["status"] == "failed"
    assert done["error"]["code"] == "InvalidPrivateip.IsPrimary"
    assert done["released"] == []
    assert done["not_released"] == [primary]


async def test_list_is_newest_first_paged_and_filtered(svc: Service) -> None:
    """GET /v1/releases lists newest first, follows next_cursor to the end, and filters by status."""
    ids = []
    for i in range(5):
        _, release = await post(svc, svc.body(i, svc.enis()[i]["secondary_ips"][:1]))
        ids.append(release["id"])
    _, bad = await post(svc, svc.body(5, [svc.enis()[5]["primary_ip"]]))
    for rid in [*ids, bad["id"]]:
        await get(svc, f"/v1/releases/{rid}?wait=10")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/v1/releases?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await get(svc, path)
        assert status == 200
        seen += [r["id"] for r in page["releases"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [bad["id"], *reversed(ids)]
    assert pages == 3
    _, failed = await get(svc, "/v1/releases?status=failed")
    assert [r["id"] for r in failed["releases"]] == [bad["id"]]
    _, ok = await get(svc, "/v1/releases?status=succeeded&limit=1000")
    assert len(ok["releases"]) == 5


async def test_wait_returns_an_unfinished_release_when_time_passes(tmp_path: Path) -> None:
    """?wait= answers with the release as it stands when it has not ended in time."""
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=1, task_latency=(30.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as slow:
        _, release = await post(slow, slow.body(0))
        status, now = await get(slow, f"/v1/releases/{release['id']}?wait=0.3")
        assert status == 200
        assert now["status"] in ("pending", "running")


async def test_a_running_release_shows_its_tasks(tmp_path: Path) -> None:
    """While its task runs, a release answers running, with the task id the journal recorded."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=2, seed=1, task_latency=(30.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as slow:
        _, release = await post(slow, slow.body(0))
        for _ in range(500):
            _, now = await get(slow, f"/v1/releases/{release['id']}")
            if now["task_ids"]:
                break
            await asyncio.sleep(0.01)
        assert now["status"] == "running"
        assert now["task_ids"] == [t["task_id"] for t in sim.ground_truth()["tasks"]]
        assert now["finished_at"] is None


async def test_start_finishes_a_release_whose_journal_item_already_finished(tmp_path: Path) -> None:
    """A release the journal finished just before a crash is finished from the journal on start, not rerun."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=2, seed=1, task_latency=(0.0, 0.0)))
    journal = tmp_path / "j.db"
    async with SqliteJournal(journal) as jr:
        eni = sim.ground_truth()["enis"][0]
        registry = Registry(jr, now=lambda: 0.0)
        [release], _ = await registry.create([(eni["vpc_id"], eni["eni_id"], ("10.9.9.9",))])
        outcome = Outcome(
            eni["vpc_id"], eni["eni_id"], ("10.9.9.9",), status="succeeded", released=["10.9.9.9"]
        )
        await jr.finished(release.item_key, outcome)
    async with service_on(sim, journal) as svc:
        _, found = await get(svc, f"/v1/releases/{release.id}")
        assert found["status"] == "succeeded"
        assert found["released"] == ["10.9.9.9"]
        assert sim.ground_truth()["tasks"] == []


# -- idempotency ---------------------------------------------------------------------------------------


async def test_same_key_same_body_is_the_same_release(svc: Service) -> None:
    """A retried POST with the same Idempotency-Key and body returns the same release, not a new one."""
    body = svc.body(0, svc.enis()[0]["secondary_ips"][:1])
    first = await svc.http.post("/v1/releases", json=body, headers={**AUTH, "Idempotency-Key": "k-1"})
    again = await svc.http.post(
        "/v1/releases", data=json.dumps(body, indent=2), headers={**AUTH, "Idempotency-Key": "k-1"}
    )
    assert first.status == again.status == 202
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    counts = await svc.engine.registry.counts()
    assert counts["pending"] + counts["running"] <= 1
    _, listed = await get(svc, "/v1/releases")
    assert len(listed["releases"]) == 1


async def test_same_key_other_body_is_409(svc: Service) -> None:
    """The same Idempotency-Key with another body answers 409 and creates nothing."""
    key = {"Idempotency-Key": "k-2"}
    status, _ = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]), key)
    assert status == 202
    status, data = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][1:2]), key)
    assert status == 409
    assert data["error"]["code"] == "IdempotencyConflict"
    _, listed = await get(svc, "/v1/releases")
    assert len(listed["releases"]) == 1


async def test_idempotency_keys_belong_to_their_caller(svc: Service) -> None:
    """Two callers using the same Idempotency-Key get their own releases, not each other's (nor a 409)."""
    key = {"Idempotency-Key": "shared-name"}
    status, mine = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]), key)
    assert status == 202
    theirs = await svc.http.post(
        "/v1/releases",
        json=svc.body(1, svc.enis()[1]["secondary_ips"][:1]),
        headers={"Authorization": f"Bearer {OTHER_TOKEN}", **key},
    )
    assert theirs.status == 202
    assert (await theirs.json())["id"] != mine["id"]


async def test_concurrent_identical_posts_make_one_submission(svc: Service) -> None:
    """Twenty identical POSTs at once with one key make one release and one task on the simulator."""
    body = {"releases": [svc.body(2, svc.enis()[2]["secondary_ips"][:3])]}
    headers = {**AUTH, "Idempotency-Key": "same-for-all"}
    answers = await asyncio.gather(
        *(svc.http.post("/v1/releases", json=body, headers=headers) for _ in range(20))
    )
    assert {a.status for a in answers} == {202}
    ids = {(await a.json())["releases"][0]["id"] for a in answers}
    assert len(ids) == 1
    _, done = await get(svc, f"/v1/releases/{ids.pop()}?wait=10")
    assert done["status"] == "succeeded"
    assert svc.tasks_by_eni()[body["releases"][0]["eni_id"]] == 1


# -- authentication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/releases"),
        ("GET", "/v1/releases"),
        ("GET", "/v1/releases/x"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer "])
async def test_v1_needs_the_bearer_token(svc: Service, method: str, path: str, header: str | None) -> None:
    """Every /v1 route but the document answers 401 without the right token, the same whatever was wrong."""
    headers = {"Authorization": header} if header is not None else {}
    resp = await svc.http.request(method, path, json=svc.body(0), headers=headers)
    assert resp.status == 401
    assert (await resp.json()) == {
        "error": {"code": "Unauthorized", "message": "missing or invalid bearer token"}
    }
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await svc.engine.registry.counts())["pending"] == 0


async def test_health_ready_metrics_and_the_document_need_no_token(svc: Service) -> None:
    """/healthz, /readyz and /v1/openapi.json answer 200 without a token; /metrics too, in Prometheus text."""
    assert (await svc.http.get("/healthz")).status == 200
    assert (await svc.http.get("/v1/openapi.json")).status == 200
    ready = await svc.http.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    assert (await svc.http.get("/metrics")).status == 200


async def test_no_answer_or_metric_carries_a_secret(svc: Service) -> None:
    """Neither releases, errors, the OpenAPI document nor /metrics carry the SecretKey or a token."""
    _, release = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]))
    await get(svc, f"/v1/releases/{release['id']}?wait=10")
    texts = [
        await (await svc.http.get(path, headers=AUTH)).text()
        for path in ("/v1/releases", "/v1/openapi.json", "/metrics", "/readyz", "/v1/releases/x")
    ]
    texts.append(
        await (await svc.http.get("/v1/releases", headers={"Authorization": "Bearer " + "z" * 20})).text()
    )
    for text in texts:
        assert svc.sim.credentials.secret_key not in text
        assert TOKEN not in text
        assert "Traceback" not in text


# -- limits and malformed input ------------------------------------------------------------------------


async def test_body_over_the_cap_is_413(tmp_path: Path) -> None:
    """A body over service_max_body answers 413 in the JSON error shape and creates nothing."""
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=1, task_latency=(0.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db", max_body=1024) as small:
        resp = await small.http.post("/v1/releases", data=b"{" + b" " * 2000 + b"}", headers=AUTH)
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "TooLarge"
        assert (await small.engine.registry.counts())["pending"] == 0


async def test_too_many_unfinished_is_429_with_retry_after(tmp_path: Path) -> None:
    """Beyond service_max_unfinished, POST answers 429 with Retry-After and creates nothing."""
    sim = Simulator(SimulatorConfig(enis=4, ips_per_eni=2, seed=1, task_latency=(30.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db", max_unfinished=2) as busy:
        status, _ = await post(busy, {"releases": [busy.body(0), busy.body(1)]})
        assert status == 202
        resp = await busy.http.post("/v1/releases", json=busy.body(2), headers=AUTH)
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "TooManyUnfinished"
        _, listed = await get(busy, "/v1/releases")
        assert len(listed["releases"]) == 2


GOOD = {"vpc_id": "vpc-aaaaaaaa", "eni_id": "eni-aaaaaaaa", "ips": ["10.0.0.2"]}

MALFORMED: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{nope", "body"),
    ("empty", b"", "body"),
    ("not UTF-8", b'{"vpc_id": "\xff"}', "body"),
    ("a list", b"[]", "body"),
    ("NaN", b'{"vpc_id": NaN}', "body"),
    ("unknown field", json.dumps({**GOOD, "extra": 1}).encode(), "extra"),
    ("missing field", json.dumps({"vpc_id": "vpc-aaaaaaaa", "ips": ["10.0.0.2"]}).encode(), "eni_id"),
    ("ips a string", json.dumps({**GOOD, "ips": "10.0.0.2"}).encode(), "ips"),
    ("ips empty", json.dumps({**GOOD, "ips": []}).encode(), "ips"),
    ("ip a number", json.dumps({**GOOD, "ips": [10]}).encode(), "ips[0]"),
    ("bad ip", json.dumps({**GOOD, "ips": ["10.0.0.2", "10.0.0.999"]}).encode(), "ips[1]"),
    ("duplicate ip", json.dumps({**GOOD, "ips": ["10.0.0.2", "10.0.0.2"]}).encode(), "ips"),
    (
        "too many ips",
        json.dumps({**GOOD, "ips": [f"10.0.{i // 250}.{i % 250}" for i in range(1001)]}).encode(),
        "ips",
    ),
    ("bad vpc", json.dumps({**GOOD, "vpc_id": "vpc-BAD"}).encode(), "vpc_id"),
    ("eni wrong type", json.dumps({**GOOD, "eni_id": ["eni-aaaaaaaa"]}).encode(), "eni_id"),
    ("releases not a list", b'{"releases": {}}', "releases"),
    ("releases empty", b'{"releases": []}', "releases"),
    ("releases mixed", json.dumps({"releases": [GOOD], **GOOD}).encode(), "vpc_id"),
    ("release not an object", b'{"releases": [1]}', "releases[0]"),
    ("bad entry", json.dumps({"releases": [GOOD, {**GOOD, "ips": ["x"]}]}).encode(), "releases[1].ips[0]"),
    ("too many releases", json.dumps({"releases": [GOOD] * 1001}).encode(), "releases"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "body"),
    (
        "duplicate key",
        b'{"vpc_id": "vpc-aaaaaaaa", "eni_id": "eni-aaaaaaaa", "eni_id": "eni-bbbbbbbb", "ips": ["10.0.0.2"]}',
        "eni_id",
    ),
    (
        "duplicate key in an entry",
        b'{"releases": [{"vpc_id": "vpc-aaaaaaaa", "eni_id": "eni-aaaaaaaa", "ips": [], "ips": ["10.0.0.2"]}]}',
        "releases[0].ips",
    ),
    ("duplicate releases", json.dumps({"releases": [GOOD]}).encode()[:-1] + b', "releases": []}', "releases"),
    ("ips an object", json.dumps({**GOOD, "ips": {"10.0.0.3": True}}).encode(), "ips"),
    ("unknown field not shown", json.dumps({**GOOD, "secret value 42": 1}).encode(), "body"),
]


@pytest.mark.parametrize(("case", "raw", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
async def test_malformed_bodies_are_400_naming_the_field(
    svc: Service, case: str, raw: bytes, field: str
) -> None:
    """Each malformed body answers 400 InvalidInput naming the field, and creates nothing."""
    resp = await svc.http.post("/v1/releases", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "InvalidInput"
    assert error["field"] == field
    assert error["message"]
    assert sum((await svc.engine.registry.counts()).values()) == 0


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/releases/x?wait=61", "wait"),
        ("/v1/releases/x?wait=-1", "wait"),
        ("/v1/releases/x?wait=soon", "wait"),
        ("/v1/releases/x?wait=nan", "wait"),
        ("/v1/releases/x?when=1", "when"),
        ("/v1/releases?limit=0", "limit"),
        ("/v1/releases?limit=5000", "limit"),
        ("/v1/releases?limit=%C2%B2", "limit"),
        ("/v1/releases?status=done", "status"),
        ("/v1/releases?cursor=abc", "cursor"),
        ("/v1/releases?cursor=c9999999999999999999", "cursor"),
        ("/v1/releases?cursor=c%EF%BC%91", "cursor"),
        ("/v1/releases?limit=2&limit=3", "limit"),
        ("/v1/releases/x?wait=1_0", "wait"),
        ("/v1/releases/x?wait=inf", "wait"),
        ("/v1/releases/x?wait=%205", "wait"),
        ("/v1/releases/x?wait=1&wait=2", "wait"),
    ],
)
async def test_bad_queries_are_400_naming_the_parameter(svc: Service, path: str, field: str) -> None:
    """Bad query parameters answer 400 naming the parameter."""
    status, data = await get(svc, path)
    assert status == 400
    assert data["error"]["field"] == field


async def test_an_empty_cursor_is_the_first_page(svc: Service) -> None:
    """?cursor= (empty, as the document allows) lists from the newest release, like no cursor."""
    _, release = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]))
    status, page = await get(svc, "/v1/releases?cursor=&limit=10")
    assert status == 200
    assert [r["id"] for r in page["releases"]] == [release["id"]]


SENT = "sent-value-0123456789"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/releases", {**GOOD, "vpc_id": SENT}, {}),
        ("POST", "/v1/releases", {**GOOD, "ips": [SENT]}, {}),
        ("POST", "/v1/releases", {"releases": [GOOD, {**GOOD, "eni_id": SENT}]}, {}),
        ("POST", "/v1/releases", {**GOOD, SENT + " x": 1}, {}),
        ("POST", "/v1/releases", GOOD, {"Idempotency-Key": SENT + " x"}),
        ("GET", f"/v1/releases?status={SENT}", None, {}),
        ("GET", f"/v1/releases?limit={SENT}", None, {}),
        ("GET", f"/v1/releases?cursor={SENT}", None, {}),
        ("GET", f"/v1/releases?{SENT}%20x=1", None, {}),
        ("GET", f"/v1/releases/x?wait={SENT}", None, {}),
    ],
)
async def test_no_error_answer_repeats_what_was_sent(
    svc: Service, method: str, path: str, body: object, headers: dict[str, str]
) -> None:
    """A refused request's answer names the field and the rule, never the value the caller sent."""
    resp = await svc.http.request(method, path, json=body, headers={**AUTH, **headers})
    assert resp.status == 400
    text = await resp.text()
    assert SENT not in text
    assert json.loads(text)["error"]["message"]


async def test_bad_idempotency_key_is_400(svc: Service) -> None:
    """An Idempotency-Key that is too long answers 400 naming the header."""
    status, data = await post(svc, svc.body(0), {"Idempotency-Key": "k" * 300})
    assert status == 400
    assert data["error"]["field"] == "Idempotency-Key"


async def test_every_answer_carries_a_request_id(svc: Service) -> None:
    """Answers echo a caller's X-Request-Id, or carry a fresh one."""
    resp = await svc.http.get("/healthz", headers={"X-Request-Id": "trace-42"})
    assert resp.headers["X-Request-Id"] == "trace-42"
    first = (await svc.http.get("/v1/releases/nope", headers=AUTH)).headers["X-Request-Id"]
    second = (await svc.http.get("/v1/releases/nope", headers=AUTH)).headers["X-Request-Id"]
    assert first != second


async def test_the_access_log_line_names_the_request_id(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log line, in its plain text too, repeats the answer's request id."""
    caplog.set_level(logging.INFO, logger="eni_async")
    await svc.http.get("/healthz", headers={"X-Request-Id": "trace-43"})
    assert any("GET" in r.getMessage() and "request_id=trace-43" in r.getMessage() for r in caplog.records)


async def test_wrong_method_and_unknown_route_answer_json(svc: Service) -> None:
    """A wrong method answers 405 and an unknown path 404, both as JSON errors."""
    resp = await svc.http.delete("/v1/releases", headers=AUTH)
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "MethodNotAllowed"
    resp = await svc.http.get("/nowhere")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "NotFound"


# -- documents, metrics, readiness, shutdown -------------------------------------------------------------


async def test_openapi_document_is_valid_and_lists_every_route(svc: Service) -> None:
    """/v1/openapi.json, read without a token, passes openapi-spec-validator and names every route."""
    resp = await svc.http.get("/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    validate(document(metrics_token=True))
    assert {"/v1/releases", "/v1/releases/{id}", "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
    for route in app_routes(svc):
        assert route in doc["paths"], route


def app_routes(svc: Service) -> set[str]:
    """The route templates the application serves."""
    server = svc.http.server
    assert isinstance(server, TestServer)
    app = server.app
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


async def test_every_answer_carries_every_documented_field(tmp_path: Path) -> None:
    """The first 202, a replay, a GET while running, the list and the final GET all carry exactly the
    document's fields, the first 202 included (confirmed_by, attempts and elapsed_s were missing)."""
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=1, task_latency=(0.3, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as slow:
        documented = set(DOCUMENT["components"]["schemas"]["Release"]["properties"])
        key = {"Idempotency-Key": "same-fields"}
        seen = []
        status, first = await post(slow, slow.body(0), key)
        assert status == 202
        seen.append(first)
        seen.append((await post(slow, slow.body(0), key))[1])
        seen.append((await post(slow, {"releases": [slow.body(1)]}))[1]["releases"][0])
        seen.append((await get(slow, f"/v1/releases/{first['id']}"))[1])
        seen += (await get(slow, "/v1/releases"))[1]["releases"]
        seen.append((await get(slow, f"/v1/releases/{first['id']}?wait=10"))[1])
        assert seen[-1]["status"] == "succeeded"
        for release in seen:
            assert set(release) == documented
            assert re.fullmatch(RELEASE_ID_PATTERN, release["id"])


def _branches(schema_name: str) -> list[dict[str, Any]]:
    """The schemas of the oneOf branches of POST /v1/releases's 202 or request body, resolved."""
    post_doc = DOCUMENT["paths"]["/v1/releases"]["post"]
    where = post_doc["responses"]["202"] if schema_name == "202" else post_doc["requestBody"]
    schemas = DOCUMENT["components"]["schemas"]
    return [
        {**schemas[ref["$ref"].rsplit("/", 1)[1]], "components": DOCUMENT["components"]}
        for ref in where["content"]["application/json"]["schema"]["oneOf"]
    ]


async def test_a_202_and_a_body_match_exactly_one_branch_of_their_oneof(svc: Service) -> None:
    """Each 202 (single and batch form) and each request body validates against exactly one oneOf branch."""
    _, single = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]))
    _, batch = await post(svc, {"releases": [svc.body(1, svc.enis()[1]["secondary_ips"][:1])]})
    for name, instances in (("202", [single, batch]), ("body", [GOOD, {"releases": [GOOD]}])):
        for instance in instances:
            matches = [OAS30Validator(branch).is_valid(instance) for branch in _branches(name)]
            assert matches.count(True) == 1, (name, instance)


IPV4_SAMPLES = [
    "0.0.0.0",
    "10.0.0.2",
    "255.255.255.255",
    "1.2.3.04",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4\n",
    " 1.2.3.4",
]


@pytest.mark.parametrize("value", [*IPV4_SAMPLES, "01.2.3.4", "1.2.3.4.5", "１.2.3.4", "1..3.4", "+1.2.3.4"])
def test_the_documented_ip_pattern_is_the_rule_the_service_checks(value: str) -> None:
    """An IP matches the document's pattern (as ECMA-262 reads it: no newline before the end) exactly when
    the service accepts it."""
    pattern = re.compile(IPV4_PATTERN.removesuffix("$") + r"\Z", re.ASCII)
    try:
        validation.ipv4(value)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(pattern.match(value)) == accepted


async def test_metrics_have_the_client_and_service_families(svc: Service) -> None:
    """/metrics counts requests by route and code, releases by status, and the client's calls."""
    _, release = await post(svc, svc.body(0, svc.enis()[0]["secondary_ips"][:1]))
    await get(svc, f"/v1/releases/{release['id']}?wait=10")
    await get(svc, "/v1/releases/nope")
    text = await (await svc.http.get("/metrics")).text()
    assert 'eni_async_service_requests_total{code="202",route="/v1/releases"} 1.0' in text
    assert 'eni_async_service_requests_total{code="404",route="/v1/releases/{id}"} 1.0' in text
    assert 'eni_async_service_releases{status="succeeded"} 1.0' in text
    assert 'eni_async_calls_total{action="UnassignPrivateIpAddresses",code="Success"} 1.0' in text


async def test_metrics_say_whether_the_service_is_ready(svc: Service) -> None:
    """eni_async_service_ready is 1 while /readyz answers 200 and 0 once it answers 503."""
    assert "eni_async_service_ready 1.0" in await (await svc.http.get("/metrics")).text()
    await svc.engine.stop(0)
    assert (await svc.http.get("/readyz")).status == 503
    assert "eni_async_service_ready 0.0" in await (await svc.http.get("/metrics")).text()


async def test_metrics_can_require_their_own_token(svc: Service) -> None:
    """With metrics tokens, /metrics answers 401 without one of them (a caller's token is not one) and 200
    with one; the served document says /metrics needs a bearer token."""
    metrics_token = "metrics-token-0123456789abcdef"
    app = make_app(
        svc.engine, tokens=(TOKEN,), metrics_registry=svc.metrics.registry, metrics_tokens=(metrics_token,)
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as guarded:
        assert (await guarded.get("/metrics")).status == 401
        assert (await guarded.get("/metrics", headers=AUTH)).status == 401
        resp = await guarded.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
        assert resp.status == 200
        assert "eni_async_service_releases" in await resp.text()
        assert (await guarded.get("/healthz")).status == 200
        doc = await (await guarded.get("/v1/openapi.json")).json()
        assert doc["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in DOCUMENT["paths"]["/metrics"]["get"]


async def test_stopping_answers_503_with_retry_after(svc: Service) -> None:
    """Once the engine stops, /v1 answers 503 with Retry-After and /readyz answers 503."""
    await svc.engine.stop(0)
    resp = await svc.http.post("/v1/releases", json=svc.body(0), headers=AUTH)
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    ready = await svc.http.get("/readyz")
    assert ready.status == 503
    assert (await svc.http.get("/healthz")).status == 200


async def test_stopping_answers_long_polls_at_once(tmp_path: Path) -> None:
    """A GET holding ?wait=30 answers as soon as the service stops, with the release as it stands."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1, task_latency=(30.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as slow:
        _, release = await post(slow, slow.body(0))
        holding = asyncio.ensure_future(get(slow, f"/v1/releases/{release['id']}?wait=30"))
        await asyncio.sleep(0.1)
        assert not holding.done()
        await slow.engine.stop(0)
        status, now = await asyncio.wait_for(holding, 5)
        assert status == 200
        assert now["status"] in ("pending", "running")


async def test_metrics_without_prometheus_answer_501(tmp_path: Path) -> None:
    """Without a metrics registry (prometheus-client missing), /metrics answers 501 saying what to install."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1, task_latency=(0.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as svc:
        app = make_app(svc.engine, tokens=(TOKEN,))
        async with TestClient(TestServer(app, host="127.0.0.1")) as bare:
            resp = await bare.get("/metrics")
            assert resp.status == 501
            assert "pip install '.[metrics]'" in (await resp.json())["error"]["message"]


async def test_readyz_says_when_the_api_is_unreachable(tmp_path: Path) -> None:
    """With the API unreachable /readyz answers 503 naming it, and a release fails only at its deadline
    (what it never sent is not released)."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1, task_latency=(0.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as service:
        settings = Settings(
            endpoint="http://127.0.0.1:9",
            region=sim.region,
            poll=FAST.poll,
            retry=RetryPolicy(attempts=1),
            service_release_deadline=0.3,
        )
        async with EniClient(sim.credentials, settings) as dead:
            engine = Engine(dead, SqliteJournal(tmp_path / "other.db"), max_unfinished=10)
            await engine.start()
            release, _ = await engine.submit(
                [(sim.ground_truth()["enis"][0]["vpc_id"], service.body(0)["eni_id"], ("10.0.0.9",))]
            )
            ready, reason = await engine.ready()
            assert not ready
            assert reason == "API unreachable (ConnectFailed)"
            done = await engine.wait(release[0].id, 10)
            assert done is not None
            assert done["status"] == "failed"
            assert done["error"]["code"] == "ConnectFailed"
            assert done["not_released"] == ["10.0.0.9"]
            assert any("waiting for the API" in line for line in done["decisions"])
            ready, reason = await engine.ready()
            assert not ready
            assert "unreachable" in reason
            await engine.stop(0)
            await engine.journal.close()


async def test_refused_credentials_keep_releases_for_a_restart(tmp_path: Path) -> None:
    """Credentials the API refuses leave releases pending, /readyz and POST 503 saying why; a restart with
    good ones finishes them."""
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=1, seed=1, task_latency=(0.0, 0.0)))
    eni = sim.ground_truth()["enis"][0]
    journal = tmp_path / "j.db"
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, poll=FAST.poll, retry=FAST.retry)
        async with SqliteJournal(journal) as jr, EniClient(sim.credentials, settings) as client:
            engine = Engine(client, jr, max_unfinished=10)
            await engine.start()
            sim.outage.refuse([sim.credentials.secret_id])  # once the start's check has passed
            [release], _ = await engine.submit([(eni["vpc_id"], eni["eni_id"], tuple(eni["secondary_ips"]))])
            for _ in range(500):
                if engine.api.refused:
                    break
                await asyncio.sleep(0.01)
            # API 2.0 answers 4104 SecretIdNotFound
            assert await engine.ready() == (False, "API credentials refused: SecretIdNotFound")
            found = await engine.get(release.id)
            assert found is not None
            assert found["status"] == "pending"
            with pytest.raises(NotAcceptingError):
                await engine.submit([(eni["vpc_id"], eni["eni_id"], ("10.0.0.9",))])
            await engine.stop(0)
    sim.outage.accept([sim.credentials.secret_id])
    async with service_on(sim, journal) as good:
        _, done = await get(good, f"/v1/releases/{release.id}?wait=10")
        assert done["status"] == "succeeded"
        assert good.enis()[0]["secondary_ips"] == []


async def test_restart_on_the_journal_polls_submitted_tasks_and_never_resubmits(tmp_path: Path) -> None:
    """Stopped with releases in flight, a new engine on the same journal finishes them, one task per ENI."""
    sim = Simulator(SimulatorConfig(enis=6, ips_per_eni=3, seed=2, task_latency=(0.4, 0.0)))
    journal = tmp_path / "j.db"
    async with service_on(sim, journal) as first:
        _, data = await post(first, {"releases": [first.body(i) for i in range(6)]})
        ids = [r["id"] for r in data["releases"]]
        for _ in range(1000):  # until every ENI has its task running on the simulator
            if len(first.tasks_by_eni()) == 6:
                break
            await asyncio.sleep(0.01)
        left = await first.engine.stop(0)
        assert left == 6
    async with service_on(sim, journal) as second:
        for rid in ids:
            _, done = await get(second, f"/v1/releases/{rid}?wait=10")
            assert done["status"] == "succeeded", done
            assert any("resumed" in d for d in done.get("decisions", []))
        assert set(second.tasks_by_eni().values()) == {1}
        assert all(not e["secondary_ips"] for e in second.enis())


async def test_unfinished_releases_resume_only_against_their_region(tmp_path: Path) -> None:
    """A journal with unfinished releases refuses to start against another region, naming the option."""
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=1, seed=1, task_latency=(30.0, 0.0)))
    journal = tmp_path / "j.db"
    async with service_on(sim, journal) as first:
        status, _ = await post(first, first.body(0))
        assert status == 202
    settings = Settings(endpoint="http://127.0.0.1:9", region="ap-shanghai")
    async with SqliteJournal(journal) as jr, EniClient(sim.credentials, settings) as client:
        with pytest.raises(ConfigError) as caught:
            await Engine(client, jr, max_unfinished=10).start()
    assert caught.value.field == "--region"
    assert "unfinished releases" in str(caught.value)


# -- the Python client ---------------------------------------------------------------------------------


async def test_service_client_unassign_returns_the_result(svc: Service) -> None:
    """ServiceClient.unassign returns an UnassignResult like EniClient.unassign."""
    body = svc.body(4)
    async with ServiceClient(svc.url, TOKEN) as client:
        assert "***" in repr(client)
        assert TOKEN not in repr(client)
        result = await client.unassign(body["vpc_id"], body["eni_id"], body["ips"], timeout=10)
        assert sorted(result.released) == sorted(body["ips"])
        assert len(result.task_ids) == 2
        page, cursor = await client.list_releases(status="succeeded")
        assert [r["eni_id"] for r in page] == [body["eni_id"]]
        assert cursor is None


async def test_service_client_raises_the_release_error_from_the_same_tree(svc: Service) -> None:
    """A failed release raises the EniClient exception for its code, with the release attached."""
    body = svc.body(0, [svc.enis()[0]["primary_ip"]])
    async with ServiceClient(svc.url, TOKEN) as client:
        with pytest.raises(PrimaryIpError) as caught:
            await client.unassign(body["vpc_id"], body["eni_id"], body["ips"], timeout=10)
        assert caught.value.release["status"] == "failed"


async def test_service_client_raises_service_errors(svc: Service) -> None:
    """A bad token and bad input raise ServiceError with the status, code and field."""
    async with ServiceClient(svc.url, "not-the-token-at-all") as client:
        with pytest.raises(ServiceError) as caught:
            await client.get("rel-x")
        assert caught.value.status == 401
    async with ServiceClient(svc.url, TOKEN) as client:
        with pytest.raises(ServiceError) as bad:
            await client.submit("vpc-x", "eni-aaaaaaaa", ["10.0.0.1"])
        assert (bad.value.status, bad.value.field) == (400, "vpc_id")


async def test_service_client_wait_times_out(tmp_path: Path) -> None:
    """ServiceClient.wait raises TaskTimeoutError when the release has not ended in time."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1, task_latency=(30.0, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as slow, ServiceClient(slow.url, TOKEN) as client:
        release = await client.submit(**slow.body(0))
        with pytest.raises(TaskTimeoutError):
            await client.wait(release["id"], timeout=0.2)


def test_metrics_family_names_do_not_clash() -> None:
    """The service's registry holds the client's families beside its own."""
    created = ServiceMetrics.create()
    assert isinstance(created.client, Metrics)


async def test_a_release_of_ips_already_gone_succeeded_and_service_client_returns_it(svc: Service) -> None:
    """D24 in the service: a release of IPs some earlier release took is ``succeeded`` with them absent,
    and ``ServiceClient.unassign`` returns its result instead of raising."""
    body = svc.body(1, svc.enis()[1]["secondary_ips"][:2])
    async with ServiceClient(svc.url, TOKEN) as client:
        first = await client.unassign(body["vpc_id"], body["eni_id"], body["ips"], timeout=10)
        again = await client.unassign(body["vpc_id"], body["eni_id"], body["ips"], timeout=10)
        releases, _ = await client.list_releases()
    assert (sorted(first.released), first.absent) == (sorted(body["ips"]), ())
    assert (again.released, sorted(again.absent), again.task_ids) == ((), sorted(body["ips"]), ())
    assert [r["status"] for r in releases] == ["succeeded", "succeeded"]
    assert releases[0]["outcome_status"] is None  # the outcome says no more than the release's status


async def test_a_service_error_says_each_thing_once(svc: Service) -> None:
    """A failed release raised by ``ServiceClient`` names its action and code once, as ``EniClient`` does."""
    body = svc.body(0, [svc.enis()[0]["primary_ip"]])
    async with ServiceClient(svc.url, TOKEN) as client:
        with pytest.raises(PrimaryIpError) as caught:
            await client.unassign(body["vpc_id"], body["eni_id"], body["ips"], timeout=10)
    text = str(caught.value)
    assert text.count("InvalidPrivateip.IsPrimary") == 1
    assert text.count("failed:") <= 1
