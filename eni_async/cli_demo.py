"""The ``demo`` command: the embedded simulator on 127.0.0.1, every secondary IP it seeded released through the
batch path (``cli_batch.run_items``, as ``batch`` does), and every outcome checked against the simulator's
ground truth; exit 0 only when none disagrees.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json

from eni_async import client_metrics as metrics_cli
from eni_async.cli_batch import add_pace_arguments, client_metrics, output_to, run_items, show_progress
from eni_async.client import EniClient
from eni_async.errors import ConfigError, InputError
from eni_async.models import Credentials
from eni_async.outcomes import Item, check_against_truth
from eni_async.settings import Settings
from eni_async.terminal import json_lines


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enis", type=int, default=200, metavar="N", help="ENIs to seed (default 200)")
    parser.add_argument(
        "--ips-per-eni", type=int, default=3, metavar="K", help="secondary IPs each (default 3)"
    )
    parser.add_argument(
        "--faults", default="none", metavar="PROFILE", help="none, flaky, hostile or a .toml file"
    )
    add_pace_arguments(parser)
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulator (default 1)")
    parser.add_argument(
        "--task-latency", default="1.0,0.5", metavar="MEDIAN[,SPREAD]", help="task latency (s)"
    )
    parser.add_argument("--output", metavar="FILE", help="also write the JSON lines here")
    parser.add_argument("--dialect", choices=["v2", "v3"], default=None, help="API dialect (default v2)")
    metrics_cli.add_arguments(parser)


def _latency(text: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise InputError("--task-latency", text, "expected MEDIAN[,SPREAD] in seconds") from None
    if len(parts) not in (1, 2) or any(p < 0 for p in parts):
        raise InputError("--task-latency", text, "expected MEDIAN[,SPREAD], both 0 or more")
    return (parts[0], parts[1] if len(parts) == 2 else 0.5)


async def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async demo``: exit 0 only when every outcome agrees with the simulator's ground truth."""
    from eni_async.simulator import Simulator, SimulatorConfig, load_fault_profile, running
    from eni_async.simulator.sim_metrics import register_simulator

    if args.enis < 1 or args.ips_per_eni < 1:
        raise InputError("--enis/--ips-per-eni", f"{args.enis}/{args.ips_per_eni}", "must be at least 1")
    try:
        faults = load_fault_profile(args.faults)
    except ConfigError as exc:
        raise ConfigError("--faults", args.faults, exc.reason) from None
    config = SimulatorConfig(
        enis=args.enis,
        ips_per_eni=args.ips_per_eni,
        seed=args.seed,
        task_latency=_latency(args.task_latency),
        faults=faults,
    )
    sim = Simulator(config)
    show = show_progress(args)
    async with metrics_cli.endpoint_from(args) as endpoint, running(sim, host="127.0.0.1", port=0) as server:
        metrics = client_metrics(endpoint, args)
        if endpoint is not None:  # the client's and the simulator's families, side by side
            register_simulator(sim, endpoint.registry)
        settings = dataclasses.replace(settings, endpoint=server.endpoint, region=sim.region)
        truth = sim.ground_truth()
        items = [
            Item(e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"]))
            for e in truth["enis"]
            if e["secondary_ips"]
        ]
        print(
            f"simulator on {server.endpoint}: {len(items)} ENIs, {sum(len(i.ips) for i in items)} secondary IPs, "
            f"faults: {args.faults}, dialect: {settings.dialect}",
            flush=True,
        )
        creds: Credentials = sim.credentials
        with output_to(args.output) if args.output else contextlib.nullcontext(None) as out:
            async with EniClient(creds, settings, metrics=metrics) as client:
                _, kept = await run_items(
                    client,
                    items,
                    out=None,
                    total=len(items),
                    progress=show,
                    as_json=json_lines(args),
                    report_rest=True,
                )
            if out is not None:
                for data in kept:
                    out.write(json.dumps(data) + "\n")
        after = sim.ground_truth()
        stats = sim.stats()
    present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in after["enis"]}
    problems = [p for data in kept for p in check_against_truth(data, present)]
    reported = {data["eni_id"] for data in kept}
    problems += [f"{i.eni_id}: no outcome reported" for i in items if i.eni_id not in reported]
    for problem in problems[:20]:
        print(f"  mismatch: {problem}")
    limited, injected = sum(stats["throttled"].values()), stats["faults"]["throttle"]
    print(
        f"requests: {sum(stats['requests'].values())}, throttled: {limited + injected} "
        f"({limited} by the rate limits, {injected} injected), faults injected: {sum(stats['faults'].values())}"
    )
    print(f"mismatches: {len(problems)}", flush=True)
    return 0 if not problems else 1
