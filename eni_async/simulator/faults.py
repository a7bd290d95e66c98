"""Fault profiles (TOML) and the seeded injector that decides, per request, which fault strikes.

A profile gives each fault kind a probability per request, for every action (``[rates]``) with optional
per-action overrides (``[actions.<Action>]``)::

    seed = 7                  # optional: fault stream seed (default: the simulator's seed)
    latency_seconds = 2.0     # the "latency" fault sleeps uniformly up to this long
    withhold_seconds = 10.0   # "withhold_after" sleeps this long after the effect, then drops the connection
    slow_task_factor = 30.0   # "task_slow" multiplies the task latency (at least 1 s) by this
    throttle_message = "plain"  # form of every throttle answer: "plain", "backticks" or "chinese"
    denied_enis = ["eni-..."] # Unassign/AssignPrivateIpAddresses on these ENIs are refused per resource
    [rates]
    throttle = 0.05           # a RequestLimitExceeded answer although under the limit (no effect)
    http_500 = 0.02           # HTTP 500/502/503 with a gateway page (no effect)
    http_502 = 0.02
    http_503 = 0.02
    internal_error = 0.03     # an InternalError envelope, HTTP 200 (no effect)
    drop_before = 0.03        # connection closed before the call takes effect
    malformed_body = 0.03     # HTTP 200 with an HTML body, after the call took effect
    truncated_body = 0.03     # half the JSON body, then the connection closes, after the effect
    drop_after = 0.03         # connection closed after the call took effect (the ambiguous case)
    withhold_after = 0.02     # answer withheld after the effect, then the connection closes
    latency = 0.05            # extra delay before handling (independent of the others)
    task_failed = 0.05        # a new task ends FAILED, nothing released
    task_partial = 0.05       # a new task ends FAILED after releasing some of its IPs (D12)
    task_slow = 0.05          # a new task stays RUNNING a long time, then SUCCESS
    [actions.DescribeVpcTaskResult]
    drop_after = 0.0

A denied ENI answers ``UnauthorizedOperation`` (API 3.0) or 4102 (API 2.0) to every mutating call, as a
sub-account without permission on that one resource sees it; describing it still works.
At most one response fault strikes a request (their rates must sum to at most 1; same for the task kinds).
The injector draws the same four numbers for every request, so one seed and one request sequence always
give the same faults. Unknown keys, kinds or actions are a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from eni_async.errors import ConfigError
from eni_async.simulator.limits import DEFAULT_RATE_LIMITS, THROTTLE_MESSAGES
from eni_async.simulator.resources import NORMAL, TaskFate

BEFORE_EFFECT = ("throttle", "http_500", "http_502", "http_503", "internal_error", "drop_before")
AFTER_EFFECT = ("malformed_body", "truncated_body", "drop_after", "withhold_after")
TASK_KINDS = ("task_failed", "task_partial", "task_slow")
ALL_KINDS = (*BEFORE_EFFECT, *AFTER_EFFECT, "latency", *TASK_KINDS)
PROFILE_NAMES = ("none", "flaky", "hostile")
_SETTINGS = (
    "name",
    "seed",
    "latency_seconds",
    "withhold_seconds",
    "slow_task_factor",
    "throttle_message",
    "denied_enis",
    "rates",
    "actions",
)


@dataclass(frozen=True)
class FaultRates:
    """The probability of each fault kind on one request (0 = never)."""

    throttle: float = 0.0
    http_500: float = 0.0
    http_502: float = 0.0
    http_503: float = 0.0
    internal_error: float = 0.0
    drop_before: float = 0.0
    malformed_body: float = 0.0
    truncated_body: float = 0.0
    drop_after: float = 0.0
    withhold_after: float = 0.0
    latency: float = 0.0
    task_failed: float = 0.0
    task_partial: float = 0.0
    task_slow: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any fault can strike."""
        return any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class FaultProfile:
    """A named set of fault rates; the default profile injects nothing."""

    name: str = "none"
    seed: int | None = None
    latency_seconds: float = 2.0
    withhold_seconds: float = 10.0
    slow_task_factor: float = 30.0
    throttle_message: str = "plain"
    denied_enis: frozenset[str] = frozenset()
    rates: FaultRates = FaultRates()
    actions: Mapping[str, FaultRates] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.throttle_message not in THROTTLE_MESSAGES:
            raise ConfigError(
                "throttle_message", self.throttle_message, f"must be one of {', '.join(THROTTLE_MESSAGES)}"
            )

    def rates_for(self, action: str) -> FaultRates:
        """The rates that apply to ``action``."""
        return self.actions.get(action, self.rates)

    @property
    def active(self) -> bool:
        """Whether any fault can strike any action."""
        return self.rates.active or any(r.active for r in self.actions.values())


@dataclass(frozen=True)
class Plan:
    """What the injector decided for one request."""

    response: str | None = None  # one of BEFORE_EFFECT or AFTER_EFFECT
    latency: float = 0.0
    task: TaskFate = NORMAL


