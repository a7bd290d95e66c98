"""How hard the service leans on the API and its journal while many accepted releases wait out an outage.

A script, not a test (``python -m bench.outage_load``): a simulator of ``--items`` ENIs and a service engine
(SQLite journal) share one fake clock; ``--items`` releases are accepted at the start of an outage of
``--seconds`` (``--kind``), then the run goes on until every release ended. It prints, for the outage and for
the whole run: API call attempts the client made (the simulator cannot count refused connections), calls the
simulator received, the rate of each per fake second of the outage, journal writes (the recorder's), and the
process CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from eni_async import EniClient, Settings
from eni_async.client_metrics import Metrics
from eni_async.clock import FakeClock
from eni_async.journal import SqliteJournal
from eni_async.service.engine import Engine
from eni_async.simulator import Simulator, SimulatorConfig, running


class CountingMetrics(Metrics):
    """The client's metrics, also counting every attempt by action."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: Counter[str] = Counter()

    def call(self, action: str, code: str, seconds: float) -> None:
        self.attempts[action] += 1
        super().call(action, code, seconds)


def _count_writes(engine: Engine, writes: Counter[str]) -> None:
    recorder: Any = engine.recorder
    for name in ("submitting", "submitted", "progressed", "finished"):
        method = getattr(recorder, name)

        def counted(*args: Any, _method: Any = method, _name: str = name) -> Any:
            writes[_name] += 1
            return _method(*args)

        setattr(recorder, name, counted)


async def run(kind: str, items: int, seconds: float, dialect: str, where: Path) -> dict[str, Any]:
    clock = FakeClock()
    sim = Simulator(SimulatorConfig(enis=items, ips_per_eni=1, seed=5, task_latency=(1.0, 0.3)), clock=clock)
    metrics = CountingMetrics()
    writes: Counter[str] = Counter()
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, dialect=dialect)
        async with (
            SqliteJournal(where / f"{kind}-{dialect}.db") as journal,
            EniClient(sim.credentials, settings, clock=clock, metrics=metrics) as client,
        ):
            engine = Engine(client, journal, max_unfinished=2 * items)
            await engine.start()
            _count_writes(engine, writes)
            cpu0, wall0 = time.process_time(), time.monotonic()
            start = clock.monotonic()
            sim.outage.start(kind, seconds)
            requests = [
                (e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"])) for e in sim.ground_truth()["enis"]
            ]
            await engine.submit(requests)
            settled = 0  # attempts once the outage is a minute old (the first calls' own retries are over)
            while clock.monotonic() < start + seconds:
                await clock.sleep(1.0)
                if not settled and clock.monotonic() >= start + 60:
                    settled = sum(metrics.attempts.values())
            during: dict[str, Any] = {
                "attempts": sum(metrics.attempts.values()),
                "by_action": dict(metrics.attempts),
                "received": sum(sim.requests.values()),
                "writes": sum(writes.values()),
                "cpu_s": round(time.process_time() - cpu0, 2),
            }
            for _ in range(100_000):
                if not await engine.registry.unfinished_count():
                    break
                await clock.sleep(5.0)
            statuses = {status: n for status, n in (await engine.registry.counts()).items() if n}
            await engine.stop(0)
            return {
                "kind": kind,
                "dialect": dialect,
                "items": items,
                "outage_s": seconds,
                "during": during,
                "attempts_per_s": round(during["attempts"] / seconds, 1),
                "received_per_s": round(during["received"] / seconds, 1),
                "attempts_per_s_after_first_minute": round(
                    (during["attempts"] - settled) / (seconds - 60), 2
                ),
                "writes_per_item_during": round(during["writes"] / items, 2),
                "total_attempts": sum(metrics.attempts.values()),
                "total_writes": dict(writes),
                "ended_at_s": round(clock.monotonic() - start, 1),
                "statuses": dict(statuses),
                "cpu_s": round(time.process_time() - cpu0, 2),
                "wall_s": round(time.monotonic() - wall0, 2),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--kind", default="unreachable")
    parser.add_argument("--dialect", default="v3")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # one line per item and try otherwise
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.kind, args.items, args.seconds, args.dialect, Path(tmp)))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
