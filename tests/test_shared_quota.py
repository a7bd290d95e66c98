"""Budgets shared through a real Redis: the per-window bound, fair shares, shared throttles, and faults."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eni_async.clock import FakeClock, SystemClock
from eni_async.errors import ConfigError
from eni_async.shared_quota import PROBE_INTERVAL, SharedBudget, SharedBudgets, access_region
from eni_async.throttle import DECREASE, RECOVERY, STRAY_LIMIT, WINDOW
from tests.conftest import RedisServer, _free_port

A = "DescribeVpcTaskResult"


def processes(
    url: str, count: int, clock: FakeClock, *, rate: int = 20, account: str = "acct", region: str = "r"
) -> list[SharedBudgets]:
    """``count`` independent clients (as if in as many processes) on one fake clock, reading its time."""
    return [
        SharedBudgets({A: rate}, clock, url=url, account=account, region=region, server_time=False)
        for _ in range(count)
    ]


async def busy(budgets: list[SharedBudget], clock: FakeClock, until: float) -> list[tuple[float, int]]:
    """Every budget reserves again as soon as its last slot came (always busy); the (send time, who) list.

    Of two slots at the same time, the one reserved first comes first, as its sleep ends first.
    """
    order = itertools.count()
    ready = [(clock.monotonic(), next(order), i) for i in range(len(budgets))]
    sends: list[tuple[float, int]] = []
    while ready:
        at, _, who = heapq.heappop(ready)
        if at > until:
            continue
        clock.advance(at - clock.monotonic())
        delay = await budgets[who].reserve()
        assert delay is not None
        sends.append((clock.monotonic() + delay, who))
        heapq.heappush(ready, (clock.monotonic() + delay, next(order), who))
    return sorted(sends)


def most_in(times: list[float], width: float) -> int:
    """The largest number of ``times`` in any half-open window ``width`` long."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + width - 1e-9) for t in times)


async def test_busy_processes_stay_within_every_window_and_share_it_evenly(redis_server: RedisServer) -> None:
    """Three busy processes together send at most the rate in any second, a tenth in any tenth, in turns."""
    clock = FakeClock()
    clients = processes(redis_server.url, 3, clock)
    sends = await busy([c[A] for c in clients], clock, until=5.0)
    times = [t for t, _ in sends]
    assert most_in(times, 1.0) == 20
    assert most_in(times, 0.1) == 2
    assert len(times) >= math.floor(5.0 / WINDOW * 20)
    counts = [sum(1 for _, who in sends if who == i) for i in range(3)]
    assert max(counts) - min(counts) <= 1
    for c in clients:
        await c.close()


async def test_an_idle_process_costs_the_busy_one_nothing(redis_server: RedisServer) -> None:
    """A process that called once and then idles leaves the whole rate to the one that is busy."""
    clock = FakeClock()
    busy_one, idle_one = processes(redis_server.url, 2, clock)
    assert await idle_one[A].reserve() == 0.0
    clock.advance(WINDOW)
    sends = await busy([busy_one[A]], clock, until=WINDOW + 3.0)
    assert len(sends) >= math.floor(3.0 / WINDOW * 20)
    assert busy_one[A].active == 2  # it saw the other process, which takes nothing while idle
    for c in (busy_one, idle_one):
        await c.close()


async def test_a_throttle_seen_by_one_process_slows_all_and_they_recover_together(
    redis_server: RedisServer,
) -> None:
    """One process's throttle answer lowers the rate every process reserves at; quiet windows restore it."""
    clock = FakeClock()
    first, second = processes(redis_server.url, 2, clock)
    await first[A].reserve()
    for _ in range(STRAY_LIMIT):  # sustained throttles, in both processes in one window: one decrease
        first[A].on_throttled(None)
        second[A].on_throttled(None)
    await first[A].reserve()
    await second[A].reserve()
    slowed = int(20 * DECREASE)
    assert (first[A].rate, second[A].rate) == (slowed, slowed)
    clock.advance(3 * WINDOW + 0.01)
    await second[A].reserve()
    assert second[A].rate == slowed + 3 * max(1, int(20 * RECOVERY))
    first[A].on_throttled(8)  # a stated limit caps everybody at once
    await first[A].reserve()
    await second[A].reserve()
    assert second[A].rate <= 8
    for c in (first, second):
        await c.close()


