"""The reliability drill at full size: a hostile simulator, a batch run straight and a batch killed with SIGKILL.

2,000 ENIs with 1 to 25 secondary IPs each (seeded), against ``eni-async simulate --faults hostile``
(throttling, HTTP 5xx, InternalError, malformed and truncated bodies, connections dropped before and after
the effect, withheld answers, failing, part-failing and long-running tasks), with the simulator's limits
raised tenfold so the drill ends in minutes. Four runs, each on a fresh simulator:

1. straight: ``eni-async batch INPUT --journal J`` to the end;
2. killed: the same batch killed with SIGKILL at several points (the batch, then each resume in turn), each
   time followed by ``eni-async resume J``, until the journal is finished;
3. load-killed: the batch reads its input from a pipe and is killed with SIGKILL while loading it (the pipe
   is held open, so the kill surely lands inside the load); the journal must hold no item and ``resume``
   must refuse (exit 2); then the batch runs again to the end;
4. sigterm: the batch is sent SIGTERM mid-run; it must exit 143 having written an outcome for every item it
   had finished or had in flight (IPs of unestablished fate under ``unknown``), then ``resume`` finishes.

Four more runs (``bench/drill_faults.py``): credentials lost mid-batch (the metadata service's short-lived
keys, the metadata service going away), kills during slow tasks, a damaged CSV, and a full disk under
``serve``.

Verdict for each run: the final ``resume --output`` file (or the straight batch's output) alone holds one
outcome per ENI, and every outcome, in that file and in the journal, agrees with the simulator's ground
truth: no item lost, no IP reported released while still assigned, none unreleased while gone.

    python bench/drill.py                 # full size (a few minutes)
    python bench/drill.py --enis 200      # quicker
    python bench/drill.py --only csv-damage disk-full    # some runs only

Only 127.0.0.1; every subprocess is bounded by a timeout and killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from eni_async.journal import SqliteJournal
from eni_async.testing import drill_state, simulator_process, verdict

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


def simulator(
    state: Path, seed: int, *extra: str, faults: str = "hostile"
) -> AbstractContextManager[dict[str, Any]]:
    """Run ``eni-async simulate`` on 127.0.0.1 (with ``faults`` and any ``extra`` options, the drill's raised
    limits) and yield its ready line."""
    args = ["--state", str(state), "--faults", faults, "--seed", str(seed), *extra]
    for action, limit in LIMITS.items():
        args += ["--rate-limit", f"{action}={limit}"]
    return simulator_process(*args)


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


def batch_args(
    source: Path | str, journal: Path, endpoint: str, concurrency: int, output: Path | str = os.devnull
) -> list[str]:
    return [
        *CLI, "batch", str(source), "--journal", str(journal), "--endpoint", endpoint,
        "--concurrency", str(concurrency), "--no-progress", "--output", str(output),
    ]  # fmt: skip


def resume_args(journal: Path, endpoint: str, concurrency: int, output: Path | str = os.devnull) -> list[str]:
    return [*CLI, "resume", str(journal), "--endpoint", endpoint, "--no-progress",
            "--concurrency", str(concurrency), "--output", str(output)]  # fmt: skip


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_journal(path: Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """A journal's counts and finished outcomes, read without its lock."""

    async def read() -> tuple[dict[str, int], list[dict[str, Any]]]:
        async with SqliteJournal(path, read_only=True) as journal:
            return await journal.counts(), [data async for data in journal.finished_outcomes()]

    return asyncio.run(read())


