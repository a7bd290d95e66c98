"""Many replicas on one account: four ``eni-async batch`` processes sharing one quota through Redis, or not.

One simulator subprocess (``eni-async simulate``) at Tencent's real limits (100 unassigns, 20 task queries,
100 describes per second per sub-account and region), ``--enis`` one-IP ENIs (600 by default), released by:

1. ``one``: one process doing all of them (the baseline makespan);
2. ``shared``: ``--processes`` processes (4), each a slice, all with ``--shared-quota redis://...``;
3. ``separate``: the same processes without Redis, each assuming it has the whole quota;
4. ``one-shared``: one process with the shared quota (what Redis costs a lone process).

Each run gets a fresh simulator with the same seed. For each: the makespan (first start to last exit), the
throttled answers the simulator sent, the client's "throttled" WARNING lines, and the verdict of every
outcome against the simulator's ground truth. The targets: ``shared`` has 0 throttled answers, every outcome
right, and a makespan within 1.2 x ``one``'s.

    python bench/replicas.py                       # the full run (a few minutes)
    python bench/replicas.py --enis 80 --runs shared separate   # a quick look

Only 127.0.0.1: the simulator and a ``redis-server`` (Debian's package) on free ports, both stopped at the
end; every child has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from eni_async.testing import simulator_process, verdict

CLI = [sys.executable, "-m", "eni_async"]
RUNS = ("one", "shared", "separate", "one-shared")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on 127.0.0.1; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def simulator(enis: int, seed: int) -> AbstractContextManager[dict[str, Any]]:
    """``eni-async simulate`` at the default (Tencent's) limits; yields its ready line."""
    return simulator_process("--enis", str(enis), "--ips-per-eni", "1", "--seed", str(seed))


def fetch(endpoint: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}{path}", timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def run(name: str, work: Path, args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """One run on a fresh simulator: split the ENIs, start the processes together, wait, judge."""
    processes = 1 if name.startswith("one") else args.processes
    shared = name in ("shared", "one-shared")
    with simulator(args.enis, args.seed) as ready:
        endpoint = ready["endpoint"]
        enis = fetch(endpoint, "/_sim/state")["enis"]
        env = dict(os.environ)
        env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
        env["ENI_ASYNC_STS_ENDPOINT"] = endpoint  # the shared quota asks STS who the keys are
        env.pop("ENI_ASYNC_CONFIG", None)
        children = []
        started = time.monotonic()
        for i in range(processes):
            source = work / f"{name}-{i}.jsonl"
            source.write_text(
                "".join(
                    json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]})
                    + "\n"
                    for e in enis[i::processes]
                )
            )
            command = [
                *CLI, "batch", str(source), "--endpoint", endpoint, "--region", ready["region"],
                "--output", str(work / f"{name}-{i}.out"), "--no-progress",
            ]  # fmt: skip
            if shared:
                command += ["--shared-quota", redis_url]
            stderr = (work / f"{name}-{i}.err").open("w")
            children.append((subprocess.Popen(command, env=env, stderr=stderr), stderr))
        codes = []
        for child, stderr in children:
            codes.append(child.wait(timeout=args.timeout))
            stderr.close()
        makespan = time.monotonic() - started
        outcomes = [
            json.loads(line)
            for i in range(processes)
            for line in (work / f"{name}-{i}.out").read_text().splitlines()
        ]
        judged = verdict(outcomes, fetch(endpoint, "/_sim/state"), [e["eni_id"] for e in enis]).summary()
        stats = fetch(endpoint, "/_sim/stats")
    warnings = sum((work / f"{name}-{i}.err").read_text().count("throttled on") for i in range(processes))
    return {
        "run": name,
        "processes": processes,
        "shared_quota": shared,
        "makespan_s": round(makespan, 1),
        "exit_codes": codes,
        "throttled_answers": sum(stats["throttled"].values()),
        "throttle_warnings": warnings,
        "requests": stats["requests"],
        "mismatches": judged["mismatches"],
        "lost_items": judged["lost_items"],
        "statuses": judged.get("statuses"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enis", type=int, default=600)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on each batch process")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="eni-replicas-") as tmp, redis_server(Path(tmp)) as url:
        for name in args.runs:
            results[name] = run(name, Path(tmp), args, url)
            print(json.dumps(results[name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    verdicts = []
    if "shared" in results:
        shared = results["shared"]
        ok = shared["throttled_answers"] == 0 and shared["mismatches"] == 0 and shared["lost_items"] == 0
        if "one" in results:
            ratio = shared["makespan_s"] / results["one"]["makespan_s"]
            print(f"shared makespan / one process: {ratio:.2f} (target <= 1.2)")
            ok = ok and ratio <= 1.2
        verdicts.append(ok)
        print(f"verdict: {'PASS' if ok else 'FAIL'}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
