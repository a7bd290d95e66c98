"""What a person watching a batch sees on stderr: a live bar (tqdm) and a summary table at the end.

The bar shows the ENIs done by status (the summary's names and counts: ``succeeded``, ``failed``, ``submitted``,
``not_attempted``) and in flight, the rate and the ETA; it is drawn only when stderr is a terminal (or when
asked). The bar never shares a line with other output: a result line written with ``Progress.write``, and while
the bar is drawn every ``eni_async`` log record and every line ``terminal.tell`` writes (a signal's, say), clears
the bar first and redraws it after when it goes to the bar's terminal (stdout and stderr both on one screen).
The summary counts every IP once; lines that could not be read have their own rows; a resumed batch shows this
run beside the journal's total; ``tell_summary`` writes it (a table, or one JSON line), closed by the warnings
counted at the default level and, for a stopped batch, ``resume_notes``: what is left and the exact command
that finishes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from eni_async import terminal
from eni_async.batch import BatchStats
from eni_async.journal import Journal
from eni_async.outcomes import STATUSES, SUCCEEDED, Outcome
from eni_async.settings_check import mask_url

if TYPE_CHECKING:
    from tqdm import tqdm


class Progress:
    """A progress bar over a batch's counters; a no-op when disabled."""

    def __init__(
        self, stats: BatchStats, *, total: int | None, enabled: bool, stream: TextIO | None = None
    ) -> None:
        self.stats = stats
        self._bar: tqdm[Any] | None = None
        self._stream = stream or sys.stderr
        self._shared: dict[int, bool] = {}
        self._logger = logging.getLogger("eni_async")
        self._handlers = self._logger.handlers[:]
        if enabled:
            from tqdm import tqdm  # imported when a bar is shown: serve and --no-progress never pay for it

            self._bar = tqdm(
                total=total,
                file=self._stream,
                unit="eni",
                dynamic_ncols=True,
                mininterval=0.2,
                smoothing=0.1,
            )
            self._logger.handlers[:] = [
                _AroundBar(h, self) if isinstance(h, logging.StreamHandler) else h for h in self._handlers
            ]
            terminal.write_around_bar(self._tell)

    def _tell(self, text: str) -> None:
        self.write(self._stream, text)
        self._stream.flush()

    def write(self, out: TextIO, text: str) -> None:
        """Write ``text`` to ``out``; when ``out`` is on the bar's terminal, clear the bar around it."""
        if self._bar is None or not self._shares_terminal(out):
            out.write(text)
            return
        self._bar.clear()
        out.write(text)
        out.flush()
        self._bar.refresh()

    def _shares_terminal(self, out: TextIO) -> bool:
        if id(out) not in self._shared:
            try:
                same = out.isatty() and os.path.samestat(
                    os.fstat(out.fileno()), os.fstat(self._stream.fileno())
                )
            except (AttributeError, OSError, ValueError):  # no file descriptor (a StringIO, a wrapper)
                same = False
            self._shared[id(out)] = same
        return self._shared[id(out)]

    def update(self) -> None:
        """Advance the bar to the batch's counters."""
        if self._bar is None:
            return
        counts = self.stats.by_status
        shown: dict[str, object] = {status: counts[status] for status in STATUSES if counts.get(status)}
        shown["in_flight"] = self.stats.in_flight
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(self.stats.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self.update()
            self._bar.close()
            self._logger.handlers[:] = self._handlers
            terminal.write_around_bar(None)


class _AroundBar(logging.Handler):
    """A stream handler's records, written through ``Progress.write`` so they never land on the bar's line."""

    def __init__(self, inner: logging.StreamHandler[TextIO], progress: Progress) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.progress = progress
        self.setFormatter(inner.formatter)
        self.filters = inner.filters[:]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write(self.inner.stream, self.format(record) + self.inner.terminator)
            self.inner.flush()
        except Exception:  # logging must never break the batch; report it the way logging does
            self.handleError(record)


def unreadable(outcome: Outcome) -> bool:
    """An input line that could not be read (or named bad ids or IPs): failed before anything was sent."""
    error = outcome.error or {}
    return (
        error.get("code") == "InvalidInput"
        and not outcome.task_ids
        and not outcome.attempts
        and not (outcome.released or outcome.not_released or outcome.unknown or outcome.absent)
    )


class Summary:
    """Counts over finished outcomes, rendered as a small table.

    Every IP asked for is counted once, under released, not released, unknown, absent, or in an unreadable
    line (an item that could not be read, whose four lists are empty), so those rows add up to the IPs asked
    for. ``earlier`` (a resume) holds the journal's outcomes from earlier runs: the table then shows this run
    beside the journal's total.
    """

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.asked = 0
        self.released = 0
        self.not_released = 0
        self.unknown = 0
        self.absent = 0
        self.unreadable = 0
        self.unreadable_ips = 0
        self.tasks = 0
        self.errors: Counter[str] = Counter()
        self.earlier: Summary | None = None

    def add(self, outcome: Outcome) -> None:
        statuses = self.statuses
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1  # (a third cheaper than ``+= 1``)
        asked = set(outcome.ips)
        self.asked += len(asked)
        self.tasks += len(outcome.task_ids)
        if outcome.error is not None:  # (an unreadable line has one)
            self.errors[outcome.error["code"]] += 1
            if unreadable(outcome):
                self.unreadable += 1
                self.unreadable_ips += len(asked)
                return
        listed = outcome.released
        # The common case: every IP asked for released (in the order asked, most cheaply seen).
        if listed == [*outcome.ips] or asked == set(listed):
            self.released += len(asked)
            return
        released, unknown, absent = (asked & set(ips) for ips in (listed, outcome.unknown, outcome.absent))
        self.released += len(released)
        self.unknown += len(unknown - released)
        self.absent += len(absent - released - unknown)
        self.not_released += len(asked - released - unknown - absent)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def all_succeeded(self) -> bool:
        return self.statuses[SUCCEEDED] == self.total

    @property
    def interrupted(self) -> int:
        """Outcomes a stop left open: nothing sent, or IPs sent whose fate was not seen."""
        return self.errors["Interrupted"] + self.errors["NotAttempted"]

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("ENIs", str(self.total))]
        rows += [(f"  {status}", str(self.statuses[status])) for status in STATUSES]
        rows += [
            ("  unreadable lines", str(self.unreadable)),
            ("IPs asked for", str(self.asked)),
            ("  released", str(self.released)),
            ("  not released", str(self.not_released)),
            ("  unknown", str(self.unknown)),
            ("  absent", str(self.absent)),
            ("  in unreadable lines", str(self.unreadable_ips)),
            ("tasks", str(self.tasks)),
        ]
        return rows

    def combined(self) -> Summary:
        """This run and ``earlier`` together (the journal's total)."""
        total = Summary()
        for part in (self, self.earlier or Summary()):
            total.statuses.update(part.statuses)
            total.errors.update(part.errors)
            for name in ("asked", "released", "not_released", "unknown", "absent", "unreadable",
                         "unreadable_ips", "tasks"):  # fmt: skip
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total

    def render(self, elapsed: float, *, notes: list[str] | None = None) -> str:
        rate = self.total / elapsed if elapsed > 0 else 0.0
        optional = {f"  {status}" for status in STATUSES} | {"  unreadable lines", "  in unreadable lines"}
        if self.earlier is None:
            rows = [(name, value) for name, value in self._rows() if value != "0" or name not in optional]
            rows.append(("elapsed", f"{elapsed:.1f}s ({rate:.1f} ENI/s)"))
            rows += [(f"  error {code}", str(n)) for code, n in self.errors.most_common(8)]
            width = max(len(name) for name, _ in rows)
            lines = [f"{name:<{width}}  {value}" for name, value in rows]
        else:
            total = self.combined()
            pairs = [
                (name, mine, all_)
                for (name, mine), (_, all_) in zip(self._rows(), total._rows(), strict=True)
                if all_ != "0" or name not in optional
            ]
            pairs.append(("elapsed", f"{elapsed:.1f}s", ""))
            pairs += [
                (f"  error {code}", str(self.errors[code]), str(n)) for code, n in total.errors.most_common(8)
            ]
            width = max(len(name) for name, _, _ in pairs)
            column = max(len("this run"), *(len(mine) for _, mine, _ in pairs))
            lines = [f"{'':<{width}}  {'this run':>{column}}  journal total"]
            lines += [f"{name:<{width}}  {mine:>{column}}  {all_}".rstrip() for name, mine, all_ in pairs]
        lines += notes or []
        return "\n".join(lines)


