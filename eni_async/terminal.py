"""What the commands share about the terminal: exit codes, SIGINT/SIGTERM, and lines on stderr.

``Signals`` (``Interruption``) is the one SIGINT/SIGTERM state machine of every command: it routes the signals
during one command to the stoppers the command registered (``batch``, ``resume``, ``demo``, ``unassign``;
``serve`` and ``simulate`` through ``signals_for_command``): the first signal stops submitting and leaves a
grace period, the second ends it, a third exits on the spot; a command that registered nothing is cancelled. ``tell`` writes a line
for the person at the terminal whatever the log level (JSON lines with ``--log-format json``; around the
progress bar while one is drawn), and ``logging_to_stderr`` sets up the ``eni_async`` logger for a command:
at the default level each distinct condition once, its repeats counted (``Conditions``); JSON lines carry
ISO 8601 UTC times. Nothing here parses arguments or runs
a command: ``eni_async.cli`` and ``eni_async.cli_batch`` do, and both use this module (never each other's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime
import errno
import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO, cast

from eni_async.errors import InputError

log = logging.getLogger("eni_async.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)

Stopper = Callable[[bool], None]  # called with now=False on the first signal, now=True on the second


class Signals:
    """SIGINT/SIGTERM during one command, the one state machine of the CLI, ``serve`` and ``simulate``.

    The first signal tells ``first_message`` and calls every registered stopper with ``now=False`` (stop
    submitting, keep a grace period); with no stopper registered the command's task is cancelled. The second
    tells ``again_message`` and calls the stoppers with ``now=True``. A third exits the process on the spot.
    ``exit_code`` is 128 + the first signal's number (130 SIGINT, 143 SIGTERM), unless the command declared
    the signal ``expected`` (``serve`` and ``simulate`` run until told to stop, and then end normally).
    ``installed`` routes the signals here on the running loop for a block (main thread only) and puts the
    previous handlers back. Lines go through ``tell``, so they never land on a progress bar.
    """

    FIRST = (
        "eni-async: {name}: stopping, nothing more is submitted; waiting for work in flight "
        "(send again to stop waiting)"
    )
    AGAIN = "eni-async: {name} again: stopping now"

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.as_json = False
        self.expected = False
        self.first_message = self.FIRST
        self.again_message = self.AGAIN
        self.task: asyncio.Task[Any] | None = None
        self._stoppers: list[Stopper] = []

    @property
    def name(self) -> str:
        """The first signal's name (``SIGINT``), or empty before any."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int | None:
        """128 + the first signal's number (130 SIGINT, 143 SIGTERM), or None when none came or it was expected."""
        return None if self.signum is None or self.expected else 128 + self.signum

    def register(self, stopper: Stopper) -> Callable[[], None]:
        """Tell ``stopper`` of signals until the returned function is called; told at once if one came."""
        self._stoppers.append(stopper)
        if self.count:
            stopper(self.count > 1)
        return lambda: self._stoppers.remove(stopper) if stopper in self._stoppers else None

    def signalled(self, signum: int) -> None:
        """One signal arrived (called on the loop by the installed handler, or directly by tests)."""
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.signum = signum
            message = self.first_message
        elif self.count == 2:
            message = self.again_message
        else:
            os._exit(128 + (self.signum or signum))
        if message:
            tell(message.format(name=name), as_json=self.as_json, level=logging.WARNING, signal=name)
        if self._stoppers:
            for stopper in list(self._stoppers):
                stopper(self.count > 1)
        elif self.task is not None:
            self.task.cancel()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Signals]:
        """Route SIGINT/SIGTERM to ``signalled`` on the running loop for the block (main thread only;
        elsewhere they stay unhandled), then put back the handlers found (``main`` may run many times)."""
        loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for wanted in SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    found = signal.getsignal(wanted)
                    loop.add_signal_handler(wanted, self.signalled, wanted)
                    previous[wanted] = found
        try:
            yield self
        finally:
            for sig, found in previous.items():
                loop.remove_signal_handler(sig)
                if found is not None:
                    signal.signal(sig, found)


