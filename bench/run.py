"""The one benchmark command: run makespan, cost and scale, print the table, write JSON and the plot.

::

    python bench/run.py            # the full run (about 10 minutes on 2 cores)
    python bench/run.py --quick    # a smoke run with small N (about a minute)
    python bench/run.py --only makespan --only cost

Writes ``bench/results/bench-<time>[-quick].json`` (and a copy as ``latest.json``) and
``bench/results/makespan.png``; logs of the simulators and clients go to ``bench/results/work/``. Exits 1
when a target is missed, 2 when a benchmark could not run. Needs the ``bench`` extra (matplotlib) and the
``test`` extra (the official SDK) installed; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cost, makespan, report, scale
from bench.procs import BenchError

RESULTS = Path(__file__).resolve().parent / "results"
BENCHES = ("makespan", "cost", "scale")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run, not the figures")
    parser.add_argument(
        "--only", action="append", choices=BENCHES, help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--n", type=int, help="ENIs for makespan and cost (default 2,000; quick 400/500)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2000,
        help="eni_async concurrency in the makespan run (default 2000)",
    )
    parser.add_argument(
        "--peer-concurrency",
        type=int,
        default=200,
        help="semaphore of the SDK and aiohttp scripts at the quota (default 200, about the query limit)",
    )
    parser.add_argument(
        "--cost-concurrency", type=int, default=200, help="concurrency of every client in the cost run"
    )
    parser.add_argument("--sizes", help="comma-separated ENI counts for scale (default 10000,100000)")
    parser.add_argument(
        "--repeats",
        type=int,
        help="runs per client for makespan and cost, median reported (default 3; quick 1)",
    )
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = tuple(args.only or BENCHES)
    work = RESULTS / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "when": stamp,
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cpus()},
        "code": _git(),
    }
    try:
        if "makespan" in chosen:
            n = args.n or (400 if args.quick else 2000)
            concurrency = {
                "eni_async": args.concurrency,
                "sdk": args.peer_concurrency,
                "aiohttp": args.peer_concurrency,
            }
            results["makespan"] = makespan.run(
                n=n,
                workdir=work,
                concurrency=concurrency,
                repeats=args.repeats or (1 if args.quick else 3),
                seed=args.seed,
            )
            print(report.makespan_table(results["makespan"]) + "\n", flush=True)
            report.plot_makespan(results["makespan"], RESULTS / "makespan.png")
        if "cost" in chosen:
            n = args.n or (500 if args.quick else 2000)
            repeats = args.repeats or (1 if args.quick else 3)
            results["cost"] = cost.run(
                n=n, workdir=work, concurrency=args.cost_concurrency, repeats=repeats, seed=args.seed
            )
            print(report.cost_table(results["cost"]) + "\n", flush=True)
        if "scale" in chosen:
            default = "2000,20000" if args.quick else "10000,100000"
            sizes = tuple(int(s) for s in (args.sizes or default).split(","))
            results["scale"] = scale.run(sizes=sizes, workdir=work, seed=args.seed)
            print(report.scale_table(results["scale"]) + "\n", flush=True)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if len(results) > 4:
            path = RESULTS / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
            results["targets"] = report.targets(results)
            report.write_json(results, path)
            shutil.copyfile(path, RESULTS / "latest.json")
            print(f"wrote {path.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    print(report.targets_table(results["targets"]))
    return 0 if all(c["met"] for c in results["targets"]) else 1


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _git() -> dict[str, str]:
    """The commit measured, and whether the working tree had changes (the figures describe both)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=RESULTS.parent.parent, capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--", "eni_async")}


if __name__ == "__main__":
    sys.exit(main())
