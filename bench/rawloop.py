"""The comparison for the batch's CPU: a plain aiohttp loop making the same signed calls, and nothing else.

``python -m bench.rawloop FILE.jsonl ENDPOINT REGION CONCURRENCY [asyncio|uvloop]`` reads ``{"vpc_id",
"eni_id", "ips"}`` lines and, in groups of 100 ENIs, does what ``eni-async batch`` does against a simulator whose tasks end at once
(``bench/scale.py``): one ``DescribeNetworkInterfaces`` of the group's 100 ids (the look before the first
submit), one ``UnassignPrivateIpAddresses`` per ENI (at most ``CONCURRENCY`` in flight), then one describe
of the 100 ids again (the look that confirms). Every call is TC3-signed with ``eni_async.signing`` and its
answer parsed with ``json.loads``; an error or an IP still listed makes the exit status 1. Nothing else: no
retries, budgets, journal, outcomes or logs, so its CPU is the floor any client pays for those calls in
Python. It runs on asyncio's own event loop, as a plain loop does; ``uvloop`` runs it on the loop
``eni-async``'s commands take (for comparison: ``bench/scale.py`` reports both). Credentials come from
``TENCENTCLOUD_SECRET_ID``/``TENCENTCLOUD_SECRET_KEY``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from eni_async.signing import tc3_authorization

GROUP = 100


async def main(lines: Iterable[str], endpoint: str, region: str, concurrency: int) -> int:
    secret_id, secret_key = os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]
    host = endpoint.removeprefix("http://")
    semaphore = asyncio.Semaphore(concurrency)
    failures = 0

    async def call(session: aiohttp.ClientSession, action: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params).encode()
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "host": host}
        authorization = tc3_authorization(
            secret_id, secret_key, method="POST", query="", headers=headers, payload=body,
            timestamp=timestamp, service="vpc",
        )  # fmt: skip
        headers |= {
            "Authorization": authorization,
            "X-TC-Action": action,
            "X-TC-Version": "2017-03-12",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": region,
        }
        async with session.post(endpoint + "/", data=body, headers=headers) as answer:
            response: dict[str, Any] = json.loads(await answer.read())["Response"]
        return response

    async def describe(session: aiohttp.ClientSession, enis: list[str]) -> dict[str, set[str]]:
        answer = await call(session, "DescribeNetworkInterfaces", {"NetworkInterfaceIds": enis, "Limit": 100})
        return {
            e["NetworkInterfaceId"]: {ip["PrivateIpAddress"] for ip in e["PrivateIpAddressSet"]}
            for e in answer.get("NetworkInterfaceSet", [])
        }

    async def submit(session: aiohttp.ClientSession, eni: str, ips: list[str]) -> bool:
        async with semaphore:
            params = {
                "NetworkInterfaceId": eni,
                "PrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in ips],
            }
            return "Error" not in await call(session, "UnassignPrivateIpAddresses", params)

    async def group(session: aiohttp.ClientSession, items: list[tuple[str, list[str]]]) -> None:
        nonlocal failures
        enis = [eni for eni, _ in items]
        await describe(session, enis)
        accepted = await asyncio.gather(*(submit(session, eni, ips) for eni, ips in items))
        after = await describe(session, enis)
        failures += accepted.count(False)
        failures += sum(1 for eni, ips in items if set(ips) & after.get(eni, set()))

    async with aiohttp.ClientSession() as session:
        running: set[asyncio.Task[None]] = set()
        batch: list[tuple[str, list[str]]] = []
        for line in lines:
            entry = json.loads(line)
            if not entry["ips"]:
                continue
            batch.append((entry["eni_id"], entry["ips"]))
            if len(batch) == GROUP:
                while len(running) * GROUP >= concurrency:  # as many ENIs in flight as the batch keeps
                    _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.add(asyncio.create_task(group(session, batch)))
                batch = []
        if batch:
            running.add(asyncio.create_task(group(session, batch)))
        await asyncio.gather(*running)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6) or sys.argv[5:] not in ([], ["asyncio"], ["uvloop"]):
        sys.exit("usage: python -m bench.rawloop FILE.jsonl ENDPOINT REGION CONCURRENCY [asyncio|uvloop]")
    factory = None
    if sys.argv[5:] == ["uvloop"]:  # the commands' choice of loop (imported only then: the plain loop's
        from eni_async.cli import loop_factory  # start-up stays what a plain loop's is)

        factory = loop_factory("uvloop")
    with (
        open(sys.argv[1], encoding="utf-8") as handle,  # read as it goes, outside the event loop's code
        asyncio.Runner(loop_factory=factory) as runner,
    ):
        code = runner.run(main(handle, sys.argv[2], sys.argv[3], int(sys.argv[4])))
    sys.exit(code)