def warning_rows() -> list[str]:
    """The warnings counted at the default level, for the end of a summary: one line per condition seen
    more than once (the first was shown when it happened), marked reported."""
    counter = terminal.conditions()
    if counter is None:
        return []
    return [
        f"warned {n} times: {terminal.shorten(terminal.generic(message), 140)} (-v shows each)"
        for message, n in counter.repeated()
    ]


def tell_summary(summary: Summary, elapsed: float, *, as_json: bool, notes: Sequence[str] = ()) -> None:
    """The summary on stderr: the table, or with ``as_json`` one JSON line; ``notes`` and the counted
    warnings close it."""
    notes = [*notes, *warning_rows()]
    if not as_json:
        sys.stderr.write(summary.render(elapsed, notes=notes) + "\n")
        sys.stderr.flush()
        return
    fields: dict[str, Any] = {
        "enis": summary.total,
        "statuses": dict(summary.statuses),
        "ips": summary.asked,
        "released": summary.released,
        "not_released": summary.not_released,
        "unknown": summary.unknown,
        "absent": summary.absent,
        "unreadable_lines": summary.unreadable,
        "tasks": summary.tasks,
        "errors": dict(summary.errors),
        "elapsed_s": round(elapsed, 3),
    }
    if summary.earlier is not None:  # a resume: this run above, the journal's whole batch here
        total = summary.combined()
        fields["journal_total"] = {"enis": total.total, "statuses": dict(total.statuses), "ips": total.asked,
                                   "released": total.released, "unknown": total.unknown}  # fmt: skip
    if notes:
        fields["notes"] = notes
    terminal.tell(
        f"batch finished: {summary.total} ENIs, {summary.statuses[SUCCEEDED]} succeeded",
        as_json=True,
        **fields,
    )


async def resume_notes(
    args: argparse.Namespace, journal: Journal | None, summary: Summary, total: int | None
) -> list[str]:
    """What a stopped batch leaves, and the exact command that finishes it."""
    if journal is None:
        left = summary.interrupted + max(0, (total or 0) - summary.total)
        return [
            f"stopped: {left} item(s) left unfinished; without --journal nothing records them: run the batch "
            "again for those (with --journal FILE to make it resumable)"
        ]
    counts = await journal.counts()
    left = counts["pending"] + counts["submitting"] + counts["submitted"]
    command = ["eni-async", "resume", journal.where]
    if getattr(args, "output", None):
        command += ["--output", args.output, "--append"]
    for option in ("config", "profile"):
        if getattr(args, option, None):
            command += [f"--{option}", getattr(args, option)]
    quota = getattr(args, "shared_quota", None)
    masked = ["the journal URL"] if "***" in journal.where else []  # ``where`` is masked already
    if quota and mask_url(quota) == quota:
        command += ["--shared-quota", quota]
    elif quota:
        masked.append("the same --shared-quota")
    extra = f" (with {' and '.join(masked)}, password masked here)" if masked else ""
    return [f"stopped: {left} item(s) left in the journal; finish them with: {shlex.join(command)}{extra}"]
