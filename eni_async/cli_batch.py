"""The ``batch``, ``resume`` and ``status`` commands (part of the CLI: printing and exit codes live here and in
cli.py; ``demo`` is in ``cli_demo``, on the same ``run_items``).

``batch`` streams items from a file into ``EniClient.unassign_many`` and writes one JSON line per ENI as
each finishes, flushed at once (to a file or a pipe). With ``--journal`` the whole input is recorded in one
transaction before any request, and ``resume`` writes the outcome of every item of the journal, those finished
before the crash included, so its output alone is the complete result; ``resume --append`` rewrites the
batch's own output atomically (the complete result to ``FILE.partial``, renamed over ``FILE`` at the end),
so it ends with exactly one line per item. A journal is a path or a URL (``eni_async.journal``; the
``journal`` setting when the command line names none). A journal that cannot be used is one line and exit 2;
an output that cannot be written stops the batch (exit 1) with every outcome in the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TextIO

from eni_async import client_metrics as metrics_cli
from eni_async.client import EniClient
from eni_async.client_metrics import Metrics, MetricsEndpoint
from eni_async.credentials import settings_credentials
from eni_async.errors import EniAsyncError, InputError
from eni_async.inputs import StreamedJsonl, count_lines, read_items, streams
from eni_async.journal import Journal, JournalError, describe, is_postgres, open_journal
from eni_async.outcomes import SUCCEEDED, Outcome, as_item
from eni_async.progress import Progress, Summary, resume_notes, tell_summary
from eni_async.settings import Settings
from eni_async.terminal import OutputError, drop_stdout, interruption, json_lines, tell

log = logging.getLogger("eni_async.cli")


def add_pace_arguments(parser: argparse.ArgumentParser) -> None:
    """``--concurrency`` and ``--progress``, the same on every command that runs a batch."""
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="ENIs worked on at once, at most (default: as the rate limits allow)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress bar on stderr (default: when stderr is a terminal)",
    )


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", metavar="INPUT", help="CSV (vpc_id,eni_id,ip) or JSON Lines file; - for stdin"
    )
    parser.add_argument("--output", metavar="FILE", help="write the JSON lines here instead of stdout")
    add_pace_arguments(parser)
    parser.add_argument("--preflight", action="store_true", help="describe each ENI before submitting")
    parser.add_argument(
        "--journal",
        metavar="URL",
        help="record progress here, for resume: a file (SQLite) or postgresql://HOST/DATABASE "
        "(default: the journal setting, $ENI_ASYNC_JOURNAL)",
    )
    metrics_cli.add_arguments(parser)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "journal",
        metavar="URL",
        nargs="?",
        help="the journal of an interrupted batch, a file or postgresql://... (default: the journal setting)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the outcome of every item of the journal here (default stdout); not the batch's own "
        "output file unless --append",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="rewrite --output (the batch's own output, say) with one line per item, the final outcome "
        "where there is one: written to FILE.partial and renamed over FILE at the end",
    )
    add_pace_arguments(parser)
    metrics_cli.add_arguments(parser)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "journal", metavar="URL", nargs="?", help="a batch journal (default: the journal setting)"
    )
    parser.add_argument(
        "--outcomes",
        action="store_true",
        help="print every finished outcome as JSON Lines (the batch output format) instead of counts",
    )


class BatchEndedEarly(EniAsyncError):
    """A batch that ended, unstopped, with items of its input never taken: one line naming how many."""

    def __init__(self, left: int, hint: str) -> None:
        self.left = left
        super().__init__(f"the batch ended with {left} item(s) of its input never taken{hint}")


class JournalUnusable(InputError):
    """A ``JournalError`` on its way to the user: one line, exit 2."""

    def __init__(self, error: JournalError, hint: str = "") -> None:
        super().__init__("journal", error.path, error.reason)
        self.message = f"{error}{hint}"

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def _journal_errors(hint: str = "") -> Iterator[None]:
    """Report a journal failure, raised alone or from inside the batch's task group, as one line."""
    try:
        yield
    except JournalError as exc:
        raise JournalUnusable(exc, hint) from None
    except BaseExceptionGroup as group:
        found, _ = group.split(JournalError)
        if found is None:
            raise
        leaf: BaseException = found
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, JournalError)
        raise JournalUnusable(leaf, hint) from None


