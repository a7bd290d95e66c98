"""Settings: defaults in code, overridden by a TOML file, then by explicit arguments; one frozen value.

``config/eni-async.toml`` documents every key with its default (a test keeps the two equal). A file comes
from ``--config FILE`` or ``ENI_ASYNC_CONFIG``; unknown keys and bad values are a ``ConfigError`` naming the
key. Credentials are read separately (``credentials.py``) and never live in settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eni_async.dialects import ASSIGN, DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.errors import ConfigError
from eni_async.policy import PollPolicy, RetryPolicy

CONFIG_ENV = "ENI_ASYNC_CONFIG"
DIALECT_ENDPOINTS = {"v2": "https://vpc.api.qcloud.com", "v3": "https://vpc.tencentcloudapi.com"}
SIGN_METHODS = ("HmacSHA1", "HmacSHA256")
# How a submitted task's IPs are confirmed: from the ENI's described state, or from the task's status only.
CONFIRM_MODES = ("eni", "task")


@dataclass(frozen=True)
class Timeouts:
    """HTTP timeouts in seconds: to connect, to read each chunk of the answer, and for the whole call."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 30.0


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per action, per SecretId (decisions.md D8)."""

    unassign: int = 100
    task_query: int = 20
    describe: int = 100
    assign: int = 100

    def by_action(self) -> dict[str, int]:
        """The limits keyed by API action name."""
        return {
            UNASSIGN: self.unassign,
            TASK_QUERY: self.task_query,
            DESCRIBE: self.describe,
            ASSIGN: self.assign,
        }


@dataclass(frozen=True)
class Settings:
    """Everything a client needs besides credentials.

    ``endpoint`` is ``scheme://host[:port]``; empty means the dialect's documented endpoint. ``proxy`` empty
    means "from the environment" (``HTTPS_PROXY``/``NO_PROXY``). ``ca_file`` empty means the system's trusted
    certificates; otherwise a PEM bundle to trust instead (e.g. a test server's self-signed certificate).
    """

    endpoint: str = ""
    region: str = "ap-guangzhou"
    dialect: str = "v2"
    sign_method: str = "HmacSHA256"
    profile: str = "default"
    proxy: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    concurrency: int = 10_000
    confirm: str = "eni"
    discovery: bool = False
    service_tokens_file: str = ""
    service_max_body: int = 1_048_576
    service_max_unfinished: int = 10_000
    grace: float = 5.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)

    def __post_init__(self) -> None:
        _check(self)

    def __repr__(self) -> str:
        # A proxy URL may carry a password; everything else here is shown as is.
        fields = ", ".join(
            f"{f.name}={_mask_password(v) if f.name == 'proxy' else v!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({fields})"

    @property
    def resolved_endpoint(self) -> str:
        """The endpoint to call: the configured one, or the dialect's default."""
        return (self.endpoint or DIALECT_ENDPOINTS[self.dialect]).rstrip("/")


REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# More ENIs at once than this only queues on the rate budgets while holding memory.
MAX_CONCURRENCY = 10_000


def _mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, quoted for a repr."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            url = parts._replace(netloc=netloc).geturl()
    except ValueError:
        url = "<unparsable URL>"
    return repr(url)


_SECTIONS: Mapping[str, type[Any]] = {
    "timeouts": Timeouts,
    "rate_limits": RateLimits,
    "retry": RetryPolicy,
    "poll": PollPolicy,
}


# Numeric settings for which 0 is meaningful (no wait, no jitter); every other one must be positive.
_MAY_BE_ZERO = ("initial", "jitter", "first")


def _check(s: Settings) -> None:
    if s.dialect not in DIALECT_ENDPOINTS:
        raise ConfigError("dialect", s.dialect, f"expected one of {', '.join(DIALECT_ENDPOINTS)}")
    if s.sign_method not in SIGN_METHODS:
        raise ConfigError("sign_method", s.sign_method, f"expected one of {', '.join(SIGN_METHODS)}")
    if s.endpoint:
        try:
            parts = urlsplit(s.endpoint)
        except ValueError:
            raise ConfigError("endpoint", s.endpoint, "not a URL") from None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
            or parts.password is not None
        ):
            raise ConfigError("endpoint", s.endpoint, "expected scheme://host[:port] with http or https")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError("endpoint", s.endpoint, "bad port") from None
    if s.proxy:
        try:
            scheme = urlsplit(s.proxy).scheme
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https"):
            raise ConfigError("proxy", _mask_password(s.proxy), "expected an http:// or https:// proxy URL")
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
    for name in _SECTIONS:
        section = getattr(s, name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                raise ConfigError(f"{name}.{f.name}", value, "must be a finite number")
            if f.name in _MAY_BE_ZERO:
                if value < 0:
                    raise ConfigError(f"{name}.{f.name}", value, "must be 0 or more")
            elif value <= 0:
                raise ConfigError(f"{name}.{f.name}", value, "must be positive")


def _check_service(s: Settings) -> None:
    """The ``serve`` settings: sizes and counts of at least 1."""
    for name in ("service_max_body", "service_max_unfinished"):
        if getattr(s, name) < 1:
            raise ConfigError(name, getattr(s, name), "must be at least 1")


def from_mapping(
    data: Mapping[str, Any], *, base: Settings | None = None, source: str = "settings"
) -> Settings:
    """Apply ``data`` (as parsed from TOML) over ``base``; unknown keys and wrong types are errors."""
    base = base or Settings()
    top = {f.name: f for f in dataclasses.fields(Settings)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top:
            raise ConfigError(key, value, f"unknown key in {source}")
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(key, value, f"expected a table in {source}")
            changes[key] = _apply_section(key, getattr(base, key), value, source)
        else:
            changes[key] = _typed(key, getattr(base, key), value, source)
    return dataclasses.replace(base, **changes)


def _apply_section(name: str, current: Any, data: Mapping[str, Any], source: str) -> Any:
    known = {f.name for f in dataclasses.fields(current)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}", value, f"unknown key in {source}")
        changes[key] = _typed(f"{name}.{key}", getattr(current, key), value, source)
    return dataclasses.replace(current, **changes)


def _typed(key: str, default: Any, value: Any, source: str) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise ConfigError(key, value, f"expected {expected.__name__} in {source}")
    return value


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] = {},
) -> Settings:
    """Defaults, then the file (``path`` or ``$ENI_ASYNC_CONFIG``), then ``overrides``."""
    settings = Settings()
    file = path if path is not None else environ.get(CONFIG_ENV) or None
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("config", str(file), f"cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", str(file), f"not valid TOML: {exc}") from None
        settings = from_mapping(data, base=settings, source=str(file))
    if overrides:
        settings = from_mapping(overrides, base=settings, source="arguments")
    return settings


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain data, in the shape of the TOML file."""
    return dataclasses.asdict(settings)
