"""``eni-async simulate``: run the simulator in the foreground until SIGINT or SIGTERM.

``add_arguments`` declares the options; ``serve`` checks them (a bad value raises ``InputError`` or
``ConfigError`` naming the option, which the CLI turns into exit status 2), starts the server on the real
clock, prints exactly one JSON line when ready and waits for a signal. The line carries the simulator's
own toy key pair, so a client can be pointed at it without any other set-up. With ``--metrics-port`` the
simulator's counters are served at ``/metrics`` (127.0.0.1 unless ``--metrics-host`` says otherwise) and
the ready line carries their URL as ``metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from eni_async import prometheus
from eni_async.errors import ConfigError, InputError
from eni_async.simulator.app import Simulator
from eni_async.simulator.config import DESCRIBE_MISSING, SimulatorConfig
from eni_async.simulator.faults import FaultProfile, load_fault_profile
from eni_async.simulator.limits import DEFAULT_RATE_LIMITS
from eni_async.simulator.server import RunningServer, running
from eni_async.simulator.sim_metrics import register_simulator
from eni_async.terminal import signals_for_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``simulate`` options on ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on; 0 picks a free one (default 0)"
    )
    parser.add_argument("--enis", type=int, default=10, help="number of ENIs to seed (default 10)")
    parser.add_argument("--ips-per-eni", type=int, default=3, help="secondary IPs per seeded ENI (default 3)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the world, tasks and faults (default 0)"
    )
    parser.add_argument("--state", metavar="FILE", default=None, help="load the world from a JSON state file")
    parser.add_argument(
        "--faults",
        metavar="PROFILE|FILE",
        default="none",
        help="fault profile: none, flaky, hostile or a .toml file",
    )
    parser.add_argument(
        "--task-latency",
        metavar="MEDIAN[,SPREAD]",
        default="1.0,0.5",
        help="log-normal task latency in seconds: median and sigma (default 1.0,0.5; 0 ends tasks at once)",
    )
    parser.add_argument(
        "--rate-limit",
        metavar="ACTION=N",
        action="append",
        default=[],
        help="per-second limit for one action (0 = unlimited); repeatable",
    )
    parser.add_argument(
        "--secret-id",
        action="append",
        default=None,
        help="SecretId to accept (default: a generated pair); repeatable, each with its --secret-key",
    )
    parser.add_argument("--secret-key", action="append", default=None, help="SecretKey for --secret-id")
    parser.add_argument(
        "--sub-account",
        metavar="NAME=ID[,ID...]",
        action="append",
        default=[],
        help="these SecretIds share one sub-account's rate limits (default: each its own); repeatable",
    )
    parser.add_argument(
        "--role-name", default="eni-async-role", help="the CVM role the metadata service names ('' for none)"
    )
    parser.add_argument(
        "--credential-lifetime",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="how long issued temporary credentials are accepted (default 7200)",
    )
    parser.add_argument(
        "--describe-missing",
        choices=DESCRIBE_MISSING,
        default="omit",
        help="a describe by ids naming an ENI that does not exist: leave it out of the answer (default), or "
        "fail the call with that code (docs/protocol.md D31)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each request waits uniformly up to this long before the rate limits count it (default 0)",
    )
    parser.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="the rate limiter's clock is this far ahead of the simulator's (default 0)",
    )
    parser.add_argument(
        "--clock-drift",
        type=float,
        default=0.0,
        metavar="PPM",
        help="the rate limiter's clock runs this many parts per million fast (negative: slow; default 0)",
    )
    prometheus.add_arguments(parser)


def parse_latency(text: str) -> tuple[float, float]:
    """Parse ``MEDIAN[,SPREAD]`` into (median, sigma) seconds; ``0`` means tasks end at once."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(
            "--task-latency", text, "expected MEDIAN[,SPREAD] in seconds, e.g. 1.0,0.5"
        ) from None
    if len(values) > 2 or any(v < 0 or v != v for v in values):
        raise InputError("--task-latency", text, "expected one or two non-negative numbers")
    median = values[0]
    sigma = values[1] if len(values) == 2 else (0.5 if median > 0 else 0.0)
    return (median, sigma)


def parse_rate_limits(items: list[str]) -> dict[str, int | None]:
    """Parse ``ACTION=N`` options over the default limits."""
    limits: dict[str, int | None] = dict(DEFAULT_RATE_LIMITS)
    for item in items:
        action, sep, number = item.partition("=")
        if not sep or action not in DEFAULT_RATE_LIMITS:
            known = ", ".join(DEFAULT_RATE_LIMITS)
            raise InputError("--rate-limit", item, f"expected ACTION=N with ACTION one of {known}")
        if not number.isdigit():
            raise InputError("--rate-limit", item, "N must be a whole number (0 = unlimited)")
        limits[action] = int(number)
    return limits


