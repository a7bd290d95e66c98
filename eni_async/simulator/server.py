"""``running``: serve a ``Simulator`` on a real socket for the duration of an ``async with`` block.

A thin wrapper over aiohttp's ``AppRunner``/``TCPSite`` with access logs off (the simulator is a benchmark
stage) and a short shutdown grace, so a withheld answer cannot stall shutdown. Port 0 picks a free port;
``endpoint`` reports the one actually bound. It follows the simulator's ``unreachable`` outages: the listening
socket is closed while one lasts (on the simulator's clock) and opened again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from eni_async.simulator.app import Simulator
from eni_async.simulator.outage import UNREACHABLE

SHUTDOWN_GRACE = 1.0


@dataclass(frozen=True)
class RunningServer:
    """A simulator being served: where to reach it."""

    simulator: Simulator
    host: str
    port: int
    endpoint: str  # "http://127.0.0.1:PORT" (or https with an SSL context)


@asynccontextmanager
async def running(
    sim: Simulator, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RunningServer]:
    """Serve ``sim`` on ``host:port`` until the block ends, then stop and close every connection."""
    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    follower: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        started = asyncio.Event()  # registered now: an outage started before the follower runs is seen
        sim.outage.followers.add(started)
        if sim.outage.active() is not None:
            started.set()
        follower = asyncio.create_task(_follow_outages(sim, started, runner, site, host, bound, ssl_context))
        yield RunningServer(sim, host, bound, f"{scheme}://{shown}:{bound}")
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await runner.cleanup()


async def _follow_outages(
    sim: Simulator,
    started: asyncio.Event,
    runner: web.AppRunner,
    site: web.TCPSite,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Close the listening socket for each ``unreachable`` outage and reopen it when the outage ends."""
    outage = sim.outage
    try:
        while True:
            await started.wait()
            started.clear()
            if outage.active() != UNREACHABLE:
                continue
            await site.stop()
            while (left := outage.until - sim.clock.monotonic()) > 0 and outage.active() == UNREACHABLE:
                await sim.clock.sleep(min(left, 1.0))  # in steps: ``end`` may cut the outage short
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
    finally:
        outage.followers.discard(started)