def _open_output(path: str, *, append: bool) -> TextIO:
    """Open an output file (a seam for tests that need a file which fails); the caller closes it."""
    if append:
        return open(path, "a", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


@contextlib.contextmanager
def output_to(path: str | None, *, append: bool = False) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = _open_output(path, append=append)
    except OSError as exc:
        raise InputError("--output", path, f"cannot write: {exc.strerror or exc}") from None
    try:
        yield handle
    finally:
        try:
            handle.close()
        except OSError as exc:
            raise OutputError(path, exc) from None


# ``json.dumps(data, ensure_ascii=False)``, without building an encoder for every line.
_LINE = json.JSONEncoder(ensure_ascii=False).encode


def write_line(
    out: TextIO,
    data: dict[str, Any],
    *,
    path: str | None = None,
    bar: Progress | None = None,
    flush: bool = True,
) -> None:
    """One outcome as one JSON line, flushed at once (unless ``flush`` is false: the caller flushes the
    group it writes, ``flush_output``) so that a crash or a reader loses nothing; with a ``bar``, written
    around it (never on the bar's line when both share a terminal)."""
    text = _LINE(data) + "\n"
    try:
        if bar is None:
            out.write(text)
        else:
            bar.write(out, text)
    except OSError as exc:
        raise OutputError(path or getattr(out, "name", None), exc) from None
    if flush:
        flush_output(out, path)


def flush_output(out: TextIO, path: str | None = None) -> None:
    """Flush what ``write_line(..., flush=False)`` wrote; an ``OutputError`` as ``write_line`` raises."""
    try:
        out.flush()
    except OSError as exc:
        raise OutputError(path or getattr(out, "name", None), exc) from None


async def run_items(
    client: EniClient,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    out: TextIO | None,
    total: int | None,
    progress: bool,
    preflight: bool = False,
    journal: Journal | None = None,
    as_json: bool = False,
    settled: Iterable[Outcome] | AsyncIterable[Outcome] = (),
    report_rest: bool = False,
    earlier: Iterable[Outcome] | None = None,
    stopped_notes: Callable[[Summary], Awaitable[list[str]]] | None = None,
    hint: str = "",
    stop_reading: Callable[[], None] | None = None,
) -> tuple[Summary, list[dict[str, Any]]]:
    """Run a batch, writing JSON lines to ``out`` as outcomes arrive; return the summary and the outcomes
    as written (kept only when ``out`` is ``None``). ``settled`` are outcomes already final (lines that
    could not be read, or a resumed journal's outcomes of earlier runs), reported first; ``earlier`` (a
    resume) are the journal's outcomes of earlier runs, counted apart in the summary (``settled`` is then
    written, not counted). The summary goes to stderr: a table, or with ``as_json`` one JSON
    line; when a signal or a closed output stopped the batch, ``stopped_notes`` say what is left and how to
    finish it. With ``report_rest`` (items held in memory), a batch stopped by a signal also reports each
    item it never took as ``not_attempted``, so the summary covers every item. An output that cannot be
    written (a closed pipe) stops the batch as a signal would: work in flight gets the grace, every outcome is
    still counted (and journalled), then the ``OutputError`` is raised. A batch that ends with items never
    taken though nobody stopped it raises ``BatchEndedEarly`` (after the summary; ``hint`` says what to do),
    never ends quietly. ``stop_reading`` is called when the batch is stopped (a signal, a closed output): an
    input read as it arrives then ends at once rather than wait on a silent writer for the grace."""
    summary = Summary()
    if earlier is not None:
        summary.earlier = Summary()
        for outcome in earlier:
            summary.earlier.add(outcome)
    kept: list[dict[str, Any]] = []
    # Shared with the batch: what it never pulled is left here (a journal's items are read as they are pulled).
    source = items if isinstance(items, AsyncIterable) else iter(items)
    batch = client.unassign_many(source, preflight=preflight, journal=journal)
    bar = Progress(batch.stats, total=total, enabled=progress)
    started = client.clock.monotonic()
    grace = client.settings.grace
    closed: list[OutputError] = []

    def stop(wait: float) -> None:
        batch.stop(wait)
        if stop_reading is not None:
            stop_reading()

    def write(data: dict[str, Any]) -> None:
        if out is None:
            kept.append(data)
        elif not closed:
            try:
                write_line(out, data, bar=bar, flush=False)
            except OutputError as exc:  # nobody reads on: stop as a signal would, keep counting
                closed.append(exc)
                stop(grace)

    def flush() -> None:
        """Flush the lines written since the last flush: after each group of outcomes that were ready
        together (one write call per group, not per line; a line waits for no outcome not yet known)."""
        if out is not None and not closed:
            try:
                flush_output(out)
            except OutputError as exc:
                closed.append(exc)
                stop(grace)

    async for outcome in _each(settled):
        if summary.earlier is None:
            summary.add(outcome)
        write(outcome.to_json())
    flush()
    ticker = asyncio.create_task(_tick(bar))
    state = interruption()
    # SIGINT/SIGTERM: stop submitting, give work in flight ``grace`` seconds, then report the rest honestly.
    unregister = state.register(lambda now: stop(0.0 if now else grace)) if state is not None else None

    def finish(outcome: Outcome) -> None:
        summary.add(outcome)
        write(outcome.to_json())

    try:
        async for outcome in batch:
            finish(outcome)
            if not batch.ready:
                flush()
        for outcome in batch.unconfirmed:  # stopped by a signal: what was still in flight
            finish(outcome)
        for entry in source if report_rest and isinstance(source, Iterator) else ():  # never taken: none sent
            rest = as_item(entry)
            finish(Outcome(rest.vpc_id, rest.eni_id, rest.ips, line=rest.line).interrupt("stopped"))
        flush()
        stopped = bool(closed) or (state is not None and state.exit_code is not None)
        left = 0 if stopped else await _count(source)
    except asyncio.CancelledError:
        for outcome in batch.unconfirmed:
            finish(outcome)
        raise
    finally:
        if unregister is not None:
            unregister()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        bar.close()
        if out is not None and not closed:
            with contextlib.suppress(OSError):  # a failed write was already reported
                out.flush()
        notes = [f"the output closed ({closed[0]}): the batch stopped"] if closed else []
        if (closed or (state is not None and state.count)) and stopped_notes is not None:
            notes += await stopped_notes(summary)
        tell_summary(summary, client.clock.monotonic() - started, as_json=as_json, notes=notes)
    if closed:
        raise closed[0]
    if left:
        raise BatchEndedEarly(left, hint)
    return summary, kept


async def _count(source: Iterable[object] | AsyncIterable[object]) -> int:
    """How many entries ``source`` still holds (it is consumed)."""
    if isinstance(source, AsyncIterable):
        return sum([1 async for _ in source])
    return sum(1 for _ in source)


async def _each(outcomes: Iterable[Outcome] | AsyncIterable[Outcome]) -> AsyncIterator[Outcome]:
    if isinstance(outcomes, AsyncIterable):
        async for outcome in outcomes:
            yield outcome
    else:
        for outcome in outcomes:
            yield outcome


def show_progress(args: argparse.Namespace) -> bool:
    """The bar: as asked, else when stderr is a terminal that is not receiving JSON lines."""
    if args.progress is not None:
        return bool(args.progress)
    return sys.stderr.isatty() and not json_lines(args)


def client_metrics(endpoint: MetricsEndpoint | None, args: argparse.Namespace) -> Metrics | None:
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


def journal_url(given: str | None, settings: Settings, *, needed: bool) -> str | None:
    """The journal named on the command line, else by the ``journal`` setting (``None``: no journal)."""
    url = given if given is not None else settings.journal or None
    if needed and url is None:
        raise InputError(
            "journal", "", "name a journal (a file or postgresql://...) or set the journal setting"
        )
    return url


async def _open_journal(url: str, *, new: bool, read_only: bool = False) -> Journal:
    if not new and not is_postgres(url):
        with _journal_errors():
            from eni_async.journal import sqlite_path

            if not sqlite_path(url).is_file():
                raise InputError("journal", url, "no such file")
    with _journal_errors():
        journal = await open_journal(url, read_only=read_only)
        try:
            held = any((await journal.counts()).values()) if new else False
        except BaseException:
            await journal.close()
            raise
    if held:
        await journal.close()
        raise InputError(
            "--journal", describe(url), "already holds a batch; use 'eni-async resume' to finish it"
        )
    return journal


def _real(path: str | None) -> str | None:
    """The resolved path of an output file, to recognise the batch's own output on resume (only a regular
    file: writing to /dev/null or a named pipe again loses nothing)."""
    return os.path.realpath(path) if path and os.path.isfile(path) else None


def _output_failed(exc: OutputError, args: argparse.Namespace, journal: Journal | None) -> int:
    if exc.closed:  # `| head`: the summary said so already; nothing more to say, and stdout is gone
        drop_stdout()
        return 1
    where = (
        f"every finished outcome is in the journal: eni-async status {journal.where} --outcomes"
        if journal is not None
        else "outcomes not written are lost (use --journal to keep them)"
    )
    tell(
        f"eni-async: error: {exc}; the batch stopped; {where}", as_json=json_lines(args), level=logging.ERROR
    )
    return 1


def batch_collector() -> None:
    """The collector for a batch (after ``cli.quiet_collector`` froze start-up): the young generation every
    50,000 allocations net of frees. A batch's items make no cyclic garbage (``bench/gcprobe.py``: the
    collector frees about the same ~2,000 objects at 10,000 and at 100,000 ENIs; refcounting frees the rest),
    so what is allocated is freed again, and the count of allocations net of frees stays near what is in
    flight (~50,000 objects): at 10,000 the count crossed the threshold every few hundred milliseconds and
    each collection traversed the objects of every item in flight (10,000 ENIs, ``bench/scale.py``'s
    settings: 70 collections, 0.9-1.3 s of CPU, the longest 30-58 ms); at 50,000 it seldom does (14
    collections, 0.03-0.05 s, the longest 12-25 ms). Cyclic garbage, where an error path makes some, still
    triggers a collection once 50,000 objects of it have piled up (a few MiB)."""
    gc.set_threshold(50_000, 10, 10)


async def run_batch(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async batch``: exit 0 when every ENI succeeded, 1 otherwise, 2 when the input is unreadable."""
    batch_collector()
    source = read_items(args.input)
    items: Iterable[object] | AsyncIterable[object] = source
    credentials = await settings_credentials(settings)
    show = show_progress(args)
    url = journal_url(args.journal, settings, needed=False)
    streamed: StreamedJsonl | None = None
    if args.input == "-" and not url and streams(sys.stdin.fileno()):
        # A pipe (``producer | eni-async batch -``): lines as they come, the loop never held by a silent
        # producer. A journal records every item before work starts, so it reads the whole input first.
        items = streamed = StreamedJsonl(sys.stdin.fileno())
    journal = await _open_journal(url, new=True) if url else None
    try:
        with output_to(args.output) as out:
            total = count_lines(args.input)
            settled: list[Outcome] = []
            if journal is not None:
                meta = {key: getattr(settings, key) for key in RESUME_KEYS} | {
                    "input": args.input,
                    "output": _real(args.output),
                }
                # Every item is recorded, in one transaction, before work starts: a crash loses none.
                with _journal_errors("; nothing was recorded and nothing sent"):
                    settled = await journal.load(source, meta=meta)
                    items = journal.unfinished()
                    total = (await journal.counts())["pending"]
            async with metrics_cli.endpoint_from(args) as endpoint:
                metrics = client_metrics(endpoint, args)
                async with EniClient(credentials, settings, metrics=metrics) as client:
                    with _journal_errors(_RESUME_HINT.format(journal.where if journal else "")):
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
                            stopped_notes=lambda done: resume_notes(args, journal, done, total),
                            hint=f"; run 'eni-async resume {journal.where}'" if journal is not None else "",
                            stop_reading=streamed.end if streamed is not None else None,
                        )
    except OutputError as exc:
        return _output_failed(exc, args, journal)
    finally:
        if journal is not None:
            await journal.close()
    return 0 if summary.all_succeeded else 1


_RESUME_HINT = "; the batch stopped, every step before it is recorded: fix this and run 'eni-async resume {}'"


@contextlib.contextmanager
def _rewritten(path: str) -> Iterator[TextIO]:
    """``resume --append``: the complete result goes to ``PATH.partial``, renamed over ``PATH`` once all of
    it is written, so that PATH holds one line per item, and a crash before the end leaves PATH as it was.
    A pipe or a device cannot be rewritten: it is appended to."""
    if os.path.exists(path) and not os.path.isfile(path):
        with output_to(path, append=True) as out:
            yield out
        return
    partial = f"{path}.partial"
    try:
        with output_to(partial) as out:
            yield out
            with contextlib.suppress(
                OSError, AttributeError, ValueError
            ):  # a disk that cannot sync still wrote
                os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    try:
        os.replace(partial, path)
    except OSError as exc:
        raise OutputError(path, exc) from None


async def run_resume(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async resume``: finish a journalled batch, writing the outcome of every item of it; exit 0
    when every ENI of it succeeded, 2 when the journal holds no batch or cannot be used."""
    batch_collector()
    url = journal_url(args.journal, settings, needed=True)
    assert url is not None
    journal = await _open_journal(url, new=False)
    try:
        with _journal_errors(_RESUME_HINT.format(journal.where)):
            return await _resume(args, settings, journal)
    finally:
        await journal.close()


async def _resume(args: argparse.Namespace, settings: Settings, journal: Journal) -> int:
    meta = await journal.meta()
    counts = await journal.counts()
    if not any(counts.values()):
        raise InputError(
            "journal",
            journal.where,
            "holds no items: its batch stopped before the whole input was recorded, so nothing was sent; "
            "nothing to resume, run the batch again",
        )
    if args.append and not args.output:
        raise InputError("--append", True, "needs --output FILE (the file to rewrite with every outcome)")
    own = meta.get("output")
    if own is not None and own == _real(args.output) and not args.append:
        raise InputError(
            "--output",
            args.output,
            "is the batch's own output file; resume writes every outcome, so give another file, "
            "or --append to rewrite it with one line per item",
        )
    # Every row is read once before anything is written or sent: a damaged one stops the resume here, in one
    # line, rather than part-way through its output.
    async for _ in journal.unfinished():
        pass
    given = {key: getattr(args, key, None) for key in RESUME_KEYS}
    recorded = {key: meta[key] for key in RESUME_KEYS if key in meta and given.get(key) is None}
    settings = dataclasses.replace(settings, **recorded)
    todo = counts["pending"] + counts["submitting"] + counts["submitted"]
    # This run's summary counts apart from the journal's earlier outcomes, which are written first.
    finished = [outcome async for outcome in journal.finished_items()]
    try:
        with _rewritten(args.output) if args.append else output_to(args.output) as out:
            if todo == 0:
                for outcome in finished:
                    write_line(out, outcome.to_json(), path=args.output)
                tell(
                    f"journal {journal.where}: all {counts['finished']} items finished; nothing to do",
                    as_json=json_lines(args),
                )
                return 0 if set(await journal.outcome_counts()) <= {SUCCEEDED} else 1
            credentials = await settings_credentials(settings)
            show = show_progress(args)
            async with metrics_cli.endpoint_from(args) as endpoint:
                metrics = client_metrics(endpoint, args)
                async with EniClient(credentials, settings, metrics=metrics) as client:
                    await run_items(
                        client,
                        journal.unfinished(),
                        out=out,
                        total=todo,
                        progress=show,
                        journal=journal,
                        as_json=json_lines(args),
                        settled=finished,
                        earlier=finished,
                        stopped_notes=lambda done: resume_notes(args, journal, done, todo),
                        hint=f"; run 'eni-async resume {journal.where}' again",
                    )
    except OutputError as exc:
        return _output_failed(exc, args, journal)
    done = await journal.counts()
    every = set(await journal.outcome_counts()) <= {SUCCEEDED}
    return 0 if every and done["finished"] == sum(done.values()) else 1


async def run_status(args: argparse.Namespace, settings: Settings | None) -> int:
    """``eni-async status``: a journal's items by state and by outcome, or with ``--outcomes`` every
    finished outcome as JSON Lines. Reads the journal only (no lock); ``settings`` only name the journal
    when the command line does not."""
    url = journal_url(args.journal, settings or Settings(), needed=True)
    assert url is not None
    journal = await _open_journal(url, new=False, read_only=True)
    try:
        with _journal_errors():
            counts = await journal.counts()  # a damaged state is refused here, whatever is asked
            if args.outcomes:
                async for data in journal.finished_outcomes():
                    write_line(sys.stdout, data)
            else:
                print(json.dumps({"items": counts, "outcomes": await journal.outcome_counts()}))
    finally:
        await journal.close()
    return 0
