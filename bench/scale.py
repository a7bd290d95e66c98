"""Scale: peak RSS of ``eni-async batch FILE.jsonl`` for 10,000 and 100,000 ENIs.

A batch streams its input, so its memory should follow the concurrency, not the file. For each size a fresh
simulator (limits off, tasks ending at once, one IP per ENI) is seeded, its ``/_sim/state`` is written out
as JSON Lines, and ``eni-async batch`` (``python -m eni_async``) runs over it as a child process with
``--endpoint``, ``--dialect v3``, ``--no-progress``, ``--output /dev/null`` and a settings file that raises
the client's own rate budgets out of the way (the defaults, 20 queries/s, would make 100,000 ENIs take an
hour and a half) and asks about each task at once (``poll.first = 0``, ``adaptive = false``; see
``SETTINGS``), so that the run time does not depend on the poll estimator. Credentials come from ``TENCENTCLOUD_SECRET_ID``/``KEY``.

Peak RSS is the child's ``ru_maxrss`` from ``wait4``. The parent never parses the ground truth itself
(children do), because Linux counts the parent's resident pages at ``fork`` into the child's peak;
``parent_rss_mib`` records them. RSS is also sampled every second to show when it grows. A run of the same
command over an empty file gives the interpreter-plus-imports baseline. Correctness: exit status 0 and every
seeded IP gone per ``/_sim/state``.

Each size is also released by ``bench/rawloop.py`` (the same signed calls from a plain aiohttp loop, on a
fresh world of the same seed): ``cpu_over_raw`` is the batch's process CPU over the raw loop's. The batch
runs on uvloop (``eni-async``'s default where installed), the raw loop on asyncio's own loop, as a plain loop
does; the raw loop is also run on uvloop (``cpu_over_raw_uvloop``), to show how much of the gap is the
loop's. The batch runs under ``bench/gcprobe.py``, which times every garbage collection (its pauses stall the event loop).

Targets: peak RSS at 100,000 at most 1.2 x that at 10,000 and under 120 MiB; CPU at most 1.3 x the raw
loop's; no collection pause over 50 ms.

Reproduce: ``python bench/run.py --only scale`` (``--quick`` for 2,000 and 20,000).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench import procs
from bench.cost import LIMITS_OFF
from bench.makespan import ips_left

SETTINGS = """\
# eni-async settings for the scale benchmark: the simulator has no limits, so neither does the client.
dialect = "v3"

# Tasks end at once here and this benchmark is about memory: ask each task at once rather than let the
# adaptive first-query delay learn from its 1 s warm-up (it would, within a few hundred tasks): the same
# code paths, and a run time that does not depend on the estimator.
[poll]
first = 0.0
adaptive = false

