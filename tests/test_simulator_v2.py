"""API 2.0 behaviour of the simulator: the official vectors, auth, replay, throttling, every business error,
the mutex, tasks on a fake clock and EIP release (docs/protocol.md §1 and its decisions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from eni_async.clock import FakeClock
from eni_async.simulator import Simulator, SimulatorConfig
from tests.simhelpers import DOC_KEYS, DOC_SECRET_ID, JSON, V2, client_for, first_eni, make_sim

VECTOR_TS = 1465185768
VECTOR_PARAMS = {
    "Action": "UnassignPrivateIpAddresses",
    "Nonce": "11886",
    "Region": "gz",
    "SecretId": DOC_SECRET_ID,
    "SignatureMethod": "HmacSHA256",
    "Timestamp": str(VECTOR_TS),
    "vpcId": "vpc-7t9nf3pu",
    "networkInterfaceId": "eni-m6dyj72l",
    "privateIpAddress.0": "10.0.0.2",
    "privateIpAddress.1": "10.0.0.3",
}


def vector_sim(tmp_path: Path) -> Simulator:
    """A simulator holding the ENI of the spec's vectors, at the vectors' time."""
    state = {
        "enis": [
            {
                "vpc_id": "vpc-7t9nf3pu",
                "eni_id": "eni-m6dyj72l",
                "primary_ip": "10.0.0.10",
                "secondary_ips": ["10.0.0.2", "10.0.0.3"],
                "eips": {},
            }
        ],
        "tasks": [{"task_id": "16284", "eni_id": "eni-m6dyj72l", "ips": [], "status": "SUCCESS"}],
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    return Simulator(SimulatorConfig(state_file=path, keys=DOC_KEYS), clock=FakeClock(start=VECTOR_TS))


@pytest.mark.parametrize(
    ("method", "changes", "signature"),
    [
        ("GET", {}, "d2YYeo+4ApKJAanob66husmn0jSEeHRhM3isLkSLoqM="),
        ("POST", {}, "qXyaHxukMNFVW6Smey9JwcWIpc8iFwXL/fzIch4v01c="),
        ("GET", {"SignatureMethod": "HmacSHA1"}, "hp6VW3ZaNzu3GavTWBvjsIzDZvA="),
        ("GET", {"RequestClient": "SDK_PYTHON_2.0.15"}, "LZbqSKsmeGuxM/vRGahLqQdbRYa0UyvokPzbuKtVO84="),
    ],
)
async def test_official_unassign_vectors_are_accepted(
    tmp_path: Path, method: str, changes: dict[str, str], signature: str
) -> None:
    """A request carrying a published vector signature (V2-C, V2-E) is accepted and starts a task."""
    sim = vector_sim(tmp_path)
    params = {**VECTOR_PARAMS, **changes, "Signature": signature}
    async with client_for(sim) as client:
        answer = await V2(client, FakeClock()).send(params, method=method, host="vpc.api.qcloud.com")
    assert answer["code"] == 0
    assert answer["codeDesc"] == "Success"
    assert isinstance(answer["data"]["taskId"], int)


async def test_official_task_query_vector_is_accepted(tmp_path: Path) -> None:
    """The V2-D DescribeVpcTaskResult vector is accepted and reports status 0 for a finished task."""
    sim = vector_sim(tmp_path)
    params = {
        "Action": "DescribeVpcTaskResult",
        "Nonce": "11887",
        "Region": "gz",
        "SecretId": DOC_SECRET_ID,
        "SignatureMethod": "HmacSHA256",
        "Timestamp": "1465185770",
        "taskId": "16284",
        "Signature": "jbbL3MJ8ZImj1wIfof5Rv/5KWDt7+769PkxRVDFTnD4=",
    }
    async with client_for(sim) as client:
        answer = await V2(client, FakeClock()).send(params, host="vpc.api.qcloud.com")
    assert answer == {"code": 0, "message": "", "codeDesc": "Success", "data": {"status": 0}}


async def test_vector_signed_for_another_host_fails(tmp_path: Path) -> None:
    """The Host header as sent is part of the string to sign, so a vector sent with another Host is refused."""
    sim = vector_sim(tmp_path)
    params = {**VECTOR_PARAMS, "Signature": "d2YYeo+4ApKJAanob66husmn0jSEeHRhM3isLkSLoqM="}
    async with client_for(sim) as client:
        answer = await V2(client, FakeClock()).send(params, host="vpc.api.qcloud.com:443")
    assert (answer["code"], answer["codeDesc"]) == (4100, "AuthFailure")


async def test_wrong_key_is_auth_failure() -> None:
    """A request signed with the wrong SecretKey gets exactly 4100/AuthFailure."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        answer = await V2(client, clock).call("DescribeNetworkInterfaces", secret_key="not-the-key")
    assert (answer["code"], answer["codeDesc"]) == (4100, "AuthFailure")


