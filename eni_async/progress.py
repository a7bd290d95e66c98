"""What a person watching a batch sees on stderr: a live bar (tqdm) and a summary table at the end.

The bar shows done, failed and in-flight ENIs, the rate and the ETA; it is drawn only when stderr is a
terminal (or when asked). Nothing here touches stdout, which carries the JSON results.
"""

from __future__ import annotations

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
        if enabled:
            self._bar = tqdm(
                total=total,
                file=stream or sys.stderr,
                unit="eni",
                dynamic_ncols=True,
                mininterval=0.2,
                smoothing=0.1,
            )

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
