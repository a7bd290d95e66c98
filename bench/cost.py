"""Client cost: CPU seconds of the client process per released ENI, rate limits off, tasks ending at once.

With no limits and no latency the run is bound by CPU, and the client's share is what a library adds over
the bytes it has to move. Each client releases N ENIs of one IP (default 2,000; one submit and, since tasks
end at once, normally one query each) at the same concurrency, against a fresh simulator with the same
seed, ``repeats`` times; the median is reported. ``work_cpu_per_eni_ms`` is ``time.process_time`` between
the first submit and the last completion, inside the client (imports and start-up excluded);
``process_cpu_per_eni_ms`` is the whole process from ``wait4`` (start-up included). Raw aiohttp is the
floor: the least Python that can do the job.

Targets: eni_async at most 0.5 x the official async SDK and at most 1.5 x raw aiohttp (work CPU).

Reproduce: ``python bench/run.py --only cost`` (``--quick`` for N = 500, one repeat).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import procs
from bench.makespan import CLIENTS, run_client

LIMITS_OFF = dict.fromkeys(
    (
        "UnassignPrivateIpAddresses",
        "DescribeVpcTaskResult",
        "DescribeNetworkInterfaces",
        "AssignPrivateIpAddresses",
    ),
    0,
)


def run(
    *,
    n: int,
    workdir: Path,
    concurrency: int,
    repeats: int,
    clients: tuple[str, ...] = CLIENTS,
    seed: int = 7,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Median CPU per ENI of each client over ``repeats`` runs."""
    argv = procs.simulate_argv(enis=n, latency="0", limits=LIMITS_OFF, seed=seed)
    rows: dict[str, Any] = {}
    for client in clients:
        runs = []
        for _ in range(repeats):
            with procs.simulator(argv, log=workdir / "simulator.log") as sim:
                row = run_client(
                    client, sim=sim, workdir=workdir, concurrency=concurrency, limits="0,0,0", timeout=timeout
                )
            row["simulator_cpu_s"] = sim.usage.cpu_s if sim.usage else None
            runs.append(row)
        rows[client] = {
            "n": n,
            "concurrency": concurrency,
            "repeats": repeats,
            "correct": all(r["correct"] for r in runs),
            "work_cpu_per_eni_ms": statistics.median(1000 * r["work_cpu_s"] / n for r in runs),
            "process_cpu_per_eni_ms": statistics.median(1000 * r["process_cpu_s"] / n for r in runs),
            "makespan_s": statistics.median(r["makespan_s"] for r in runs),
            "queries_per_task": statistics.median(r["queries_per_task"] for r in runs),
            "simulator_cpu_s": statistics.median(r["simulator_cpu_s"] or 0.0 for r in runs),
            "runs": [{k: v for k, v in r.items() if k != "completions"} for r in runs],
        }
    return {"n": n, "concurrency": concurrency, "clients": rows}
