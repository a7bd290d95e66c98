"""The simulator's outage controls: the API down for a span of fake time, keys refused until accepted again."""

from __future__ import annotations

import json

import aiohttp
import pytest

from eni_async.clock import FakeClock
from eni_async.errors import ConfigError
from eni_async.simulator import running
from eni_async.simulator.outage import OUTAGE_KINDS
from tests.simhelpers import DOC_SECRET_ID, V2, V3, client_for, make_sim

V3_HEADERS = {"Content-Type": "application/json", "X-TC-Action": "DescribeNetworkInterfaces"}


async def test_an_unreachable_api_refuses_connections_until_the_outage_ends() -> None:
    """``unreachable`` closes the listening socket (a connection is refused) and, once the simulator's clock
    has moved past the span, opens it again on the same port."""
    sim = make_sim()
    fresh = aiohttp.TCPConnector(force_close=True)  # every request on a new connection
    async with (
        running(sim, host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession(connector=fresh) as http,
    ):
        resp = await http.get(f"{server.endpoint}/_sim/outage")
        assert (await resp.json())["kind"] is None
        sim.outage.start("unreachable", 30)
        await sim.clock.sleep(0.001)  # the follower closes the socket
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.get(f"{server.endpoint}/_sim/state")
        await sim.clock.sleep(29)
        assert sim.outage.active() == "unreachable"
        await sim.clock.sleep(2)
        resp = await http.get(f"{server.endpoint}/_sim/state")
        assert resp.status == 200
        assert sim.outage.active() is None


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("http_503", 503, None),
        ("internal_error", 200, "InternalError"),
        ("throttle", 200, "RequestLimitExceeded"),
    ],
)
async def test_a_failing_api_answers_every_call_so_for_the_span(
    kind: str, status: int, code: str | None
) -> None:
    """``http_503``, ``internal_error`` and ``throttle`` answer every API call so, before any check, while
    the span lasts; the ground truth still answers; afterwards calls are authenticated again."""
    sim = make_sim()
    async with client_for(sim) as client:
        sim.outage.start(kind, 300)
        resp = await client.post("/", data=b"{}", headers=V3_HEADERS)
        assert resp.status == status
        if code is not None:
            assert json.loads(await resp.read())["Response"]["Error"]["Code"] == code
        assert (await client.get("/_sim/state")).status == 200
        await sim.clock.sleep(300)
        resp = await client.post("/", data=b"{}", headers=V3_HEADERS)
        assert (
            json.loads(await resp.read())["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
        )
        assert sim.outage.state()["struck"] == {kind: 1}


async def test_a_refused_secret_id_is_unknown_to_the_api_until_accepted_again() -> None:
    """A refused SecretId gets AuthFailure.SecretIdNotFound (API 2.0: 4104) on every call until accepted."""
    clock = FakeClock()
    sim = make_sim(clock)
    async with client_for(sim) as client:
        v3, v2 = V3(client, clock), V2(client, clock)
        sim.outage.refuse([DOC_SECRET_ID])
        refused = await v3.call("DescribeNetworkInterfaces", {"Limit": 1})
        assert refused["Response"]["Error"]["Code"] == "AuthFailure.SecretIdNotFound"
        old = await v2.send(v2.signed("DescribeNetworkInterfaces", {"limit": "1"}))
        assert old["code"] == 4104
        resp = await client.post("/_sim/outage", json={"accept": [DOC_SECRET_ID]})
        assert (await resp.json())["refused"] == []
        assert "Error" not in (await v3.call("DescribeNetworkInterfaces", {"Limit": 1}))["Response"]


async def test_the_outage_control_takes_json_and_names_a_bad_field() -> None:
    """POST /_sim/outage starts an outage or refuses keys; a bad body is a 400 naming the field."""
    sim = make_sim()
    async with client_for(sim) as client:
        resp = await client.post(
            "/_sim/outage", json={"kind": "http_503", "seconds": 30, "refuse": ["AKIDx"]}
        )
        state = await resp.json()
        assert (state["kind"], state["seconds_left"], state["refused"]) == ("http_503", 30.0, ["AKIDx"])
        for body, field in [
            ({"kind": "down", "seconds": 1}, "kind"),
            ({"kind": "http_503", "seconds": -1}, "seconds"),
            ({"kind": "http_503", "seconds": "soon"}, "seconds"),
            ({"refuse": "AKIDx"}, "refuse"),
            ({"when": 1}, "when"),
            ([], "body"),
        ]:
            resp = await client.post("/_sim/outage", json=body)
            assert resp.status == 400
            assert (await resp.json())["error"].startswith(f"{field}:")
        resp = await client.post("/_sim/outage", data=b"{nope")
        assert resp.status == 400


def test_every_outage_kind_is_checked() -> None:
    """Kinds come from one list; anything else is a ConfigError naming ``kind``."""
    sim = make_sim()
    for kind in OUTAGE_KINDS:
        sim.outage.start(kind, 1)
        assert sim.outage.active() == kind
    with pytest.raises(ConfigError, match=r"^kind:"):
        sim.outage.start("flaky", 1)
