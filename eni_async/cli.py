"""The ``eni-async`` command: the only place with ``asyncio.run``, printing and exit codes.

Exit codes: 0 success, 1 an API call, a task or an item failed, 2 bad input or configuration (a one-line
message on stderr, no traceback, and no request sent), 130 interrupted by SIGINT, 143 by SIGTERM. Results go
to stdout as JSON; logs and progress go to stderr.

SIGINT and SIGTERM are handled in one place (``eni_async.terminal.Interruption``, around ``asyncio.run``): a command
that registers a stopper (``batch``, ``resume``, ``demo``, ``unassign``) is told to stop submitting and given
``settings.grace`` seconds to learn the fate of its work in flight, then writes an outcome for every item and
its summary; a second signal ends the grace at once, a third exits on the spot. A command that registered
nothing is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import difflib
import gc
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from eni_async import __version__, cli_batch, cli_demo, cli_journal
from eni_async.credentials import settings_credentials
from eni_async.credentials.chain import command_line
from eni_async.errors import EniAsyncError, InputError, error_code, error_info
from eni_async.settings import Settings, defaults_file, load_settings, settings_as_dict
from eni_async.terminal import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    Interruption,
    OutputError,
    drop_stdout,
    emit,
    interruption,
    json_lines,
    logging_to_stderr,
    stand_in_for_closed_streams,
    tell,
    with_signals,
)

log = logging.getLogger("eni_async.cli")


class UsageError(InputError):
    """A command line that argparse rejected: ``PROG: error: MESSAGE`` (argparse's message, with a
    suggestion when a close option or command exists)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__("arguments", "", message)
        self.prog = prog

    def __str__(self) -> str:
        return f"{self.prog}: error: {self.reason}"


def _closest(word: str, known: Sequence[str]) -> str | None:
    """The known option or command ``word`` most likely meant: one it abbreviates, else a close spelling."""
    starting = [k for k in known if k.startswith(word) and len(word) > 2]
    if len(starting) == 1:
        return starting[0]
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return close[0] if close else None


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as an ``InputError`` instead of exiting, never takes an
    abbreviation for an option (``--conc`` is not ``--concurrency``), and suggests the closest command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice is not None:
            known = re.findall(r"'([^']*)'", choice[2])
            guess = _closest(choice[1], known)
            if guess is not None:
                message += f"; did you mean '{guess}'?"
        raise UsageError(self.prog, message)

    def options(self) -> list[str]:
        """Every option string this parser takes."""
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> UsageError:
    """The error for arguments no parser took, naming the command and suggesting the options meant."""
    sub = _commands(parser).get(getattr(args, "command", None) or "", parser)
    known = sub.options() if isinstance(sub, _Parser) else []
    hints = []
    for extra in extras:
        if extra.startswith("--"):
            guess = _closest(extra.split("=", 1)[0], known)
            if guess is not None:
                hints.append(f"{extra.split('=', 1)[0]}: did you mean {guess}?")
    message = f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")
    return UsageError(sub.prog, message)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _log_options(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """-v, --log-format and --loop, accepted after the command too (``eni-async batch -v ...``), and after a
    command's action (``eni-async journal copy A B -v``: ``defaults=False``, so that an action's parser, whose
    values argparse copies over the command's, sets only the options given to it)."""
    unset: Any = argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if defaults else unset,
        dest="sub_verbose",
        help="more logs (-v INFO, -vv DEBUG)",
    )
    parser.add_argument(
        "--log-format",
        choices=["human", "json"],
        default=None if defaults else unset,
        dest="sub_log_format",
        help="log line format",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default=None if defaults else unset,
        dest="sub_loop",
        help="event loop (default auto)",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="API endpoint, scheme://host[:port] (default: the dialect's)")
    parser.add_argument(
        "--region",
        help="region, e.g. ap-guangzhou (default: $ENI_ASYNC_REGION, $TENCENTCLOUD_REGION, the settings file, "
        "the profile's region, ap-guangzhou)",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="credentials profile: the [NAME] section of ~/.tencentcloud/credentials and tccli's "
        "~/.tccli/NAME.credential (default: $ENI_ASYNC_PROFILE, $TCCLI_PROFILE, the settings file, else default)",
    )
    parser.add_argument("--dialect", choices=["v2", "v3"], help="API 2.0 (v2, default) or API 3.0 (v3)")
    parser.add_argument("--config", metavar="FILE", help="settings file (TOML); also $ENI_ASYNC_CONFIG")
    parser.add_argument(
        "--shared-quota",
        metavar="URL",
        help="share the account's rate limits with other processes through Redis (redis://HOST:PORT/DB)",
    )


