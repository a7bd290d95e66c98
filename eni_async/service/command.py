"""``eni-async serve``: compose the client, the journal, the engine and the HTTP face; run until a signal.

Checks come first and fail as one-line errors naming the option, before any socket or request: the port,
the callers' tokens (from the file named by ``service_tokens_file`` and from ``ENI_ASYNC_SERVICE_TOKENS``,
never from the command line; a tokens file others may read is refused, one its group may read is warned
about, since a Kubernetes Secret mounted for a pod's fsGroup is), an address beyond loopback without tokens
(refused), the TLS certificate and key, the journal, the credentials. Once listening, one JSON line goes to
stdout (``{"endpoint": ...}``: an address a local caller reaches, so ``127.0.0.1`` for ``--host 0.0.0.0``)
and logs go to stderr. A journal failure at start (opening it, or its first writes) is the same one-line ``--journal`` error,
exit 2. SIGTERM or SIGINT: ``/v1`` answers 503, in-flight work gets ``grace`` seconds, what is
unfinished stays in the journal, and the command returns 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import os
import ssl
import stat
import sys
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from eni_async import client_metrics as metrics_cli
from eni_async.credentials import settings_credentials
from eni_async.errors import ConfigError, InputError
from eni_async.journal.seam import JournalError
from eni_async.settings import Settings
from eni_async.settings_check import mask_url
from eni_async.terminal import signals_for_command

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("eni_async.service")

TOKENS_ENV = "ENI_ASYNC_SERVICE_TOKENS"
MIN_TOKEN_LENGTH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``serve`` options (the client options are added by the CLI)."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); any other address needs callers' tokens: "
        f"{TOKENS_ENV} (comma-separated) or the file named by the service_tokens_file setting",
    )
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
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain (setting service_tls_cert)"
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", help="the certificate's private key, if not in its file (service_tls_key)"
    )
    metrics_cli.add_arguments(parser)  # /metrics is always on the service's port; this adds another


def load_tokens(settings: Settings, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Callers' tokens: lines of ``settings.service_tokens_file`` (``#`` comments and blank lines skipped)
    and the comma-separated ``ENI_ASYNC_SERVICE_TOKENS``. A token never appears in an error."""
    found = _token_file("service_tokens_file", settings.service_tokens_file)
    for index, part in enumerate(environ.get(TOKENS_ENV, "").split(",")):
        if part.strip():
            found.append((f"{TOKENS_ENV} entry {index + 1}", part.strip()))
    return _checked(found)


def load_metrics_tokens(settings: Settings) -> list[str]:
    """The tokens ``/metrics`` requires: lines of ``settings.service_metrics_tokens_file`` (none: open)."""
    return _checked(_token_file("service_metrics_tokens_file", settings.service_metrics_tokens_file))


def _token_file(setting: str, name: str) -> list[tuple[str, str]]:
    """``(where, token)`` for each token line of the file ``name`` (nothing for ``""``). A file others may
    read is refused and one its group may read is warned about: tokens are passwords."""
    if not name:
        return []
    path = Path(name)
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(setting, str(path), f"cannot read: {reason}") from None
    if mode & stat.S_IROTH:
        raise ConfigError(
            setting, str(path), f"readable by others (mode {stat.S_IMODE(mode):o}): chmod o-r, e.g. chmod 600"
        )
    if mode & stat.S_IRGRP:
        log.warning("%s %s is readable by its group (mode %o)", setting, path, stat.S_IMODE(mode))
    found: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if token and not token.startswith("#"):
            found.append((f"{setting} line {number}", token))
    return found


def _checked(found: list[tuple[str, str]]) -> list[str]:
    for where, token in found:
        if len(token) < MIN_TOKEN_LENGTH or not all(33 <= ord(c) <= 126 for c in token):
            raise ConfigError(
                where, "***", f"a token must be at least {MIN_TOKEN_LENGTH} visible ASCII characters"
            )
    return [token for _, token in found]


