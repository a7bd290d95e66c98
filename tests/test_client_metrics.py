"""Prometheus metrics: the client's families after runs against the in-process simulator, the simulator's
collector, ``--metrics-port`` on 127.0.0.1, and a clear error when prometheus-client is missing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from eni_async.cli import main
from eni_async.client import EniClient
from eni_async.client_metrics import Metrics, endpoint_from
from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.errors import ConfigError
from eni_async.models import TaskStatus
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig, running
from eni_async.simulator.command import add_arguments, serve
from eni_async.simulator.sim_metrics import register_simulator
from tests.batchhelpers import World
from tests.conftest import FAST_TOML


@asynccontextmanager
async def metered(**config: Any) -> AsyncIterator[tuple[World, CollectorRegistry]]:
    """A seeded simulator on 127.0.0.1 and a client with metrics in a fresh registry, on one fake clock."""
    clock = FakeClock()
    defaults: dict[str, Any] = {"enis": 6, "ips_per_eni": 3, "seed": 3, "task_latency": (1.0, 0.3)}
    sim = Simulator(SimulatorConfig(**(defaults | config)), clock=clock)
    registry = CollectorRegistry()
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, poll=PollPolicy(timeout=300.0))
        async with EniClient(sim.credentials, settings, clock=clock, metrics=Metrics(registry)) as client:
            yield World(sim, server.endpoint, client, clock), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist (yet)."""
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_batch_counts_calls_tasks_and_latencies() -> None:
    """After a batch, calls by action and code, tasks by status and both histograms match what was done."""
    async with metered() as (w, registry):
        outcomes = [o async for o in w.client.unassign_many(w.items())]
        requests = w.sim.stats()["requests"]
    assert {o.status for o in outcomes} == {"succeeded"}
    assert value(registry, "eni_async_calls_total", action=UNASSIGN, code="Success") == 6
    for action in (TASK_QUERY, DESCRIBE):
        assert value(registry, "eni_async_calls_total", action=action, code="Success") == requests.get(
            action, 0
        )
    assert value(registry, "eni_async_call_latency_seconds_count", action=UNASSIGN) == 6
    assert value(registry, "eni_async_tasks_total", status="SUCCESS") == 6
    assert value(registry, "eni_async_task_latency_seconds_count") == 6
    assert value(registry, "eni_async_task_latency_seconds_sum") > 0  # tasks take about a fake second
    assert value(registry, "eni_async_tasks_in_flight") == 0
    assert value(registry, "eni_async_throttled_total", action=UNASSIGN) == 0


async def test_throttled_answers_are_counted_with_their_retries() -> None:
    """Each throttled answer counts once as throttled, as a call with its code, and as a retry."""
    async with metered(rate_limits={UNASSIGN: 2}) as (w, registry):
        outcomes = [o async for o in w.client.unassign_many(w.items())]
        throttled = w.sim.stats()["throttled"][UNASSIGN]
    assert {o.status for o in outcomes} == {"succeeded"}
    assert throttled > 0
    assert value(registry, "eni_async_throttled_total", action=UNASSIGN) == throttled
    code = "RequestLimitExceeded"
    assert value(registry, "eni_async_calls_total", action=UNASSIGN, code=code) == throttled
    assert value(registry, "eni_async_retries_total", action=UNASSIGN, reason=code) == throttled


async def test_in_flight_gauge_follows_one_task() -> None:
    """The gauge counts a submitted task until its final state is seen, then returns to 0."""
    async with metered() as (w, registry):
        item = w.items()[0]
        task_id = await w.client.submit_unassign(item.vpc_id, item.eni_id, item.ips)
        assert value(registry, "eni_async_tasks_in_flight") == 1
        state = await w.client.wait_for_task(task_id)
    assert state.status is TaskStatus.SUCCESS
    assert value(registry, "eni_async_tasks_in_flight") == 0
    assert value(registry, "eni_async_task_latency_seconds_count") == 1


