"""Conformance with a client nobody here wrote: the official ``tencentcloud-sdk-python-vpc`` sync and async
clients against the API 3.0 simulator on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vpc.v20170312 import models, vpc_client

from eni_async.simulator import RunningServer, Simulator, SimulatorConfig, running
from tests.simhelpers import DOC_KEYS, DOC_SECRET_ID, DOC_SECRET_KEY


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A simulator on the system clock (the SDK signs with the wall clock), tasks ending at once."""
    sim = Simulator(SimulatorConfig(enis=5, ips_per_eni=3, seed=3, task_latency=(0, 0), keys=DOC_KEYS))
    async with running(sim) as srv:
        yield srv


def _profile(endpoint: str, method: str = "POST") -> ClientProfile:
    host = endpoint.removeprefix("http://")
    return ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=host, reqMethod=method, reqTimeout=10)
    )


def _client(srv: RunningServer, key: str = DOC_SECRET_KEY, method: str = "POST") -> Any:
    cred = credential.Credential(DOC_SECRET_ID, key)
    return vpc_client.VpcClient(cred, srv.simulator.region, _profile(srv.endpoint, method))


def _unassign_request(eni_id: str, ips: list[str]) -> Any:
    req = models.UnassignPrivateIpAddressesRequest()
    req.from_json_string(
        '{{"NetworkInterfaceId": "{}", "PrivateIpAddresses": [{}]}}'.format(
            eni_id, ", ".join(f'{{"PrivateIpAddress": "{ip}"}}' for ip in ips)
        )
    )
    return req


def _task_request(task_id: str) -> Any:
    req = models.DescribeVpcTaskResultRequest()
    req.TaskId = task_id
    return req


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_sync_sdk_describe_unassign_and_poll(server: RunningServer, method: str) -> None:
    """VpcClient lists the seeded ENIs, releases an IP, and polls the task to SUCCESS; the IP is gone."""
    client = _client(server, method=method)
    eni = server.simulator.ground_truth()["enis"][0]
    listed = await asyncio.to_thread(
        client.DescribeNetworkInterfaces, models.DescribeNetworkInterfacesRequest()
    )
    assert listed.TotalCount == 5
    assert {i.NetworkInterfaceId for i in listed.NetworkInterfaceSet} == {
        e["eni_id"] for e in server.simulator.ground_truth()["enis"]
    }
    started = await asyncio.to_thread(
        client.UnassignPrivateIpAddresses, _unassign_request(eni["eni_id"], eni["secondary_ips"][:2])
    )
    task = await asyncio.to_thread(client.DescribeVpcTaskResult, _task_request(started.RequestId))
    assert task.Status == "SUCCESS"
    after = server.simulator.ground_truth()["enis"][0]
    assert after["secondary_ips"] == eni["secondary_ips"][2:]


async def test_sync_sdk_wrong_key_and_primary_ip(server: RunningServer) -> None:
    """A wrong SecretKey raises AuthFailure.SignatureFailure; releasing a primary IP raises UnsupportedOperation."""
    eni = server.simulator.ground_truth()["enis"][0]
    with pytest.raises(TencentCloudSDKException) as wrong:
        await asyncio.to_thread(
            _client(server, key="wrong").DescribeNetworkInterfaces, models.DescribeNetworkInterfacesRequest()
        )
    assert wrong.value.get_code() == "AuthFailure.SignatureFailure"
    with pytest.raises(TencentCloudSDKException) as primary:
        await asyncio.to_thread(
            _client(server).UnassignPrivateIpAddresses, _unassign_request(eni["eni_id"], [eni["primary_ip"]])
        )
    assert primary.value.get_code() == "UnsupportedOperation"


async def test_async_sdk_end_to_end(server: RunningServer) -> None:
    """The official async VpcClient (httpx) describes, releases, polls, and sees the decided errors."""
    from tencentcloud.vpc.v20170312 import vpc_client_async

    eni = server.simulator.ground_truth()["enis"][1]
    cred = credential.Credential(DOC_SECRET_ID, DOC_SECRET_KEY)
    async with vpc_client_async.VpcClient(cred, server.simulator.region, _profile(server.endpoint)) as client:
        listed = await client.DescribeNetworkInterfaces(models.DescribeNetworkInterfacesRequest())
        started = await client.UnassignPrivateIpAddresses(
            _unassign_request(eni["eni_id"], eni["secondary_ips"][:1])
        )
        task = await client.DescribeVpcTaskResult(_task_request(started.RequestId))
        with pytest.raises(TencentCloudSDKException) as primary:
            await client.UnassignPrivateIpAddresses(_unassign_request(eni["eni_id"], [eni["primary_ip"]]))
    bad = credential.Credential(DOC_SECRET_ID, "wrong")
    async with vpc_client_async.VpcClient(bad, server.simulator.region, _profile(server.endpoint)) as client:
        with pytest.raises(TencentCloudSDKException) as wrong:
            await client.DescribeNetworkInterfaces(models.DescribeNetworkInterfacesRequest())
    assert listed.TotalCount == 5
    assert task.Status == "SUCCESS"
    assert primary.value.get_code() == "UnsupportedOperation"
    assert wrong.value.get_code() == "AuthFailure.SignatureFailure"
    assert server.simulator.ground_truth()["enis"][1]["secondary_ips"] == eni["secondary_ips"][1:]