async def test_unknown_secret_id() -> None:
    """A SecretId the simulator does not know gets 4104/SecretIdNotFound."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        answer = await V2(client, clock, secret_id="AKIDunknown").call("DescribeNetworkInterfaces")
    assert (answer["code"], answer["codeDesc"]) == (4104, "SecretIdNotFound")


async def test_replayed_nonce_and_stale_timestamp() -> None:
    """A reused nonce and a timestamp over 300 s off both get 4500/ReplayAttack; a fresh call passes."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        v2 = V2(client, clock)
        first = await v2.call("DescribeNetworkInterfaces", nonce=42)
        again = await v2.call("DescribeNetworkInterfaces", nonce=42)
        stale = await v2.call("DescribeNetworkInterfaces", timestamp=int(clock.time()) - 301)
        future = await v2.call("DescribeNetworkInterfaces", timestamp=int(clock.time()) + 301)
        clock.advance(301)
        later = await v2.call("DescribeNetworkInterfaces", nonce=42)
    assert first["code"] == 0
    assert later["code"] == 0
    for answer in (again, stale, future):
        assert (answer["code"], answer["codeDesc"]) == (4500, "ReplayAttack")


async def test_signature_method_rules() -> None:
    """HmacSHA256 is used only for that exact value; any other SignatureMethod value means HmacSHA1."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        v2 = V2(client, clock)
        odd = await v2.call("DescribeNetworkInterfaces", sign_method="hmacsha256")
    assert odd["code"] == 0


async def test_over_limit_burst_is_throttled_without_effect() -> None:
    """The 21st task query in one second gets 4400 with Tencent's message; a throttled unassign changes nothing."""
    clock = FakeClock()
    sim = make_sim(clock, rate_limits={"UnassignPrivateIpAddresses": 1})
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        answers = [await v2.task_status(1) for _ in range(21)]
        first = await v2.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
        second = await v2.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][1:2])
    assert all(a["codeDesc"] == "InvalidTask.NotFound" for a in answers[:20])
    assert answers[20] == {
        "code": 4400,
        "message": "request times equals to 21 in a second, which exceeds the frequency limit 20",
        "codeDesc": "RequestLimitExceeded",
    }
    assert first["code"] == 0
    assert second["code"] == 4400
    assert len(sim.ground_truth()["tasks"]) == 1
    assert sim.stats()["throttled"] == {"DescribeVpcTaskResult": 1, "UnassignPrivateIpAddresses": 1}


async def test_rate_window_resets_each_second() -> None:
    """After one second the action's budget is whole again."""
    clock = FakeClock()
    async with client_for(make_sim(clock, rate_limits={"DescribeNetworkInterfaces": 2})) as client:
        v2 = V2(client, clock)
        codes = [(await v2.call("DescribeNetworkInterfaces"))["code"] for _ in range(3)]
        clock.advance(1.0)
        after = await v2.call("DescribeNetworkInterfaces")
    assert codes == [0, 0, 4400]
    assert after["code"] == 0


def _unassign_params(eni: dict[str, Any], ips: list[str], **over: str) -> dict[str, str]:
    params = {"vpcId": eni["vpc_id"], "networkInterfaceId": eni["eni_id"]}
    params.update({f"privateIpAddress.{i}": ip for i, ip in enumerate(ips)})
    params.update(over)
    return params