async def test_a_poll_deadline_counts_as_timeout_and_leaves_the_gauge() -> None:
    """A task still running at the poll deadline counts as TIMEOUT and no longer as in flight."""
    async with metered(task_latency=(100.0, 0.0)) as (w, registry):
        item = w.items()[0]
        task_id = await w.client.submit_unassign(item.vpc_id, item.eni_id, item.ips)
        with pytest.raises(TimeoutError):
            await w.client.wait_for_task(task_id, timeout=5.0)
    assert value(registry, "eni_async_tasks_total", status="TIMEOUT") == 1
    assert value(registry, "eni_async_tasks_in_flight") == 0
    assert value(registry, "eni_async_task_latency_seconds_count") == 0


async def test_a_task_submitted_elsewhere_is_counted_but_not_timed() -> None:
    """Waiting for a task another client submitted (a resume) counts its status but never drives the gauge
    below 0 nor times it."""
    async with metered() as (w, registry):
        item = w.items()[0]
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as other:
            task_id = await other.submit_unassign(item.vpc_id, item.eni_id, item.ips)
        await w.client.wait_for_task(task_id)
    assert value(registry, "eni_async_tasks_total", status="SUCCESS") == 1
    assert value(registry, "eni_async_tasks_in_flight") == 0
    assert value(registry, "eni_async_task_latency_seconds_count") == 0


async def test_one_registry_holds_one_metrics() -> None:
    """Two ``Metrics`` in one registry clash loudly instead of silently sharing names."""
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


async def test_simulator_collector_reflects_its_stats() -> None:
    """The simulator's collector shows its requests, throttles, faults and tasks as ``stats()`` has them."""
    async with metered(rate_limits={UNASSIGN: 2}) as (w, _):
        registry = CollectorRegistry()
        register_simulator(w.sim, registry)
        _ = [o async for o in w.client.unassign_many(w.items())]
        stats = w.sim.stats()
        for action, count in stats["requests"].items():
            assert value(registry, "eni_sim_requests_total", action=action) == count
        assert value(registry, "eni_sim_throttled_total", action=UNASSIGN) == stats["throttled"][UNASSIGN] > 0
        assert value(registry, "eni_sim_tasks", status="SUCCESS") == 6
        assert value(registry, "eni_sim_tasks", status="RUNNING") == 0
        assert value(registry, "eni_sim_faults_total", kind="drop_after") == 0
        # A scrape from another thread (the /metrics server's) reads the stats on the simulator's loop.
        scraped = await asyncio.to_thread(value, registry, "eni_sim_tasks", status="SUCCESS")
    assert scraped == 6


def test_without_prometheus_client_metrics_ask_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client, ``Metrics()`` is a ``ConfigError`` that names the extra to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install '\.\[metrics\]'"):
        Metrics()


