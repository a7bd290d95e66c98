"""The simulator's Prometheus families, read from ``Simulator.stats()`` when scraped.

The simulator pays nothing per request: ``SimulatorCollector`` reads the counters at scrape time, and since
``/metrics`` is served from a thread, the reading is made on the simulator's event loop. Families
(``eni_sim_``): ``requests_total{action}``, ``throttled_total{action}``, ``faults_total{kind}`` and
``tasks{status}`` (tasks now in each status). It shares no code with the client's metrics, only the serving
helpers of ``eni_async.prometheus``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eni_async.prometheus import SCRAPE_TIMEOUT, prometheus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from eni_async.simulator.app import Simulator


class SimulatorCollector:
    """Export a simulator's counters, read from ``Simulator.stats()`` at scrape time.

    ``loop`` is the event loop the simulator runs on (the running one when created inside it); a scrape
    from another thread reads the stats there, so it never races the request pipeline.
    """

    def __init__(self, sim: Simulator, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.sim = sim
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self._prom = prometheus()

    def __repr__(self) -> str:
        return f"SimulatorCollector({self.sim!r})"

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (so registering never reads the simulator)."""
        return iter(self._families({"requests": {}, "throttled": {}, "faults": {}, "tasks": {}}))

    def collect(self) -> Iterator[Metric]:
        """The families with the simulator's current counts."""
        return iter(self._families(self._stats()))

    def _stats(self) -> dict[str, Any]:
        loop = self.loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop or loop.is_closed() or not loop.is_running():
            return self.sim.stats()

        async def read() -> dict[str, Any]:
            return self.sim.stats()

        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=SCRAPE_TIMEOUT)

    def _families(self, stats: dict[str, Any]) -> list[Metric]:
        core = self._prom.metrics_core
        requests = core.CounterMetricFamily("eni_sim_requests", "Requests by action", labels=["action"])
        throttled = core.CounterMetricFamily(
            "eni_sim_throttled", "Requests refused by the rate limit, by action", labels=["action"]
        )
        faults = core.CounterMetricFamily("eni_sim_faults", "Faults injected, by kind", labels=["kind"])
        tasks = core.GaugeMetricFamily("eni_sim_tasks", "Tasks now in each status", labels=["status"])
        for family, key in ((requests, "requests"), (throttled, "throttled"), (faults, "faults")):
            for label, value in sorted(stats[key].items()):
                family.add_metric([label], value)
        for status, count in sorted(stats["tasks"].items()):
            tasks.add_metric([status], count)
        return [requests, throttled, faults, tasks]


def register_simulator(sim: Simulator, registry: CollectorRegistry) -> SimulatorCollector:
    """Register a ``SimulatorCollector`` for ``sim`` in ``registry`` (call it on the simulator's loop)."""
    collector = SimulatorCollector(sim)
    registry.register(collector)
    return collector


__all__ = ["SimulatorCollector", "register_simulator"]
