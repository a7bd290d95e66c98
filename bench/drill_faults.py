"""The drill's runs beyond kills: credentials lost mid-batch, kills during slow tasks, a damaged CSV, and a
full disk under ``serve``. Each judges every outcome against the simulator's ``/_sim/state``.

5. credentials-lost: the batch has no keys but the CVM role's, from a metadata service (the simulator's own,
   behind a proxy this drill can take away) issuing keys that live ``--credential-lifetime`` seconds (STS is
   the simulator too); the metadata service goes away mid-batch, the keys expire, the batch stops. What it
   wrote must contradict nothing (an IP sent and not observed is ``unknown``, never ``not_released``); then,
   the metadata service back, ``resume --output`` finishes every item.
6. slow-killed: tasks take ``--slow-latency`` seconds; the batch is SIGKILLed while its tasks run, then the
   resume too, then a last ``resume --output`` must finish every item (or say in one line how many are left
   and exit non-zero).
7. csv-damage: the input is CSV with damaged lines among the good ones (a stray quote on line 2, truncated
   lines, rows of too few columns, a bad IP, the last line cut off): every good row must be attempted and
   each bad line must be its own failed outcome naming that line.
8. disk-full: ``serve`` (SQLite journal) takes releases while its disk fills (emulated: a file-size limit,
   ``RLIMIT_FSIZE``, set on the running process with ``prlimit`` so that no journal file may grow, then
   lifted: space coming back). Writes must answer 503 with a reason and create nothing, reads must answer,
   the service must go on by itself once there is room; every release accepted ends as the simulator says.

The table's columns: items reported of expected, lost (an item with no outcome, or a release answering 404),
contradicting the ground truth (outcomes whose IPs disagree with ``/_sim/state``), and IPs ``unknown``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp

from bench.drill import (
    CLI,
    CLIENT_CONFIG,
    batch_args,
    environment,
    ground_truth,
    judge,
    kill_and_resume,
    read_lines,
    resume_args,
    simulator,
    stats,
)
from eni_async.testing import verdict

TOKEN = "drill-token-0123456789abcdef"


def tasks_ended(endpoint: str, timeout: float = 300.0) -> int:
    """Wait (bounded) until no task runs at the simulator, so that what was reported at a stop is judged
    against the tasks' effect, not before it; how many still run at the end."""
    deadline = time.monotonic() + timeout
    while True:
        running = int(stats(endpoint)["tasks"].get("RUNNING", 0))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.5)


def unknown_ips(outcomes: list[dict[str, Any]]) -> int:
    return sum(len(o.get("unknown", [])) for o in outcomes)


# -- 5. credentials lost mid-batch ------------------------------------------------------------------------


