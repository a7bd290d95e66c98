"""``running``: serve a ``Simulator`` on a real socket for the duration of an ``async with`` block.

A thin wrapper over aiohttp's ``AppRunner``/``TCPSite`` with access logs off (the simulator is a benchmark
stage) and a short shutdown grace, so a withheld answer cannot stall shutdown. Port 0 picks a free port;
``endpoint`` reports the one actually bound.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from eni_async.simulator.app import Simulator

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
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        yield RunningServer(sim, host, bound, f"{scheme}://{shown}:{bound}")
    finally:
        await runner.cleanup()
