"""The ``batch`` and ``demo`` commands (part of the CLI: printing and exit codes live here and in cli.py).

``batch`` streams items from a file into ``EniClient.unassign_many`` and writes one JSON line per ENI as
each finishes. ``demo`` starts the embedded simulator on 127.0.0.1, releases every secondary IP it seeded
through the same path, and checks every outcome against the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from eni_async import metrics as metrics_cli
from eni_async.cli import interruption, json_lines, tell
from eni_async.client import EniClient
from eni_async.credentials import load_credentials
from eni_async.errors import InputError
from eni_async.inputs import count_lines, read_items
from eni_async.journal import Journal
from eni_async.metrics import Metrics, MetricsEndpoint
from eni_async.models import Credentials
from eni_async.outcomes import SUCCEEDED, Item, Outcome, as_item, check_against_truth
from eni_async.progress import Progress, Summary
from eni_async.settings import Settings

log = logging.getLogger("eni_async.cli")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", metavar="INPUT", help="CSV (vpc_id,eni_id,ip) or JSON Lines file; - for stdin"
    )
    parser.add_argument("--output", metavar="FILE", help="write the JSON lines here instead of stdout")
    parser.add_argument("--concurrency", type=int, metavar="N", help="ENIs worked on at once (default 64)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--preflight", action="store_true", help="describe each ENI before submitting")
    parser.add_argument("--journal", metavar="FILE", help="record progress in this SQLite file (for resume)")
    metrics_cli.add_arguments(parser)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journal", metavar="FILE", help="the journal of an interrupted batch")
    parser.add_argument("--output", metavar="FILE", help="write the JSON lines here instead of stdout")
    parser.add_argument("--concurrency", type=int, metavar="N", help="ENIs worked on at once (default 64)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    metrics_cli.add_arguments(parser)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journal", metavar="FILE", help="a batch journal")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enis", type=int, default=200, metavar="N", help="ENIs to seed (default 200)")
    parser.add_argument(
        "--ips-per-eni", type=int, default=3, metavar="K", help="secondary IPs each (default 3)"
    )
    parser.add_argument(
        "--faults", default="none", metavar="PROFILE", help="none, flaky, hostile or a .toml file"
    )
    parser.add_argument("--concurrency", type=int, metavar="N", help="ENIs worked on at once (default 64)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulator (default 1)")
    parser.add_argument(
        "--task-latency", default="1.0,0.5", metavar="MEDIAN[,SPREAD]", help="task latency (s)"
    )
    parser.add_argument("--output", metavar="FILE", help="also write the JSON lines here")
    parser.add_argument("--dialect", choices=["v2", "v3"], default=None, help="API dialect (default v2)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    metrics_cli.add_arguments(parser)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError("--output", path, f"cannot write: {exc.strerror or exc}") from None
    with handle:
        yield handle


async def run_items(
    client: EniClient,
    items: Iterable[Item | Any],
    *,
    out: TextIO | None,
    total: int | None,
    progress: bool,
    preflight: bool = False,
    journal: Journal | None = None,
    as_json: bool = False,
    settled: Iterable[Outcome] = (),
    report_rest: bool = False,
) -> tuple[Summary, list[dict[str, Any]]]:
    """Run a batch, writing JSON lines to ``out`` as outcomes arrive; return the summary and the outcomes
    as written (kept only when ``out`` is ``None``). ``settled`` are outcomes already final (lines that
    could not be read), reported and counted first. The summary goes to stderr: a table, or with
    ``as_json`` one JSON line. With ``report_rest`` (items held in memory), a batch stopped by a signal
    also reports each item it never took as ``not_attempted``, so the summary covers every item."""
    summary = Summary()
    kept: list[dict[str, Any]] = []
    source = iter(items)  # shared with the batch: what it never pulled is left here
    batch = client.unassign_many(source, preflight=preflight, journal=journal)
    bar = Progress(batch.stats, total=total, enabled=progress)
    started = client.clock.monotonic()

    def write(data: dict[str, Any]) -> None:
        if out is None:
            kept.append(data)
        else:
            out.write(json.dumps(data, ensure_ascii=False) + "\n")

    for outcome in settled:
        summary.add(outcome)
        write(outcome.to_json())
    ticker = asyncio.create_task(_tick(bar))
    state = interruption()
    grace = client.settings.grace
    # SIGINT/SIGTERM: stop submitting, give work in flight ``grace`` seconds, then report the rest honestly.
    unregister = state.register(lambda now: batch.stop(0.0 if now else grace)) if state is not None else None
    try:
        async for outcome in batch:
            summary.add(outcome)
            write(outcome.to_json())
        for outcome in batch.unconfirmed:  # stopped by a signal: what was still in flight
            summary.add(outcome)
            write(outcome.to_json())
        for entry in source if report_rest else ():  # never taken: nothing was sent for them
            rest = as_item(entry)
            outcome = Outcome(rest.vpc_id, rest.eni_id, rest.ips, line=rest.line).interrupt("stopped")
            summary.add(outcome)
            write(outcome.to_json())
    except asyncio.CancelledError:
        for outcome in batch.unconfirmed:
            summary.add(outcome)
            write(outcome.to_json())
        raise
    finally:
        if unregister is not None:
            unregister()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        bar.close()
        if out is not None:
            out.flush()
        _tell_summary(summary, client.clock.monotonic() - started, as_json=as_json)
    return summary, kept


def _tell_summary(summary: Summary, elapsed: float, *, as_json: bool) -> None:
    if not as_json:
        sys.stderr.write(summary.render(elapsed) + "\n")
        return
    tell(
        f"batch finished: {summary.total} ENIs, {summary.statuses[SUCCEEDED]} succeeded",
        as_json=True,
        enis=summary.total,
        statuses=dict(summary.statuses),
        ips=summary.asked,
        released=summary.released,
        not_released=summary.not_released,
        unknown=summary.unknown,
        absent=summary.absent,
        tasks=summary.tasks,
        errors=dict(summary.errors),
        elapsed_s=round(elapsed, 3),
    )


def _show_progress(args: argparse.Namespace) -> bool:
    """The bar: as asked, else when stderr is a terminal that is not receiving JSON lines."""
    if args.progress is not None:
        return bool(args.progress)
    return sys.stderr.isatty() and not json_lines(args)


def _client_metrics(endpoint: MetricsEndpoint | None, args: argparse.Namespace) -> Metrics | None:
    """The client's metrics in the served registry (``None`` without ``--metrics-port``)."""
    if endpoint is None:
        return None
    tell(f"serving metrics at {endpoint.url}", as_json=json_lines(args), metrics_url=endpoint.url)
    return Metrics(endpoint.registry)


