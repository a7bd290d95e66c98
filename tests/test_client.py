"""EniClient over scripted HTTP exchanges (aioresponses): submit, poll, errors, retries and chunking."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.errors import (
    ApiError,
    ConnectError,
    EniNotFoundError,
    IpNotOnEniError,
    MutexError,
    OutcomeUnknownError,
    PrimaryIpError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    VpcNotFoundError,
)
from eni_async.models import Credentials, TaskStatus
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings import Settings
from tests.aioresp import Mocked, mocked

URL = "https://vpc.api.qcloud.com/v2/index.php"
VPC, ENI = "vpc-7t9nf3pu", "eni-m6dyj72l"
CREDS = Credentials("AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA")


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 0, "message": "", "codeDesc": "Success", "data": data}


def task(status: int) -> dict[str, Any]:
    return ok({"status": status})


def err(code: int, desc: str, message: str = "") -> dict[str, Any]:
    return {"code": code, "message": message, "codeDesc": desc}


def sent(m: Mocked) -> list[dict[str, list[str]]]:
    """The form bodies of every request sent, in order."""
    calls = [call for key, calls in m.requests.items() for call in calls]
    return [parse_qs(call.kwargs["data"].decode()) for call in calls]


def sent_in_order(m: Mocked) -> list[str]:
    return [body["Action"][0] for body in sent(m)]


@pytest.fixture
async def client() -> AsyncIterator[EniClient]:
    settings = Settings(confirm="task", poll=PollPolicy(first=1.0, initial=0.5, timeout=60.0))
    async with EniClient(CREDS, settings, clock=FakeClock()) as c:
        yield c


async def test_submit_then_running_running_success(client: EniClient) -> None:
    """unassign submits once, polls through RUNNING until SUCCESS, and reports the task and IPs."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}))
        m.post(URL, payload=task(2))
        m.post(URL, payload=task(2))
        m.post(URL, payload=task(0))
        result = await client.unassign(VPC, ENI, ["10.0.0.2", "10.0.0.3"])
        bodies = sent(m)
    assert result.task_ids == ("16284",)
    assert result.released == ("10.0.0.2", "10.0.0.3")
    assert [b["Action"][0] for b in bodies] == ["UnassignPrivateIpAddresses"] + ["DescribeVpcTaskResult"] * 3
    assert bodies[0]["privateIpAddress.0"] == ["10.0.0.2"]
    assert bodies[0]["vpcId"] == [VPC]
    assert bodies[0]["networkInterfaceId"] == [ENI]
    assert all(b["taskId"] == ["16284"] for b in bodies[1:])


