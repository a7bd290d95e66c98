"""The service's Prometheus families, beside the client's, in one registry it owns.

``eni_async_service_requests_total{route,code}`` counts answers by route template and HTTP status;
``eni_async_service_releases{status}`` is read from the release registry at scrape time (``refresh``,
awaited by ``/metrics`` before it renders, since a collector cannot await the journal), so it costs nothing
per release. This replica's leases (D27): ``eni_async_service_replica_info{replica}`` (its owner name in the
journal), ``eni_async_service_leases_held`` and the counters ``eni_async_service_leases_{claimed,adopted,
renewed,lost,given_back}_total``, ``eni_async_service_releases_adopted_total`` (releases taken over
part-done) and ``eni_async_service_lease_journal_failures_total`` (claims and renewals the journal did not
answer). Requires the optional ``metrics`` extra, like every metric of eni_async.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eni_async.metrics import Metrics, prometheus
from eni_async.service.leases import Leases
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


# Counter family -> (help, the ``LeaseCounts`` field it reads).
LEASE_COUNTERS = {
    "eni_async_service_leases_claimed": ("ENIs this replica claimed while free", "claimed"),
    "eni_async_service_leases_adopted": ("ENIs this replica took over from an expired lease", "adopted"),
    "eni_async_service_leases_renewed": ("Lease renewals this replica made", "renewed"),
    "eni_async_service_leases_lost": ("Leases this replica lost (moved, or not renewed in time)", "lost"),
    "eni_async_service_leases_given_back": (
        "Leases this replica gave back (work done, or stopping)",
        "given_back",
    ),
    "eni_async_service_releases_adopted": ("Releases this replica took over part-done", "adopted_releases"),
    "eni_async_service_lease_journal_failures": (
        "Claims and renewals the journal did not answer",
        "journal_failures",
    ),
}


class LeasesCollector:
    """This replica's name, leases held and lease counters (read from ``Leases`` at collection)."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._core = prometheus().metrics_core

    def __repr__(self) -> str:
        return f"LeasesCollector({self.leases!r})"

    def describe(self) -> Iterator[Metric]:
        """The families without samples."""
        yield from self._families(samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families as the leases stand."""
        yield from self._families(samples=True)

    def _families(self, *, samples: bool) -> Iterator[Metric]:
        core = self._core
        info = core.GaugeMetricFamily(
            "eni_async_service_replica_info",
            "This replica's name in the journal's leases",
            labels=["replica"],
        )
        held = core.GaugeMetricFamily("eni_async_service_leases_held", "ENIs this replica holds a lease on")
        if samples:
            info.add_metric([self.leases.owner], 1)
            held.add_metric([], len(self.leases.held))
        yield from (info, held)
        for name, (text, attribute) in LEASE_COUNTERS.items():
            counter = core.CounterMetricFamily(name, text)
            if samples:
                counter.add_metric([], getattr(self.leases.counts, attribute))
            yield counter


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

    def watch_leases(self, leases: Leases) -> None:
        """Export this replica's leases."""
        self.registry.register(LeasesCollector(leases))

    async def refresh(self) -> None:
        """Read what the collectors export from the journal (before each scrape)."""
        for collector in self.collectors:
            await collector.refresh()


__all__ = ["LeasesCollector", "ReleasesCollector", "ServiceMetrics"]
