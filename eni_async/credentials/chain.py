"""``credential_chain``: find credentials the way Tencent's tools do, and renew them on their schedules.

What wins is decided by ``plan`` (a pure function; its docstring states the rules): tccli's order for the
command line, the official SDK's for the library. This module builds the winner: fixed keys, a tccli login's
keys (renewed by ``login``), the CVM role (metadata service), an assumed role (STS ``AssumeRole`` signed with
the keys; ``TENCENTCLOUD_ROLE_ARN`` + ``TENCENTCLOUD_ROLE_SESSION_NAME`` or the tccli file's ``role-arn`` +
``role-session-name``) or TKE's OIDC role (STS ``AssumeRoleWithWebIdentity``; the token file is re-read at
every renewal, as the SDK's ``_init_from_tke`` does, because TKE rotates it). Each renews on its source's
``Renewal`` schedule (``refresh``). Temporary keys that cannot be had, or renewed, now are refused in one line
before any work starts.

The profile is the argument, else ``TCCLI_PROFILE``, else ``default`` (unnamed). Under the command line
(``command_line``, which ``eni_async.cli`` sets when it reads the settings) ``settings_credentials`` uses
tccli's order and knows whether the profile was named anywhere, ``--profile default`` included. Which source
won is logged at INFO (``-v``). The endpoints come from ``ENI_ASYNC_METADATA_ENDPOINT``,
``ENI_ASYNC_STS_ENDPOINT`` and ``ENI_ASYNC_LOGIN_ENDPOINT`` (the settings' variables), else the settings, else
Tencent's own.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from eni_async import transport
from eni_async.clock import Clock, SystemClock
from eni_async.credentials import files, remote
from eni_async.credentials.login import TccliLogin, login_command
from eni_async.credentials.plan import SDK, TCCLI, Choice, choose, gather
from eni_async.credentials.refresh import (
    ASSUME_ROLE,
    OIDC_ROLE,
    CredentialError,
    CredentialProvider,
    RefreshingCredentials,
    Renewal,
    StaticCredentials,
)
from eni_async.errors import ConfigError
from eni_async.models import Credentials
from eni_async.settings import Settings

log = logging.getLogger("eni_async.credentials")

METADATA_ENV = "ENI_ASYNC_METADATA_ENDPOINT"
STS_ENV = "ENI_ASYNC_STS_ENDPOINT"
LOGIN_ENV = "ENI_ASYNC_LOGIN_ENDPOINT"
PROFILE_ENV = "TCCLI_PROFILE"
# OIDCRoleArnCredential._default_session_name is "tencentcloud-python-sdk-" + microseconds; ours says who.
TKE_SESSION_PREFIX = "eni-async-"
Fetch = Callable[[], Awaitable[Credentials]]

# Under the command line: whether the profile was named (``eni_async.cli`` sets it with the settings).
command_line: contextvars.ContextVar[bool | None] = contextvars.ContextVar("eni_async_cli", default=None)


async def credential_chain(
    credentials: Credentials | None = None,
    *,
    profile: str | None = None,
    named: bool | None = None,
    settings: Settings | None = None,
    environ: Mapping[str, str] = os.environ,
    clock: Clock | None = None,
    profile_files: Sequence[Path] = (files.CREDENTIALS_FILE, files.SYSTEM_CREDENTIALS_FILE),
    tccli_dir: Path = files.TCCLI_DIR,
    order: str = SDK,
) -> CredentialProvider:
    """Return a provider for the winning source (``plan``); ``ConfigError`` or ``CredentialError`` when none.

    ``profile`` names a profile (so the environment's keys are not read), as ``TCCLI_PROFILE`` does; ``named``
    overrides that (the command line knows where its profile came from). ``order`` is ``"sdk"`` (the library)
    or ``"tccli"`` (the command line).
    """
    settings = settings or Settings()
    clock = clock if clock is not None else SystemClock()
    if credentials is not None:
        return StaticCredentials(credentials, "explicit credentials")
    name = profile or environ.get(PROFILE_ENV) or "default"
    is_named = named if named is not None else bool(profile or environ.get(PROFILE_ENV))
    found = gather(name, named=is_named, environ=environ, profile_files=profile_files, tccli_dir=tccli_dir)
    if found.ignored:
        log.info(
            "profile %s is named: %s in the environment not read (as tccli with --profile)",
            name, ", ".join(found.ignored),
        )  # fmt: skip
    sources = _Sources(settings, environ, clock, name, list(found.tried))
    provider = await sources.build(choose(found, order=order), found.tke)
    log.info("credentials: %s", provider.source, extra={"credentials": provider.source, "profile": name})
    return provider


async def settings_credentials(settings: Settings) -> CredentialProvider:
    """The chain for a ``Settings``: its profile when one is named; tccli's order under the command line."""
    named = command_line.get()
    if named is None:  # the library: a profile other than default is named
        named = settings.profile != "default"
        return await credential_chain(profile=settings.profile, named=named, settings=settings)
    return await credential_chain(profile=settings.profile, named=named, settings=settings, order=TCCLI)


def endpoint_of(settings: Settings, environ: Mapping[str, str], which: str) -> str:
    """A credential service's endpoint: its variable, else its setting, else Tencent's own."""
    variable, setting, default = {
        "metadata": (METADATA_ENV, settings.metadata_endpoint, remote.METADATA_ENDPOINT),
        "sts": (STS_ENV, settings.sts_endpoint, remote.STS_ENDPOINT),
        "login": (LOGIN_ENV, settings.login_endpoint, remote.LOGIN_ENDPOINT),
    }[which]
    return (environ.get(variable) or setting or default).rstrip("/")


def network_for(settings: Settings, endpoint: str) -> remote.Network:
    """How to reach ``endpoint``: the client's timeouts, proxy and TLS rules (``eni_async.transport``)."""
    t = settings.timeouts
    return remote.Network(
        timeout=transport.client_timeout(connect=t.connect, read=t.read, total=t.total),
        proxy=transport.proxy_for(endpoint, settings.proxy),
        ssl=transport.tls_for(endpoint, verify=settings.verify_tls, ca_file=settings.ca_file),
    )


class _Sources:
    """Builds the winning source, sharing settings, environment and clock."""

    def __init__(
        self, settings: Settings, environ: Mapping[str, str], clock: Clock, profile: str, tried: list[str]
    ) -> None:
        self.settings = settings
        self.environ = environ
        self.clock = clock
        self.profile = profile
        self.tried = tried
        self.metadata = endpoint_of(settings, environ, "metadata")
        self.sts = endpoint_of(settings, environ, "sts")
        self._sts_network: remote.Network | None = None

    @property
    def sts_network(self) -> remote.Network:
        """Built once: loading a CA file costs milliseconds of CPU."""
        if self._sts_network is None:
            self._sts_network = network_for(self.settings, self.sts)
        return self._sts_network

    def refreshing(
        self, fetch: Fetch, source: str, initial: Credentials, schedule: Renewal
    ) -> RefreshingCredentials:
        return RefreshingCredentials(
            fetch, source=source, clock=self.clock, schedule=schedule, initial=initial
        )

    async def build(self, choice: Choice, tke: Mapping[str, str] | None) -> CredentialProvider:
        if choice.kind == "cvm-role":
            provider = await self.cvm_role(required=True, why=choice.role_from)
            assert provider is not None
            return provider
        if choice.kind == "assume-role":
            return await self.assume_role(await self.keys(choice), choice)
        if choice.kind == "tke":
            assert tke is not None
            return await self.tke(tke)
        if choice.kind == "keys":
            return await self.keys(choice)
        provider = await self.cvm_role(required=False)
        if provider is None and choice.tke and tke is not None:
            provider = await self.tke(tke)
        if provider is None:
            raise ConfigError("credentials", "", "none found: " + "; ".join(self.tried))
        return provider

    async def keys(self, choice: Choice) -> CredentialProvider:
        assert choice.keys is not None
        if choice.login is None:
            return StaticCredentials(choice.keys, choice.keys_from)
        login = TccliLogin(
            choice.login,
            self.profile,
            endpoint=endpoint_of(self.settings, self.environ, "login"),
            network=network_for(self.settings, endpoint_of(self.settings, self.environ, "login")),
            clock=self.clock,
        )
        schedule = Renewal(margin=self.settings.credential_refresh_margin)
        provider = self.refreshing(login.fetch, login.source, choice.keys, schedule)
        expires_at = choice.keys.expires_at or 0.0
        if self.clock.time() >= schedule.renew_at(expires_at, self.clock.time()):
            await provider.refresh(choice.keys)  # as tccli does before a command: now, or a one-line refusal
        elif not login.renewable():
            log.warning(
                "the keys of tccli profile %s expire at %.0f and cannot be renewed (its SSO login has ended): "
                "work after that fails; log in again first: %s",
                self.profile, expires_at, login_command("sso", self.profile),
            )  # fmt: skip
        return provider

    async def cvm_role(self, *, required: bool, why: str = "") -> CredentialProvider | None:
        try:
            role = await remote.metadata_role_name(self.metadata)
        except CredentialError as exc:  # CVMRoleCredential.get_role_name: any failure means "no role here"
            if required:
                raise ConfigError("use-cvm-role", "true", f"{why}: no metadata service ({exc})") from None
            self.tried.append(f"no metadata service at {self.metadata}")
            return None
        if role is None:
            if required:
                raise ConfigError("use-cvm-role", "true", f"{why}: the instance has no CVM role")
            self.tried.append(f"no CVM role at {self.metadata}")
            return None
        endpoint = self.metadata

        async def fetch() -> Credentials:
            return await remote.metadata_credentials(endpoint, role)

        schedule = Renewal(margin=self.settings.credential_refresh_margin)
        source = f"CVM role {role} (metadata service {endpoint})" + (f", as {why} says" if why else "")
        return self.refreshing(fetch, source, await fetch(), schedule)

    async def tke(self, values: Mapping[str, str]) -> CredentialProvider:
        region, provider_id, token_file, role_arn = (values[name] for name in values)

        async def fetch() -> Credentials:
            token = files.read_token_file(token_file)  # a few hundred bytes
            params = {
                "ProviderId": provider_id,
                "WebIdentityToken": token,
                "RoleArn": role_arn,
                "RoleSessionName": f"{TKE_SESSION_PREFIX}{int(self.clock.time() * 1e6)}",
                "DurationSeconds": remote.DURATION_SECONDS,
            }
            return await self.sts_exchange("AssumeRoleWithWebIdentity", params, region=region)

        source = f"TKE OIDC role {role_arn} (STS {self.sts})"
        return self.refreshing(fetch, source, await fetch(), OIDC_ROLE)

    async def assume_role(self, base: CredentialProvider, choice: Choice) -> CredentialProvider:
        async def fetch() -> Credentials:
            params = {
                "RoleArn": choice.role_arn,
                "RoleSessionName": choice.session,
                "DurationSeconds": remote.DURATION_SECONDS,
            }
            return await self.sts_exchange(
                "AssumeRole", params, region=remote.STS_REGION, base=await base.get()
            )

        source = f"assumed role {choice.role_arn} (STS {self.sts}) with keys from {base.source}"
        return self.refreshing(fetch, source, await fetch(), ASSUME_ROLE)

    async def sts_exchange(
        self, action: str, params: dict[str, object], *, region: str, base: Credentials | None = None
    ) -> Credentials:
        return await remote.sts_credentials(
            self.sts, action, params, region=region, clock=self.clock, base=base, network=self.sts_network
        )
