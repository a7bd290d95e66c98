"""What the commands share about the terminal: exit codes, SIGINT/SIGTERM, and lines on stderr.

``Signals`` (``Interruption``) is the one SIGINT/SIGTERM state machine of every command: it routes the signals
during one command to the stoppers the command registered (``batch``, ``resume``, ``demo``, ``unassign``;
``serve`` and ``simulate`` through ``signals_for_command``): the first signal stops submitting and leaves a
grace period, the second ends it, a third exits on the spot; a command that registered nothing is cancelled. ``tell`` writes a line
for the person at the terminal whatever the log level (JSON lines with ``--log-format json``), and
``logging_to_stderr`` sets up the ``eni_async`` logger for a command. Nothing here parses arguments or runs
a command: ``eni_async.cli`` and ``eni_async.cli_batch`` do, and both use this module (never each other's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO

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


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ``extra`` fields, and any error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = repr(record.exc_info[1])
        return json.dumps(entry, ensure_ascii=False, default=str)


@contextlib.contextmanager
def logging_to_stderr(verbosity: int, fmt: str, stream: TextIO | None = None) -> Iterator[None]:
    """Log ``eni_async`` to stderr for the block: WARNING by default, INFO with -v, DEBUG with -vv; human or
    JSON lines. The logger is left as it was found afterwards (``main`` may run many times in one process)."""
    root = logging.getLogger("eni_async")
    saved = (root.handlers[:], root.level, root.propagate)
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)])
    root.propagate = False
    try:
        yield
    finally:
        handler.flush()
        root.handlers[:], root.level, root.propagate = saved


def json_lines(args: argparse.Namespace) -> bool:
    """Whether stderr is JSON lines (``--log-format json`` before or after the command)."""
    return (getattr(args, "sub_log_format", None) or getattr(args, "log_format", "human")) == "json"


def tell(message: str, *, as_json: bool, level: int = logging.INFO, **fields: Any) -> None:
    """Write a line for the person at the terminal on stderr, whatever the log level: plain text, or with
    ``as_json`` one JSON object shaped like a log record (``fields`` included), so stderr stays JSON lines."""
    if as_json:
        record = logging.makeLogRecord(
            {"name": log.name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
            | fields
        )
        message = _JsonFormatter().format(record)
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class OutputError(Exception):
    """The output could not be written (a full disk, a closed pipe): the command stops."""

    def __init__(self, path: str | None, exc: OSError) -> None:
        self.path = path or "stdout"
        super().__init__(f"cannot write the output {self.path}: {exc.strerror or exc}")


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
    "emit",
    "interruption",
    "json_lines",
    "logging_to_stderr",
    "signals_for_command",
    "tell",
    "with_signals",
]
