"""Settings: defaults in code, then a TOML file, then ``ENI_ASYNC_*`` variables, then arguments; one frozen value.

``config/eni-async.toml`` documents every key with its default (a test keeps the two equal). A file comes
from ``--config FILE`` or ``ENI_ASYNC_CONFIG``. Every scalar setting can also be set from the environment as
``ENI_ASYNC_`` plus its key in capitals, a section's key joined with ``_`` (``ENI_ASYNC_REGION``,
``ENI_ASYNC_RATE_LIMITS_TASK_QUERY``, ``ENI_ASYNC_POLL_ADAPTIVE=false``); the environment beats the file and
arguments beat both. Two settings follow Tencent's own tools as well: the profile (``--profile`` >
``ENI_ASYNC_PROFILE`` > ``TCCLI_PROFILE`` > file > ``default``, as tccli reads ``TCCLI_PROFILE``) and the
region (``--region`` > ``ENI_ASYNC_REGION`` > ``TENCENTCLOUD_REGION`` > file > the profile's region > the
default), where the profile's region is the ``region`` key of its section of the credentials file, else
tccli's ``~/.tccli/<profile>.configure`` (``{"_sys_param": {"region": ...}}``), else its ``.credential``'s
``region``. A named profile (any source but the default) beats the environment, as tccli's ``--profile``
does: ``TENCENTCLOUD_REGION`` is then not read. The chosen region and profile, and where they came from, are
logged at INFO; ``load_settings(origins=...)`` reports where every key came from. Unknown keys, unknown ``ENI_ASYNC_*`` variables and bad values are a
``ConfigError`` naming the key (and the closest valid key, when one is close); Kubernetes service-link
variables (``ENI_ASYNC_SERVICE_HOST``, ``ENI_ASYNC_PORT=tcp://...``, D28) are not settings and are ignored. Credentials are read
separately (``credentials.py``) and never live in settings.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import json
import logging
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from eni_async.dialects import ASSIGN, DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.errors import ConfigError
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings_check import DIALECT_ENDPOINTS, URL_SETTINGS, check_settings, mask_url

log = logging.getLogger(__name__)

CONFIG_ENV = "ENI_ASYNC_CONFIG"
# ``ENI_ASYNC_*`` variables that are not settings: the config file's name, and serve's callers' tokens
# (secrets, deliberately kept out of settings and never shown).
NOT_SETTINGS = frozenset({CONFIG_ENV, "ENI_ASYNC_SERVICE_TOKENS"})
ENV_PREFIX = "ENI_ASYNC_"
# Kubernetes service-link variables (D28): a Service named ``eni-async`` (or ``eni-async-*``) makes the
# kubelet put these into every pod of its namespace. They are not settings: recognised by name and value
# and ignored, so that no pod fails to start; the name's tail -> the shape its value must have.
_PROTOCOL = r"(tcp|udp|sctp)"
_ADDRESS = r"(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]+)"
_SOCKET = rf"{_PROTOCOL}://(\d{{1,3}}(\.\d{{1,3}}){{3}}|\[[0-9a-fA-F:]+\]):\d{{1,5}}"
SERVICE_LINKS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(rf"ENI_ASYNC(_[A-Z0-9_]+?)?_{name}"), re.compile(value))
    for name, value in (
        ("SERVICE_HOST", _ADDRESS),
        (r"SERVICE_PORT(_[A-Z0-9_]+)?", r"\d{1,5}"),
        ("PORT", _SOCKET),
        (r"PORT_\d{1,5}_(TCP|UDP|SCTP)", _SOCKET),
        (r"PORT_\d{1,5}_(TCP|UDP|SCTP)_PROTO", _PROTOCOL),
        (r"PORT_\d{1,5}_(TCP|UDP|SCTP)_PORT", r"\d{1,5}"),
        (r"PORT_\d{1,5}_(TCP|UDP|SCTP)_ADDR", _ADDRESS),
    )
)
# Variables of Tencent's own tools that eni-async honours too (tccli and the official SDKs read them).
REGION_ENV = "TENCENTCLOUD_REGION"
PROFILE_ENV = "TCCLI_PROFILE"
DEFAULT_PROFILE = "default"
DEFAULT_REGION = "ap-guangzhou"


@dataclass(frozen=True)
class Timeouts:
    """HTTP timeouts in seconds: to connect, to read each chunk of the answer, and for the whole call."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 30.0


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per action, per SecretId (docs/protocol.md D8); a fraction (6.5) is allowed, e.g. to
    share one account's quota between processes."""

    unassign: float = 100
    task_query: float = 20
    describe: float = 100
    assign: float = 100

    def by_action(self) -> dict[str, float]:
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
    ``shared_quota`` is ``redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]``: the rate budgets then live in that
    Redis, shared by every process of the account (see ``eni_async.shared_quota``); empty means in memory.
    ``quota_key`` names the sub-account that owns the quota; empty means the one STS ``GetCallerIdentity`` names.
    ``journal`` is the journal ``batch``, ``resume``, ``status`` and ``serve`` use when the command line names none:
    a path (or ``sqlite:///PATH``) or ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE``; empty means none.
    ``metadata_endpoint``, ``sts_endpoint`` and ``login_endpoint`` (``scheme://host[:port]``, empty: Tencent's
    own) are where role and tccli login credentials come from; ``credential_refresh_margin`` is how many seconds
    before expiry CVM role and tccli login keys are renewed.
    """

    endpoint: str = ""
    region: str = DEFAULT_REGION
    dialect: str = "v2"
    sign_method: str = "HmacSHA256"
    profile: str = DEFAULT_PROFILE
    proxy: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    concurrency: int = 10_000
    confirm: str = "eni"
    discovery: bool = False
    service_tokens_file: str = ""
    service_max_body: int = 1_048_576
    service_max_unfinished: int = 10_000
    service_max_connections: int = 1000
    service_header_timeout: float = 15.0
    service_body_timeout: float = 30.0
    service_journal_timeout: float = 5.0
    service_outage_wait: float = 1.0
    service_tls_cert: str = ""
    service_tls_key: str = ""
    service_metrics_tokens_file: str = ""
    service_release_deadline: float = 21_600.0
    service_retention: float = 604_800.0  # 7 days
    service_idempotency_ttl: float = 86_400.0  # 24 hours, as Stripe keeps keys
    lease_s: float = 10.0
    grace: float = 5.0
    shared_quota: str = ""
    shared_quota_probe: float = 2.0
    quota_key: str = ""
    journal: str = ""
    metadata_endpoint: str = ""
    sts_endpoint: str = ""
    login_endpoint: str = ""
    credential_refresh_margin: float = 300.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)

    def __post_init__(self) -> None:
        check_settings(self)

    def __repr__(self) -> str:
        # A proxy, Redis or journal URL may carry a password; everything else here is shown as is.
        fields = ", ".join(
            f"{f.name}={(mask_url(v) if f.name in URL_SETTINGS else v)!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({fields})"

    @property
    def resolved_endpoint(self) -> str:
        """The endpoint to call: the configured one, or the dialect's default."""
        return (self.endpoint or DIALECT_ENDPOINTS[self.dialect]).rstrip("/")


_SECTIONS: Mapping[str, type[Any]] = {
    "timeouts": Timeouts,
    "rate_limits": RateLimits,
    "retry": RetryPolicy,
    "poll": PollPolicy,
}


def from_mapping(
    data: Mapping[str, Any], *, base: Settings | None = None, source: str = "settings"
) -> Settings:
    """Apply ``data`` (as parsed from TOML) over ``base``; unknown keys and wrong types are errors."""
    base = base or Settings()
    top = {f.name: f for f in dataclasses.fields(Settings)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top:
            # An unknown key's value is never shown: it may be a secret put where it does not belong.
            raise ConfigError(key, "***", f"unknown key in {source}{_did_you_mean(key, scalar_keys())}")
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(key, value, f"expected a table in {source}")
            changes[key] = _apply_section(key, getattr(base, key), value, source)
        else:
            changes[key] = _typed(key, _field_type(Settings, key), value, source)
    return dataclasses.replace(base, **changes)


def _apply_section(name: str, current: Any, data: Mapping[str, Any], source: str) -> Any:
    known = [f.name for f in dataclasses.fields(current)]
    changes = {}
    for key, value in data.items():
        if key not in known:
            hint = _did_you_mean(key, known, prefix=f"{name}.")
            raise ConfigError(f"{name}.{key}", "***", f"unknown key in {source}{hint}")
        changes[key] = _typed(f"{name}.{key}", _field_type(type(current), key), value, source)
    return dataclasses.replace(current, **changes)


def _did_you_mean(key: str, candidates: list[str], *, prefix: str = "") -> str:
    """``; did you mean 'x'?`` naming the closest candidate, or nothing when none is close."""
    # Compare without the section, so that ``task_query`` at the top level finds ``rate_limits.task_query``.
    bare = {c.rpartition(".")[2].lower(): c for c in candidates}
    close = difflib.get_close_matches(key.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
    if not close:
        close = [bare[m] for m in difflib.get_close_matches(key.lower(), list(bare), n=1, cutoff=0.6)]
    if not close:
        return ""
    match = next((c for c in candidates if c.lower() == close[0].lower()), close[0])
    return f"; did you mean '{prefix}{match}'?"


def _field_type(cls: type[Any], name: str) -> type[Any]:
    """The declared type of a settings field (``float`` fields accept integers too; ``X | None`` is ``X``)."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, type):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else object


def _typed(key: str, expected: type[Any], value: Any, source: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is not object and type(value) is not expected:
        raise ConfigError(key, value, f"expected {expected.__name__} in {source}")
    return value


def scalar_keys() -> list[str]:
    """Every scalar setting as a dotted key: ``region``, ``rate_limits.task_query``, ..."""
    keys: list[str] = []
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(_SECTIONS[f.name])]
        else:
            keys.append(f.name)
    return keys


def env_name(key: str) -> str:
    """The environment variable of a dotted key: ``rate_limits.task_query`` -> ``ENI_ASYNC_RATE_LIMITS_TASK_QUERY``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``ENI_ASYNC_*`` overrides in ``environ``, parsed and shaped like the TOML file.

    Values are read as the setting's type: ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)
    for flags, numbers for numbers, text as it is. An unknown ``ENI_ASYNC_*`` name is an error naming the
    closest known one, so that a typo never passes silently; a Kubernetes service-link variable (its name
    and its value of the kubelet's shapes) is skipped with a debug line.
    """
    by_name = {env_name(key): key for key in scalar_keys()}
    data: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        text = environ[name]
        key = by_name.get(name)
        if key is None and service_link(name, text):
            log.debug("%s: a Kubernetes service-link variable, not a setting; ignored", name)
            continue
        if key is None:
            hint = _did_you_mean(name, [*by_name, CONFIG_ENV])
            if any(pattern.fullmatch(name) for pattern, _ in SERVICE_LINKS):
                hint = "; named like a Kubernetes service-link variable, but its value is not one"
            # The value is not shown: an unknown variable may hold a secret.
            raise ConfigError(name, "***", f"unknown setting in the environment{hint}")
        section, _, leaf = key.rpartition(".")
        cls: type[Any] = _SECTIONS[section] if section else Settings
        target = data.setdefault(section, {}) if section else data
        target[leaf] = _parse_text(name, _field_type(cls, leaf), text)
    return data


def service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is a Kubernetes service-link variable of a Service named ``eni-async[-*]``."""
    return any(pattern.fullmatch(name) and shape.fullmatch(value.strip()) for pattern, shape in SERVICE_LINKS)


def _parse_text(name: str, expected: type[Any], text: str) -> Any:
    value = text.strip()
    if expected is bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(name, text, "expected true or false")
    if expected in (int, float):
        try:
            return expected(value)
        except ValueError:
            raise ConfigError(
                name, text, f"expected {'a whole number' if expected is int else 'a number'}"
            ) from None
    return text


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] = {},
    home: Path | None = None,
    etc: Path = Path("/etc"),
    origins: dict[str, str] | None = None,
) -> Settings:
    """Defaults, then the file (``path`` or ``$ENI_ASYNC_CONFIG``), then ``ENI_ASYNC_*``, then ``overrides``;
    the profile and the region also from Tencent's variables and the profile's files (see the module's
    docstring). ``home`` and ``etc`` locate the profile files (the user's home and ``/etc`` by default).
    ``origins``, when given, is filled with where each dotted key's value came from (``the default``, ``the
    settings file F``, ``ENI_ASYNC_REGION``, ``--region``, ...)."""
    found = dict.fromkeys(scalar_keys(), "the default")
    settings = Settings()
    file = path if path is not None else environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("config", str(file), f"cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", str(file), f"not valid TOML: {exc}") from None
        settings = from_mapping(data, base=settings, source=str(file))
        found.update(dict.fromkeys(_dotted(data), f"the settings file {file}"))
    env = from_environment(environ)
    # A named profile beats the environment, as in tccli: TENCENTCLOUD_REGION is then not read.
    named = bool("profile" in overrides or "profile" in env or environ.get(PROFILE_ENV) or "profile" in data)
    if environ.get(PROFILE_ENV):
        settings = _from_variables({"profile": environ[PROFILE_ENV]}, settings, lambda _: PROFILE_ENV)
        found["profile"] = PROFILE_ENV
    if environ.get(REGION_ENV) and not named:
        settings = _from_variables({"region": environ[REGION_ENV]}, settings, lambda _: REGION_ENV)
        found["region"] = REGION_ENV
    elif environ.get(REGION_ENV):
        log.info("%s not read: the profile is named (as tccli with --profile)", REGION_ENV)
    if env:
        settings = _from_variables(env, settings, env_name)
        found.update({key: env_name(key) for key in _dotted(env)})
    if overrides:
        settings = from_mapping(overrides, base=settings, source="arguments")
        found.update({key: "--" + key.replace("_", "-") for key in _dotted(overrides)})
    if found["region"] == "the default":
        located = profile_region(settings.profile, home=home, etc=etc)
        if located is not None:
            region, where = located
            settings = _from_variables({"region": region}, settings, lambda _: f"region in {where}")
            found["region"] = where
    log.info(
        "region %s (from %s), profile %s (from %s)",
        settings.region, found["region"], settings.profile, found["profile"],
        extra={"region": settings.region, "region_from": found["region"], "profile": settings.profile,
               "profile_from": found["profile"]},
    )  # fmt: skip
    if origins is not None:
        origins.update(found)
    return settings


def _dotted(data: Mapping[str, Any]) -> list[str]:
    """The dotted keys a mapping shaped like the settings file sets."""
    keys: list[str] = []
    for key, value in data.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            keys += [f"{key}.{leaf}" for leaf in value]
        else:
            keys.append(key)
    return keys


def _from_variables(data: Mapping[str, Any], base: Settings, name_of: Callable[[str], str]) -> Settings:
    """``from_mapping`` for values read from variables or files other than the settings file: a bad value's
    error names where it was read (``ENI_ASYNC_CONCURRENCY``, ``TENCENTCLOUD_REGION``), not only the key."""
    try:
        return from_mapping(data, base=base, source="the environment")
    except ConfigError as exc:
        if exc.field.startswith(ENV_PREFIX):
            raise
        raise ConfigError(name_of(exc.field), exc.value, exc.reason) from None


def profile_region(
    profile: str, *, home: Path | None = None, etc: Path = Path("/etc")
) -> tuple[str, str] | None:
    """The region a profile names, and where: the ``region`` key of its section in the credentials file
    (``~/.tencentcloud/credentials``, then ``/etc/tencentcloud/credentials``), else ``_sys_param.region`` of
    tccli's ``~/.tccli/<profile>.configure`` (the JSON ``tccli configure`` writes), else the ``region`` of
    tccli's ``~/.tccli/<profile>.credential``. Unreadable files are skipped here: the credential chain reports
    them if it needs them."""
    base = home if home is not None else Path.home()
    for path in (base / ".tencentcloud" / "credentials", etc / "tencentcloud" / "credentials"):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            if not parser.read(path, encoding="utf-8"):
                continue
        except (configparser.Error, UnicodeDecodeError, OSError):
            log.debug("skipping unreadable %s while looking for a region", path)
            continue
        if parser.has_section(profile) and parser[profile].get("region", "").strip():
            return parser[profile]["region"].strip(), f"{path} [{profile}]"
    for name, where in (
        (f"{profile}.configure", ("_sys_param", "region")),
        (f"{profile}.credential", ("region",)),
    ):
        tccli = base / ".tccli" / name
        try:
            data: Any = json.loads(tccli.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            log.debug("skipping unreadable %s while looking for a region", tccli)
            continue
        for key in where:
            data = data.get(key) if isinstance(data, dict) else None
        if isinstance(data, str) and data.strip():
            return data.strip(), str(tccli)
    return None


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain data, in the shape of the TOML file, with any password in a URL masked."""
    data = dataclasses.asdict(settings)
    for key in URL_SETTINGS:
        data[key] = mask_url(data[key])
    return data


def defaults_file() -> str:
    """The documented settings file (every key with its default), as shipped in the wheel."""
    packaged = resources.files("eni_async").joinpath("config", "eni-async.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # A source checkout (or an editable install): the file at the top of the repository.
    return (Path(__file__).resolve().parent.parent / "config" / "eni-async.toml").read_text(encoding="utf-8")
