"""The release service: how fast ``POST`` accepts, and what the HTTP face costs in makespan against ``batch``.

*Acceptance*: a fresh simulator and ``eni-async serve`` (separate processes); this process posts N one-IP
releases, once in the single form (64 connections at once) and once in the batch form (100 releases per
request, 8 requests at once), and reports releases accepted per second (from the first request sent to the
last 202 read). The engine works on what it accepted meanwhile, as it would in production.

*Makespan*: the world of ``bench/makespan.py`` (2,000 ENIs of one IP, task latency log-normal with median
1 s, limits 1,000 submits/s and 200 queries/s, API 3.0, the client told the same limits, concurrency 2,000).
``batch``: the wall time of ``eni-async batch`` minus the wall time of starting the interpreter and the
command (``eni-async --version``). ``serve``: from the first POST sent (batch form, 100 per request) to the
latest ``finished_at`` the service reports. Each side gets a fresh simulator with the same seed; runs
alternate and the median of ``--repeats`` is kept. Every release must succeed and every IP be gone per
``/_sim/state``.

Reproduce: ``python -m bench.service`` (``--quick`` for N = 400); results in ``bench/results/service.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.makespan import LATENCY, LIMITS, items_of

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
dialect = "v3"
concurrency = {concurrency}
service_max_unfinished = 100000
service_max_body = 16777216
[rate_limits]
unassign = 1000
task_query = 200
describe = 1000
"""
BATCH_SIZE = 100