@pytest.mark.parametrize(
    ("case", "code", "desc"),
    [
        ("empty list", 4000, "InvalidParameter"),
        ("eleven IPs", 4000, "InvalidParameter"),
        ("malformed vpc", 4000, "InvalidParameter"),
        ("malformed eni", 4000, "InvalidParameter"),
        ("malformed ip", 4000, "InvalidParameter"),
        ("duplicate ip", 4000, "InvalidParameter"),
        ("unknown vpc", 5000, "InvalidVpc.NotFound"),
        ("unknown eni", 5000, "InvalidNetworkInterface.NotFound"),
        ("eni in other vpc", 5000, "InvalidNetworkInterface.NotFound"),
        ("primary ip", 4000, "InvalidPrivateip.IsPrimary"),
        ("ip not on eni", 4000, "InvalidPrivateIpAddress.NotFound"),
    ],
)
async def test_unassign_business_errors(case: str, code: int, desc: str) -> None:
    """Each refused UnassignPrivateIpAddresses gets the decided code and codeDesc and starts no task."""
    clock = FakeClock()
    sim = make_sim(clock, enis=1200, ips_per_eni=1)  # two VPCs
    truth = sim.ground_truth()["enis"]
    eni, other = truth[0], truth[-1]
    ip = eni["secondary_ips"][0]
    params = {
        "empty list": _unassign_params(eni, []),
        "eleven IPs": _unassign_params(eni, [f"10.0.1.{i}" for i in range(11)]),
        "malformed vpc": _unassign_params(eni, [ip], vpcId="vpc-ABC"),
        "malformed eni": _unassign_params(eni, [ip], networkInterfaceId="eni-1234567"),
        "malformed ip": _unassign_params(eni, ["10.0.0.256"]),
        "duplicate ip": _unassign_params(eni, [ip, ip]),
        "unknown vpc": _unassign_params(eni, [ip], vpcId="vpc-zzzzzzzz"),
        "unknown eni": _unassign_params(eni, [ip], networkInterfaceId="eni-zzzzzzzz"),
        "eni in other vpc": _unassign_params(eni, [ip], vpcId=other["vpc_id"]),
        "primary ip": _unassign_params(eni, [ip, eni["primary_ip"]]),
        "ip not on eni": _unassign_params(eni, [other["secondary_ips"][0]]),
    }[case]
    assert other["vpc_id"] != eni["vpc_id"]
    async with client_for(sim) as client:
        answer = await V2(client, clock).call("UnassignPrivateIpAddresses", params)
    assert (answer["code"], answer["codeDesc"]) == (code, desc)
    assert sim.ground_truth()["tasks"] == []


async def test_unknown_action_and_task() -> None:
    """An unknown Action gets 4000/InvalidAction; an unknown task id gets 5000/InvalidTask.NotFound."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        v2 = V2(client, clock)
        action = await v2.call("DeleteEverything")
        task = await v2.task_status(999)
    assert (action["code"], action["codeDesc"]) == (4000, "InvalidAction")
    assert (task["code"], task["codeDesc"]) == (5000, "InvalidTask.NotFound")


async def test_unassign_task_runs_then_releases_ips_and_eips() -> None:
    """A task is RUNNING (status 2) with the IPs still listed, then SUCCESS (0) with IPs and their EIPs gone."""
    clock = FakeClock()
    sim = make_sim(clock, eip_fraction=1.0, task_latency=(5.0, 0.0))
    eni = first_eni(sim)
    ips = eni["secondary_ips"][:2]
    assert set(ips) <= set(eni["eips"])
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        started = await v2.unassign(eni["vpc_id"], eni["eni_id"], ips)
        task_id = started["data"]["taskId"]
        running = await v2.task_status(task_id)
        listed = await v2.call("DescribeNetworkInterfaces", {"networkInterfaceId": eni["eni_id"]})
        clock.advance(5.0)
        done = await v2.task_status(task_id)
    assert running["data"] == {"status": 2}
    assert done["data"] == {"status": 0}
    shown = [a["privateIpAddress"] for a in listed["data"]["data"][0]["privateIpAddressesSet"]]
    assert set(ips) <= set(shown)
    after = first_eni(sim)
    assert after["secondary_ips"] == eni["secondary_ips"][2:]
    assert not set(ips) & set(after["eips"])
    (task,) = sim.ground_truth()["tasks"]
    assert task | {"started_s": 0.0, "latency_s": 0.0} == {
        "task_id": str(task_id),
        "eni_id": eni["eni_id"],
        "ips": ips,
        "status": "SUCCESS",
        "started_s": 0.0,
        "latency_s": 0.0,
    }
    assert task["latency_s"] > 0, "it ran before it released them"


async def test_mutex_while_task_runs() -> None:
    """A second call on an ENI whose task is RUNNING gets 5100/ActionLocked; after the task ends it passes."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(2.0, 0.0))
    eni = first_eni(sim)
    a, b = eni["secondary_ips"][:2]
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        await v2.unassign(eni["vpc_id"], eni["eni_id"], [a])
        locked = await v2.unassign(eni["vpc_id"], eni["eni_id"], [b])
        clock.advance(2.0)
        free = await v2.unassign(eni["vpc_id"], eni["eni_id"], [b])
    assert (locked["code"], locked["codeDesc"]) == (5100, "ActionLocked")
    assert free["code"] == 0