class MetadataProxy:
    """The simulator's metadata service behind a port this drill opens and closes (``stop``: it goes away,
    connections are refused)."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        target = upstream

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    with urllib.request.urlopen(target + self.path, timeout=10) as answer:
                        status, body = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Forward)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def role_environment(
    work: Path, ready: dict[str, Any], metadata: str, args: argparse.Namespace
) -> dict[str, str]:
    """No keys anywhere: the CVM role from ``metadata`` is the only source (STS is the simulator)."""
    home = work / "role-home"
    home.mkdir(exist_ok=True)
    config = work / "role.toml"
    config.write_text(
        f'confirm = "{args.confirm}"\ndialect = "{args.dialect}"\nmetadata_endpoint = "{metadata}"\n'
        f'sts_endpoint = "{ready["endpoint"]}"\ncredential_refresh_margin = {args.credential_lifetime / 3:.1f}\n'
        + CLIENT_CONFIG
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "TCCLI_", "ENI_ASYNC_"))}
    env.update(HOME=str(home), ENI_ASYNC_CONFIG=str(config))
    return env


def run_credentials_lost(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "creds.journal"
    first = work / "creds-batch.jsonl"
    lifetime = ["--credential-lifetime", str(args.credential_lifetime)]
    with simulator(state, args.seed, *lifetime) as ready:
        endpoint = ready["endpoint"]
        proxy = MetadataProxy(endpoint)
        env = role_environment(work, ready, proxy.endpoint, args)
        started = time.monotonic()
        proc = subprocess.Popen(
            batch_args(source, journal, endpoint, args.concurrency, first), env=env,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(args.metadata_gone_after)
        port = proxy.port
        proxy.stop()
        _, err = proc.communicate(timeout=args.timeout)
        code = proc.returncode
        written = read_lines(first)
        still = tasks_ended(endpoint)  # judged once the tasks it had sent have ended at Tencent
        at_stop = verdict(written, ground_truth(endpoint), []).summary()
        sent_then_cut = [
            o
            for o in written
            if o.get("task_ids") and (o.get("error") or {}).get("code") == "CredentialsUnavailable"
        ]
        print(
            f"  credentials lost: batch exit {code}, {len(written)} outcomes written, "
            f"{len(sent_then_cut)} cut short after a submit, {unknown_ips(written)} IPs unknown, "
            f"{at_stop['mismatches']} mismatches at stop; last line: {err.strip().splitlines()[-1:]}",
            flush=True,
        )
        proxy = MetadataProxy(endpoint, port)  # the metadata service is back
        output = work / "creds.jsonl"
        try:
            subprocess.run(
                resume_args(journal, endpoint, args.concurrency, output),
                env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        finally:
            proxy.stop()
        result = judge(journal, endpoint, enis, output)
    result["unknown_ips"] = unknown_ips(read_lines(output))
    result["stage"] = {
        "exit": code,
        "written": len(written),
        "cut_after_submit": len(sent_then_cut),
        "unknown_ips": unknown_ips(written),
        "not_released_after_submit": sum(len(o.get("not_released", [])) for o in sent_then_cut),
        "mismatches": at_stop["mismatches"],
        "tasks_running_when_judged": still,
    }
    result["mismatches"] += at_stop["mismatches"]
    result["failed_checks"] = [
        *([f"batch exit {code} with credentials lost (expected non-zero)"] if code == 0 else []),
        *(["the credentials never ran out mid-batch"] if not sent_then_cut else []),
    ]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


# -- 6. kills during slow tasks ---------------------------------------------------------------------------


def run_slow_killed(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "slow.journal"
    latency = ["--task-latency", f"{args.slow_latency},0"]
    with simulator(state, args.seed, *latency, faults="none") as ready:
        env = environment(ready, work / "client.toml")
        endpoint = ready["endpoint"]
        started = time.monotonic()
        first = batch_args(source, journal, endpoint, args.concurrency)
        again = resume_args(journal, endpoint, args.concurrency)
        kills = kill_and_resume(first, again, env, args.slow_kill_after)
        output = work / "slow.jsonl"
        last = subprocess.run(
            resume_args(journal, endpoint, args.concurrency, output),
            env=env, timeout=args.timeout, capture_output=True, text=True, check=False,
        )  # fmt: skip
        result = judge(journal, endpoint, enis, output)
    left = sum(n for state_, n in result["journal"].items() if state_ != "finished")
    result["kills"] = kills
    result["unknown_ips"] = unknown_ips(read_lines(output))
    result["resume_exit"] = last.returncode
    said = [line for line in last.stderr.splitlines() if "left" in line or "unfinished" in line]
    result["failed_checks"] = [
        *([f"{left} items left unfinished and the resume said nothing"] if left and not said else []),
        *([f"resume exit 0 with {left} items left"] if left and last.returncode == 0 else []),
    ]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


# -- 7. a damaged CSV ---------------------------------------------------------------------------------------


def damaged_csv(world: dict[str, Any], path: Path, seed: int) -> dict[int, str]:
    """Write the world as CSV with damage among the good rows; return the damaged lines by number (each
    names ENIs that do not exist, so that a good ENI's rows are all good)."""
    rng = random.Random(seed)
    rows = [f"{e['vpc_id']},{e['eni_id']},{ip}" for e in world["enis"] for ip in e["secondary_ips"]]
    damage = [
        '"vpc-1pjso2kr,eni-quote001,10.9.0.1',  # a stray quote
        "vpc-1pjso2kr,eni-trunc001,10.9.",  # truncated mid-IP
        "vpc-1pjso2kr,eni-tr",  # truncated mid-id: too few columns
        "vpc-1pjso2kr,eni-badip001,10.9.0.999",  # a bad IP
        "vpc-1pjso2kr,eni-cols0001",  # too few columns
        'vpc-1pjso2kr,"eni-quote002,10.9.0.2',  # a quote opened mid-row
    ]
    lines = [rows[0], damage[0], *rows[1:]]  # the stray quote on line 2, as the adversary put it
    for bad in damage[1:]:
        lines.insert(rng.randrange(2, len(lines)), bad)
    lines.append("vpc-1pjso2kr,eni-cutoff01,10.9.0")  # the last line cut off, no newline
    path.write_text("vpc_id,eni_id,ip\n" + "\n".join(lines))
    bad_text = {*damage, lines[-1]}
    return {number: text for number, text in enumerate(lines, start=2) if text in bad_text}


def run_csv_damage(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "csv.journal"
    csv_path = work / "damaged.csv"
    bad = damaged_csv(json.loads(state.read_text()), csv_path, args.seed)
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml")
        started = time.monotonic()
        output = work / "csv.jsonl"
        subprocess.run(
            batch_args(csv_path, journal, ready["endpoint"], args.concurrency, output),
            env=env, timeout=args.timeout, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        outcomes = read_lines(output)
        good = [o for o in outcomes if o["eni_id"] in set(enis)]
        result = verdict(good, ground_truth(ready["endpoint"]), enis).summary()
    errors = [o for o in outcomes if o["eni_id"] not in set(enis)]
    named = sorted(int(o["line"]) for o in errors if o.get("line") is not None)
    attempted = sum(1 for o in good if o["status"] != "not_attempted")
    result.update(
        unknown_ips=unknown_ips(good),
        bad_lines=len(bad),
        bad_line_errors=len(errors),
        good_attempted=attempted,
        failed_checks=[
            *([f"bad lines {sorted(bad)} but errors name {named}"] if named != sorted(bad) else []),
            *([f"{len(enis) - attempted} good ENIs not attempted"] if attempted != len(enis) else []),
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    return result


# -- 8. a full disk under serve ----------------------------------------------------------------------------


def largest(journal: Path) -> int:
    return max(f.stat().st_size for f in journal.parent.glob(journal.name + "*") if f.is_file())


def limit_files(pid: int, size: int | None) -> None:
    """No file of ``pid`` may grow past ``size`` bytes (a full disk), or any size again (``None``)."""
    soft = resource.RLIM_INFINITY if size is None else size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


async def _disk_full(
    endpoint: str,
    proc: subprocess.Popen[bytes],
    journal: Path,
    bodies: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    accepted: dict[str, str] = {}  # eni -> release id
    refused = reads_failed = ready_503 = 0
    reasons: set[str] = set()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    chunk = 50
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def post(part: list[dict[str, Any]]) -> bool:
            nonlocal refused
            async with http.post(f"{endpoint}/v1/releases", json={"releases": part}) as r:
                data = await r.json()
                if r.status == 202:
                    for release in data["releases"]:
                        accepted[release["eni_id"]] = release["id"]
                    return True
                refused += 1
                reasons.add(f"{r.status} {data['error']['code']}: {data['error']['message']}")
                return False

        third = len(bodies) // 3
        for start in range(0, third, chunk):
            await post(bodies[start : min(start + chunk, third)])
        limit_files(proc.pid, largest(journal))
        full_until = time.monotonic() + args.full_s
        waiting = list(bodies[third:])
        while time.monotonic() < full_until:
            if waiting and await post(waiting[:chunk]):
                waiting = waiting[chunk:]
            async with http.get(f"{endpoint}/v1/releases?limit=50") as r:
                reads_failed += r.status != 200
            if accepted:
                async with http.get(f"{endpoint}/v1/releases/{next(iter(accepted.values()))}") as r:
                    reads_failed += r.status != 200
            async with http.get(f"{endpoint}/readyz") as r:
                ready_503 += r.status == 503
            await asyncio.sleep(0.2)
        limit_files(proc.pid, None)
        freed = time.monotonic()
        recovered_s = None
        while waiting and time.monotonic() - freed < 60:
            if await post(waiting[:chunk]):
                recovered_s = recovered_s or round(time.monotonic() - freed, 1)
                waiting = waiting[chunk:]
            else:
                await asyncio.sleep(0.2)
        finals: list[dict[str, Any]] = []
        missing = 0
        for rid in accepted.values():
            deadline = time.monotonic() + args.timeout
            while True:
                async with http.get(f"{endpoint}/v1/releases/{rid}?wait=60") as r:
                    if r.status == 404:
                        missing += 1
                        break
                    data = await r.json()
                if data["status"] not in ("pending", "running") or time.monotonic() > deadline:
                    finals.append(data)
                    break
    return {
        "finals": finals,
        "missing": missing,
        "refused": refused,
        "reasons": sorted(reasons)[:3],
        "reads_failed": reads_failed,
        "readyz_503": ready_503,
        "never_accepted": len(waiting),
        "recovered_s": recovered_s,
    }


def run_disk_full(
    work: Path, state: Path, source: Path, enis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    journal = work / "serve.journal"
    world = json.loads(state.read_text())
    bodies = [
        {"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]} for e in world["enis"]
    ]
    log = work / "serve.log"
    with simulator(state, args.seed) as ready:
        env = environment(ready, work / "client.toml") | {"ENI_ASYNC_SERVICE_TOKENS": TOKEN}
        started = time.monotonic()
        proc = subprocess.Popen(
            [*CLI, "serve", "--journal", str(journal), "--port", "0", "--endpoint", ready["endpoint"],
             "--region", ready["region"], "--concurrency", str(args.concurrency)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # stderr through a pipe, not a file: the file-size limit would cut a log file short too
        drain = threading.Thread(target=lambda: log.write_bytes(proc.stderr.read() if proc.stderr else b""))
        drain.start()
        try:
            assert proc.stdout is not None
            endpoint = json.loads(proc.stdout.readline())["endpoint"]
            seen = asyncio.run(_disk_full(endpoint, proc, journal, bodies, args))
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(timeout=10)
        finals = seen.pop("finals")
        result = verdict(finals, ground_truth(ready["endpoint"]), enis).summary()
        journal_view = judge(journal, ready["endpoint"], enis)
    result["lost_items"] += seen["missing"]
    result["journal_mismatches"] = journal_view["mismatches"]
    result["mismatches"] += journal_view["mismatches"]
    result["unknown_ips"] = unknown_ips(finals)
    result.update(seen, serve_exit=code)
    tracebacks = log.read_text(errors="replace").count("Traceback")
    result["failed_checks"] = [
        *([f"serve exit {code} on SIGTERM"] if code != 0 else []),
        *([f"{seen['reads_failed']} reads failed while the disk was full"] if seen["reads_failed"] else []),
        *(["no write was refused: the disk never filled"] if not seen["refused"] else []),
        *(
            [f"{seen['never_accepted']} releases never accepted after space returned"]
            if seen["never_accepted"]
            else []
        ),
        *([f"{tracebacks} tracebacks in the log"] if tracebacks else []),
    ]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


FAULT_MODES = {
    "credentials-lost": run_credentials_lost,
    "slow-killed": run_slow_killed,
    "csv-damage": run_csv_damage,
    "disk-full": run_disk_full,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credential-lifetime", type=float, default=20.0, metavar="S",
                        help="credentials-lost: the metadata service's keys live S seconds")  # fmt: skip
    parser.add_argument("--metadata-gone-after", type=float, default=5.0, metavar="S",
                        help="credentials-lost: the metadata service goes away after S seconds")  # fmt: skip
    parser.add_argument("--slow-latency", type=float, default=10.0, metavar="S",
                        help="slow-killed: every task takes S seconds")  # fmt: skip
    parser.add_argument("--slow-kill-after", type=float, nargs="+", default=[4.5, 4.5], metavar="S",
                        help="slow-killed: SIGKILL the batch, then each resume, after S seconds")  # fmt: skip
    parser.add_argument("--full-s", type=float, default=8.0, metavar="S",
                        help="disk-full: how long serve's disk stays full")  # fmt: skip


__all__ = ["FAULT_MODES", "add_arguments"]
if __name__ == "__main__":  # pragma: no cover
    sys.exit("run bench/drill.py --only credentials-lost slow-killed csv-damage disk-full")