async def test_failed_task_raises_task_failed(client: EniClient) -> None:
    """A task that ends FAILED raises TaskFailedError carrying the task id and the ENI."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 77}))
        m.post(URL, payload=task(1))
        with pytest.raises(TaskFailedError) as info:
            await client.unassign(VPC, ENI, ["10.0.0.2"])
    assert info.value.task_id == "77"
    assert info.value.eni_id == ENI
    assert info.value.ips == ("10.0.0.2",)


@pytest.mark.parametrize(
    ("code", "desc", "cls"),
    [
        (5000, "InvalidVpc.NotFound", VpcNotFoundError),
        (5000, "InvalidNetworkInterface.NotFound", EniNotFoundError),
        (4000, "InvalidPrivateip.IsPrimary", PrimaryIpError),
        (4000, "InvalidPrivateIpAddress.NotFound", IpNotOnEniError),
        (5100, "ActionLocked", MutexError),
        (9999, "SomethingNew.NobodyDocumented", ApiError),
    ],
)
async def test_business_errors_are_typed(
    client: EniClient, code: int, desc: str, cls: type[ApiError]
) -> None:
    """Each business error of the submit becomes its class, with code and message, and is not retried."""
    with mocked() as m:
        m.post(URL, payload=err(code, desc, "nope"))
        with pytest.raises(cls) as info:
            await client.submit_unassign(VPC, ENI, ["10.0.0.2"])
        assert len(sent(m)) == 1
    assert type(info.value) is cls
    assert info.value.code == desc
    assert info.value.message == "nope"
    assert info.value.action == "UnassignPrivateIpAddresses"


async def test_throttle_then_success_retries_the_submit(client: EniClient) -> None:
    """A throttled submit had no effect, so it is retried and the task id of the retry is returned."""
    with mocked() as m:
        m.post(
            URL,
            payload=err(
                4400,
                "RequestLimitExceeded",
                "request times equals to 101 in a second, which exceeds the frequency limit 100",
            ),
        )
        m.post(URL, payload=ok({"taskId": 5}))
        task_id = await client.submit_unassign(VPC, ENI, ["10.0.0.2"])
        assert len(sent(m)) == 2
    assert task_id == "5"
    assert client.budgets["UnassignPrivateIpAddresses"].ceiling == 100


async def test_throttled_poll_is_retried(client: EniClient) -> None:
    """A throttled task query is retried and the poll goes on to SUCCESS."""
    with mocked() as m:
        m.post(URL, payload=err(4400, "RequestLimitExceeded", "frequency limit 20"))
        m.post(URL, payload=task(0))
        assert await client.task_status("9") is TaskStatus.SUCCESS


async def test_twenty_five_ips_go_in_three_sequential_chunks(client: EniClient) -> None:
    """25 IPs are released as chunks of 10, 10 and 5, each task ending before the next submit."""
    ips = [f"10.0.1.{i}" for i in range(1, 26)]
    with mocked() as m:
        for task_id in (1, 2, 3):
            m.post(URL, payload=ok({"taskId": task_id}))
            m.post(URL, payload=task(0))
        result = await client.unassign(VPC, ENI, ips)
        bodies = sent(m)
    actions = [b["Action"][0] for b in bodies]
    assert actions == ["UnassignPrivateIpAddresses", "DescribeVpcTaskResult"] * 3
    sizes = [sum(1 for k in b if k.startswith("privateIpAddress.")) for b in bodies[::2]]
    assert sizes == [10, 10, 5]
    assert result.task_ids == ("1", "2", "3")
    assert result.released == tuple(ips)


async def test_submit_after_5xx_is_not_retried_blindly(client: EniClient) -> None:
    """An HTTP 503 on a submit raises OutcomeUnknownError with what was sent, and nothing is resent."""
    with mocked() as m:
        m.post(URL, status=503, body=b"Service Unavailable")
        m.post(URL, payload=ok({"taskId": 1}))
        with pytest.raises(OutcomeUnknownError) as info:
            await client.submit_unassign(VPC, ENI, ["10.0.0.2"])
        assert len(sent(m)) == 1
    assert info.value.eni_id == ENI
    assert info.value.ips == ("10.0.0.2",)


async def test_submit_after_internal_error_is_outcome_unknown(client: EniClient) -> None:
    """An InternalError answer to a submit is ambiguous: OutcomeUnknownError, not a retry."""
    with mocked() as m:
        m.post(URL, payload=err(6000, "InternalError", "boom"))
        with pytest.raises(OutcomeUnknownError) as info:
            await client.submit_unassign(VPC, ENI, ["10.0.0.2"])
        assert len(sent(m)) == 1
    assert isinstance(info.value.cause, ServerError)


async def test_read_only_query_retries_5xx_and_broken_bodies(client: EniClient) -> None:
    """A task query survives HTTP 502, an HTML page and a truncated body, then reads SUCCESS."""
    with mocked() as m:
        m.post(URL, status=502, body=b"bad gateway")
        m.post(URL, body=b"<html>oops</html>")
        m.post(URL, body=b'{"code": 0, "data": {"sta')
        m.post(URL, payload=task(0))
        assert await client.task_status("9") is TaskStatus.SUCCESS
        assert len(sent(m)) == 4


async def test_retries_are_bounded(client: EniClient) -> None:
    """A query that keeps failing gives up after the policy's attempts with the last error."""
    with mocked() as m:
        for _ in range(20):
            m.post(URL, status=500, body=b"")
        with pytest.raises(ApiError.__mro__[1]):  # EniAsyncError
            await client.task_status("9")
        assert len(sent(m)) == RetryPolicy().attempts


async def test_wait_for_task_deadline(client: EniClient) -> None:
    """A task RUNNING past the deadline raises TaskTimeoutError with its id and last status."""
    with mocked() as m:
        for _ in range(200):
            m.post(URL, payload=task(2))
        with pytest.raises(TaskTimeoutError) as info:
            await client.wait_for_task("42", timeout=30.0)
        queries = len(sent(m))
    assert info.value.task_id == "42"
    assert info.value.last_status == "RUNNING"
    assert isinstance(info.value, TimeoutError)
    assert 3 <= queries < 30
    assert client.clock.monotonic() == pytest.approx(30.0, abs=0.01)


async def test_mutex_waits_for_the_running_task_and_retries(client: EniClient) -> None:
    """unassign meets ActionLocked, waits, submits again and completes."""
    with mocked() as m:
        m.post(URL, payload=err(5100, "ActionLocked", "busy"))
        m.post(URL, payload=ok({"taskId": 8}))
        m.post(URL, payload=task(0))
        result = await client.unassign(VPC, ENI, ["10.0.0.2"])
    assert result.task_ids == ("8",)


async def test_refused_connection_is_retried_then_reported() -> None:
    """A refused connection had no effect: even a submit is retried, then ConnectError is raised."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(endpoint=f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=3))
    clock = FakeClock()
    async with EniClient(CREDS, settings, clock=clock) as c:
        with pytest.raises(ConnectError):
            await c.submit_unassign(VPC, ENI, ["10.0.0.2"])
    assert len(clock.sleeps) == 2


async def test_bad_input_sends_nothing(client: EniClient) -> None:
    """Invalid ids or IPs raise ValueError naming the field before any request."""
    with mocked() as m:
        with pytest.raises(ValueError, match="eni_id"):
            await client.unassign(VPC, "eni-BAD", ["10.0.0.2"])
        with pytest.raises(ValueError, match="ips"):
            await client.unassign(VPC, ENI, ["10.0.0.2", "10.0.0.2"])
        with pytest.raises(ValueError, match="at most 10"):
            await client.submit_unassign(VPC, ENI, [f"10.0.0.{i}" for i in range(1, 12)])
        assert sent(m) == []


async def test_client_repr_hides_the_key(client: EniClient) -> None:
    """The client's repr names the SecretId but never the SecretKey."""
    assert CREDS.secret_key not in repr(client)
    assert CREDS.secret_key not in repr(CREDS)
