"""``eni-async serve``: compose the client, the journal, the engine and the HTTP face; run until a signal.

Checks come first and fail as one-line errors naming the option, before any socket or request: the port,
the callers' tokens (from the file named by ``service_tokens_file`` and from ``ENI_ASYNC_SERVICE_TOKENS``,
never from the command line), an address beyond loopback without tokens (refused), the journal, the
credentials. Once listening, one JSON line goes to stdout (``{"endpoint": ...}``) and logs go to stderr.
SIGTERM or SIGINT: ``/v1`` answers 503, in-flight work gets ``grace`` seconds, what is unfinished
stays in the journal, and the command returns 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from eni_async import metrics as metrics_cli
from eni_async.credentials import settings_credentials
from eni_async.errors import ConfigError, InputError
from eni_async.settings import Settings, mask_url
from eni_async.terminal import signals_for_command

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("eni_async.service")

TOKENS_ENV = "ENI_ASYNC_SERVICE_TOKENS"
MIN_TOKEN_LENGTH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``serve`` options (the client options are added by the CLI)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8750, help="port to listen on (default 8750); 0 picks a free one"
    )
    parser.add_argument(
        "--journal",
        metavar="URL",
        help="journal of every release: a file (SQLite) or postgresql://HOST/DATABASE "
        "(default: the journal setting, $ENI_ASYNC_JOURNAL)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="ENIs worked on at once, at most (default: as the rate limits allow)",
    )
    metrics_cli.add_arguments(parser)  # /metrics is always on the service's port; this adds another


def load_tokens(settings: Settings, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Callers' tokens: lines of ``settings.service_tokens_file`` (``#`` comments and blank lines skipped)
    and the comma-separated ``ENI_ASYNC_SERVICE_TOKENS``. A token never appears in an error."""
    found: list[tuple[str, str]] = []
    if settings.service_tokens_file:
        path = Path(settings.service_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError("service_tokens_file", str(path), f"cannot read: {reason}") from None
        for number, line in enumerate(text.splitlines(), 1):
            token = line.strip()
            if token and not token.startswith("#"):
                found.append((f"service_tokens_file line {number}", token))
    for index, part in enumerate(environ.get(TOKENS_ENV, "").split(",")):
        if part.strip():
            found.append((f"{TOKENS_ENV} entry {index + 1}", part.strip()))
    for where, token in found:
        if len(token) < MIN_TOKEN_LENGTH or not all(33 <= ord(c) <= 126 for c in token):
            raise ConfigError(
                where, "***", f"a token must be at least {MIN_TOKEN_LENGTH} visible ASCII characters"
            )
    return [token for _, token in found]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; 0 after a clean stop."""
    from eni_async.service.server import metrics_available, running_service

    if not 0 <= args.port <= 65535:
        raise InputError("--port", args.port, "must be between 0 and 65535")
    journal = args.journal or settings.journal
    if not journal:
        raise ConfigError("--journal", "", "serve needs a journal: --journal URL or the journal setting")
    tokens = load_tokens(settings)
    if not tokens and not is_loopback(args.host):
        raise ConfigError(
            "--host",
            args.host,
            f"listening beyond loopback needs callers' tokens (service_tokens_file or {TOKENS_ENV})",
        )
    metrics_port: int | None = args.metrics_port
    if metrics_port is not None:
        if not 0 <= metrics_port <= 65535:
            raise InputError("--metrics-port", metrics_port, "must be between 0 and 65535")
        metrics_cli.prometheus("--metrics-port", metrics_port)
    if not metrics_available():
        log.warning("prometheus-client not installed: /metrics answers 501")
    credentials = await settings_credentials(settings)  # the chain batch uses: env, profile, role, STS
    stopping = (
        f"eni-async: {{name}}: stopping; new requests get 503, work in flight has {settings.grace:.1f}s "
        "(send again to stop now)"
    )
    with signals_for_command(first_message=stopping) as (_, stop):
        async with (
            running_service(
                credentials, settings, journal, host=args.host, port=args.port, tokens=tokens
            ) as svc,
            AsyncExitStack() as extra,
        ):
            if svc.metrics is not None and metrics_port is not None:
                url = await _serve_metrics(extra, svc.metrics.registry, metrics_port, args.metrics_host)
                log.info("also serving metrics at %s", url)
            if not tokens:
                log.warning("no callers' tokens configured: any local process may use %s", svc.endpoint)
            log.info("serving on %s (%d release(s) resumed)", svc.endpoint, svc.resumed)
            sys.stdout.write(json.dumps({"endpoint": svc.endpoint}) + "\n")
            sys.stdout.flush()
            await stop.requested.wait()
            stop.hurry = svc.engine.hurry
            left = await svc.engine.stop(settings.grace)
            log.info("stopped; %d release(s) unfinished stay in %s", left, mask_url(journal))
    return 0


async def _serve_metrics(stack: AsyncExitStack, registry: CollectorRegistry, port: int, host: str) -> str:
    try:
        return await stack.enter_async_context(metrics_cli.serve_metrics(registry, port=port, host=host))
    except OSError as exc:
        raise ConfigError("--metrics-port", port, f"cannot listen on {host}: {exc.strerror or exc}") from None


__all__ = ["add_arguments", "is_loopback", "load_tokens", "serve"]
