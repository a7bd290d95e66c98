"""An aiohttp service that releases IPs on request, sharing one ``EniClient`` across all handlers.

    python examples/aiohttp_service.py      # serves on 127.0.0.1:8080 against the embedded simulator
    curl -X POST 127.0.0.1:8080/release -d '{"vpc_id": "...", "eni_id": "...", "ips": ["..."]}'

One client per process: it holds the HTTP session and the rate budgets, so every request of the service
shares the account's limits. Bad input is a 400 (before any call to Tencent), an API or task failure a 502.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from aiohttp import web

from eni_async import Credentials, EniAsyncError, EniClient, InputError, Settings, error_info

CLIENT = web.AppKey("client", EniClient)


async def release(request: web.Request) -> web.Response:
    """POST /release {"vpc_id", "eni_id", "ips"}: release the IPs and answer when the task has ended."""
    try:
        body = await request.json()
        vpc_id, eni_id, ips = body["vpc_id"], body["eni_id"], body["ips"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "expected JSON with vpc_id, eni_id and ips"}, status=400)
    try:
        result = await request.app[CLIENT].unassign(vpc_id, eni_id, ips)
    except InputError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except EniAsyncError as exc:
        return web.json_response({"error": error_info(exc)}, status=502)
    return web.json_response({"released": list(result.released), "task_ids": list(result.task_ids)})


def make_app(credentials: Credentials, settings: Settings) -> web.Application:
    """The service: one EniClient opened with the app and closed with it."""
    app = web.Application()

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        async with EniClient(credentials, settings) as client:
            app[CLIENT] = client
            yield

    app.cleanup_ctx.append(client_context)
    app.router.add_post("/release", release)
    return app


async def main() -> None:
    from eni_async.simulator import Simulator, SimulatorConfig, running

    sim = Simulator(SimulatorConfig(enis=3, ips_per_eni=2, task_latency=(0.5, 0.2)))
    async with running(sim) as server:
        app = make_app(sim.credentials, Settings(endpoint=server.endpoint, region=sim.region))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 8080).start()
        print("simulator ENIs:", json.dumps(sim.ground_truth()["enis"], indent=1))
        print("serving on http://127.0.0.1:8080/release (Ctrl-C to stop)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
