"""``SimulatorConfig``: everything that shapes one simulator, as a frozen value checked on creation.

``rate_limits`` is merged over Tencent's defaults (docs/protocol.md D8), a value of 0 or None makes that action
unlimited, and ``rate_limits=None`` means no limits at all. ``accounts`` maps SecretIds to the sub-account
whose limits they share (by default each SecretId is its own). ``keys=None`` generates one key pair from the
seed (a toy pair, fine to print). Bad values raise ``ConfigError`` naming the field.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eni_async.errors import ConfigError
from eni_async.simulator.faults import FaultProfile
from eni_async.simulator.limits import DEFAULT_RATE_LIMITS

# The answers a describe by ids may give for an ENI that does not exist.
DESCRIBE_MISSING = ("omit", "ResourceNotFound", "InvalidParameterValue")


@dataclass(frozen=True)
class SimulatorConfig:
    """How to build a simulator: its world, its timing, its limits, its faults and its keys."""

    enis: int = 10
    ips_per_eni: int = 3
    seed: int = 0
    task_latency: tuple[float, float] = (1.0, 0.5)  # log-normal (median, sigma) seconds; (0, 0) ends at once
    rate_limits: Mapping[str, int | None] | None = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    faults: FaultProfile = field(default_factory=FaultProfile)
    keys: Mapping[str, str] | None = field(default=None, repr=False)
    region: str = "ap-guangzhou"
    state_file: str | Path | None = None
    eip_fraction: float = 0.3
    max_ips_per_eni: int = 50  # the per-ENI secondary IP quota AssignPrivateIpAddresses enforces
    accounts: Mapping[str, str] = field(default_factory=dict)  # SecretId -> sub-account sharing its limits
    role_name: str = "eni-async-role"  # the CVM role the metadata service names ("" for none)
    credential_lifetime: float = 7200.0  # seconds a temporary key pair is accepted (metadata and STS)
    roles: tuple[str, ...] | None = None  # role names STS knows (None: every well-formed role ARN exists)
    # A describe by ids naming an ENI that does not exist: the id is left out of the answer ("omit"), or the
    # call fails with "ResourceNotFound" or "InvalidParameterValue" (API 2.0: InvalidNetworkInterface.NotFound
    # or InvalidParameter), as docs/protocol.md D31 records.
    describe_missing: str = "omit"
    # The network between client and rate limiter: each request waits uniformly up to ``jitter`` seconds
    # before it is counted; the limiter's clock is ``clock_skew`` seconds ahead of the simulator's and runs
    # ``clock_drift`` faster (a fraction: 1e-4 is 100 ppm; negative: slower). Its windows stay one second of
    # its own clock (D8).
    jitter: float = 0.0
    clock_skew: float = 0.0
    clock_drift: float = 0.0

    def __post_init__(self) -> None:
        if self.enis < 0:
            raise ConfigError("enis", self.enis, "must be 0 or more")
        if self.ips_per_eni < 0:
            raise ConfigError("ips_per_eni", self.ips_per_eni, "must be 0 or more")
        if len(self.task_latency) != 2 or min(self.task_latency) < 0:
            raise ConfigError("task_latency", self.task_latency, "must be (median, sigma), both 0 or more")
        if not 0.0 <= self.jitter <= 10.0:
            raise ConfigError("jitter", self.jitter, "must be between 0 and 10 seconds")
        if not -0.1 <= self.clock_drift <= 0.1:
            raise ConfigError("clock_drift", self.clock_drift, "must be between -0.1 and 0.1")
        if not abs(self.clock_skew) < 1e6:
            raise ConfigError("clock_skew", self.clock_skew, "must be under 1e6 seconds either way")
        if not 0.0 <= self.eip_fraction <= 1.0:
            raise ConfigError("eip_fraction", self.eip_fraction, "must be between 0 and 1")
        if not self.credential_lifetime > 0:
            raise ConfigError("credential_lifetime", self.credential_lifetime, "must be positive")
        if any(c in self.role_name for c in "/ ?#"):
            raise ConfigError("role_name", self.role_name, "must not contain '/', spaces, '?' or '#'")
        if self.describe_missing not in DESCRIBE_MISSING:
            raise ConfigError(
                "describe_missing", self.describe_missing, f"must be one of {', '.join(DESCRIBE_MISSING)}"
            )
        if not self.region:
            raise ConfigError("region", self.region, "must not be empty")
        for action, limit in (self.rate_limits or {}).items():
            if action not in DEFAULT_RATE_LIMITS:
                raise ConfigError(
                    "rate_limits", action, f"unknown action; known: {', '.join(DEFAULT_RATE_LIMITS)}"
                )
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
                raise ConfigError(
                    "rate_limits", f"{action}={limit}", "a limit must be a whole number, 0 or more"
                )
        if self.keys is not None and (not self.keys or not all(self.keys.values())):
            raise ConfigError("keys", "***", "need at least one SecretId with a non-empty SecretKey")

    def effective_rate_limits(self) -> dict[str, int | None]:
        """The per-action limits in force: the given ones over the defaults (None = no limits at all)."""
        if self.rate_limits is None:
            return {}
        return {**DEFAULT_RATE_LIMITS, **self.rate_limits}

    def key_pairs(self) -> dict[str, str]:
        """The configured key pairs, or one pair generated reproducibly from the seed."""
        if self.keys is not None:
            return dict(self.keys)
        rng = random.Random(f"keys:{self.seed}")
        alnum = string.ascii_letters + string.digits
        secret_id = "AKID" + "".join(rng.choices(alnum, k=32))
        return {secret_id: "".join(rng.choices(alnum, k=32))}
