"""What a benchmark run shows: the table on stdout, the targets met or missed, the JSON and the plot.

Nothing here measures; everything reads the dictionaries the benchmarks return. The plot (matplotlib, Agg
backend, so no display is needed) is cumulative completions over time per client at the quota, with the
floor drawn in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIENT_NAMES = {"eni_async": "eni_async", "sdk": "official async SDK", "aiohttp": "raw aiohttp"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def makespan_table(data: dict[str, Any]) -> str:
    header = [
        "client",
        "conc",
        "makespan s",
        "/ floor",
        "queries/task",
        "throttled",
        "client CPU s",
        "correct",
    ]
    rows = [
        [
            CLIENT_NAMES[name],
            str(r["concurrency"]),
            f"{r['makespan_s']:.2f}",
            f"{r['makespan_over_floor']:.3f}",
            f"{r['queries_per_task']:.3f}",
            str(r["throttled"]),
            f"{r['process_cpu_s']:.2f}",
            "yes" if r["correct"] else f"NO ({r['ips_left']} IPs left)",
        ]
        for name, r in data["clients"].items()
    ]
    title = f"makespan at the quota: N = {data['n']}, floor = {data['floor_s']:.1f} s"
    return f"{title}\n{_table(header, rows)}"


def cost_table(data: dict[str, Any]) -> str:
    header = ["client", "work CPU ms/ENI", "process CPU ms/ENI", "wall s", "queries/task", "correct"]
    rows = [
        [
            CLIENT_NAMES[name],
            f"{r['work_cpu_per_eni_ms']:.3f}",
            f"{r['process_cpu_per_eni_ms']:.3f}",
            f"{r['makespan_s']:.2f}",
            f"{r['queries_per_task']:.2f}",
            "yes" if r["correct"] else "NO",
        ]
        for name, r in data["clients"].items()
    ]
    title = f"client cost: N = {data['n']}, concurrency {data['concurrency']}, limits off, latency 0"
    return f"{title}\n{_table(header, rows)}"


def scale_table(data: dict[str, Any]) -> str:
    header = ["ENIs", "peak RSS MiB", "wall s", "CPU ms/ENI", "raw loop ms/ENI", "x raw", "raw RSS MiB"]
    header += ["raw on uvloop ms/ENI", "x raw on uvloop"]
    header += ["GC s", "longest GC pause ms", "pauses > 50 ms", "queries/task", "correct"]
    rows = []
    for r in data["runs"].values():
        gc = r.get("gc") or {}
        raw = r.get("cpu_over_raw")
        raw_uv = r.get("cpu_over_raw_uvloop")
        rows.append(
            [
                f"{r['enis']:,}",
                f"{r['maxrss_mib']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['cpu_per_eni_ms']:.3f}",
                f"{r.get('raw_cpu_per_eni_ms', 0.0):.3f}",
                "-" if raw is None else f"{raw:.2f}",
                f"{r.get('raw_maxrss_mib', 0.0):.1f}",
                f"{r.get('raw_uvloop_cpu_per_eni_ms', 0.0):.3f}",
                "-" if raw_uv is None else f"{raw_uv:.2f}",
                f"{gc.get('total_s', 0.0):.2f}",
                f"{1000 * gc.get('longest_s', 0.0):.0f}",
                f"{gc.get('stalls_over_50ms', 0)}",
                f"{r['queries_per_task']:.2f}",
                "yes" if r["correct"] else f"NO (exit {r['exit']}, {r['ips_left']} IPs left)",
            ]
        )
    title = (
        f"scale: eni-async batch, limits off, latency 0 (empty-file baseline "
        f"{data['baseline_maxrss_mib']:.1f} MiB); ratio {data['rss_ratio']:.3f}"
    )
    return f"{title}\n{_table(header, rows)}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each benchmark target with the measured value and whether it is met."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, limit: float, shown: str) -> None:
        checks.append({"target": name, "value": value, "limit": limit, "met": value <= limit, "shown": shown})

    if "makespan" in results:
        ours = results["makespan"]["clients"].get("eni_async")
        if ours is not None:
            check(
                "makespan / floor <= 1.10",
                ours["makespan_over_floor"],
                1.10,
                f"{ours['makespan_over_floor']:.3f}",
            )
            check("queries per task <= 1.2", ours["queries_per_task"], 1.2, f"{ours['queries_per_task']:.3f}")
            check("throttled answers == 0", ours["throttled"], 0, str(ours["throttled"]))
            check(
                "correct (every IP gone)", 0 if ours["correct"] else 1, 0, "yes" if ours["correct"] else "no"
            )
    if "cost" in results:
        rows = results["cost"]["clients"]
        if {"eni_async", "sdk"} <= rows.keys():
            ratio = rows["eni_async"]["work_cpu_per_eni_ms"] / rows["sdk"]["work_cpu_per_eni_ms"]
            check("CPU/ENI <= 0.5 x official async SDK", ratio, 0.5, f"{ratio:.3f} x")
        if {"eni_async", "aiohttp"} <= rows.keys():
            ratio = rows["eni_async"]["work_cpu_per_eni_ms"] / rows["aiohttp"]["work_cpu_per_eni_ms"]
            check("CPU/ENI <= 1.5 x raw aiohttp", ratio, 1.5, f"{ratio:.3f} x")
    if "scale" in results:
        data = results["scale"]
        sizes = data["sizes"]
        check(
            f"peak RSS {max(sizes):,} <= 1.2 x {min(sizes):,}",
            data["rss_ratio"],
            1.2,
            f"{data['rss_ratio']:.3f} x",
        )
        correct = all(r["correct"] for r in data["runs"].values())
        check("scale runs correct", 0 if correct else 1, 0, "yes" if correct else "no")
    return checks


def targets_table(checks: list[dict[str, Any]]) -> str:
    rows = [[c["target"], c["shown"], "met" if c["met"] else "MISSED"] for c in checks]
    return "targets\n" + _table(["target", "measured", ""], rows)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def plot_makespan(data: dict[str, Any], path: Path) -> None:
    """Cumulative completions over time per client, with the floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name, row in data["clients"].items():
        times = row["completions"]
        label = f"{CLIENT_NAMES[name]} ({row['makespan_s']:.1f} s, {row['queries_per_task']:.2f} q/task)"
        ax.step([0.0, *times], range(len(times) + 1), where="post", label=label)
    ax.axvline(
        data["floor_s"], color="grey", linestyle="--", linewidth=1, label=f"floor {data['floor_s']:.0f} s"
    )
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("ENIs released")
    ax.set_title(
        f"{data['n']:,} ENIs at 1,000 submits/s and 200 queries/s, task latency median 1 s (sigma 0.5)"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