async def _tick(bar: Progress) -> None:
    while True:
        bar.update()
        await asyncio.sleep(0.25)


RESUME_KEYS = ("endpoint", "dialect", "region", "sign_method")


def _open_journal(path: str, *, new: bool) -> Journal:
    if not new and not Path(path).is_file():
        raise InputError("journal", path, "no such file")
    journal = Journal(path)
    if new and any(journal.counts().values()):
        journal.close()
        raise InputError("--journal", path, "already holds a batch; use 'eni-async resume' to finish it")
    return journal


async def run_batch(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async batch``: exit 0 when every ENI succeeded, 1 otherwise, 2 when the input is unreadable."""
    source = read_items(args.input)
    items: Iterable[object] = source
    credentials = load_credentials(settings.profile)
    show = _show_progress(args)
    journal = _open_journal(args.journal, new=True) if args.journal else None
    try:
        if journal is not None:
            journal.set_meta({key: getattr(settings, key) for key in RESUME_KEYS} | {"input": args.input})
        with _output(args.output) as out:
            total = count_lines(args.input)
            settled: list[Outcome] = []
            if journal is not None:
                # Every item is recorded before work starts, so a crash can lose none of them.
                settled = list(journal.load(source))
                items = journal.unfinished()
                total = journal.counts()["pending"]
            async with metrics_cli.endpoint_from(args) as endpoint:
                metrics = _client_metrics(endpoint, args)
                async with EniClient(credentials, settings, metrics=metrics) as client:
                    summary, _ = await run_items(
                        client,
                        items,
                        out=out,
                        total=total,
                        progress=show,
                        preflight=args.preflight,
                        journal=journal,
                        as_json=json_lines(args),
                        settled=settled,
                    )
    finally:
        if journal is not None:
            journal.close()
    return 0 if summary.all_succeeded else 1


async def run_resume(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async resume``: finish a journalled batch; exit 0 when every ENI of it succeeded."""
    with _open_journal(args.journal, new=False) as journal:
        meta = journal.meta()
        given = {key: getattr(args, key, None) for key in RESUME_KEYS}
        recorded = {key: meta[key] for key in RESUME_KEYS if key in meta and given.get(key) is None}
        settings = dataclasses.replace(settings, **recorded)
        counts = journal.counts()
        todo = counts["pending"] + counts["submitting"] + counts["submitted"]
        if todo == 0:
            tell(
                f"journal {args.journal}: all {counts['finished']} items finished; nothing to do",
                as_json=json_lines(args),
            )
            return 0 if set(journal.outcome_counts()) <= {SUCCEEDED} else 1
        credentials = load_credentials(settings.profile)
        show = _show_progress(args)
        with _output(args.output) as out:
            async with metrics_cli.endpoint_from(args) as endpoint:
                metrics = _client_metrics(endpoint, args)
                async with EniClient(credentials, settings, metrics=metrics) as client:
                    await run_items(
                        client,
                        journal.unfinished(),
                        out=out,
                        total=todo,
                        progress=show,
                        journal=journal,
                        as_json=json_lines(args),
                    )
        return 0 if set(journal.outcome_counts()) <= {SUCCEEDED} and not journal.counts()["pending"] else 1


async def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async status``: counts of a journal's items by state and by outcome."""
    with _open_journal(args.journal, new=False) as journal:
        print(json.dumps({"items": journal.counts(), "outcomes": journal.outcome_counts()}))
    return 0


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

    if args.enis < 1 or args.ips_per_eni < 1:
        raise InputError("--enis/--ips-per-eni", f"{args.enis}/{args.ips_per_eni}", "must be at least 1")
    config = SimulatorConfig(
        enis=args.enis,
        ips_per_eni=args.ips_per_eni,
        seed=args.seed,
        task_latency=_latency(args.task_latency),
        faults=load_fault_profile(args.faults),
    )
    sim = Simulator(config)
    show = _show_progress(args)
    async with metrics_cli.endpoint_from(args) as endpoint, running(sim, host="127.0.0.1", port=0) as server:
        metrics = _client_metrics(endpoint, args)
        if endpoint is not None:  # the client's and the simulator's families, side by side
            metrics_cli.register_simulator(sim, endpoint.registry)
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
        with _output(args.output) if args.output else contextlib.nullcontext(None) as out:
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
    print(
        f"requests: {sum(stats['requests'].values())}, throttled: {sum(stats['throttled'].values())}, "
        f"faults injected: {sum(stats['faults'].values())}"
    )
    print(f"mismatches: {len(problems)}", flush=True)
    return 0 if not problems else 1
