"""The checks a ``Settings`` value passes when it is made: each bad field a ``ConfigError`` naming it.

Kept apart from ``settings.py`` (which reads files, variables and arguments into one value) so that the rules
of every field read as one list. Nothing here reads a file or the environment. ``mask_url`` lives here too: the
checks name a URL setting's value with its password masked, as every message and log line does.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any
from urllib.parse import urlsplit

from eni_async.errors import ConfigError

DIALECT_ENDPOINTS = {"v2": "https://vpc.api.qcloud.com", "v3": "https://vpc.tencentcloudapi.com"}
SIGN_METHODS = ("HmacSHA1", "HmacSHA256")
# How a submitted task's IPs are confirmed: from the ENI's described state, or from the task's status only.
CONFIRM_MODES = ("eni", "task")
# The sections of Settings (frozen dataclasses of numbers), checked field by field.
SECTIONS = ("timeouts", "rate_limits", "retry", "poll")

REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# More ENIs at once than this only queues on the rate budgets while holding memory.
MAX_CONCURRENCY = 10_000
# A serve replica's lease on its work (renewed every third of it): shorter renews too often to survive a
# database failover, longer leaves a dead replica's work waiting too long.
LEASE_RANGE = (0.5, 300.0)


# Settings that hold a URL, which may carry a password: masked wherever settings are shown.
URL_SETTINGS = ("proxy", "shared_quota", "journal")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, logs and reprs): in the authority, and a
    ``password=`` query parameter (as libpq's URLs allow)."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
        if "password=" in parts.query.lower():
            parts = parts._replace(query=re.sub(r"(?i)((?:^|&)password=)[^&]*", r"\1***", parts.query))
        return parts.geturl() if parts.geturl() != urlsplit(url).geturl() else url
    except ValueError:
        return "<unparsable URL>"


def _check_redis_url(url: str) -> None:
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError("shared_quota", masked, "not a URL") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError("shared_quota", masked, "expected redis://HOST[:PORT][/DB] or rediss://...")
    if not re.fullmatch(r"(/\d*)?", parts.path) or parts.fragment:
        raise ConfigError("shared_quota", masked, "the path must be a database number, e.g. /0")


QUOTA_KEY = re.compile(r"[A-Za-z0-9._@:-]{1,128}")

# Numeric settings for which 0 is meaningful (no wait, no jitter); every other one must be positive.
_MAY_BE_ZERO = ("initial", "jitter", "first")


def _check_endpoint(name: str, value: str) -> None:
    """An endpoint setting is empty or ``scheme://host[:port]`` with http or https."""
    if not value:
        return
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigError(name, value, "not a URL") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise ConfigError(name, value, "expected scheme://host[:port] with http or https")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(name, value, "bad port") from None


def check_settings(s: Any) -> None:
    """Refuse a ``Settings`` value with a bad field: a ``ConfigError`` naming the first one.

    ``s`` is a ``settings.Settings`` (typed ``Any`` because that module imports this one, and imports go one way:
    ``tests/test_layers.py``); ``tests/test_settings.py`` passes every field through here."""
    if s.dialect not in DIALECT_ENDPOINTS:
        raise ConfigError("dialect", s.dialect, f"expected one of {', '.join(DIALECT_ENDPOINTS)}")
    if s.sign_method not in SIGN_METHODS:
        raise ConfigError("sign_method", s.sign_method, f"expected one of {', '.join(SIGN_METHODS)}")
    for name in ("endpoint", "metadata_endpoint", "sts_endpoint", "login_endpoint"):
        _check_endpoint(name, getattr(s, name))
    if not (math.isfinite(s.credential_refresh_margin) and s.credential_refresh_margin >= 0):
        raise ConfigError("credential_refresh_margin", s.credential_refresh_margin, "must be 0 or more")
    if s.proxy:
        try:
            scheme = urlsplit(s.proxy).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https"):
            raise ConfigError("proxy", mask_url(s.proxy), "expected an http:// or https:// proxy URL")
    if not (math.isfinite(s.shared_quota_probe) and s.shared_quota_probe > 0):
        raise ConfigError("shared_quota_probe", s.shared_quota_probe, "must be a number of seconds above 0")
    if s.shared_quota:
        _check_redis_url(s.shared_quota)
        if s.discovery:
            raise ConfigError(
                "discovery", True, "not with shared_quota: set [rate_limits] to the account's limits"
            )
    if s.quota_key and not QUOTA_KEY.fullmatch(s.quota_key):
        raise ConfigError("quota_key", s.quota_key, "expected letters, digits and . _ - @ : (at most 128)")
    if not REGION.fullmatch(s.region):
        raise ConfigError(
            "region", s.region, "expected lowercase letters, digits and dashes, e.g. ap-guangzhou"
        )
    if not 1 <= s.concurrency <= MAX_CONCURRENCY:
        raise ConfigError("concurrency", s.concurrency, f"must be between 1 and {MAX_CONCURRENCY}")
    _check_service(s)
    if s.confirm not in CONFIRM_MODES:
        raise ConfigError("confirm", s.confirm, f"expected one of {', '.join(CONFIRM_MODES)}")
    if isinstance(s.grace, bool) or not isinstance(s.grace, int | float) or not 0 <= s.grace < math.inf:
        raise ConfigError("grace", s.grace, "must be a finite number of seconds, 0 or more")
    for name in SECTIONS:
        section = getattr(s, name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                raise ConfigError(f"{name}.{f.name}", value, "must be a finite number")
            if name == "rate_limits" and value < 1:
                raise ConfigError(f"{name}.{f.name}", value, "must be at least 1 (per second)")
            if f.name in _MAY_BE_ZERO:
                if value < 0:
                    raise ConfigError(f"{name}.{f.name}", value, "must be 0 or more")
            elif value <= 0:
                raise ConfigError(f"{name}.{f.name}", value, "must be positive")


_RETENTION = ("service_retention", "service_idempotency_ttl")  # seconds; see config/eni-async.toml


def _check_service(s: Any) -> None:
    """The ``serve`` settings: sizes and counts of at least 1, finite positive timeouts, no TLS key alone, a
    lease of a sensible length."""
    for name in ("service_max_body", "service_max_unfinished", "service_max_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(name, getattr(s, name), "must be at least 1")
    timeouts = ("service_header_timeout", "service_body_timeout", "service_journal_timeout")
    for name in (*timeouts, "service_outage_wait", "service_release_deadline", *_RETENTION):
        if not (math.isfinite(getattr(s, name)) and getattr(s, name) > 0):
            raise ConfigError(name, getattr(s, name), "must be a finite number of seconds above 0")
    if s.service_tls_key and not s.service_tls_cert:
        raise ConfigError("service_tls_key", s.service_tls_key, "needs service_tls_cert (the certificate)")
    low, high = LEASE_RANGE
    if isinstance(s.lease_s, bool) or not isinstance(s.lease_s, int | float) or not low <= s.lease_s <= high:
        raise ConfigError("lease_s", s.lease_s, f"must be between {low:g} and {high:g} seconds")
