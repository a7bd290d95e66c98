"""A controller's aiohttp app that hands IP releases to ``eni-async serve`` and answers at once.

The app owns no Tencent credentials and no rate budget: it forwards each request to the release service
with ``ServiceClient`` (an ``Idempotency-Key`` passed through, so a retried request never makes a second
release) and answers 202 with the release id; ``GET /recycle/{id}`` asks the service what happened. Run it
as it is to try it: it starts the embedded simulator and the service in this process, then serves on a free
port of 127.0.0.1 and prints it (``PORT`` below)::

    python examples/aiohttp_service.py
    curl -X POST 127.0.0.1:PORT/recycle -d '{"vpc_id": "...", "eni_id": "...", "ips": ["..."]}'
    curl '127.0.0.1:PORT/recycle/rel-...?wait=10'

In production run ``eni-async serve --journal releases.db`` (see the README) and give this app its URL
and a token from ``ENI_ASYNC_SERVICE_TOKENS``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from eni_async import ServiceClient, ServiceError, Settings

SERVICE = web.AppKey("service", ServiceClient)


def _error(exc: ServiceError) -> web.Response:
    body = {"error": {"code": exc.code, "message": exc.message, "field": exc.field}}
    return web.json_response(body, status=exc.status)


async def recycle(request: web.Request) -> web.Response:
    """Hand one release to the service; 202 with its id, or the service's error."""
    try:
        body = await request.json()
        vpc_id, eni_id, ips = body["vpc_id"], body["eni_id"], body["ips"]
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"error": {"code": "InvalidInput", "message": "expected vpc_id, eni_id, ips"}}, status=400
        )
    key = request.headers.get("Idempotency-Key")
    try:
        release = await request.app[SERVICE].submit(vpc_id, eni_id, ips, idempotency_key=key)
    except ServiceError as exc:
        return _error(exc)
    return web.json_response({"release": release["id"], "status": release["status"]}, status=202)


async def status(request: web.Request) -> web.Response:
    """What happened to a release (``?wait=SECONDS`` holds the answer until it ends)."""
    wait = float(request.query.get("wait", "0") or 0)
    try:
        release = await request.app[SERVICE].get(request.match_info["id"], wait=min(max(wait, 0.0), 60.0))
    except ServiceError as exc:
        return _error(exc)
    return web.json_response(release)


def make_app(service_endpoint: str, token: str | None) -> web.Application:
    """The controller's app: one ``ServiceClient`` opened with the app and closed with it."""
    app = web.Application()

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        async with ServiceClient(service_endpoint, token) as client:
            app[SERVICE] = client
            yield

    app.cleanup_ctx.append(client_context)
    app.router.add_post("/recycle", recycle)
    app.router.add_get("/recycle/{id}", status)
    return app


async def main() -> None:
    from eni_async.service.server import running_service
    from eni_async.simulator import Simulator, SimulatorConfig, running

    sim = Simulator(SimulatorConfig(enis=3, ips_per_eni=2, task_latency=(0.5, 0.2)))
    token = "example-token-change-me-0123456789"
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            running(sim) as server,
            running_service(
                sim.credentials,
                Settings(endpoint=server.endpoint, region=sim.region),
                Path(tmp) / "releases.db",
                tokens=[token],
            ) as service,
        ):
            runner = web.AppRunner(make_app(service.endpoint, token))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()  # a free port: a fixed one may be taken
            port = runner.addresses[0][1]
            print("simulator ENIs:", json.dumps(sim.ground_truth()["enis"], indent=1))
            print(
                f"release service on {service.endpoint}; this app on http://127.0.0.1:{port} (Ctrl-C to stop)"
            )
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