class StopRequest:
    """The stopper of a command that runs until told to stop: the first signal sets ``requested``, the second
    calls ``hurry`` when the command has set one."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry: Callable[[], None] | None = None

    def __call__(self, now: bool) -> None:
        if not now:
            self.requested.set()
        elif self.hurry is not None:
            self.hurry()


@contextlib.contextmanager
def signals_for_command(
    *, first_message: str, again_message: str = Signals.AGAIN
) -> Iterator[tuple[Signals, StopRequest]]:
    """For ``serve`` and ``simulate``: the running command's ``Signals`` (or, outside ``main``, one installed
    for the block), with a signal ``expected`` (the command ends normally) and a ``StopRequest`` registered."""
    running = interruption()
    stop = StopRequest()
    with contextlib.ExitStack() as stack:
        signals = running if running is not None else stack.enter_context(Signals().installed())
        signals.expected = True
        signals.first_message, signals.again_message = first_message, again_message
        stack.callback(signals.register(stop))
        yield signals, stop


# The CLI's name for the same machine.
Interruption = Signals


_INTERRUPTION: contextvars.ContextVar[Signals | None] = contextvars.ContextVar(
    "eni_async_interruption", default=None
)


def interruption() -> Signals | None:
    """The running command's signal state (None outside ``main``, e.g. when a handler is called directly)."""
    return _INTERRUPTION.get()


async def with_signals(handler: Handler, args: argparse.Namespace, state: Signals) -> int:
    """Run ``handler`` with SIGINT/SIGTERM routed to ``state`` (main thread only; elsewhere unhandled)."""
    state.task = asyncio.current_task()
    token = _INTERRUPTION.set(state)
    try:
        with state.installed():
            return await handler(args)
    finally:
        _INTERRUPTION.reset(token)


Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into JSON lines.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def iso_time(created: float) -> str:
    """A record's time as ISO 8601 UTC with milliseconds: ``2026-05-04T10:20:30.123Z``."""
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, logger, message, the ``extra`` fields, any error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = repr(record.exc_info[1])
        return json.dumps(entry, ensure_ascii=False, default=str)


Condition = tuple[str, int, str, str, tuple[str, ...]]


def condition_of(record: logging.LogRecord) -> Condition:
    """What makes two records the same condition: logger, level, message template, the action they name and
    the codes of the errors among their arguments (not the ENI, the task or the request id)."""
    args = record.args if isinstance(record.args, tuple) else ()
    codes: list[str] = []
    for arg in args:
        while isinstance(arg, BaseException):  # the error, and what caused it (an unknown outcome's cause)
            codes.append(str(getattr(arg, "code", None) or type(arg).__name__))
            arg = getattr(arg, "cause", None) or arg.__cause__
    return (record.name, record.levelno, str(record.msg), str(getattr(record, "action", "")), tuple(codes))


# What differs between two records of one condition: ids, IP lists, task ids, attempts, request ids.
_PARTICULARS = (
    (re.compile(r"\b(eni|vpc|subnet|eip)-[0-9a-z]{8}\b"), lambda m: m[1].upper()),
    (re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?:, \d{1,3}(?:\.\d{1,3}){3})*"), lambda m: "IPs"),
    (re.compile(r"\btask [0-9a-f-]+"), lambda m: "task …"),
    (re.compile(r"\(attempt \d+\)"), lambda m: "(attempt n)"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), lambda m: "…"),
)


def generic(message: str) -> str:
    """A record's message with what is particular to it (ids, IPs, attempts) left out: its condition's name."""
    for pattern, replacement in _PARTICULARS:
        message = pattern.sub(replacement, message)
    return message


class Conditions(logging.Filter):
    """At the default level, each distinct condition is written once, the first time; the rest are counted
    (``repeated``) and reported at the end in one line each, or in a command's summary. ``-v`` writes every
    record instead."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[Condition] = Counter()
        self.first: dict[Condition, str] = {}
        self.reported: set[Condition] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = condition_of(record)
        self.counts[key] += 1
        if self.counts[key] > 1:
            return False
        self.first[key] = record.getMessage()
        return True

    def repeated(self, *, mark: bool = True) -> list[tuple[str, int]]:
        """``(first message, times seen)`` of each condition seen more than once and not yet reported."""
        found = [(key, n) for key, n in self.counts.items() if n > 1 and key not in self.reported]
        if mark:
            self.reported.update(key for key, _ in found)
        return [(self.first[key], n) for key, n in found]

    def times(self, template_start: str) -> int:
        """How many records whose message template starts with ``template_start`` were seen."""
        return sum(n for key, n in self.counts.items() if key[2].startswith(template_start))


_CONDITIONS: Conditions | None = None


def conditions() -> Conditions | None:
    """The running command's condition counter (None with ``-v``, or outside ``logging_to_stderr``)."""
    return _CONDITIONS


