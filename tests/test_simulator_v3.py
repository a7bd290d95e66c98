"""API 3.0 behaviour of the simulator: TC3 auth, envelopes and codes, tasks by RequestId, describe filters, and
both dialects over one world (docs/protocol.md §2 and its decisions)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from eni_async import signing
from eni_async.clock import FakeClock
from tests.simhelpers import (
    DOC_SECRET_ID,
    DOC_SECRET_KEY,
    JSON,
    V2,
    V3,
    client_for,
    first_eni,
    host_of,
    make_sim,
)

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _error(answer: dict[str, Any]) -> str:
    code: str = answer["Response"]["Error"]["Code"]
    assert UUID_RE.fullmatch(answer["Response"]["RequestId"])
    return code


def _spec(ips: list[str]) -> list[dict[str, str]]:
    return [{"PrivateIpAddress": ip} for ip in ips]


async def test_unassign_then_task_by_request_id() -> None:
    """Unassign answers only a RequestId, which DescribeVpcTaskResult takes as TaskId: RUNNING, then SUCCESS."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(3.0, 0.0))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v3 = V3(client, clock)
        started = await v3.call(
            "UnassignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec(eni["secondary_ips"][:1])},
        )
        task_id = started["Response"]["RequestId"]
        running = await v3.call("DescribeVpcTaskResult", {"TaskId": task_id})
        clock.advance(3.0)
        done = await v3.call("DescribeVpcTaskResult", {"TaskId": task_id})
    assert list(started["Response"]) == ["RequestId"]
    assert UUID_RE.fullmatch(task_id)
    assert running["Response"]["Status"] == "RUNNING"
    assert done["Response"]["Status"] == "SUCCESS"
    assert done["Response"]["Output"] == "SUCCESS"
    assert done["Response"]["Result"] is None
    assert first_eni(sim)["secondary_ips"] == eni["secondary_ips"][1:]


async def test_get_with_query_string_is_served() -> None:
    """A TC3 GET with the flattened query as CanonicalQueryString is verified and runs the action."""
    clock = FakeClock()
    sim = make_sim(clock)
    eni = first_eni(sim)
    async with client_for(sim) as client:
        answer = await V3(client, clock).call(
            "UnassignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec(eni["secondary_ips"][:2])},
            method="GET",
        )
    assert "Error" not in answer["Response"]
    assert sim.ground_truth()["tasks"][0]["ips"] == eni["secondary_ips"][:2]


async def test_extra_signed_headers_are_honoured() -> None:
    """A client that signs content-type;host;x-tc-action is verified over exactly that list."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        answer = await V3(client, clock).call(
            "DescribeNetworkInterfaces", signed_headers=("content-type", "host", "x-tc-action")
        )
    assert answer["Response"]["TotalCount"] == 4


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong key", "AuthFailure.SignatureFailure"),
        ("unknown id", "AuthFailure.SecretIdNotFound"),
        ("stale", "AuthFailure.SignatureExpire"),
        ("no auth", "AuthFailure.InvalidAuthorization"),
        ("unknown action", "InvalidAction"),
        ("wrong version", "NoSuchVersion"),
    ],
)
async def test_auth_and_protocol_errors(case: str, code: str) -> None:
    """Each auth or protocol problem gets its API 3.0 error code in the Error envelope."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        v3 = V3(client, clock, secret_id="AKIDnobody" if case == "unknown id" else DOC_SECRET_ID)
        if case == "no auth":
            resp = await client.post("/", data=b"{}", headers={"X-TC-Action": "DescribeNetworkInterfaces"})
            assert resp.headers["Content-Type"] == JSON
            answer = json.loads(await resp.read())
        else:
            answer = await v3.call(
                "DeleteEverything" if case == "unknown action" else "DescribeNetworkInterfaces",
                secret_key="wrong" if case == "wrong key" else "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA",
                timestamp=int(clock.time()) - 301 if case == "stale" else None,
                extra_headers={"X-TC-Version": "2020-01-01"} if case == "wrong version" else None,
            )
    assert _error(answer) == code


