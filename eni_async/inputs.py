"""Reading batch input: CSV (``vpc_id,eni_id,ip``, one row per IP) or JSON Lines, chosen by extension.

JSON Lines stream: one line is read only when the batch wants another item. CSV rows of one ENI need not
be adjacent, so a CSV file is grouped by ENI in one pass first (memory grows with the file; prefer JSON Lines
for very large batches). A malformed line becomes an ``InvalidItem`` carrying its line number and the rest
still runs; a file that cannot be read at all raises ``InputError``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from eni_async import validation
from eni_async.errors import InputError
from eni_async.outcomes import InvalidItem, Item

CSV_HEADER = ["vpc_id", "eni_id", "ip"]


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
        if not raw.strip():
            continue
        line = _decode(raw, number)
        yield line if isinstance(line, InvalidItem) else _jsonl_item(line, number)


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
    missing = [key for key in ("vpc_id", "eni_id", "ips") if key not in data]
    if missing:
        return InvalidItem(number, InputError(where, line.strip()[:80], f"missing {', '.join(missing)}"))
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

    Each line is decoded on its own, and a row the csv module refuses is its own invalid item: one bad
    line never costs the others.
    """
    bad: list[InvalidItem] = []
    numbers: list[int] = []  # physical line number of each text line handed to the csv reader

    def lines() -> Iterator[str]:
        for number, raw in enumerate(stream, start=1):
            text = _decode(raw, number)
            if isinstance(text, InvalidItem):
                bad.append(text)
                continue
            numbers.append(number)
            yield text

    reader = csv.reader(lines())
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(name, "", f"unreadable CSV header ({exc})") from None
    if header is None or [h.strip() for h in header] != CSV_HEADER:
        shown = ",".join(header or [])[:80]
        raise InputError(name, shown, f"the first line must be the header {','.join(CSV_HEADER)}")
    groups: dict[str, tuple[str, list[str], int]] = {}
    seen: dict[tuple[str, str], int] = {}
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number = numbers[reader.line_num - 1] if reader.line_num else None
            bad.append(InvalidItem(number, InputError(f"line {number}", "", f"unreadable CSV row ({exc})")))
            continue
        number = numbers[reader.line_num - 1]
        problem = _csv_row(row, number, groups, seen)
        if problem is not None:
            bad.append(problem)
    yield from sorted(bad, key=lambda item: item.line or 0)
    for eni, (vpc, ips, first) in groups.items():
        yield Item(vpc, eni, tuple(ips), first)


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