def load_tls(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from ``service_tls_cert`` and ``service_tls_key`` (``None``: plain HTTP)."""
    from eni_async.service.listener import tls_context

    if not settings.service_tls_cert:
        return None
    for name in ("service_tls_cert", "service_tls_key"):
        path = getattr(settings, name)
        try:
            if path:
                Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(name, path, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        return tls_context(settings.service_tls_cert, settings.service_tls_key)
    except (OSError, ValueError) as exc:  # ssl.SSLError: not PEM, no key, or a key that does not match
        name, reason = _tls_fault(settings, exc)
        raise ConfigError(name, getattr(settings, name), reason) from None


def _tls_fault(settings: Settings, exc: BaseException) -> tuple[str, str]:
    """The setting at fault and why, for a certificate and key that make no TLS context (OpenSSL only says
    "PEM lib" for a missing certificate or key)."""
    key_setting = "service_tls_key" if settings.service_tls_key else "service_tls_cert"
    if isinstance(exc, ValueError) and not isinstance(exc, OSError):
        return key_setting, str(exc)  # the encrypted key's refusal
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        return key_setting, "the private key does not match the certificate"
    cert = Path(settings.service_tls_cert).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        return "service_tls_cert", "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
    if b"PRIVATE KEY-----" not in Path(getattr(settings, key_setting)).read_bytes():
        where = "" if settings.service_tls_key else " (or name the key's file with --tls-key)"
        return key_setting, f"no PEM private key in it{where}"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return "service_tls_cert", f"cannot serve TLS with it and its key: {reason}"


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
    tls = {"service_tls_cert": args.tls_cert, "service_tls_key": args.tls_key}
    if any(tls.values()):  # replace() checks the pair as every other source of settings is checked
        settings = dataclasses.replace(settings, **{k: v for k, v in tls.items() if v is not None})
    journal = args.journal or settings.journal
    if not journal:
        raise ConfigError("--journal", "", "serve needs a journal: --journal URL or the journal setting")
    tokens = load_tokens(settings)
    metrics_tokens = load_metrics_tokens(settings)
    tls_context = load_tls(settings)
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
        if metrics_tokens:
            raise ConfigError(
                "--metrics-port",
                metrics_port,
                "serves /metrics without a token; with service_metrics_tokens_file scrape the service's own",
            )
    if not metrics_available():
        log.warning("prometheus-client not installed: /metrics answers 501")
    credentials = await settings_credentials(settings)  # the chain batch uses: env, profile, role, STS
    stopping = (
        f"eni-async: {{name}}: stopping; new requests get 503, work in flight has {settings.grace:.1f}s "
        "(send again to stop now)"
    )
    with signals_for_command(first_message=stopping) as (_, stop), _journal_failure(journal):
        async with (
            running_service(
                credentials,
                settings,
                journal,
                host=args.host,
                port=args.port,
                tokens=tokens,
                metrics_tokens=metrics_tokens,
                tls=tls_context,
                reload=lambda: settings_credentials(settings),  # refused ones are read again from here
            ) as svc,
            AsyncExitStack() as extra,
        ):
            if svc.metrics is not None and metrics_port is not None:
                url = await _serve_metrics(extra, svc.metrics.registry, metrics_port, args.metrics_host)
                log.info("also serving metrics at %s", url)
            if not tokens:
                log.warning("no callers' tokens configured: any local process may use %s", svc.endpoint)
            log.info(
                "serving on %s (listening on %s; %d release(s) resumed)",
                svc.endpoint,
                svc.listening,
                svc.resumed,
            )
            sys.stdout.write(json.dumps({"endpoint": svc.endpoint}) + "\n")
            sys.stdout.flush()
            await stop.requested.wait()
            stop.hurry = svc.engine.hurry
            left = await svc.engine.stop(settings.grace)
            log.info("stopped; %d release(s) unfinished stay in %s", left, mask_url(journal))
    return 0


@contextmanager
def _journal_failure(journal: str) -> Iterator[None]:
    """A journal that fails where ``serve`` cannot carry on (opening it, or the first writes at start: a full
    disk, a lock, a damaged row) is the one-line ``--journal`` error, exit 2, as any unusable journal is."""
    try:
        yield
    except JournalError as exc:
        raise ConfigError("--journal", mask_url(journal), exc.reason) from None


async def _serve_metrics(stack: AsyncExitStack, registry: CollectorRegistry, port: int, host: str) -> str:
    try:
        return await stack.enter_async_context(metrics_cli.serve_metrics(registry, port=port, host=host))
    except OSError as exc:
        raise ConfigError("--metrics-port", port, f"cannot listen on {host}: {exc.strerror or exc}") from None


__all__ = ["add_arguments", "is_loopback", "load_metrics_tokens", "load_tls", "load_tokens", "serve"]
