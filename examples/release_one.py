"""Release secondary IPs from one ENI with a single await.

Run it as it is to try it against the embedded simulator:

    python examples/release_one.py

Against Tencent Cloud, drop the simulator: credentials come from TENCENTCLOUD_SECRET_ID /
TENCENTCLOUD_SECRET_KEY (``load_credentials()``) and the endpoint defaults to Tencent's.
"""

from __future__ import annotations

import asyncio

from eni_async import Credentials, EniClient, Settings, TaskFailedError


async def release(
    credentials: Credentials, settings: Settings, vpc_id: str, eni_id: str, ips: list[str]
) -> list[str]:
    """Release ``ips`` from the ENI and return the IPs released (raises a typed error on failure)."""
    async with EniClient(credentials, settings) as client:
        try:
            result = await client.unassign(vpc_id, eni_id, ips)
        except TaskFailedError as exc:
            print(f"task {exc.task_id} failed: {exc}")
            raise
        print(f"released {list(result.released)} from {eni_id} in task(s) {list(result.task_ids)}")
        return list(result.released)


async def main() -> None:
    from eni_async.simulator import Simulator, SimulatorConfig, running

    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=3, task_latency=(0.5, 0.2)))
    async with running(sim) as server:
        eni = sim.ground_truth()["enis"][0]
        settings = Settings(endpoint=server.endpoint, region=sim.region)
        await release(sim.credentials, settings, eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])


if __name__ == "__main__":
    asyncio.run(main())