def judge(journal_path: Path, endpoint: str, enis: list[str], output: Path | None = None) -> dict[str, Any]:
    """Outcomes against the ground truth: the output file's when given (it must hold every item), the
    journal's otherwise; both must agree with the truth."""
    counts, outcomes = read_journal(journal_path)
    truth = ground_truth(endpoint)
    result = verdict(read_lines(output) if output else outcomes, truth, enis).summary()
    if output is not None:  # the journal must tell the same story as the file
        result["journal_mismatches"] = verdict(outcomes, truth, enis).mismatches
        result["mismatches"] += result["journal_mismatches"]
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
        output = work / "straight.jsonl"
        subprocess.run(
            batch_args(source, journal, ready["endpoint"], args.concurrency, output),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        result = judge(journal, ready["endpoint"], enis, output)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def kill_and_resume(
    first: list[str],
    again: list[str],
    env: dict[str, str],
    delays: list[float],
    *,
    after: Callable[[float], None] | None = None,
) -> int:
    """Run ``first`` (then ``again`` each time after), SIGKILLing it once each of ``delays`` has passed
    (``after(delay)`` then, when given); how many runs were killed (one that ended sooner is not)."""
    kills = 0
    command = first
    for delay in delays:
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if after is not None:
            after(delay)
        command = again
    return kills


def run_killed(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "killed.journal"
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        first = batch_args(source, journal, ready["endpoint"], args.concurrency)
        again = resume_args(journal, ready["endpoint"], args.concurrency)
        kills = kill_and_resume(
            first, again, env, args.kill_after,
            after=lambda delay: print(f"  killed after {delay}s: journal {read_journal(journal)[0]}", flush=True),
        )  # fmt: skip
        output = work / "killed.jsonl"
        subprocess.run(
            resume_args(journal, ready["endpoint"], args.concurrency, output),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        result = judge(journal, ready["endpoint"], enis, output)
    result["kills"] = kills
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def pipe_backlog(fd: int) -> int:
    """Bytes written to a pipe and not yet read by the other end."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def run_load_killed(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "load.journal"
    lines = source.read_bytes().splitlines(keepends=True)
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        proc = subprocess.Popen(
            batch_args("-", journal, ready["endpoint"], args.concurrency),
            env=env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(b"".join(lines[:-1]))  # the last line withheld: the load cannot end
        proc.stdin.flush()
        while pipe_backlog(proc.stdin.fileno()) and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        left = sum(read_journal(journal)[0].values())
        refused = subprocess.run(
            resume_args(journal, ready["endpoint"], args.concurrency),
            env=env, timeout=args.timeout, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(
            f"  killed during load: {left} items in the journal; resume exit {refused.returncode}", flush=True
        )
        output = work / "load.jsonl"
        subprocess.run(
            batch_args(source, journal, ready["endpoint"], args.concurrency, output),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        result = judge(journal, ready["endpoint"], enis, output)
    result["items_after_load_kill"] = left
    result["resume_exit_after_load_kill"] = refused.returncode
    result["failed_checks"] = [
        *([f"{left} items in the journal after a kill during load (all or none)"] if left else []),
        *(
            [f"resume exit {refused.returncode} after a kill during load (expected 2)"]
            if refused.returncode != 2
            else []
        ),
    ]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def run_sigterm(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "term.journal"
    first = work / "term-batch.jsonl"
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        proc = subprocess.Popen(
            batch_args(source, journal, ready["endpoint"], args.concurrency, first),
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            proc.wait(timeout=args.term_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        code = proc.returncode
        written = read_lines(first)
        finished = {o["eni_id"] for o in read_journal(journal)[1]}
        # Accounted: every finished item's outcome reached the output, and nothing written is wrong.
        missing = finished - {o["eni_id"] for o in written}
        at_stop = verdict(written, ground_truth(ready["endpoint"]), []).summary()
        print(f"  SIGTERM: exit {code}, {len(written)} outcomes written, {len(missing)} finished but unwritten,"
              f" {at_stop['mismatches']} mismatches at stop", flush=True)  # fmt: skip
        output = work / "term.jsonl"
        subprocess.run(
            resume_args(journal, ready["endpoint"], args.concurrency, output),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        result = judge(journal, ready["endpoint"], enis, output)
    result["exit_on_sigterm"] = code
    result["written_at_sigterm"] = len(written)
    result["unknown_ips_at_sigterm"] = sum(len(o.get("unknown", [])) for o in written)
    result["finished_but_unwritten"] = len(missing)
    result["mismatches"] += at_stop["mismatches"]
    result["failed_checks"] = [
        *([f"exit {code} on SIGTERM (expected 143)"] if code != 143 else []),
        *([f"{len(missing)} finished items missing from the output"] if missing else []),
    ]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


MODES = {
    "straight": run_straight,
    "killed": run_killed,
    "load-killed": run_load_killed,
    "sigterm": run_sigterm,
}


def main() -> int:
    from bench.drill_faults import FAULT_MODES, add_arguments

    modes = {**MODES, **FAULT_MODES}
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--enis", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--kill-after", type=float, nargs="+", default=[4.0, 6.0, 8.0], metavar="S")
    parser.add_argument("--term-after", type=float, default=5.0, metavar="S", help="SIGTERM after S seconds")
    parser.add_argument("--only", nargs="+", choices=list(modes), default=list(modes), help="runs to do")
    parser.add_argument("--timeout", type=float, default=1200.0, help="bound on each batch or resume run")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--confirm", choices=("eni", "task"), default="eni", help="how releases are confirmed (default eni)"
    )
    parser.add_argument(
        "--dialect",
        choices=("v2", "v3"),
        default="v2",
        help="API 2.0 (v2, the client's default) or API 3.0 (v3: IP states, DELETING, 100 ENIs a describe)",
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
        (work / "client.toml").write_text(
            f'confirm = "{args.confirm}"\ndialect = "{args.dialect}"\n' + CLIENT_CONFIG
        )
        enis = [e["eni_id"] for e in world["enis"]]
        ips = sum(len(e["secondary_ips"]) for e in world["enis"])
        print(
            f"drill: {len(enis)} ENIs, {ips} IPs, hostile faults, limits x10, dialect = {args.dialect}, "
            f"confirm = {args.confirm}",
            flush=True,
        )
        results = {}
        for mode in args.only:
            results[mode] = modes[mode](work, state, source, enis, args)
            print(f"{mode}: {json.dumps(results[mode])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = all(
        r["mismatches"] == 0 and r["lost_items"] == 0 and not r.get("failed_checks") for r in results.values()
    )
    print(
        f"verdict: {'PASS' if ok else 'FAIL'}; mismatches: {sum(r['mismatches'] for r in results.values())}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.drill_faults
    raise SystemExit(main())