def test_without_prometheus_client_metrics_port_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch --metrics-port`` without prometheus-client exits 2 with a one-line message and no request."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA")
    source = tmp_path / "in.csv"
    source.write_text("vpc_id,eni_id,ip\nvpc-7t9nf3pu,eni-m6dyj72l,10.0.0.2\n")
    endpoint = "http://127.0.0.1:9"  # never contacted
    code = main(["batch", str(source), "--endpoint", endpoint, "--metrics-port", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "--metrics-port" in err
    assert "pip install '.[metrics]'" in err


def free_port() -> int:
    """A port nobody listens on right now, found by binding 127.0.0.1:0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return (await response.read()).decode()


async def test_endpoint_serves_on_loopback_and_stops() -> None:
    """``--metrics-port`` serves the registry at /metrics on 127.0.0.1 by default and stops with the block."""
    port = free_port()
    args = argparse.Namespace(metrics_port=port, metrics_host="127.0.0.1")
    async with endpoint_from(args) as endpoint:
        assert endpoint is not None
        assert endpoint.url == f"http://127.0.0.1:{port}/metrics"
        Metrics(endpoint.registry).call(UNASSIGN, "Success", 0.01)
        text = await scrape(endpoint.url)
    assert f'eni_async_calls_total{{action="{UNASSIGN}",code="Success"}} 1.0' in text
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the endpoint is closed after the block"


async def test_no_metrics_port_means_no_endpoint() -> None:
    """Without ``--metrics-port`` nothing is served and no registry is made."""
    async with endpoint_from(argparse.Namespace(metrics_port=None)) as endpoint:
        assert endpoint is None


async def test_a_port_in_use_is_a_config_error() -> None:
    """A metrics port that cannot be bound is a ``ConfigError`` naming ``--metrics-port``."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = argparse.Namespace(metrics_port=taken.getsockname()[1], metrics_host="127.0.0.1")
        with pytest.raises(ConfigError, match="--metrics-port"):
            async with endpoint_from(args):
                pass


async def test_batch_metrics_port_serves_client_metrics_during_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch --metrics-port`` serves the client's metrics on 127.0.0.1 while the batch runs (the simulator
    holds the four tasks until a scrape has seen them in flight)."""
    sim = Simulator(SimulatorConfig(enis=4, ips_per_eni=2, seed=5, task_latency=(0.0, 0.0)))
    sim.hold_tasks()
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    monkeypatch.setenv("ENI_ASYNC_CONFIG", str(config))
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", sim.credentials.secret_id)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", sim.credentials.secret_key)
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.csv"
    rows = "".join(f"{e['vpc_id']},{e['eni_id']},{ip}\n" for e in enis for ip in e["secondary_ips"])
    source.write_text("vpc_id,eni_id,ip\n" + rows)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with running(sim, host="127.0.0.1", port=0) as server:
        args = ["batch", str(source), "--endpoint", server.endpoint, "--output", str(tmp_path / "out.jsonl")]
        run = asyncio.create_task(
            asyncio.to_thread(main, [*args, "--metrics-port", str(port), "--no-progress"])
        )
        seen = ""
        while not run.done() and "eni_async_tasks_in_flight 4.0" not in seen:
            with contextlib.suppress(aiohttp.ClientConnectionError):  # not listening yet
                seen = await scrape(url)
            await asyncio.sleep(0.02)
        sim.finish_tasks()
        code = await run
    assert code == 0
    assert "eni_async_tasks_in_flight 4.0" in seen, "all four tasks were seen in flight by a scrape"
    assert f'eni_async_calls_total{{action="{UNASSIGN}",code="Success"}} 4.0' in seen
    assert f"serving metrics at {url}" in capsys.readouterr().err


async def test_simulate_metrics_port_serves_the_simulator_counters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``simulate --metrics-port 0`` puts the /metrics URL (127.0.0.1) in its ready line and serves its counters."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    task = asyncio.create_task(serve(parser.parse_args(["--enis", "2", "--metrics-port", "0"])))
    out = ""
    for _ in range(500):
        out += capsys.readouterr().out
        if out.endswith("\n") or task.done():
            break
        await asyncio.sleep(0.01)
    ready = json.loads(out)
    try:
        assert ready["metrics"].startswith("http://127.0.0.1:")
        query = ready["endpoint"] + "/v2/index.php?Action=DescribeVpcTaskResult"
        async with aiohttp.ClientSession() as session, session.get(query) as answer:
            assert answer.status == 200  # an auth error, but a request counted by action
        text = await scrape(ready["metrics"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 'eni_sim_requests_total{action="DescribeVpcTaskResult"} 1.0' in text
    assert 'eni_sim_tasks{status="RUNNING"} 0.0' in text


async def test_each_task_is_counted_once_by_its_final_status() -> None:
    """Tasks read RUNNING and then seen released on the ENI count as SUCCESS, never RUNNING: the tasks
    counted add up to the tasks submitted."""
    async with metered(enis=40, ips_per_eni=1, task_latency=(1.0, 1.5)) as (w, registry):
        outcomes = [o async for o in w.client.unassign_many(w.items())]
        queries = w.sim.stats()["requests"].get(TASK_QUERY, 0)
    assert {o.status for o in outcomes} == {"succeeded"}
    assert queries > 0, "some tasks were asked about while their IPs were still listed"
    counted = {
        s: value(registry, "eni_async_tasks_total", status=s) for s in ("SUCCESS", "FAILED", "RUNNING")
    }
    assert counted == {"SUCCESS": 40, "FAILED": 0, "RUNNING": 0}