def parse_sub_accounts(items: list[str]) -> dict[str, str]:
    """Parse ``NAME=ID[,ID...]`` options into SecretId -> sub-account."""
    accounts: dict[str, str] = {}
    for item in items:
        name, sep, ids = item.partition("=")
        secret_ids = [i for i in ids.split(",") if i]
        if not sep or not name or not secret_ids:
            raise InputError("--sub-account", item, "expected NAME=SECRET_ID[,SECRET_ID...]")
        accounts.update(dict.fromkeys(secret_ids, name))
    return accounts


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed options into a ``SimulatorConfig``; bad values raise errors naming the option."""
    if len(args.secret_id or ()) != len(args.secret_key or ()):
        raise ConfigError("--secret-id/--secret-key", "***", "give both or neither, as many of each")
    if not 0 <= args.port <= 65535:
        raise InputError("--port", args.port, "must be between 0 and 65535")
    for option, value in (("--enis", args.enis), ("--ips-per-eni", args.ips_per_eni)):
        if value < 0:
            raise InputError(option, value, "must be 0 or more")
    try:
        faults: FaultProfile = load_fault_profile(args.faults)
    except ConfigError as exc:
        raise ConfigError("--faults", args.faults, exc.reason) from None
    if not 0.0 <= args.jitter <= 10.0:  # NaN too
        raise InputError("--jitter", args.jitter, "must be between 0 and 10 seconds")
    if not -100_000 <= args.clock_drift <= 100_000:
        raise InputError("--clock-drift", args.clock_drift, "must be between -100000 and 100000 ppm")
    if not abs(args.clock_skew) < 1e6:
        raise InputError("--clock-skew", args.clock_skew, "must be under 1e6 seconds either way")
    if not args.credential_lifetime > 0:  # NaN too
        raise InputError("--credential-lifetime", args.credential_lifetime, "must be positive")
    if any(c in args.role_name for c in "/ ?#"):
        raise InputError("--role-name", args.role_name, "must not contain '/', spaces, '?' or '#'")
    keys = dict(zip(args.secret_id, args.secret_key, strict=True)) if args.secret_id else None
    return SimulatorConfig(
        enis=args.enis,
        ips_per_eni=args.ips_per_eni,
        seed=args.seed,
        task_latency=parse_latency(args.task_latency),
        rate_limits=parse_rate_limits(args.rate_limit),
        faults=faults,
        keys=keys,
        state_file=args.state,
        accounts=parse_sub_accounts(args.sub_account),
        role_name=args.role_name,
        credential_lifetime=args.credential_lifetime,
        describe_missing=args.describe_missing,
        jitter=args.jitter,
        clock_skew=args.clock_skew,
        clock_drift=args.clock_drift / 1e6,
    )


@asynccontextmanager
async def _listening(sim: Simulator, args: argparse.Namespace) -> AsyncIterator[RunningServer]:
    """``running`` on ``--host``/``--port``; an address that cannot be bound (a busy port) is a one-line
    ``ConfigError`` naming ``--port``, not a crash."""
    async with AsyncExitStack() as stack:
        try:
            server = await stack.enter_async_context(running(sim, host=args.host, port=args.port))
        except OSError as exc:
            # asyncio's message repeats the address; the errno's own text is the one-line reason.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError("--port", args.port, f"cannot listen on {args.host}: {reason}") from None
        yield server


async def serve(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT or SIGTERM (or cancellation); print one JSON line when ready."""
    config = build_config(args)
    try:
        sim = Simulator(config)
    except ConfigError as exc:
        option = "--state" if exc.field.startswith("state_file") else "--enis"
        raise ConfigError(option, exc.value, f"{exc.field}: {exc.reason}") from None
    async with prometheus.endpoint_from(args) as endpoint, _listening(sim, args) as server:
        if endpoint is not None:
            register_simulator(sim, endpoint.registry)
        # A signal is how the simulator is told to stop: it then ends normally (exit 0), silently.
        with signals_for_command(first_message="", again_message="") as (_, stop):
            ready: dict[str, Any] = {
                "endpoint": server.endpoint,
                "region": sim.region,
                "secret_id": sim.credentials.secret_id,
                "secret_key": sim.credentials.secret_key,
            }
            if endpoint is not None:
                ready["metrics"] = endpoint.url
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
            await stop.requested.wait()
    return 0