async def test_tampered_body_fails_signature() -> None:
    """Changing the body after signing makes the signature fail (the payload hash is signed)."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        ts = int(clock.time())
        headers = {"content-type": JSON, "host": host_of(client)}
        auth = signing.tc3_authorization(
            DOC_SECRET_ID,
            DOC_SECRET_KEY,
            method="POST",
            query="",
            headers=headers,
            payload=b'{"Limit": 1}',
            timestamp=ts,
            service="vpc",
        )
        sent = {
            **headers,
            "X-TC-Action": "DescribeNetworkInterfaces",
            "X-TC-Version": "2017-03-12",
            "X-TC-Region": "ap-guangzhou",
            "X-TC-Timestamp": str(ts),
            "Authorization": auth,
        }
        good = await client.post("/", data=b'{"Limit": 1}', headers=sent)
        bad = await client.post("/", data=b'{"Limit": 2}', headers=sent)
        good_body, bad_body = json.loads(await good.read()), json.loads(await bad.read())
    assert good_body["Response"]["TotalCount"] == 4
    assert _error(bad_body) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing eni", "MissingParameter"),
        ("empty list", "MissingParameter"),
        ("eleven", "InvalidParameterValue.LimitExceeded"),
        ("malformed ip", "InvalidParameterValue.Malformed"),
        ("malformed eni", "InvalidParameterValue.Malformed"),
        ("duplicate", "InvalidParameterValue.DuplicatePara"),
        ("unknown eni", "ResourceNotFound"),
        ("primary", "UnsupportedOperation"),
        ("not on eni", "UnsupportedOperation.AttachmentNotFound"),
    ],
)
async def test_unassign_errors(case: str, code: str) -> None:
    """Each refused UnassignPrivateIpAddresses gets the decided API 3.0 code and starts no task."""
    clock = FakeClock()
    sim = make_sim(clock)
    eni, other = sim.ground_truth()["enis"][:2]
    ip = eni["secondary_ips"][0]
    eni_id = eni["eni_id"]
    params: dict[str, Any] = {
        "missing eni": {"PrivateIpAddresses": _spec([ip])},
        "empty list": {"NetworkInterfaceId": eni_id, "PrivateIpAddresses": []},
        "eleven": {
            "NetworkInterfaceId": eni_id,
            "PrivateIpAddresses": _spec([f"10.0.9.{i}" for i in range(11)]),
        },
        "malformed ip": {"NetworkInterfaceId": eni_id, "PrivateIpAddresses": _spec(["10.0.0"])},
        "malformed eni": {"NetworkInterfaceId": "eni_bad", "PrivateIpAddresses": _spec([ip])},
        "duplicate": {"NetworkInterfaceId": eni_id, "PrivateIpAddresses": _spec([ip, ip])},
        "unknown eni": {"NetworkInterfaceId": "eni-zzzzzzzz", "PrivateIpAddresses": _spec([ip])},
        "primary": {"NetworkInterfaceId": eni_id, "PrivateIpAddresses": _spec([eni["primary_ip"]])},
        "not on eni": {
            "NetworkInterfaceId": eni_id,
            "PrivateIpAddresses": _spec([other["secondary_ips"][0]]),
        },
    }[case]
    async with client_for(sim) as client:
        answer = await V3(client, clock).call("UnassignPrivateIpAddresses", params)
    assert _error(answer) == code
    if case == "primary":
        assert "primary" in answer["Response"]["Error"]["Message"]
    assert sim.ground_truth()["tasks"] == []


async def test_mutex_throttle_and_unknown_task() -> None:
    """A running task locks the ENI, the task-query limit throttles, and an unknown TaskId is ResourceNotFound."""
    clock = FakeClock()
    sim = make_sim(clock, rate_limits={"DescribeVpcTaskResult": 2})
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v3 = V3(client, clock)
        for ips in (eni["secondary_ips"][:1], eni["secondary_ips"][1:2]):
            last = await v3.call(
                "UnassignPrivateIpAddresses",
                {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec(ips)},
            )
        queries = [await v3.call("DescribeVpcTaskResult", {"TaskId": "nope"}) for _ in range(3)]
    assert _error(last) == "UnsupportedOperation.MutexOperationTaskRunning"
    assert [_error(q) for q in queries] == ["ResourceNotFound", "ResourceNotFound", "RequestLimitExceeded"]
    assert queries[2]["Response"]["Error"]["Message"] == (
        "request times equals to 3 in a second, which exceeds the frequency limit 2"
    )


async def test_describe_shows_deleting_state_and_filters() -> None:
    """DescribeNetworkInterfaces marks IPs of a running task DELETING and honours ids, filters and paging."""
    clock = FakeClock()
    sim = make_sim(clock, enis=1200, ips_per_eni=1, eip_fraction=1.0)
    enis = sim.ground_truth()["enis"]
    eni = enis[0]
    async with client_for(sim) as client:
        v3 = V3(client, clock)
        await v3.call(
            "UnassignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec(eni["secondary_ips"])},
        )
        by_id = await v3.call("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni["eni_id"]]})
        by_vpc = await v3.call(
            "DescribeNetworkInterfaces",
            {"Filters": [{"Name": "vpc-id", "Values": [enis[-1]["vpc_id"]]}], "Offset": 100, "Limit": 100},
        )
        both = await v3.call(
            "DescribeNetworkInterfaces",
            {"NetworkInterfaceIds": [eni["eni_id"]], "Filters": [{"Name": "vpc-id", "Values": ["x"]}]},
        )
        bad_filter = await v3.call(
            "DescribeNetworkInterfaces", {"Filters": [{"Name": "color", "Values": ["x"]}]}
        )
        too_big = await v3.call("DescribeNetworkInterfaces", {"Limit": 101})
    item = by_id["Response"]["NetworkInterfaceSet"][0]
    primary, secondary = item["PrivateIpAddressSet"]
    assert (primary["Primary"], primary["State"]) == (True, "AVAILABLE")
    assert (secondary["Primary"], secondary["State"]) == (False, "DELETING")
    assert secondary["AddressId"] == eni["eips"][secondary["PrivateIpAddress"]]
    assert by_id["Response"]["TotalCount"] == 1
    assert by_vpc["Response"]["TotalCount"] == 200
    assert len(by_vpc["Response"]["NetworkInterfaceSet"]) == 100
    assert _error(both) == "InvalidParameter.Coexist"
    assert _error(bad_filter) == "InvalidParameter.FilterInvalidKey"
    assert _error(too_big) == "InvalidParameterValue.Range"


async def test_assign_returns_addresses() -> None:
    """AssignPrivateIpAddresses by count answers the new addresses and a task id."""
    clock = FakeClock()
    sim = make_sim(clock)
    eni = first_eni(sim)
    async with client_for(sim) as client:
        answer = await V3(client, clock).call(
            "AssignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "SecondaryPrivateIpAddressCount": 2},
        )
    new = [spec["PrivateIpAddress"] for spec in answer["Response"]["PrivateIpAddressSet"]]
    assert len(new) == 2
    assert first_eni(sim)["secondary_ips"] == eni["secondary_ips"] + new


async def test_both_dialects_share_one_world() -> None:
    """An IP released through API 2.0 is gone for API 3.0, and a v3 task is visible in the ground truth."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(0, 0))
    eni = first_eni(sim)
    a, b = eni["secondary_ips"][:2]
    async with client_for(sim) as client:
        await V2(client, clock).unassign(eni["vpc_id"], eni["eni_id"], [a])
        v3 = V3(client, clock)
        gone = await v3.call(
            "UnassignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec([a])},
        )
        ok = await v3.call(
            "UnassignPrivateIpAddresses",
            {"NetworkInterfaceId": eni["eni_id"], "PrivateIpAddresses": _spec([b])},
        )
    assert _error(gone) == "UnsupportedOperation.AttachmentNotFound"
    assert "Error" not in ok["Response"]
    assert [t["status"] for t in sim.ground_truth()["tasks"]] == ["SUCCESS", "SUCCESS"]
    assert first_eni(sim)["secondary_ips"] == eni["secondary_ips"][2:]