NO_FAULT = Plan()


class FaultInjector:
    """Draws a ``Plan`` per request from a seeded stream."""

    def __init__(self, profile: FaultProfile, seed: int) -> None:
        import random

        self.profile = profile
        self._rng = random.Random(profile.seed if profile.seed is not None else seed)
        self._active = profile.active

    def draw(self, action: str) -> Plan:
        """Decide the faults for one request to ``action``."""
        if not self._active:
            return NO_FAULT
        rng, rates = self._rng, self.profile.rates_for(action)
        r_response, r_latency, r_amount, r_task = rng.random(), rng.random(), rng.random(), rng.random()
        response = _pick(rates, (*BEFORE_EFFECT, *AFTER_EFFECT), r_response)
        latency = r_amount * self.profile.latency_seconds if r_latency < rates.latency else 0.0
        task_kind = _pick(rates, TASK_KINDS, r_task)
        task = NORMAL if task_kind is None else TaskFate(task_kind, self.profile.slow_task_factor)
        if response is None and latency == 0.0 and task is NORMAL:
            return NO_FAULT
        return Plan(response, latency, task)


def _pick(rates: FaultRates, kinds: tuple[str, ...], roll: float) -> str | None:
    for kind in kinds:
        roll -= getattr(rates, kind)
        if roll < 0:
            return kind
    return None


def _rates(table: object, where: str, base: FaultRates) -> FaultRates:
    if not isinstance(table, dict):
        raise ConfigError(where, table, "expected a table of fault kinds")
    values: dict[str, float] = {}
    for key, value in table.items():
        if key not in ALL_KINDS:
            raise ConfigError(f"{where}.{key}", value, f"unknown fault kind; known: {', '.join(ALL_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{where}.{key}", value, "a probability must be a number from 0 to 1")
        values[key] = float(value)
    rates = replace(base, **values)
    for group in ((*BEFORE_EFFECT, *AFTER_EFFECT), TASK_KINDS):
        if sum(getattr(rates, kind) for kind in group) > 1.0 + 1e-9:
            raise ConfigError(where, table, f"the rates of {', '.join(group)} add up to more than 1")
    return rates


def parse_fault_profile(data: Mapping[str, Any], *, name: str) -> FaultProfile:
    """Build a profile from parsed TOML; unknown keys are a ``ConfigError`` naming the key."""
    for key in data:
        if key not in _SETTINGS:
            raise ConfigError(key, data[key], f"unknown fault profile setting; known: {', '.join(_SETTINGS)}")
    numbers: dict[str, float] = {}
    for key in ("latency_seconds", "withhold_seconds", "slow_task_factor"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(key, value, "must be a non-negative number")
            numbers[key] = float(value)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError("seed", seed, "must be an integer")
    form = data.get("throttle_message", "plain")
    if not isinstance(form, str) or form not in THROTTLE_MESSAGES:
        raise ConfigError("throttle_message", form, f"must be one of {', '.join(THROTTLE_MESSAGES)}")
    denied = data.get("denied_enis", [])
    if not isinstance(denied, list) or not all(isinstance(e, str) and e.startswith("eni-") for e in denied):
        raise ConfigError("denied_enis", denied, "must be a list of ENI ids (eni-...)")
    rates = _rates(data.get("rates", {}), "rates", FaultRates())
    actions_table = data.get("actions", {})
    if not isinstance(actions_table, dict):
        raise ConfigError("actions", actions_table, "expected a table of actions")
    actions: dict[str, FaultRates] = {}
    for action, table in actions_table.items():
        if action not in DEFAULT_RATE_LIMITS:
            raise ConfigError(
                f"actions.{action}", table, f"unknown action; known: {', '.join(DEFAULT_RATE_LIMITS)}"
            )
        actions[action] = _rates(table, f"actions.{action}", rates)
    return FaultProfile(
        name=str(data.get("name", name)),
        seed=seed,
        throttle_message=form,
        denied_enis=frozenset(denied),
        rates=rates,
        actions=actions,
        **numbers,
    )


def load_fault_profile(name_or_path: str | Path) -> FaultProfile:
    """Load a named built-in profile (``none``, ``flaky``, ``hostile``) or a TOML file by path."""
    text = str(name_or_path)
    if text in PROFILE_NAMES:
        source = resources.files("eni_async.simulator").joinpath("profiles", f"{text}.toml")
        raw, name = source.read_text(encoding="utf-8"), text
    elif text.endswith(".toml") or "/" in text or Path(text).is_file():
        try:
            raw = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("faults", text, f"cannot read fault profile: {exc.strerror}") from None
        name = Path(text).stem
    else:
        raise ConfigError(
            "faults", text, f"unknown fault profile; use {', '.join(PROFILE_NAMES)} or a .toml file"
        )
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("faults", text, f"invalid TOML: {exc}") from None
    return parse_fault_profile(data, name=name)
