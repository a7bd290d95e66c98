"""Reading batch input: CSV (``vpc_id,eni_id,ip``, one row per IP) or JSON Lines, chosen by extension.

JSON Lines stream: one line is read only when the batch wants another item; on a pipe, a socket or a terminal
(``-``) lines are read as they arrive without holding the event loop (``StreamedJsonl``). CSV rows of one ENI need not
be adjacent, so a CSV file is grouped by ENI in one pass first (memory grows with the file; prefer JSON Lines
for very large batches). Every line stands alone, in both formats: a malformed line (bad JSON, a key the
item does not have, a stray quote, a bad id or IP) becomes an ``InvalidItem`` carrying its line number and
the rest still runs; a file that cannot be read at all raises ``InputError``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from eni_async import validation
from eni_async.errors import InputError
from eni_async.outcomes import InvalidItem, Item

CSV_HEADER = ["vpc_id", "eni_id", "ip"]
JSONL_KEYS = ("vpc_id", "eni_id", "ips")


def read_items(source: str) -> Iterator[Item | InvalidItem]:
    """Items from a path (``.csv``, ``.jsonl``/``.json``/``.ndjson``) or ``-`` (JSON Lines on stdin)."""
    if source == "-":
        return read_jsonl(sys.stdin.buffer)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise InputError("INPUT", source, "expected a .csv or .jsonl file, or - for JSON Lines on stdin")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError("INPUT", source, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        if suffix == ".csv":
            return iter(list(read_csv(handle, source)))
    # Checked readable above; reopened lazily so that an unstarted batch leaves no file open.
    return _streamed(path)


def count_lines(source: str) -> int | None:
    """How many items a file will give at most (for progress), or ``None`` for stdin or CSV."""
    if source == "-" or source.lower().endswith(".csv"):
        return None
    try:
        with open(source, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def _streamed(path: Path) -> Iterator[Item | InvalidItem]:
    with path.open("rb") as handle:
        yield from read_jsonl(handle)


def _decode(raw: bytes, number: int) -> str | InvalidItem:
    """One line as text; a line that is not UTF-8 is its own invalid item (the others still count)."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return InvalidItem(number, InputError(f"line {number}", "", f"not UTF-8 ({exc.reason})"))


def read_jsonl(stream: IO[bytes]) -> Iterator[Item | InvalidItem]:
    """Items from JSON Lines ``{"vpc_id": ..., "eni_id": ..., "ips": [...]}``, lazily, line by line."""
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield _raw_item(raw, number)


def _raw_item(raw: bytes, number: int) -> Item | InvalidItem:
    """The item of one line that is not blank (as read: bytes, its newline or not)."""
    line = _decode(raw, number)
    return line if isinstance(line, InvalidItem) else _jsonl_item(line, number)


def streams(fd: int) -> bool:
    """Whether ``fd`` is a pipe, a socket or a terminal: read as it comes (``StreamedJsonl``), since a read
    may wait for as long as its writer is silent; a regular file (or ``/dev/null``) is read as a file."""
    if sys.platform == "win32":  # no readiness for pipes there: read as a file
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