SETTINGS_HELP = """\
settings: defaults, then the file (--config FILE or $ENI_ASYNC_CONFIG), then ENI_ASYNC_* variables, then
options. Every key of 'eni-async config --defaults' has a variable: ENI_ASYNC_ and the key in capitals, a
section's key joined with _ (ENI_ASYNC_REGION, ENI_ASYNC_RATE_LIMITS_TASK_QUERY=6.5, ENI_ASYNC_POLL_ADAPTIVE=false).
profile: --profile > ENI_ASYNC_PROFILE > TCCLI_PROFILE > file > default.
region: --region > ENI_ASYNC_REGION > TENCENTCLOUD_REGION > file > the profile's region > ap-guangzhou
(-v logs the one chosen and where it came from).

example: eni-async demo"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every command; with ``only``, the arguments of that command alone (every other
    is listed, with its help, and nothing of its own is loaded: ``simulate``'s arguments bring the whole
    simulator in)."""
    parser = _Parser(
        prog="eni-async",
        description="Release secondary private IPs from Tencent Cloud ENIs.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eni-async {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-v INFO, -vv DEBUG)")
    parser.add_argument(
        "--log-format", choices=["human", "json"], default="human", help="log lines on stderr: human or json"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop where installed (auto, the default), or asyncio's own",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    from eni_async.service import command as service_command

    specs = (
        Command(
            "unassign",
            "release IPs from one ENI and wait for the task",
            "Release secondary IPs from one ENI; prints one JSON object.",
            "eni-async unassign --vpc-id vpc-7t9nf3pu --eni-id eni-m6dyj72l --ip 10.0.0.2",
            _add_unassign_arguments,
            _run_unassign,
            client_options=True,
        ),
        Command(
            "simulate",
            "run the local Tencent VPC simulator in the foreground",
            "Run the embedded Tencent VPC simulator; prints one JSON line when ready.",
            "eni-async simulate --enis 100 --ips-per-eni 5 --faults flaky --port 8080",
            _add_simulate_arguments,
            _run_simulate,
        ),
        Command(
            "batch",
            "release IPs from many ENIs listed in a file",
            "Release IPs from many ENIs; one JSON line per ENI on stdout (or --output).",
            "eni-async batch enis.csv --output results.jsonl --concurrency 64",
            cli_batch.add_batch_arguments,
            _with_settings(cli_batch.run_batch),
            client_options=True,
        ),
        Command(
            "demo",
            "release every IP of a local simulator and check the result",
            "Start the embedded simulator, release all its secondary IPs, verify against ground truth.",
            "eni-async demo --enis 500 --ips-per-eni 4 --faults flaky",
            cli_demo.add_demo_arguments,
            _with_settings(cli_demo.run_demo),
        ),
        Command(
            "resume",
            "finish a journalled batch after a crash",
            "Finish a batch recorded with --journal: finished items are left alone, submitted tasks are "
            "polled (never resubmitted), pending items run.",
            "eni-async resume batch.journal --output rest.jsonl",
            cli_batch.add_resume_arguments,
            _with_settings(cli_batch.run_resume),
            client_options=True,
        ),
        Command(
            "serve",
            "run the release service: an HTTP API that tracks every release to its end",
            "Serve the release API on 127.0.0.1 until SIGTERM; prints one JSON line when ready.",
            "eni-async serve --journal releases.db --port 8750",
            service_command.add_arguments,
            _with_settings(service_command.serve),
            client_options=True,
        ),
        Command(
            "status",
            "count a journal's items by state",
            "Print a journal's items by state and outcome as one JSON object.",
            "eni-async status batch.journal",
            cli_batch.add_status_arguments,
            _run_status,
        ),
        Command(
            "journal",
            "move a journal between SQLite and PostgreSQL",
            "Copy every item, task, lease and release of a journal into an empty one (SQLite <-> "
            "PostgreSQL), in one transaction; the source is left as it was.",
            "eni-async journal copy batch.journal postgresql://eni@db.internal/eni_async",
            cli_journal.add_arguments,
            _with_settings(cli_journal.run),
        ),
        Command(
            "config",
            "print the settings in force, or the documented defaults",
            "Print the settings in force (file, ENI_ASYNC_* variables and options applied) as one JSON "
            "object, with --show-origin where each came from, or with --defaults the documented settings "
            "file, every key with its default.",
            "eni-async config --show-origin",
            _add_config_arguments,
            _run_config,
            client_options=True,
        ),
        Command(
            "whoami",
            "print who the API takes the credentials for, and where they came from",
            "Ask STS GetCallerIdentity who the credentials are; print it with where the keys, the region "
            "and the profile came from, and the quota they spend (one JSON object).",
            "eni-async whoami --profile prod",
            lambda parser: None,
            _run_whoami,
            client_options=True,
        ),
    )
    if only not in {spec.name for spec in specs}:  # no command named (or a word that is none): build all
        only = None
    for spec in specs:
        sub = commands.add_parser(
            spec.name, help=spec.help, description=spec.description, epilog=f"example: {spec.example}"
        )
        sub.set_defaults(handler=spec.handler)
        if only is not None and spec.name != only:
            continue
        spec.add_arguments(sub)
        if spec.client_options:
            _client_options(sub)
        _log_options(sub)
        for action in _commands(sub).values():  # ``journal copy``
            _log_options(action, defaults=False)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is neither an option nor its value), if any."""
    words = iter(argv)
    for word in words:
        if word in ("--log-format", "--loop"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    from eni_async.simulator import command  # the simulator loads only when asked for

    command.add_arguments(parser)


def _run_simulate(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from eni_async.simulator import command

    return command.serve(args)


@dataclass(frozen=True)
class Command:
    """One subcommand: its texts, its arguments and the coroutine that runs it."""

    name: str
    help: str
    description: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    client_options: bool = False


def _add_unassign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vpc-id", required=True)
    parser.add_argument("--eni-id", required=True)
    parser.add_argument("--ip", action="append", required=True, help="a secondary IP (repeatable)")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="submit only; print the outcome with its task id(s), IPs unknown",
    )
    parser.add_argument("--timeout", type=float, help="seconds to wait for each task")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--defaults", action="store_true", help="print the documented settings file (TOML) and exit"
    )
    shown.add_argument(
        "--show-origin",
        action="store_true",
        help="print every setting as {value, origin}: the default, the file, a variable or an option",
    )


async def _run_config(args: argparse.Namespace) -> int:
    if args.defaults:
        sys.stdout.write(defaults_file())
        sys.stdout.flush()
        return EXIT_OK
    settings, origins = settings_and_origins(args)
    if not args.show_origin:
        emit(settings_as_dict(settings))
        return EXIT_OK
    values = settings_as_dict(settings)
    shown: dict[str, Any] = {}
    for key, origin in origins.items():
        section, _, leaf = key.rpartition(".")
        value = values[section][leaf] if section else values[key]
        shown[key] = {"value": value, "origin": origin}
    emit(shown)
    return EXIT_OK


async def _run_whoami(args: argparse.Namespace) -> int:
    """Who the API takes the credentials for (STS GetCallerIdentity), and where keys, region and profile came
    from; one JSON object."""
    from eni_async.credentials import caller_identity, quota_account
    from eni_async.shared_quota import access_region

    settings, origins = settings_and_origins(args)
    provider = await settings_credentials(settings)
    identity = await caller_identity(provider, settings)
    account = quota_account(provider, settings)
    emit(
        {
            "caller": identity.as_json(),
            "credentials": provider.source,
            "profile": {"value": settings.profile, "origin": origins["profile"]},
            "region": {"value": settings.region, "origin": origins["region"]},
            "endpoint": settings.resolved_endpoint,
            "quota": {
                "sub_account": account if isinstance(account, str) else "uin-" + identity.sub_account,
                "sub_account_origin": "quota_key" if isinstance(account, str) else "GetCallerIdentity",
                "access_region": access_region(settings.resolved_endpoint, settings.region),
            },
        }
    )
    return EXIT_OK


async def _run_status(args: argparse.Namespace) -> int:
    # Settings are read only to find the journal when none is named: status uses nothing else of them.
    return await cli_batch.run_status(args, settings_from(args) if args.journal is None else None)


def _with_settings(
    run: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]],
) -> Handler:
    async def handler(args: argparse.Namespace) -> int:
        return await run(args, settings_from(args))

    return handler


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the file and environment, then the command-line options."""
    return settings_and_origins(args)[0]


