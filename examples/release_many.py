"""Release IPs from many ENIs at once and look at each ENI's outcome as it arrives.

    python examples/release_many.py

``unassign_many`` takes any iterable (or async iterable) of ``(vpc_id, eni_id, ips)``, pulls it lazily, runs
at most ``concurrency`` ENIs at once within the account's rate limits, and yields one ``Outcome`` per ENI.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from eni_async import Credentials, EniClient, Settings


async def release_all(
    credentials: Credentials, settings: Settings, items: Iterable[tuple[str, str, list[str]]]
) -> Counter[str]:
    """Release every item; print failures; return the count of outcomes by status."""
    statuses: Counter[str] = Counter()
    async with EniClient(credentials, settings) as client:
        async for outcome in client.unassign_many(items, concurrency=32):
            statuses[outcome.status] += 1
            if outcome.status != "succeeded":
                print(
                    f"{outcome.eni_id}: {outcome.status}: {outcome.error}; still assigned: {outcome.not_released}"
                )
    print(dict(statuses))
    return statuses


async def main() -> None:
    from eni_async.simulator import Simulator, SimulatorConfig, running

    sim = Simulator(SimulatorConfig(enis=50, ips_per_eni=4, task_latency=(0.5, 0.2)))
    async with running(sim) as server:
        items = [(e["vpc_id"], e["eni_id"], e["secondary_ips"]) for e in sim.ground_truth()["enis"]]
        await release_all(sim.credentials, Settings(endpoint=server.endpoint, region=sim.region), items)


if __name__ == "__main__":
    asyncio.run(main())