async def test_throttles_cut_the_shared_rate_only_when_sustained(redis_server: RedisServer) -> None:
    """Throttles below the sustained threshold cost no rate; the one that reaches it, from any process, does."""
    clock = FakeClock()
    first, second = processes(redis_server.url, 2, clock, rate=100)
    for _ in range(20):
        await first[A].reserve()
    for _ in range(STRAY_LIMIT - 1):
        first[A].on_throttled(None)
    await first[A].reserve()
    assert first[A].rate == 100
    second[A].on_throttled(None)
    await second[A].reserve()
    assert second[A].rate == int(100 * DECREASE)
    for c in (first, second):
        await c.close()


async def test_quotas_of_other_accounts_regions_and_actions_are_separate(redis_server: RedisServer) -> None:
    """Only the same action, access region and sub-account share a quota."""
    clock = FakeClock()
    team = "uin-100000000002"
    clients = [
        *processes(redis_server.url, 1, clock, rate=2, account=team),
        *processes(redis_server.url, 1, clock, rate=2, account=team),
        *processes(redis_server.url, 1, clock, rate=2, account="other"),
        *processes(redis_server.url, 1, clock, rate=2, account=team, region="elsewhere"),
    ]
    delays = [await c[A].reserve() for c in clients]
    assert delays == [0.0, pytest.approx(WINDOW / 2), 0.0, 0.0]
    for c in clients:
        await c.close()