def settings_and_origins(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    """``settings_from``, and where each setting came from. The credential chain is told whether the profile
    was named, so that it takes tccli's order and lets a named profile beat the environment."""
    overrides: dict[str, Any] = {}
    for name in ("endpoint", "region", "dialect", "profile", "shared_quota"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    concurrency = getattr(args, "concurrency", None)
    if concurrency is not None:
        overrides["concurrency"] = concurrency
    origins: dict[str, str] = {}
    settings = load_settings(getattr(args, "config", None), overrides=overrides, origins=origins)
    command_line.set(origins["profile"] != "the default")
    return settings, origins


async def _run_unassign(args: argparse.Namespace) -> int:
    """One ENI through the release path every batch item takes; prints one outcome in the batch schema.
    Exit 0 when it succeeded (every IP released or absent) or, with ``--no-wait``, was submitted."""
    from eni_async import validation
    from eni_async.client import EniClient
    from eni_async.outcomes import SUBMITTED, SUCCEEDED, Item, Outcome

    settings = settings_from(args)
    vpc, eni, ips = validation.release_request(args.vpc_id, args.eni_id, args.ip)
    if args.timeout is not None and not args.timeout > 0:  # NaN too
        raise InputError("--timeout", args.timeout, "must be positive")
    if args.timeout is not None:
        settings = dataclasses.replace(
            settings, poll=dataclasses.replace(settings.poll, timeout=args.timeout)
        )
    credentials = await settings_credentials(settings)
    item = Item(vpc, eni, ips)
    outcome = Outcome.for_item(item)
    stopping = False
    state = interruption()
    async with EniClient(credentials, settings) as client:
        started = client.clock.monotonic()
        work = asyncio.create_task(
            client.releaser.release(item, outcome, gate=lambda: stopping, watch=not args.no_wait)
        )
        cancel_later: asyncio.TimerHandle | None = None

        def stop(now: bool) -> None:
            nonlocal stopping, cancel_later
            stopping = True
            if cancel_later is not None:
                cancel_later.cancel()
            cancel_later = asyncio.get_running_loop().call_later(0 if now else settings.grace, work.cancel)

        unregister = state.register(stop) if state is not None else None
        try:
            await asyncio.shield(work)  # our own cancellation (no stopper) must not lose the outcome
        except asyncio.CancelledError:
            if not work.done():  # the command itself was cancelled: stop the work, keep its outcome
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
            outcome.interrupt("interrupted")
        finally:
            if unregister is not None:
                unregister()
            if cancel_later is not None:
                cancel_later.cancel()
        outcome.elapsed_s = client.clock.monotonic() - started
    emit(outcome.to_json())
    if outcome.error is not None:
        log.error("%s", outcome.error["message"])
    return EXIT_OK if outcome.status in (SUCCEEDED, SUBMITTED) else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (never raises for user errors)."""
    stand_in_for_closed_streams()
    try:
        parser = build_parser(_chosen(sys.argv[1:] if argv is None else argv))
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise _unrecognized(parser, args, extras)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    except InputError as exc:
        sys.stderr.write(f"eni-async: error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with logging_to_stderr(args.verbose + args.sub_verbose, args.sub_log_format or args.log_format):
        return _run(args)


def quiet_collector() -> None:
    """Garbage collection for a command that runs long: what start-up built (modules, settings, the
    parser) is frozen out of every later collection, and the young generation is collected every 5,000
    allocations rather than 700 (10,000 ENIs: 8.1 s of CPU, 6.8 s of it collecting, before; higher
    thresholds cost more memory at 100,000, where per-item garbage cycles then wait longer)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)


LOOPS = ("auto", "asyncio", "uvloop")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a command runs on (``None``: asyncio's own). ``auto`` takes uvloop where it is installed
    (a dependency on Linux and macOS): the same calls for less CPU, its loop and I/O being compiled
    (bench/scale.py, README "CPU and memory"); ``asyncio`` keeps asyncio's, ``uvloop`` insists on it."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise InputError("--loop", choice, "uvloop is not installed (pip install uvloop)") from None
        return None
    _hold_standard_fds()
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _hold_standard_fds() -> None:
    """Hold each of descriptors 0-2 that is closed (``cmd <&-``) with ``/dev/null``: a libuv loop made while one
    is closed takes that number for its own epoll descriptor, then aborts the process (SIGABRT, exit 134) when
    it closes it at exit (libuv asserts it never closes 0-2: libuv/libuv#4558). Python's ``sys.std*`` for a
    descriptor closed at start-up stay ``None``, as they were."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    quiet_collector()
    as_json = json_lines(args)
    state = Interruption()
    state.as_json = as_json
    try:
        handler: Handler = args.handler
        choice = str(getattr(args, "sub_loop", None) or getattr(args, "loop", "auto"))
        factory = loop_factory(choice)
        log.debug("event loop: %s (--loop %s)", "uvloop" if factory is not None else "asyncio", choice)
        with asyncio.Runner(loop_factory=factory) as runner:
            code = runner.run(with_signals(handler, args, state))
        return state.exit_code or code
    except asyncio.CancelledError:  # a signal cancelled a command that had registered no stopper
        tell("eni-async: interrupted", as_json=as_json, level=logging.ERROR)
        return state.exit_code or EXIT_INTERRUPTED
    except InputError as exc:
        tell(f"eni-async: error: {exc}", as_json=as_json, level=logging.ERROR, code=error_code(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        tell("eni-async: interrupted", as_json=as_json, level=logging.ERROR)
        return EXIT_INTERRUPTED
    except EniAsyncError as exc:
        info = error_info(exc)
        fields: dict[str, Any] = {key: info[key] for key in ("code", "request_id") if key in info}
        tell(f"eni-async: error: {info['message']}", as_json=as_json, level=logging.ERROR, **fields)
        return EXIT_FAILED
    except (OutputError, BrokenPipeError) as exc:  # a closed pipe (`| head`) or a full disk: one line
        drop_stdout()
        problem = exc if isinstance(exc, OutputError) else OutputError(None, exc)
        tell(f"eni-async: error: {problem}", as_json=as_json, level=logging.ERROR)
        return EXIT_FAILED
    except Exception as exc:  # a bug: say so in one line, never a traceback
        log.debug("unexpected error after %.1fs", time.monotonic() - started, exc_info=True)
        tell(
            f"eni-async: unexpected error ({type(exc).__name__}: {exc}); please report it",
            as_json=as_json,
            level=logging.ERROR,
        )
        return EXIT_FAILED
