"""The reliability drill at full size: a hostile simulator, a batch run straight and a batch killed with SIGKILL.

2,000 ENIs with 1 to 25 secondary IPs each (seeded), against ``eni-async simulate --faults hostile``
(throttling, HTTP 5xx, InternalError, malformed and truncated bodies, connections dropped before and after
the effect, withheld answers, failing, part-failing and long-running tasks), with the simulator's limits
raised tenfold so the drill ends in minutes. Two runs, each on a fresh simulator:

1. straight: ``eni-async batch INPUT --journal J`` to the end;
2. killed: the same batch killed with SIGKILL at several points, each time followed by
   ``eni-async resume J``, until the journal is finished.

Verdict for each run: every ENI's outcome (read from the journal) agrees with the simulator's ground truth;
no item is lost; no IP is reported released while still assigned, none unreleased while gone.

    python bench/drill.py                 # full size (a few minutes)
    python bench/drill.py --enis 200      # quicker

Only 127.0.0.1; every subprocess is bounded by a timeout and killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eni_async.journal import Journal
from eni_async.testing import drill_state, verdict

LIMITS = {"UnassignPrivateIpAddresses": 1000, "DescribeVpcTaskResult": 200, "DescribeNetworkInterfaces": 1000}
CLIENT_CONFIG = """
[rate_limits]
unassign = 1000
task_query = 200
describe = 1000
[timeouts]
read = 5.0
[poll]
timeout = 900.0
"""
CLI = [sys.executable, "-m", "eni_async"]


@contextlib.contextmanager
def simulator(state: Path, seed: int) -> Iterator[dict[str, Any]]:
    """Run ``eni-async simulate`` on 127.0.0.1 and yield its ready line."""
    args = [
        *CLI,
        "simulate",
        "--state",
        str(state),
        "--faults",
        "hostile",
        "--seed",
        str(seed),
        "--port",
        "0",
    ]
    for action, limit in LIMITS.items():
        args += ["--rate-limit", f"{action}={limit}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield ready
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def ground_truth(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/_sim/state", timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def stats(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/_sim/stats", timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def environment(ready: dict[str, Any], config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TENCENTCLOUD_SECRET_ID=ready["secret_id"],
        TENCENTCLOUD_SECRET_KEY=ready["secret_key"],
        ENI_ASYNC_CONFIG=str(config),
    )
    return env


def batch_args(source: Path, journal: Path, endpoint: str, concurrency: int) -> list[str]:
    return [
        *CLI, "batch", str(source), "--journal", str(journal), "--endpoint", endpoint,
        "--concurrency", str(concurrency), "--no-progress", "--output", os.devnull,
    ]  # fmt: skip


def judge(journal_path: Path, endpoint: str, enis: list[str]) -> dict[str, Any]:
    with Journal(journal_path) as journal:
        outcomes = list(journal.finished_outcomes())
        counts = journal.counts()
    result = verdict(outcomes, ground_truth(endpoint), enis).summary()
    result["journal"] = counts
    injected = stats(endpoint)
    result["faults_injected"] = sum(injected["faults"].values())
    result["requests"] = sum(injected["requests"].values())
    return result


def run_straight(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "straight.journal"
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        subprocess.run(
            batch_args(source, journal, ready["endpoint"], args.concurrency),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        result = judge(journal, ready["endpoint"], enis)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def run_killed(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "killed.journal"
    kills = 0
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        command = batch_args(source, journal, ready["endpoint"], args.concurrency)
        for delay in args.kill_after:
            proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            with Journal(journal) as j:
                print(f"  killed after {delay}s: journal {j.counts()}", flush=True)
            command = [*CLI, "resume", str(journal), "--endpoint", ready["endpoint"], "--no-progress",
                       "--concurrency", str(args.concurrency), "--output", os.devnull]  # fmt: skip
        subprocess.run(command, env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False)
        result = judge(journal, ready["endpoint"], enis)
    result["kills"] = kills
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enis", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--kill-after", type=float, nargs="+", default=[4.0, 6.0, 8.0], metavar="S")
    parser.add_argument("--timeout", type=float, default=1200.0, help="bound on each batch or resume run")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--confirm", choices=("eni", "task"), default="eni", help="how releases are confirmed (default eni)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="eni-drill-") as tmp:
        work = Path(tmp)
        world = drill_state(args.enis, seed=args.seed)
        state = work / "state.json"
        state.write_text(json.dumps(world))
        source = work / "input.jsonl"
        with source.open("w") as out:
            for eni in world["enis"]:
                out.write(
                    json.dumps({k: eni[k] for k in ("vpc_id", "eni_id")} | {"ips": eni["secondary_ips"]})
                    + "\n"
                )
        (work / "client.toml").write_text(f'confirm = "{args.confirm}"\n' + CLIENT_CONFIG)
        enis = [e["eni_id"] for e in world["enis"]]
        ips = sum(len(e["secondary_ips"]) for e in world["enis"])
        print(
            f"drill: {len(enis)} ENIs, {ips} IPs, hostile faults, limits x10, confirm = {args.confirm}",
            flush=True,
        )
        results = {"straight": run_straight(work, state, source, enis, args)}
        print(f"straight: {json.dumps(results['straight'])}", flush=True)
        results["killed"] = run_killed(work, state, source, enis, args)
        print(f"killed:   {json.dumps(results['killed'])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = all(r["mismatches"] == 0 and r["lost_items"] == 0 for r in results.values())
    print(
        f"verdict: {'PASS' if ok else 'FAIL'}; mismatches: {sum(r['mismatches'] for r in results.values())}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
