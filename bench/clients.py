"""The three clients under test, each run alone in its own process: ``python -m bench.clients ...``.

- ``eni_async``: ``EniClient(...).unassign_many(items)`` over API 3.0, with the given rate budgets.
- ``sdk``: the official ``tencentcloud-sdk-python`` async ``VpcClient`` (httpx) with its
  ``StandardRetryer``, one coroutine per ENI under an ``asyncio.Semaphore``: submit, then ``sleep(1)`` and
  query until the task ends, the way people write it. A throttle that outlives the retryer is waited out
  (one more second) instead of crashing the script, so that the script finishes and can be timed.
- ``sdk_threads``: the official sync ``VpcClient`` in a pool of ``--concurrency`` threads, the same submit
  and 1 s poll loop per ENI (the way a script without asyncio is written).
- ``aiohttp``: plain aiohttp, TC3-signed with ``eni_async.signing``, ``asyncio.gather`` over every ENI
  under a semaphore, the same fixed 1 s poll loop and the same "wait a second on a throttle".

Each writes one JSON document (``--out``): completion times (seconds after the first submit), how many
ENIs succeeded, the errors it saw and the CPU seconds it spent between the first submit and the last
completion (``time.process_time``, so imports and start-up are excluded; the caller also has the whole
process's ``wait4`` figure). Credentials come from ``TENCENTCLOUD_SECRET_ID``/``TENCENTCLOUD_SECRET_KEY``.

Reproduce one run by hand against ``eni-async simulate``::

    python -m bench.clients --client sdk --endpoint http://127.0.0.1:PORT --items items.json --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

Triple = tuple[str, str, list[str]]
UNLIMITED = 1_000_000  # a client-side budget that never blocks, for runs against a simulator without limits


@dataclass
class Config:
    """What every client is told: where, who, what, how hard."""

    endpoint: str
    region: str
    secret_id: str
    secret_key: str
    items: list[Triple]
    concurrency: int
    limits: tuple[int, int, int]  # unassign, task query, describe per second; 0 = unlimited
    dialect: str = "v3"
    confirm: str = "eni"
    discovery: bool = False


@dataclass
class Result:
    """One client run, as written to ``--out``."""

    client: str
    n: int
    concurrency: int
    succeeded: int = 0
    completions: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    makespan_s: float = 0.0
    work_cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Clocked:
    """Start and completion bookkeeping shared by the clients."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.errors: Counter[str] = Counter()
        self.t0 = 0.0
        self.c0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = time.process_time()

    def done(self, ok: bool) -> None:
        self.result.completions.append(time.monotonic() - self.t0)
        self.result.succeeded += ok

    def finish(self) -> Result:
        self.result.work_cpu_s = time.process_time() - self.c0
        self.result.makespan_s = max(self.result.completions, default=0.0)
        self.result.errors = dict(self.errors)
        return self.result


# --- eni_async -----------------------------------------------------------------------------------------


async def run_eni_async(cfg: Config) -> Result:
    from eni_async.client import EniClient
    from eni_async.models import Credentials
    from eni_async.settings import RateLimits, Settings

    unassign, query, describe = (limit or UNLIMITED for limit in cfg.limits)
    settings = Settings(
        dialect=cfg.dialect,
        endpoint=cfg.endpoint,
        region=cfg.region,
        confirm=cfg.confirm,
        discovery=cfg.discovery,
        rate_limits=RateLimits(unassign=unassign, task_query=query, describe=describe),
    )
    if cfg.concurrency:  # 0: the default, as many in flight as the budgets keep busy
        settings = replace(settings, concurrency=cfg.concurrency)
    clocked = Clocked(Result("eni_async", len(cfg.items), cfg.concurrency))
    outcomes: list[dict[str, Any]] = []
    async with EniClient(Credentials(cfg.secret_id, cfg.secret_key), settings) as client:
        clocked.start()
        async for outcome in client.unassign_many(cfg.items):
            outcomes.append(outcome.to_json())
            clocked.done(outcome.status == "succeeded")
            if outcome.error is not None:
                clocked.errors[outcome.error.get("code", "?")] += 1
        result = clocked.finish()
        result.extra["t0_monotonic"] = clocked.t0  # the simulator's task times are on the same clock
        result.extra["client_throttles"] = {
            action: client.budgets[action].throttles
            for action in ("UnassignPrivateIpAddresses", "DescribeVpcTaskResult", "DescribeNetworkInterfaces")
        }
        result.extra["final_rates"] = {
            action: client.budgets[action].rate
            for action in ("UnassignPrivateIpAddresses", "DescribeVpcTaskResult", "DescribeNetworkInterfaces")
        }
        result.extra["tracker"] = {
            "describe_calls": client.tracker.describe_calls,
            "task_queries": client.tracker.task_queries,
            "latencies_learnt": len(client.calls.latencies),
        }
        result.extra["outcomes"] = outcomes
    return result


