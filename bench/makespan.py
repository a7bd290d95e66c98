"""Makespan at the quota: how close each client gets to the floor the account's rate limits allow.

The world: N ENIs with one secondary IP each (default 2,000), task latency log-normal with median 1.0 s and
sigma 0.5, limits raised tenfold over Tencent's (1,000/s submit, 200/s task query, 1,000/s describe). For N
tasks of one query each the floor is ``max(N / 1000, N / 200) + 1.0`` seconds (11 s for 2,000): the query
budget decides, plus one median latency. Every client gets a fresh simulator with the same seed, so the
same ENIs, the same task latencies and the same limits.

Figures per client: makespan (first submit to last completion, measured in the client), makespan / floor,
queries per task (the simulator's DescribeVpcTaskResult count over N, throttled ones included), throttled
answers (all actions), correctness (every seeded IP gone per ``/_sim/state`` and every ENI reported
succeeded), client and simulator CPU seconds, and the completion times for the plot.

Reproduce: ``python bench/run.py --only makespan`` (``--quick`` for N = 400).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import procs

LIMITS = {
    "UnassignPrivateIpAddresses": 1000,
    "DescribeVpcTaskResult": 200,
    "DescribeNetworkInterfaces": 1000,
    "AssignPrivateIpAddresses": 1000,
}
LATENCY = "1.0,0.5"
MEDIAN_LATENCY = 1.0
CLIENT_LIMITS = "1000,200,1000"  # what eni_async is told; the peers have no rate budget
CLIENTS = ("eni_async", "sdk", "aiohttp")


def floor_s(n: int) -> float:
    """The fastest any client can go: the binding rate limit, plus one median task latency."""
    return max(n / LIMITS["UnassignPrivateIpAddresses"], n / LIMITS["DescribeVpcTaskResult"]) + MEDIAN_LATENCY


def items_of(state: dict[str, Any]) -> list[list[Any]]:
    """``[vpc_id, eni_id, [ips]]`` for every seeded ENI that has secondary IPs."""
    return [[e["vpc_id"], e["eni_id"], e["secondary_ips"]] for e in state["enis"] if e["secondary_ips"]]


def ips_left(state: dict[str, Any]) -> int:
    return sum(len(e["secondary_ips"]) for e in state["enis"])


def run_client(
    client: str,
    *,
    sim: procs.Simulator,
    workdir: Path,
    concurrency: int,
    limits: str,
    timeout: float,
) -> dict[str, Any]:
    """Run one client against ``sim`` (all its seeded IPs) and return the figures both sides saw."""
    items = items_of(sim.state())
    items_file = workdir / f"items-{len(items)}.json"
    if not items_file.exists():
        items_file.write_text(json.dumps(items), encoding="utf-8")
    out = workdir / f"result-{client}.json"
    out.unlink(missing_ok=True)
    with (workdir / f"client-{client}.log").open("ab") as log:
        usage = procs.run_measured(
            [
                sys.executable,
                "-m",
                "bench.clients",
                "--client",
                client,
                "--endpoint",
                sim.endpoint,
                "--region",
                sim.region,
                "--items",
                str(items_file),
                "--out",
                str(out),
                "--concurrency",
                str(concurrency),
                "--limits",
                limits,
            ],
            timeout=timeout,
            env=sim.env(),
            stderr=log,
        )
    if not out.exists():
        raise procs.BenchError(f"{client} wrote no result (exit {usage.returncode}); see {log.name}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    stats = sim.stats()
    left = ips_left(sim.state())
    n = len(items)
    return {
        "client": client,
        "n": n,
        "concurrency": concurrency,
        "exit": usage.returncode,
        "succeeded": result["succeeded"],
        "ips_left": left,
        "correct": left == 0 and result["succeeded"] == n,
        "makespan_s": result["makespan_s"],
        "queries_per_task": stats["requests"].get("DescribeVpcTaskResult", 0) / n,
        "requests": stats["requests"],
        "throttled": sum(stats["throttled"].values()),
        "throttled_by_action": stats["throttled"],
        "client_errors": result["errors"],
        "work_cpu_s": result["work_cpu_s"],
        "process_cpu_s": usage.cpu_s,
        "process_wall_s": usage.wall_s,
        "maxrss_mib": usage.maxrss_mib,
        "extra": result["extra"],
        "completions": sorted(result["completions"]),
    }


def run(
    *,
    n: int,
    workdir: Path,
    concurrency: dict[str, int],
    repeats: int = 1,
    clients: tuple[str, ...] = CLIENTS,
    seed: int = 7,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run every client ``repeats`` times on a fresh simulator of ``n`` ENIs; keep each client's median run.

    Runs alternate between clients (a, b, c, a, b, c, ...) so that drift in the machine's load spreads over
    all of them. The median is by makespan; every run's headline figures are kept under ``runs``.
    """
    argv = procs.simulate_argv(enis=n, latency=LATENCY, limits=LIMITS, seed=seed)
    floor = floor_s(n)
    runs: dict[str, list[dict[str, Any]]] = {client: [] for client in clients}
    for _ in range(repeats):
        for client in clients:
            with procs.simulator(argv, log=workdir / "simulator.log") as sim:
                row = run_client(
                    client,
                    sim=sim,
                    workdir=workdir,
                    concurrency=concurrency[client],
                    limits=CLIENT_LIMITS if client == "eni_async" else "0,0,0",
                    timeout=timeout,
                )
            row["floor_s"] = floor
            row["makespan_over_floor"] = row["makespan_s"] / floor
            row["simulator_cpu_s"] = sim.usage.cpu_s if sim.usage else None
            runs[client].append(row)
    rows: dict[str, Any] = {}
    for client, done in runs.items():
        ordered = sorted(done, key=lambda r: r["makespan_s"])
        median = dict(ordered[(len(ordered) - 1) // 2])
        median["runs"] = [
            {
                key: r[key]
                for key in ("makespan_s", "makespan_over_floor", "queries_per_task", "throttled", "correct")
            }
            for r in done
        ]
        median["all_correct"] = all(r["correct"] for r in done)
        median["worst_makespan_over_floor"] = ordered[-1]["makespan_over_floor"]
        median["max_throttled"] = max(r["throttled"] for r in done)
        rows[client] = median
    return {
        "n": n,
        "floor_s": floor,
        "latency": LATENCY,
        "limits": LIMITS,
        "seed": seed,
        "repeats": repeats,
        "clients": rows,
    }
