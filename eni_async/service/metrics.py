"""The service's Prometheus families, beside the client's, in one registry it owns.

``eni_async_service_requests_total{route,code}`` counts answers by route template and HTTP status;
``eni_async_service_releases{status}`` is read from the release registry at scrape time (``refresh``,
awaited by ``/metrics`` before it renders, since a collector cannot await the journal), so it costs nothing
per release. Requires the optional ``metrics`` extra, like every metric of eni_async.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eni_async.metrics import Metrics, prometheus
from eni_async.service.registry import Registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.metrics_core import Metric


class ReleasesCollector:
    """``eni_async_service_releases{status}``: releases now in each status."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._core = prometheus().metrics_core
        self._counts: dict[str, int] = {}

    async def refresh(self) -> None:
        """Read the registry's counts for the next collection."""
        self._counts = await self.registry.counts()

    def __repr__(self) -> str:
        return f"ReleasesCollector({self.registry!r})"

    def describe(self) -> Iterator[Metric]:
        """The family without samples (registering reads nothing)."""
        yield self._core.GaugeMetricFamily(
            "eni_async_service_releases", "Releases by status", labels=["status"]
        )

    def collect(self) -> Iterator[Metric]:
        """The family with the registry's counts."""
        family = self._core.GaugeMetricFamily(
            "eni_async_service_releases", "Releases by status", labels=["status"]
        )
        for status, count in self._counts.items():
            family.add_metric([status], count)
        yield family


@dataclass(frozen=True)
class ServiceMetrics:
    """The registry served at ``/metrics``, the client's families in it, and the request counter."""

    registry: CollectorRegistry
    client: Metrics
    requests: Counter
    collectors: list[ReleasesCollector]

    @classmethod
    def create(cls) -> ServiceMetrics:
        """A fresh registry with the client's families and the request counter."""
        prom = prometheus()
        registry: CollectorRegistry = prom.CollectorRegistry()
        requests = prom.Counter(
            "eni_async_service_requests",
            "HTTP answers by route and status code",
            ["route", "code"],
            registry=registry,
        )
        return cls(registry, Metrics(registry), requests, [])

    def watch(self, releases: Registry) -> None:
        """Export the release counts of ``releases``."""
        collector = ReleasesCollector(releases)
        self.collectors.append(collector)
        self.registry.register(collector)

    async def refresh(self) -> None:
        """Read what the collectors export from the journal (before each scrape)."""
        for collector in self.collectors:
            await collector.refresh()


__all__ = ["ReleasesCollector", "ServiceMetrics"]