class StreamedJsonl:
    """``read_jsonl`` for a pipe, a socket or a terminal (``streams``), as an async iterable: each line as soon
    as it is complete, read only when the descriptor is readable, so a silent writer never holds the event
    loop (the releases in flight go on, and their outcomes are written meanwhile). ``end()`` ends it at once,
    even while the writer is silent (a stop: lines not read stay unread). The descriptor is non-blocking while
    it is read here, then its flags are as found (a shell's terminal must not stay non-blocking)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._woken = asyncio.Event()
        self._ended = False

    def end(self) -> None:
        """Read no more: the iteration ends at its next step."""
        self._ended = True
        self._woken.set()

    async def __aiter__(self) -> AsyncIterator[Item | InvalidItem]:
        import fcntl  # (POSIX only, as ``streams`` is)

        fd, woken = self._fd, self._woken
        loop = asyncio.get_running_loop()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        # Non-blocking while read here: a wake-up may be stale (the data already read), and a read must never
        # wait on the event loop.
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        loop.add_reader(fd, woken.set)
        try:
            number, rest, ended = 0, b"", False
            while not ended:
                await woken.wait()
                woken.clear()
                if self._ended:
                    return
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, InterruptedError):  # a stale wake-up: nothing to read yet
                    continue
                ended = not data
                lines = (rest + data).split(b"\n")
                rest = b"" if ended else lines.pop()
                for raw in lines:
                    number += 1
                    if self._ended:
                        return
                    if raw.strip():
                        yield _raw_item(raw, number)
        finally:
            loop.remove_reader(fd)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _jsonl_item(line: str, number: int) -> Item | InvalidItem:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return InvalidItem(number, InputError(where, line.strip()[:80], f"not JSON ({exc.msg})"))
    except (ValueError, RecursionError) as exc:  # numbers too long to convert, nesting too deep
        return InvalidItem(number, InputError(where, line.strip()[:80], f"not JSON ({type(exc).__name__})"))
    if not isinstance(data, dict):
        return InvalidItem(number, InputError(where, data, "expected a JSON object"))
    missing = [key for key in JSONL_KEYS if key not in data]
    if missing:
        return InvalidItem(number, InputError(where, line.strip()[:80], f"missing {', '.join(missing)}"))
    unknown = [key for key in data if key not in JSONL_KEYS]
    if unknown:  # a typo ("eni", "ip") must not pass for an item, as the service refuses it too
        shown = ", ".join(repr(key)[:40] for key in unknown[:5])
        return InvalidItem(
            number,
            InputError(
                f"{where}: {unknown[0][:40]}",
                line.strip()[:80],
                f"unknown key(s) {shown}; an item has {', '.join(JSONL_KEYS)}",
            ),
            vpc_id=str(data["vpc_id"])[:80],
            eni_id=str(data["eni_id"])[:80],
        )
    vpc, eni, ips = data["vpc_id"], data["eni_id"], data["ips"]
    try:
        vpc, eni, checked = validation.release_request(vpc, eni, ips)
    except InputError as exc:
        error = InputError(f"{where}: {exc.field}", exc.value, exc.reason)
        return InvalidItem(
            number,
            error,
            vpc_id=str(vpc),
            eni_id=str(eni),
            ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
        )
    return Item(vpc, eni, checked, number)


def read_csv(stream: IO[bytes], name: str = "INPUT") -> Iterator[Item | InvalidItem]:
    """Items from CSV with the header ``vpc_id,eni_id,ip``, grouped by ENI (first-seen order).

    Each line stands alone: it is decoded and parsed on its own, so a quote never runs on into the lines
    after it (ids and IPs hold no line breaks), and a line that cannot be read is its own invalid item
    naming its line: one bad line never costs the others.
    """
    lines = enumerate(stream, start=1)
    header = _csv_header(next(lines, None), name)
    if header is None or [h.strip() for h in header] != CSV_HEADER:
        shown = ",".join(header or [])[:80]
        raise InputError(name, shown, f"the first line must be the header {','.join(CSV_HEADER)}")
    bad: list[InvalidItem] = []
    groups: dict[str, tuple[str, list[str], int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, raw in lines:
        text = _decode(raw, number)
        if isinstance(text, InvalidItem):
            bad.append(text)
            continue
        try:
            row = next(csv.reader([text], strict=True), [])
        except csv.Error as exc:
            bad.append(InvalidItem(number, InputError(f"line {number}", "", f"unreadable CSV row ({exc})")))
            continue
        problem = _csv_row(row, number, groups, seen)
        if problem is not None:
            bad.append(problem)
    yield from bad
    for eni, (vpc, ips, first) in groups.items():
        yield Item(vpc, eni, tuple(ips), first)


def _csv_header(first: tuple[int, bytes] | None, name: str) -> list[str] | None:
    """The header row (line 1), or ``None`` for an empty file."""
    if first is None:
        return None
    text = _decode(first[1], first[0])
    if isinstance(text, InvalidItem):
        raise InputError(name, "", "unreadable CSV header (not UTF-8)")
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise InputError(name, "", f"unreadable CSV header ({exc})") from None


def _csv_row(
    row: list[str],
    number: int,
    groups: dict[str, tuple[str, list[str], int]],
    seen: dict[tuple[str, str], int],
) -> InvalidItem | None:
    """Add one row to its ENI's group, or say why it cannot be."""
    if not row or all(not cell.strip() for cell in row):
        return None
    where = f"line {number}"
    if len(row) != 3:
        return InvalidItem(
            number, InputError(where, ",".join(row)[:80], "expected 3 columns: vpc_id,eni_id,ip")
        )
    cells = [cell.strip() for cell in row]
    try:
        vpc = validation.vpc_id(cells[0], f"{where}: vpc_id")
        eni = validation.eni_id(cells[1], f"{where}: eni_id")
        ip = validation.ipv4(cells[2], f"{where}: ip")
    except InputError as exc:
        return InvalidItem(number, exc, vpc_id=cells[0][:80], eni_id=cells[1][:80], ips=(cells[2][:80],))
    if (eni, ip) in seen:
        return InvalidItem(
            number, InputError(f"{where}: ip", ip, f"duplicate of line {seen[(eni, ip)]}"), vpc, eni, (ip,)
        )
    group = groups.get(eni)
    if group is not None and group[0] != vpc:
        error = InputError(f"{where}: vpc_id", vpc, f"{eni} is in {group[0]} on line {group[2]}")
        return InvalidItem(number, error, vpc, eni, (ip,))
    seen[(eni, ip)] = number
    if group is None:
        groups[eni] = (vpc, [ip], number)
    else:
        group[1].append(ip)
    return None


def parse_jsonl_text(text: str) -> list[Item | InvalidItem]:
    """Convenience for tests and examples: items from a JSON Lines string."""
    return list(read_jsonl(io.BytesIO(text.encode("utf-8"))))