async def test_describe_envelope_fields_and_paging() -> None:
    """DescribeNetworkInterfaces answers in the live-page envelope with §1.6 fields, filtered and paged."""
    clock = FakeClock()
    sim = make_sim(clock, enis=30, eip_fraction=1.0)
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        page = await v2.call(
            "DescribeNetworkInterfaces", {"vpcId": eni["vpc_id"], "offset": "25", "limit": "10"}
        )
        default = await v2.call("DescribeNetworkInterfaces")
        too_big = await v2.call("DescribeNetworkInterfaces", {"limit": "51"})
        no_vpc = await v2.call("DescribeNetworkInterfaces", {"vpcId": "vpc-zzzzzzzz"})
        one = await v2.call("DescribeNetworkInterfaces", {"networkInterfaceId": eni["eni_id"]})
    assert page["data"]["totalNum"] == 30
    assert len(page["data"]["data"]) == 5
    assert len(default["data"]["data"]) == 20
    assert too_big["code"] == 4000
    assert no_vpc["codeDesc"] == "InvalidVpc.NotFound"
    item = one["data"]["data"][0]
    assert item["networkInterfaceId"] == eni["eni_id"]
    assert item["vpcId"] == eni["vpc_id"]
    primary, *secondary = item["privateIpAddressesSet"]
    assert primary == {
        "privateIpAddress": eni["primary_ip"],
        "primary": True,
        "wanIp": "",
        "eipId": "",
        "description": "",
        "isWanIpBlocked": False,
    }
    assert [(s["privateIpAddress"], s["eipId"]) for s in secondary] == list(eni["eips"].items())
    assert all(s["wanIp"] for s in secondary)


async def test_assign_by_address_and_by_count() -> None:
    """AssignPrivateIpAddresses adds free subnet IPs, refuses an IP in use and one outside the subnet."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(0, 0))
    eni, other = sim.ground_truth()["enis"][:2]
    target = {"vpcId": eni["vpc_id"], "networkInterfaceId": eni["eni_id"]}
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        by_ip = await v2.call(
            "AssignPrivateIpAddresses", {**target, "privateIpAddressSet.0.privateIpAddress": "10.0.200.7"}
        )
        by_count = await v2.call(
            "AssignPrivateIpAddresses", {**target, "secondaryPrivateIpAddressCount": "2"}
        )
        in_use = await v2.call(
            "AssignPrivateIpAddresses",
            {**target, "privateIpAddressSet.0.privateIpAddress": other["secondary_ips"][0]},
        )
        outside = await v2.call(
            "AssignPrivateIpAddresses", {**target, "privateIpAddressSet.0.privateIpAddress": "192.168.0.9"}
        )
    assert by_ip["code"] == 0
    assert isinstance(by_ip["data"]["taskId"], int)
    assert by_count["code"] == 0
    assert in_use["codeDesc"] == "InvalidPrivateIpAddress.InUse"
    assert outside["code"] == 4000
    after = first_eni(sim)["secondary_ips"]
    assert len(after) == len(eni["secondary_ips"]) + 3
    assert "10.0.200.7" in after


async def test_post_form_is_served() -> None:
    """API 2.0 accepts the same call as a POST form, signed with POST in the string to sign."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        answer = await V2(client, clock).call("DescribeNetworkInterfaces", method="POST")
    assert answer["code"] == 0
    assert answer["data"]["totalNum"] == 4


async def test_missing_signature_parameters() -> None:
    """A call without Signature/Nonce/Timestamp is refused with 4000 before anything else happens."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        resp = await client.get("/v2/index.php?" + urlencode({"Action": "DescribeNetworkInterfaces"}))
        body = json.loads(await resp.read())
    assert resp.headers["Content-Type"] == JSON
    assert body["code"] == 4000


@pytest.mark.parametrize(
    ("region", "code", "desc"),
    [
        ("ap-guangzhou", 0, "Success"),
        ("gz", 0, "Success"),
        ("ap-beijing", 4000, "UnsupportedRegion"),
        ("bj", 4000, "UnsupportedRegion"),
        ("", 4000, "InvalidParameter"),
    ],
)
async def test_region_is_checked_as_on_api_3(region: str, code: int, desc: str) -> None:
    """An ap-guangzhou world serves its region (long or short form) and refuses another or none, with no effect."""
    clock = FakeClock()
    sim = make_sim(clock)
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        params = {"vpcId": eni["vpc_id"], "networkInterfaceId": eni["eni_id"]}
        params["privateIpAddress.0"] = eni["secondary_ips"][0]
        answer = await v2.call("UnassignPrivateIpAddresses", {**params, "Region": region})
    assert (answer["code"], answer["codeDesc"]) == (code, desc)
    assert len(sim.ground_truth()["tasks"]) == (1 if code == 0 else 0)
