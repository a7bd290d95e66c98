"""Test helpers for the simulator: build a simulator on a fake clock and sign API 2.0 / 3.0 calls to it.

Requests are signed with ``eni_async.signing`` directly (not through the client), so the simulator's tests
stand on the official vectors and on nothing else of ours. Every helper call checks that the answer's
``Content-Type`` is exactly ``application/json`` (docs/protocol.md D4).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient, TestServer

from eni_async import signing
from eni_async.clock import FakeClock
from eni_async.simulator import Simulator, SimulatorConfig, running

# The example key pair from Tencent's docs (docs/protocol.md §3); not a real key.
DOC_SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
DOC_KEYS = {DOC_SECRET_ID: DOC_SECRET_KEY}
JSON = "application/json"
_nonces = itertools.count(1000)


def make_sim(clock: FakeClock | None = None, **overrides: Any) -> Simulator:
    """A small seeded simulator on a fake clock (tasks end after about a second unless overridden)."""
    settings: dict[str, Any] = {"enis": 4, "ips_per_eni": 3, "seed": 7, "keys": DOC_KEYS}
    settings.update(overrides)
    return Simulator(SimulatorConfig(**settings), clock=clock or FakeClock())


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[TestClient[Any, Any]]:
    """An aiohttp test client bound to 127.0.0.1 for ``sim``."""
    async with TestClient(TestServer(sim.app, host="127.0.0.1")) as client:
        yield client


def host_of(client: TestClient[Any, Any]) -> str:
    """The ``Host`` header the client sends: address and port (docs/protocol.md D16)."""
    return f"127.0.0.1:{client.port}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested API 3.0 parameters into ``A.0.B`` pairs, as a GET request carries them."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            pairs.extend(flatten(value, f"{name}."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    pairs.extend(flatten(item, f"{name}.{i}."))
                else:
                    pairs.append((f"{name}.{i}", str(item)))
        else:
            pairs.append((name, str(value)))
    return pairs


class V2:
    """Signs and sends API 2.0 calls with the doc key pair (or another) at the fake clock's time."""

    def __init__(
        self, client: TestClient[Any, Any], clock: FakeClock, *, secret_id: str = DOC_SECRET_ID
    ) -> None:
        self.client = client
        self.clock = clock
        self.secret_id = secret_id

    def signed(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        method: str = "GET",
        secret_key: str = DOC_SECRET_KEY,
        timestamp: int | None = None,
        nonce: int | None = None,
        sign_method: str = "HmacSHA256",
        host: str | None = None,
    ) -> dict[str, str]:
        """The full parameter set for one call, ``Signature`` included."""
        full = {
            "Action": action,
            "Region": "gz",
            "SecretId": self.secret_id,
            "Timestamp": str(int(self.clock.time()) if timestamp is None else timestamp),
            "Nonce": str(next(_nonces) if nonce is None else nonce),
            "SignatureMethod": sign_method,
            **params,
        }
        signed_host = host or host_of(self.client)
        full["Signature"] = signing.v2_sign(
            secret_key, method, signed_host, "/v2/index.php", full, sign_method
        )
        return full

    async def send(
        self, params: Mapping[str, str], *, method: str = "GET", host: str | None = None
    ) -> dict[str, Any]:
        """Send already-signed parameters; return the JSON answer."""
        headers = {"Host": host or host_of(self.client)}
        if method == "GET":
            resp = await self.client.get(f"/v2/index.php?{urlencode(params)}", headers=headers)
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            resp = await self.client.post("/v2/index.php", data=urlencode(params), headers=headers)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == JSON
        body: dict[str, Any] = json.loads(await resp.read())
        return body

    async def call(self, action: str, params: Mapping[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        """Sign and send one call."""
        method = kw.get("method", "GET")
        return await self.send(self.signed(action, params or {}, **kw), method=method, host=kw.get("host"))

    async def unassign(self, vpc_id: str, eni_id: str, ips: list[str]) -> dict[str, Any]:
        """Release ``ips`` from ``eni_id``."""
        params = {"vpcId": vpc_id, "networkInterfaceId": eni_id}
        params.update({f"privateIpAddress.{i}": ip for i, ip in enumerate(ips)})
        return await self.call("UnassignPrivateIpAddresses", params)

    async def task_status(self, task_id: int | str) -> dict[str, Any]:
        """Query a task."""
        return await self.call("DescribeVpcTaskResult", {"taskId": str(task_id)})


class V3:
    """Signs (TC3) and sends API 3.0 calls at the fake clock's time."""

    def __init__(
        self,
        client: TestClient[Any, Any],
        clock: FakeClock,
        *,
        secret_id: str = DOC_SECRET_ID,
        region: str = "",
    ) -> None:
        self.client = client
        self.clock = clock
        self.secret_id = secret_id
        self.region = region or "ap-guangzhou"

    async def call(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        method: str = "POST",
        secret_key: str = DOC_SECRET_KEY,
        timestamp: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        signed_headers: tuple[str, ...] = signing.TC3_SIGNED_HEADERS,
    ) -> dict[str, Any]:
        """Sign and send one call; return the JSON answer."""
        ts = int(self.clock.time()) if timestamp is None else timestamp
        if method == "POST":
            query, body, ctype = "", json.dumps(params or {}).encode(), JSON
        else:
            query, body, ctype = urlencode(flatten(params or {})), b"", "application/x-www-form-urlencoded"
        headers = {
            "Content-Type": ctype,
            "Host": host_of(self.client),
            "X-TC-Action": action,
            "X-TC-Version": "2017-03-12",
            "X-TC-Region": self.region,
            "X-TC-Timestamp": str(ts),
            **(extra_headers or {}),
        }
        lower = {k.lower(): v for k, v in headers.items()}
        headers["Authorization"] = signing.tc3_authorization(
            self.secret_id,
            secret_key,
            method=method,
            query=query,
            headers=lower,
            payload=body,
            timestamp=ts,
            service="vpc",
            signed_headers=signed_headers,
        )
        path = f"/?{query}" if query else "/"
        resp = await self.client.request(
            method, path, data=body if method == "POST" else None, headers=headers
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"] == JSON
        answer: dict[str, Any] = json.loads(await resp.read())
        return answer


@contextmanager
def simulator_thread(**config: Any) -> Iterator[dict[str, Any]]:
    """A real-time simulator (``SimulatorConfig(**config)``) served on 127.0.0.1 by an event loop of its own in
    a thread, for synchronous tests of a real ``eni-async`` process: yields what ``eni-async simulate``'s ready
    line holds (``endpoint``, ``region``, ``secret_id``, ``secret_key``) without the cost of a process of its
    own. Reach it over HTTP (``sim_get``, ``sim_post``); it stops with the block."""
    sim = Simulator(SimulatorConfig(**config))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def serve() -> None:
        async with running(sim, host="127.0.0.1", port=0) as server:
            ready.update(endpoint=server.endpoint, region=sim.region)
            ready.update(secret_id=sim.credentials.secret_id, secret_key=sim.credentials.secret_key)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the simulator did not start"
        yield ready
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def sim_get(endpoint: str, path: str) -> dict[str, Any]:
    """``GET endpoint+path`` of a simulator in another process (``/_sim/state``, ``/_sim/stats``): its JSON."""
    with urllib.request.urlopen(f"{endpoint}{path}", timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def sim_post(endpoint: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``POST`` a JSON body to a simulator's control in another process (``/_sim/hold``, ``/_sim/finish``)."""
    request = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body or {}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def first_eni(sim: Simulator) -> dict[str, Any]:
    """The first seeded ENI's ground truth."""
    eni: dict[str, Any] = sim.ground_truth()["enis"][0]
    return eni


def cli_env(ready: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The environment of an ``eni-async`` process against ``simulator_thread``'s simulator: its credentials,
    and a settings file (in ``tmp_path``) with fast polls."""
    config = tmp_path / "fast.toml"
    config.write_text("[poll]\nfirst = 0.02\ninitial = 0.02\nmaximum = 0.2\n")
    env = dict(os.environ, ENI_ASYNC_CONFIG=str(config))
    env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
    return env