# --- the official async SDK ----------------------------------------------------------------------------


async def run_sdk(cfg: Config) -> Result:
    from tencentcloud.common import credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.common.retry_async import StandardRetryer  # the async client awaits its retryer
    from tencentcloud.vpc.v20170312 import models, vpc_client_async

    cred = credential.Credential(cfg.secret_id, cfg.secret_key)
    http = HttpProfile(protocol="http", endpoint=cfg.endpoint.removeprefix("http://"), reqTimeout=30)
    profile = ClientProfile(httpProfile=http, retryer=StandardRetryer())
    clocked = Clocked(Result("sdk", len(cfg.items), cfg.concurrency))
    semaphore = asyncio.Semaphore(cfg.concurrency)

    async def call(fn: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            try:
                return await fn()
            except TencentCloudSDKException as exc:
                clocked.errors[str(exc.get_code())] += 1
                if not str(exc.get_code()).startswith("RequestLimitExceeded"):
                    raise
                await asyncio.sleep(1)

    async def release(client: Any, eni: str, ips: list[str]) -> None:
        async with semaphore:
            request = models.UnassignPrivateIpAddressesRequest()
            request.NetworkInterfaceId = eni
            request.PrivateIpAddresses = []
            for ip in ips:
                spec = models.PrivateIpAddressSpecification()
                spec.PrivateIpAddress = ip
                request.PrivateIpAddresses.append(spec)
            try:
                submitted = await call(lambda: client.UnassignPrivateIpAddresses(request))
                query = models.DescribeVpcTaskResultRequest()
                query.TaskId = submitted.RequestId
                while True:
                    await asyncio.sleep(1)
                    task = await call(lambda: client.DescribeVpcTaskResult(query))
                    if task.Status != "RUNNING":
                        break
            except TencentCloudSDKException:
                clocked.done(False)
                return
            clocked.done(task.Status == "SUCCESS")

    async with vpc_client_async.VpcClient(cred, cfg.region, profile) as client:
        clocked.start()
        await asyncio.gather(*(release(client, eni, ips) for _vpc, eni, ips in cfg.items))
    return clocked.finish()


# --- the official sync SDK in threads --------------------------------------------------------------------


async def run_sdk_threads(cfg: Config) -> Result:
    """The sync ``VpcClient`` in a thread pool of ``concurrency`` threads, one ENI per thread at a time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tencentcloud.common import credential
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.vpc.v20170312 import models, vpc_client

    cred = credential.Credential(cfg.secret_id, cfg.secret_key)
    http = HttpProfile(protocol="http", endpoint=cfg.endpoint.removeprefix("http://"), reqTimeout=30)
    clocked = Clocked(Result("sdk_threads", len(cfg.items), cfg.concurrency))
    lock = threading.Lock()
    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = vpc_client.VpcClient(cred, cfg.region, ClientProfile(httpProfile=http))
        return local.client

    def call(fn: Callable[[], Any]) -> Any:
        while True:
            try:
                return fn()
            except TencentCloudSDKException as exc:
                with lock:
                    clocked.errors[str(exc.get_code())] += 1
                if not str(exc.get_code()).startswith("RequestLimitExceeded"):
                    raise
                time.sleep(1)

    def release(eni: str, ips: list[str]) -> None:
        request = models.UnassignPrivateIpAddressesRequest()
        request.NetworkInterfaceId = eni
        request.PrivateIpAddresses = []
        for ip in ips:
            spec = models.PrivateIpAddressSpecification()
            spec.PrivateIpAddress = ip
            request.PrivateIpAddresses.append(spec)
        ok = False
        try:
            submitted = call(lambda: client().UnassignPrivateIpAddresses(request))
            query = models.DescribeVpcTaskResultRequest()
            query.TaskId = submitted.RequestId
            while True:
                time.sleep(1)
                task = call(lambda: client().DescribeVpcTaskResult(query))
                if task.Status != "RUNNING":
                    break
            ok = task.Status == "SUCCESS"
        except TencentCloudSDKException:
            pass
        with lock:
            clocked.done(ok)

    clocked.start()
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: list(pool.map(lambda item: release(item[1], item[2]), cfg.items))
        )
    return clocked.finish()


# --- raw aiohttp ---------------------------------------------------------------------------------------


async def run_aiohttp(cfg: Config) -> Result:
    import aiohttp

    from eni_async.signing import tc3_authorization

    host = cfg.endpoint.removeprefix("http://")
    clocked = Clocked(Result("aiohttp", len(cfg.items), cfg.concurrency))
    semaphore = asyncio.Semaphore(cfg.concurrency)

    async def call(session: aiohttp.ClientSession, action: str, params: dict[str, Any]) -> dict[str, Any]:
        while True:
            body = json.dumps(params).encode()
            timestamp = int(time.time())
            headers = {"content-type": "application/json", "host": host}
            authorization = tc3_authorization(
                cfg.secret_id,
                cfg.secret_key,
                method="POST",
                query="",
                headers=headers,
                payload=body,
                timestamp=timestamp,
                service="vpc",
            )
            headers |= {
                "Authorization": authorization,
                "X-TC-Action": action,
                "X-TC-Version": "2017-03-12",
                "X-TC-Timestamp": str(timestamp),
                "X-TC-Region": cfg.region,
            }
            async with session.post(cfg.endpoint + "/", data=body, headers=headers) as answer:
                response: dict[str, Any] = (await answer.json(content_type=None))["Response"]
            error = response.get("Error")
            if error is None:
                return response
            clocked.errors[error["Code"]] += 1
            if not error["Code"].startswith("RequestLimitExceeded"):
                raise RuntimeError(f"{action}: {error['Code']}: {error['Message']}")
            await asyncio.sleep(1)

    async def release(session: aiohttp.ClientSession, eni: str, ips: list[str]) -> None:
        async with semaphore:
            try:
                submitted = await call(
                    session,
                    "UnassignPrivateIpAddresses",
                    {
                        "NetworkInterfaceId": eni,
                        "PrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in ips],
                    },
                )
                while True:
                    await asyncio.sleep(1)
                    task = await call(session, "DescribeVpcTaskResult", {"TaskId": submitted["RequestId"]})
                    if task["Status"] != "RUNNING":
                        break
            except RuntimeError:
                clocked.done(False)
                return
            clocked.done(task["Status"] == "SUCCESS")

    async with aiohttp.ClientSession() as session:
        clocked.start()
        await asyncio.gather(*(release(session, eni, ips) for _vpc, eni, ips in cfg.items))
    return clocked.finish()


CLIENTS: dict[str, Callable[[Config], Coroutine[Any, Any, Result]]] = {
    "eni_async": run_eni_async,
    "sdk": run_sdk,
    "sdk_threads": run_sdk_threads,
    "aiohttp": run_aiohttp,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), required=True)
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT of the simulator")
    parser.add_argument("--region", default="ap-guangzhou")
    parser.add_argument("--items", required=True, help="JSON file: a list of [vpc_id, eni_id, [ips]]")
    parser.add_argument("--out", required=True, help="where to write the result (JSON)")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--limits",
        default="0,0,0",
        help="client-side rate budgets unassign,task_query,describe per second (0 = unlimited)",
    )
    parser.add_argument("--dialect", choices=("v2", "v3"), default="v3", help="eni_async only")
    parser.add_argument("--confirm", choices=("eni", "task"), default="eni", help="eni_async only")
    parser.add_argument("--discovery", action="store_true", help="eni_async only: probe the limits upward")
    args = parser.parse_args(argv)
    with open(args.items, encoding="utf-8") as handle:
        items = [(vpc, eni, list(ips)) for vpc, eni, ips in json.load(handle)]
    unassign, query, describe = (int(x) for x in args.limits.split(","))
    cfg = Config(
        endpoint=args.endpoint,
        region=args.region,
        secret_id=os.environ["TENCENTCLOUD_SECRET_ID"],
        secret_key=os.environ["TENCENTCLOUD_SECRET_KEY"],
        items=items,
        concurrency=args.concurrency,
        limits=(unassign, query, describe),
        dialect=args.dialect,
        confirm=args.confirm,
        discovery=args.discovery,
    )
    # eni_async on the loop its commands run on (uvloop where installed); the SDKs on asyncio's own, as shipped.
    factory = None
    if args.client == "eni_async":
        from eni_async.cli import loop_factory

        factory = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(CLIENTS[args.client](cfg))
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(asdict(result), handle)
    return 0 if result.succeeded == result.n else 1


if __name__ == "__main__":
    sys.exit(main())
