"""What a person watching a batch sees on stderr: a live bar (tqdm) and a summary table at the end.

The bar shows done, failed and in-flight ENIs, the rate and the ETA; it is drawn only when stderr is a
terminal (or when asked). The bar never shares a line with other output: a result line written with
``Progress.write``, and while the bar is drawn every ``eni_async`` log record, clears the bar first and
redraws it after when it goes to the bar's terminal (stdout and stderr both on one screen).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from typing import Any, TextIO

from tqdm import tqdm

from eni_async.batch import BatchStats
from eni_async.outcomes import STATUSES, SUCCEEDED, Outcome


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
        self._bar.set_postfix(failed=self.stats.failed, in_flight=self.stats.in_flight, refresh=False)
        self._bar.update(self.stats.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self.update()
            self._bar.close()
            self._logger.handlers[:] = self._handlers


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


class Summary:
    """Counts over finished outcomes, rendered as a small table.

    Every IP asked for is counted once, under released, not released, unknown or absent; an IP an outcome
    leaves in none of them (an item that could not be read) is counted as not released, so the four rows
    always add up to the IPs asked for.
    """

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.asked = 0
        self.released = 0
        self.not_released = 0
        self.unknown = 0
        self.absent = 0
        self.tasks = 0
        self.errors: Counter[str] = Counter()

    def add(self, outcome: Outcome) -> None:
        self.statuses[outcome.status] += 1
        asked = set(outcome.ips)
        released, unknown, absent = (
            asked & set(ips) for ips in (outcome.released, outcome.unknown, outcome.absent)
        )
        self.asked += len(asked)
        self.released += len(released)
        self.unknown += len(unknown - released)
        self.absent += len(absent - released - unknown)
        self.not_released += len(asked - released - unknown - absent)
        self.tasks += len(outcome.task_ids)
        if outcome.error is not None:
            self.errors[outcome.error["code"]] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def all_succeeded(self) -> bool:
        return self.statuses[SUCCEEDED] == self.total

    def render(self, elapsed: float) -> str:
        rate = self.total / elapsed if elapsed > 0 else 0.0
        rows = [("ENIs", str(self.total))]
        rows += [(f"  {status}", str(self.statuses[status])) for status in STATUSES if self.statuses[status]]
        rows += [
            ("IPs asked for", str(self.asked)),
            ("  released", str(self.released)),
            ("  not released", str(self.not_released)),
            ("  unknown", str(self.unknown)),
            ("  absent", str(self.absent)),
            ("tasks", str(self.tasks)),
            ("elapsed", f"{elapsed:.1f}s ({rate:.1f} ENI/s)"),
        ]
        rows += [(f"  error {code}", str(n)) for code, n in self.errors.most_common(8)]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