@contextlib.contextmanager
def serving(sim: procs.Simulator, workdir: Path, *, concurrency: int, name: str) -> Iterator[str]:
    """``eni-async serve`` on a fresh journal for ``sim``; yield its endpoint; SIGTERM it at the end."""
    config = workdir / f"serve-{concurrency}.toml"
    config.write_text(CONFIG.format(concurrency=concurrency))
    journal = workdir / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    env = sim.env() | {"ENI_ASYNC_SERVICE_TOKENS": TOKEN, "ENI_ASYNC_CONFIG": str(config)}
    argv = [sys.executable, "-m", "eni_async", "serve", "--port", "0", "--journal", str(journal)]
    argv += ["--endpoint", sim.endpoint, "--region", sim.region]
    with (workdir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(60):
                raise procs.BenchError("serve not ready after 60s")
        line = proc.stdout.readline()
        if not line:
            raise procs.BenchError(f"serve exited (status {proc.poll()}); see {name}.log")
        yield str(json.loads(line)["endpoint"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def bodies(items: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"vpc_id": v, "eni_id": e, "ips": ips} for v, e, ips in items]


async def post_all(endpoint: str, releases: list[dict[str, Any]], *, batch: bool) -> tuple[float, list[str]]:
    """Post every release (single form, 64 at once; or batch form, 8 requests at once); return the
    seconds from the first send to the last 202, and the release ids."""
    limit = 8 if batch else 64
    connector = aiohttp.TCPConnector(limit=limit)
    gate = asyncio.Semaphore(limit)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: dict[str, Any]) -> list[str]:
            async with gate, http.post(f"{endpoint}/v1/releases", json=body, headers=AUTH) as resp:
                data = await resp.json()
                if resp.status != 202:
                    raise procs.BenchError(f"POST answered {resp.status}: {data}")
            return [r["id"] for r in data["releases"]] if batch else [data["id"]]

        groups = (
            [{"releases": releases[i : i + BATCH_SIZE]} for i in range(0, len(releases), BATCH_SIZE)]
            if batch
            else releases
        )
        started = time.perf_counter()
        ids = [rid for found in await asyncio.gather(*(one(g) for g in groups)) for rid in found]
        return time.perf_counter() - started, ids


async def until_done(endpoint: str, n: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until nothing is unfinished; return every release (newest first)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{endpoint}/readyz") as resp:
                ready = await resp.json()
            if ready["unfinished"] == 0:
                break
            if time.monotonic() > deadline:
                raise procs.BenchError(
                    f"{ready['unfinished']} releases still unfinished after {timeout:.0f}s"
                )
            await asyncio.sleep(0.05)
        releases: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            async with http.get(f"{endpoint}/v1/releases{query}", headers=AUTH) as resp:
                page = await resp.json()
            releases += page["releases"]
            cursor = page["next_cursor"]
            if cursor is None:
                return releases


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def acceptance(n: int, workdir: Path, concurrency: int) -> dict[str, Any]:
    """Releases per second accepted by POST, single form and batch form."""
    argv = procs.simulate_argv(enis=2 * n, latency=LATENCY, limits=LIMITS, seed=3)
    with procs.simulator(argv, log=workdir / "simulator-accept.log") as sim:
        items = items_of(sim.state())
        with serving(sim, workdir, concurrency=concurrency, name="serve-accept") as endpoint:
            single_s, _ = asyncio.run(post_all(endpoint, bodies(items[:n]), batch=False))
            batch_s, _ = asyncio.run(post_all(endpoint, bodies(items[n : 2 * n]), batch=True))
    return {
        "n": n,
        "single_per_s": round(n / single_s, 1),
        "batch_per_s": round(n / batch_s, 1),
        "single_s": round(single_s, 3),
        "batch_s": round(batch_s, 3),
    }


def startup_s() -> float:
    """Wall seconds to start the interpreter and the command and exit (``eni-async --version``)."""
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([*procs.ENI_ASYNC, "--version"], cwd=ROOT, capture_output=True, check=True)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def run_batch(n: int, workdir: Path, concurrency: int, seed: int) -> dict[str, Any]:
    argv = procs.simulate_argv(enis=n, latency=LATENCY, limits=LIMITS, seed=seed)
    with procs.simulator(argv, log=workdir / "simulator-batch.log") as sim:
        items = items_of(sim.state())
        source = workdir / f"items-{n}.jsonl"
        source.write_text("".join(json.dumps(b) + "\n" for b in bodies(items)))
        config = workdir / f"batch-{concurrency}.toml"
        config.write_text(CONFIG.format(concurrency=concurrency))
        env = sim.env() | {"ENI_ASYNC_CONFIG": str(config)}
        cmd = [*procs.ENI_ASYNC, "batch", str(source), "--output", str(workdir / "batch-out.jsonl")]
        cmd += ["--endpoint", sim.endpoint, "--region", sim.region, "--no-progress"]
        started = time.perf_counter()
        with (workdir / "batch.log").open("ab") as log:
            done = subprocess.run(cmd, cwd=ROOT, env=env, stderr=log, stdout=subprocess.DEVNULL, timeout=600)
        wall = time.perf_counter() - started
        outcomes = [json.loads(line) for line in (workdir / "batch-out.jsonl").read_text().splitlines()]
        left = sum(len(e["secondary_ips"]) for e in sim.state()["enis"])
    ok = sum(o["status"] == "succeeded" for o in outcomes)
    return {
        "wall_s": wall,
        "exit": done.returncode,
        "succeeded": ok,
        "ips_left": left,
        "correct": ok == n and left == 0,
    }


def run_serve(n: int, workdir: Path, concurrency: int, seed: int) -> dict[str, Any]:
    argv = procs.simulate_argv(enis=n, latency=LATENCY, limits=LIMITS, seed=seed)
    with procs.simulator(argv, log=workdir / "simulator-serve.log") as sim:
        items = items_of(sim.state())
        with serving(sim, workdir, concurrency=concurrency, name="serve-makespan") as endpoint:
            first = time.time()
            post_s, _ = asyncio.run(post_all(endpoint, bodies(items), batch=True))
            releases = asyncio.run(until_done(endpoint, n, 600))
        left = sum(len(e["secondary_ips"]) for e in sim.state()["enis"])
    last = max(_stamp(r["finished_at"]) for r in releases)
    ok = sum(r["status"] == "succeeded" for r in releases)
    return {
        "makespan_s": last - first,
        "post_s": post_s,
        "succeeded": ok,
        "ips_left": left,
        "correct": ok == n and left == 0,
    }


def makespan(n: int, workdir: Path, concurrency: int, repeats: int, seed: int = 7) -> dict[str, Any]:
    """``batch`` against ``serve`` on the same world, alternating, median of ``repeats``."""
    start = startup_s()
    batch_runs, serve_runs = [], []
    for _ in range(repeats):
        row = run_batch(n, workdir, concurrency, seed)
        row["makespan_s"] = row["wall_s"] - start
        batch_runs.append(row)
        serve_runs.append(run_serve(n, workdir, concurrency, seed))
    batch = statistics.median(r["makespan_s"] for r in batch_runs)
    serve = statistics.median(r["makespan_s"] for r in serve_runs)
    return {
        "n": n,
        "concurrency": concurrency,
        "startup_s": round(start, 3),
        "batch_makespan_s": round(batch, 3),
        "serve_makespan_s": round(serve, 3),
        "serve_over_batch": round(serve / batch, 3),
        "all_correct": all(r["correct"] for r in batch_runs + serve_runs),
        "batch_runs": [{k: r[k] for k in ("makespan_s", "correct")} for r in batch_runs],
        "serve_runs": [{k: r[k] for k in ("makespan_s", "post_s", "correct")} for r in serve_runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="N = 400, one repeat")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["acceptance", "makespan"])
    args = parser.parse_args(argv)
    n, repeats = (400, 1) if args.quick else (args.n, args.repeats)
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    if args.only in (None, "acceptance"):
        result["acceptance"] = acceptance(n, workdir, args.concurrency)
        print(json.dumps({"acceptance": result["acceptance"]}), flush=True)
    if args.only in (None, "makespan"):
        result["makespan"] = makespan(n, workdir, args.concurrency, repeats)
        print(json.dumps({"makespan": result["makespan"]}), flush=True)
    out = RESULTS / ("service-quick.json" if args.quick else "service.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    ok = result.get("makespan", {}).get("all_correct", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