def shorten(text: str, width: int = 100) -> str:
    """``text`` on one line, at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@contextlib.contextmanager
def logging_to_stderr(verbosity: int, fmt: str, stream: TextIO | None = None) -> Iterator[None]:
    """Log ``eni_async`` to stderr for the block: WARNING by default (each distinct condition once, repeats
    counted: ``Conditions``), INFO with -v, DEBUG with -vv; human or JSON lines. The logger is left as it was
    found afterwards (``main`` may run many times in one process)."""
    global _CONDITIONS
    root = logging.getLogger("eni_async")
    saved = (root.handlers[:], root.level, root.propagate, _CONDITIONS)
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    counter = Conditions() if verbosity == 0 else None
    if counter is not None:
        handler.addFilter(counter)
    _CONDITIONS = counter
    root.handlers[:] = [handler]
    root.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)])
    root.propagate = False
    try:
        yield
    finally:
        if counter is not None:
            for message, n in counter.repeated():
                tell(
                    f"eni-async: {n} times in all: {shorten(generic(message), 140)} (-v shows each)",
                    as_json=fmt == "json",
                    level=logging.WARNING,
                    to=handler.stream,
                    repeated=n,
                )
        handler.flush()
        root.handlers[:], root.level, root.propagate, _CONDITIONS = saved


def json_lines(args: argparse.Namespace) -> bool:
    """Whether stderr is JSON lines (``--log-format json`` before or after the command)."""
    return (getattr(args, "sub_log_format", None) or getattr(args, "log_format", "human")) == "json"


# Where ``tell`` writes while a progress bar is drawn: around the bar, never on its line (``progress``).
_around_bar: Callable[[str], None] | None = None


def write_around_bar(writer: Callable[[str], None] | None) -> None:
    """Route ``tell``'s lines through ``writer`` while a bar is drawn (``None``: straight to stderr)."""
    global _around_bar
    _around_bar = writer


def tell(
    message: str, *, as_json: bool, level: int = logging.INFO, to: TextIO | None = None, **fields: Any
) -> None:
    """Write a line for the person at the terminal on stderr, whatever the log level: plain text, or with
    ``as_json`` one JSON object shaped like a log record (``fields`` included), so stderr stays JSON lines.
    While a progress bar is drawn the line goes around it."""
    if as_json:
        record = logging.makeLogRecord(
            {"name": log.name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
            | fields
        )
        message = _JsonFormatter().format(record)
    if _around_bar is not None and to is None:
        _around_bar(message + "\n")
        return
    out = to or sys.stderr
    try:
        out.write(message + "\n")
        out.flush()
    except (OSError, ValueError):  # stderr closed too: nothing left to tell
        pass


class OutputError(Exception):
    """The output could not be written (a full disk, a closed pipe): the command stops. ``closed``: the
    reader went away (``| head``), which is no failure of ours to report."""

    def __init__(self, path: str | None, exc: OSError) -> None:
        self.path = "stdout" if path in (None, "", "<stdout>") else path
        self.closed = isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE
        super().__init__(f"cannot write the output {self.path}: {exc.strerror or exc}")


class _Closed(io.TextIOBase):
    """Stands for a standard stream that was closed when the process started (``cmd >&-``, ``cmd <&-``), which
    Python leaves ``None``: writing to it is an ``OutputError`` (one line, as on a full disk), reading it an
    ``InputError``; never an ``AttributeError`` reported as a bug."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OutputError(None, OSError(errno.EBADF, os.strerror(errno.EBADF)))

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        raise InputError("INPUT", "-", f"{self._what} is closed")

    @property
    def buffer(self) -> _Closed:
        """``sys.stdin.buffer`` (how ``-`` is read): taken when the input is opened, before any request."""
        return cast(_Closed, self.read())


def stand_in_for_closed_streams() -> None:
    """Give each standard stream Python left ``None`` (its descriptor was closed at start-up) a stand-in:
    stdout and stdin fail as a closed descriptor does (``_Closed``); stderr, where nothing could be told of
    it, discards what is written."""
    if sys.stdin is None:
        sys.stdin = cast(TextIO, _Closed("standard input"))
    if sys.stdout is None:
        sys.stdout = cast(TextIO, _Closed("standard output"))
    if sys.stderr is None:
        sys.stderr = cast(TextIO, _Discarded())


class _Discarded(io.TextIOBase):
    """A sink: what is written to a closed stderr goes nowhere (there is nowhere left to tell of it)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


def drop_stdout() -> None:
    """Point stdout at the null device, so that Python's flush at exit cannot fail a second time."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def emit(obj: object, stream: TextIO | None = None) -> None:
    """Write one JSON line to stdout (or ``stream``)."""
    out = stream or sys.stdout
    try:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()
    except OSError as exc:
        raise OutputError(getattr(out, "name", None), exc) from None


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "Interruption",
    "OutputError",
    "Signals",
    "StopRequest",
    "drop_stdout",
    "emit",
    "interruption",
    "json_lines",
    "logging_to_stderr",
    "signals_for_command",
    "stand_in_for_closed_streams",
    "tell",
    "with_signals",
]