async def test_lost_redis_falls_back_to_a_local_share_and_returns(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis lost: a WARNING once, rate / processes seen locally, and Redis again once it answers."""
    clock = FakeClock()
    clients = processes(redis_server.url, 4, clock, rate=20)
    for c in clients:
        await c.open()
        await c[A].reserve()
    mine = clients[0][A]
    await mine.reserve()  # it has now seen all four
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="eni_async"):
        for _ in range(12):
            await mine.acquire()
        assert mine.local
        assert mine.rate == 20 // 4
        [lost] = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
        assert lost.startswith(f"shared quota at {redis_server.url} lost (ConnectionError")
        redis_server.start()
        clock.advance(PROBE_INTERVAL)
        for _ in range(3):
            await mine.acquire()
            clock.advance(PROBE_INTERVAL)
        assert not mine.local
        assert any("is back" in r.getMessage() for r in caplog.records)
    for c in clients:
        await c.close()


async def test_a_lost_redis_below_one_call_per_window_each_spreads_calls_out() -> None:
    """When processes outnumber the rate, the local share is one call per proportionally longer window."""
    clock = FakeClock()
    budgets = SharedBudgets({A: 2}, clock, url="redis://127.0.0.1:1/0", account="a", region="r")
    budget = budgets[A]
    budget.active = 4
    local = budget._fallback()
    assert (local.rate, local.period) == (1, pytest.approx(WINDOW * 2))


async def test_unreachable_redis_at_start_is_a_config_error_naming_the_url() -> None:
    """Opening against a port where nothing listens fails at once, naming the URL but not the password."""
    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    budgets = SharedBudgets({A: 20}, SystemClock(), url=url, account="a", region="r")
    with pytest.raises(ConfigError) as caught:
        await budgets.open()
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("shared_quota: cannot use Redis: ConnectionError")
    assert url.replace("hunter2", "***") in str(caught.value)


async def test_the_password_comes_from_the_url_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that wants a password accepts it from the URL or ``ENI_ASYNC_REDIS_PASSWORD``, never shown."""
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        bare = f"redis://127.0.0.1:{server.port}/0"
        monkeypatch.delenv("ENI_ASYNC_REDIS_PASSWORD", raising=False)
        with pytest.raises(ConfigError) as caught:
            await SharedBudgets({A: 1}, SystemClock(), url=bare, account="a", region="r").open()
        assert "Authentication" in str(caught.value) or "NOAUTH" in str(caught.value)
        for url, env in ((f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", ""), (bare, "s3cret-pw")):
            if env:
                monkeypatch.setenv("ENI_ASYNC_REDIS_PASSWORD", env)
            budgets = SharedBudgets({A: 1}, SystemClock(), url=url, account=f"a{env}", region="r")
            await budgets.open()
            assert await budgets[A].reserve() == 0.0
            assert "s3cret-pw" not in repr(budgets) + repr(budgets[A])
            await budgets.close()
    finally:
        server.stop()


async def test_rediss_verifies_the_servers_certificate(tmp_path: Path) -> None:
    """``rediss://`` speaks TLS: refused against an unknown CA, fine with ``?ssl_ca_certs=FILE``."""
    server = RedisServer(tmp_path, tls=True)
    server.start()
    try:
        untrusted = SharedBudgets({A: 5}, SystemClock(), url=server.url, account="tls", region="r")
        with pytest.raises(ConfigError, match="certificate verify failed"):
            await untrusted.open()
        url = f"{server.url}?ssl_ca_certs={server.ca_file}"
        trusted = SharedBudgets({A: 5}, SystemClock(), url=url, account="tls", region="r")
        await trusted.open()
        assert await trusted[A].reserve() == 0.0
        assert await trusted[A].reserve() == pytest.approx(WINDOW / 5, abs=0.05)
        await trusted.close()
    finally:
        server.stop()


async def test_the_window_runs_on_the_servers_clock_not_the_clients(redis_server: RedisServer) -> None:
    """Two clients whose clocks disagree by hours still space their calls by the server's time."""
    early, late = (
        SharedBudgets({A: 2}, FakeClock(start=start), url=redis_server.url, account="skew", region="r")
        for start in (1_000_000_000.0, 2_000_000_000.0)
    )
    assert await early[A].reserve() == 0.0
    assert await late[A].reserve() == pytest.approx(WINDOW / 2, abs=0.05)
    for c in (early, late):
        await c.close()


async def test_clients_in_one_process_share_in_real_time_on_the_servers_clock(
    redis_server: RedisServer,
) -> None:
    """Three clients on the real clock and the server's TIME stay within 30 per second and finish together."""
    clients = [
        SharedBudgets({A: 30}, SystemClock(), url=redis_server.url, account="rt", region="r")
        for _ in range(3)
    ]
    for c in clients:
        await c.open()
    sent: dict[int, list[float]] = {0: [], 1: [], 2: []}

    async def run(who: int) -> None:
        for _ in range(12):
            await clients[who][A].acquire()
            sent[who].append(time.monotonic())

    await asyncio.gather(*(run(i) for i in range(3)))
    everything = [t for times in sent.values() for t in times]
    assert most_in(everything, 1.0) <= 30
    lasts = [times[-1] for times in sent.values()]
    assert max(lasts) - min(lasts) < 0.25  # in turns: nobody finished a full window before the others
    for c in clients:
        await c.close()


CHILD = """
import asyncio, sys, time
from eni_async.clock import SystemClock
from eni_async.shared_quota import SharedBudgets

async def main():
    budgets = SharedBudgets({"DescribeVpcTaskResult": 30}, SystemClock(), url=sys.argv[1], account="sub",
                            region="r")
    await budgets.open()
    print("ready", flush=True)
    sys.stdin.readline()
    times = []
    for _ in range(12):
        await budgets["DescribeVpcTaskResult"].acquire()
        times.append(time.time())
    await budgets.close()
    print(times, flush=True)

asyncio.run(main())
"""


def test_processes_share_one_quota_within_every_window(redis_server: RedisServer) -> None:
    """Three subprocesses on one quota send at most 30 per second in all, and finish within a slot or two."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_server.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    finally:
        for child in children:
            child.kill()
    everything = [t for times in results for t in times]
    assert len(everything) == 36
    assert most_in(everything, 1.0) <= 30
    assert max(everything) - min(everything) >= 1.0  # 36 sends at 30/s cannot fit in one second
    lasts = [times[-1] for times in results]
    assert max(lasts) - min(lasts) < 0.3


@pytest.mark.parametrize(
    ("endpoint", "region", "expected"),
    [
        ("https://vpc.ap-beijing.tencentcloudapi.com", "ap-guangzhou", "ap-beijing"),
        ("https://vpc.ap-singapore.intl.tencentcloudapi.com", "ap-guangzhou", "ap-singapore"),
        ("https://vpc.na-siliconvalley.tencentcloudapi.com:443", "ap-guangzhou", "na-siliconvalley"),
        ("https://vpc.tencentcloudapi.com", "ap-shanghai", "ap-shanghai"),
        ("https://vpc.api.qcloud.com", "ap-chengdu", "ap-chengdu"),
        ("http://127.0.0.1:8080", "ap-guangzhou", "ap-guangzhou"),
    ],
)
def test_the_access_region_is_the_endpoints_else_the_product_region(
    endpoint: str, region: str, expected: str
) -> None:
    """A regional host names the region whose servers count the calls; on the nearest-region host (and API
    2.0's, or any other) the product region stands in."""
    assert access_region(endpoint, region) == expected