[rate_limits]
unassign = 1000000
task_query = 1000000
describe = 1000000
assign = 1000000
"""


def _batch(
    sim: procs.Simulator, source: Path, settings: Path, log: Path, timeout: float, gc_out: Path | None = None
) -> procs.Usage:
    """``eni-async batch`` over ``source``; with ``gc_out``, under ``bench.gcprobe`` (its pauses timed)."""
    command = procs.ENI_ASYNC if gc_out is None else [sys.executable, "-m", "bench.gcprobe", str(gc_out)]
    argv = [*command, "batch", str(source), "--config", str(settings), "--endpoint", sim.endpoint]
    argv += ["--region", sim.region, "--dialect", "v3", "--no-progress", "--output", "/dev/null"]
    with log.open("ab") as err:
        return procs.run_measured(argv, timeout=timeout, env=sim.env(), stderr=err, rss_every=1.0)


def _rawloop(
    sim: procs.Simulator, source: Path, log: Path, timeout: float, loop: str = "asyncio"
) -> procs.Usage:
    """``bench/rawloop.py`` over ``source``: the same signed calls from a plain aiohttp loop (on ``loop``)."""
    argv = [
        sys.executable,
        "-m",
        "bench.rawloop",
        str(source),
        sim.endpoint,
        sim.region,
        str(RAW_CONCURRENCY),
        loop,
    ]
    with log.open("ab") as err:
        return procs.run_measured(argv, timeout=timeout, env=sim.env(), stderr=err)


# ENIs the raw loop keeps in flight: about what the batch's target holds when tasks end at once.
RAW_CONCURRENCY = 200


def write_jsonl(sim: procs.Simulator, path: Path, timeout: float = 300.0) -> None:
    """Write the simulator's ENIs as batch input, in a child process.

    Not here: Linux carries a process's resident pages over ``fork`` into the child's ``ru_maxrss``, so a
    parent that had just parsed 100,000 ENIs of ground truth (about 65 MiB) would add them to the peak
    measured for the batch it starts next.
    """
    argv = [sys.executable, "-m", "bench.scale", "jsonl", sim.endpoint, str(path)]
    usage = procs.run_measured(argv, timeout=timeout)
    if usage.returncode != 0:
        raise procs.BenchError(f"could not write {path} (exit {usage.returncode})")


def ips_left_in_child(sim: procs.Simulator, workdir: Path, timeout: float = 300.0) -> int:
    """How many secondary IPs the simulator still has, counted in a child (see ``write_jsonl``)."""
    out = workdir / "left.txt"
    argv = [sys.executable, "-m", "bench.scale", "left", sim.endpoint, str(out)]
    if procs.run_measured(argv, timeout=timeout).returncode != 0:
        raise procs.BenchError("could not read the simulator's state")
    return int(out.read_text(encoding="utf-8"))


def _state(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/_sim/state", timeout=120) as answer:
        return dict(json.load(answer))


def _jsonl_main(endpoint: str, path: str) -> None:
    state = _state(endpoint)
    with open(path, "w", encoding="utf-8") as out:
        for e in state["enis"]:
            out.write(
                json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]}) + "\n"
            )


def run(*, sizes: tuple[int, ...], workdir: Path, seed: int = 7, timeout: float = 1800.0) -> dict[str, Any]:
    """Peak RSS of ``eni-async batch`` for each size, and the ratio of the largest to the smallest."""
    settings = workdir / "scale.toml"
    settings.write_text(SETTINGS, encoding="utf-8")
    log = workdir / "batch.log"
    rows: dict[str, Any] = {}
    empty = workdir / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    baseline: procs.Usage | None = None
    for size in sizes:
        argv = procs.simulate_argv(enis=size, latency="0", limits=LIMITS_OFF, seed=seed)
        with procs.simulator(argv, log=workdir / "simulator.log") as sim:
            if baseline is None:
                baseline = _batch(sim, empty, settings, log, timeout=120.0)
            source = workdir / f"enis-{size}.jsonl"
            write_jsonl(sim, source)
            gc_out = workdir / f"gc-{size}.json"
            usage = _batch(sim, source, settings, log, timeout=timeout, gc_out=gc_out)
            left = ips_left_in_child(sim, workdir)
            stats = sim.stats()
        # The raw loop on a world of its own (the same seed: the same ENIs and IPs).
        with procs.simulator(argv, log=workdir / "simulator.log") as raw_sim:
            raw = _rawloop(raw_sim, source, log, timeout=timeout)
            raw_left = ips_left_in_child(raw_sim, workdir)
        # And once more on uvloop, the loop the batch runs on: how much of the gap is the loop's.
        with procs.simulator(argv, log=workdir / "simulator.log") as raw_sim:
            raw_uv = _rawloop(raw_sim, source, log, timeout=timeout, loop="uvloop")
            raw_uv_left = ips_left_in_child(raw_sim, workdir)
        rows[str(size)] = {
            "enis": size,
            "exit": usage.returncode,
            "correct": usage.returncode == 0 and left == 0,
            "ips_left": left,
            "maxrss_mib": usage.maxrss_mib,
            "wall_s": usage.wall_s,
            "cpu_s": usage.cpu_s,
            "cpu_per_eni_ms": 1000 * usage.cpu_s / size,
            "queries_per_task": stats["requests"].get("DescribeVpcTaskResult", 0) / size,
            "simulator_cpu_s": sim.usage.cpu_s if sim.usage else None,
            "parent_rss_mib": usage.parent_rss_mib,
            "rss_samples": usage.rss_samples,
            "gc": json.loads(gc_out.read_text(encoding="utf-8")) if gc_out.exists() else None,
            "raw_cpu_per_eni_ms": 1000 * raw.cpu_s / size,
            "raw_maxrss_mib": raw.maxrss_mib,
            "raw_correct": raw.returncode == 0 and raw_left == 0,
            "cpu_over_raw": usage.cpu_s / raw.cpu_s if raw.cpu_s else None,
            "raw_uvloop_cpu_per_eni_ms": 1000 * raw_uv.cpu_s / size,
            "raw_uvloop_correct": raw_uv.returncode == 0 and raw_uv_left == 0,
            "cpu_over_raw_uvloop": usage.cpu_s / raw_uv.cpu_s if raw_uv.cpu_s else None,
        }
        source.unlink()
    small, large = rows[str(min(sizes))], rows[str(max(sizes))]
    return {
        "sizes": list(sizes),
        "baseline_maxrss_mib": baseline.maxrss_mib if baseline else None,
        "rss_ratio": large["maxrss_mib"] / small["maxrss_mib"],
        "runs": rows,
    }


if __name__ == "__main__":  # the children of ``write_jsonl`` and ``ips_left_in_child``
    if len(sys.argv) != 4 or sys.argv[1] not in ("jsonl", "left"):
        sys.exit("usage: python -m bench.scale jsonl|left ENDPOINT FILE")
    if sys.argv[1] == "jsonl":
        _jsonl_main(sys.argv[2], sys.argv[3])
    else:
        Path(sys.argv[3]).write_text(str(ips_left(_state(sys.argv[2]))), encoding="utf-8")
