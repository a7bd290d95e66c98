"""``credential_chain``: find credentials the way Tencent's tools do, first source that yields wins.

Order (the official SDK's ``DefaultCredentialProvider`` -- environment, profile file, CVM role, TKE OIDC --
with tccli's sources fitted in where tccli reads them):

1. credentials given as an argument;
2. ``TENCENTCLOUD_SECRET_ID``/``_SECRET_KEY`` (+ ``TENCENTCLOUD_TOKEN`` or ``_SECURITY_TOKEN``);
3. the profile file: ``~/.tencentcloud/credentials``, else ``/etc/tencentcloud/credentials`` (section
   ``[profile]``);
4. tccli's ``~/.tccli/<profile>.credential``;
5. the CVM role from the instance metadata service;
6. TKE OIDC: ``TKE_REGION``, ``TKE_PROVIDER_ID``, ``TKE_WEB_IDENTITY_TOKEN_FILE``, ``TKE_ROLE_ARN``, exchanged
   with STS ``AssumeRoleWithWebIdentity`` (``DefaultTkeOIDCRoleArnProvider``; the token file is re-read at
   every renewal, as the SDK's ``_init_from_tke`` does, because TKE rotates it);
7. an assumed role: with ``TENCENTCLOUD_ROLE_ARN`` + ``TENCENTCLOUD_ROLE_SESSION_NAME`` (tccli's environment,
   as its documentation lists them next to the secret id and key), or ``role-arn`` + ``role-session-name``
   in the tccli file, whatever the steps above found is the base of an STS ``AssumeRole``.

The profile is the argument, else ``TCCLI_PROFILE`` (tccli's ``_get_profile_name``), else ``default``. A
profile other than ``default`` that neither file knows is an error rather than a fall-through to a role.
Which source won is logged at INFO (``-v``). The endpoints come from ``ENI_ASYNC_METADATA_ENDPOINT`` /
``ENI_ASYNC_STS_ENDPOINT``, else the settings, else Tencent's own.
"""

from __future__ import annotations

import logging
import os
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from eni_async.clock import Clock, SystemClock
from eni_async.credentials import files, remote
from eni_async.credentials.refresh import (
    CredentialError,
    CredentialProvider,
    RefreshingCredentials,
    StaticCredentials,
)
from eni_async.errors import ConfigError
from eni_async.models import Credentials
from eni_async.settings import Settings

log = logging.getLogger("eni_async.credentials")

METADATA_ENV = "ENI_ASYNC_METADATA_ENDPOINT"
STS_ENV = "ENI_ASYNC_STS_ENDPOINT"
TKE_ENV = ("TKE_REGION", "TKE_PROVIDER_ID", "TKE_WEB_IDENTITY_TOKEN_FILE", "TKE_ROLE_ARN")
ROLE_ARN_ENV, ROLE_SESSION_ENV = "TENCENTCLOUD_ROLE_ARN", "TENCENTCLOUD_ROLE_SESSION_NAME"
PROFILE_ENV = "TCCLI_PROFILE"
# OIDCRoleArnCredential._default_session_name is "tencentcloud-python-sdk-" + microseconds; ours says who.
TKE_SESSION_PREFIX = "eni-async-"
Fetch = Callable[[], Awaitable[Credentials]]


async def credential_chain(
    credentials: Credentials | None = None,
    *,
    profile: str | None = None,
    settings: Settings | None = None,
    environ: Mapping[str, str] = os.environ,
    clock: Clock | None = None,
    profile_files: Sequence[Path] = (files.CREDENTIALS_FILE, files.SYSTEM_CREDENTIALS_FILE),
    tccli_dir: Path = files.TCCLI_DIR,
) -> CredentialProvider:
    """Return a provider for the first source that yields credentials; ``ConfigError`` when none does."""
    settings = settings or Settings()
    clock = clock if clock is not None else SystemClock()
    name = profile or environ.get(PROFILE_ENV) or "default"
    chain = _Chain(settings, environ, clock)
    base, tccli = await chain.base(credentials, name, profile_files, tccli_dir)
    role_arn, session = environ.get(ROLE_ARN_ENV, ""), environ.get(ROLE_SESSION_ENV, "")
    if not role_arn and tccli is not None and tccli.role_arn:
        role_arn, session = tccli.role_arn, tccli.role_session_name or session
    provider = base if not role_arn else await chain.assume_role(base, role_arn, session)
    log.info("credentials: %s", provider.source)
    return provider


async def settings_credentials(settings: Settings) -> CredentialProvider:
    """The chain for a ``Settings``: its profile when one is named, else ``TCCLI_PROFILE`` or ``default``."""
    return await credential_chain(
        profile=settings.profile if settings.profile != "default" else None, settings=settings
    )


class _Chain:
    """The sources, sharing settings, environment and clock."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], clock: Clock) -> None:
        self.settings = settings
        self.environ = environ
        self.clock = clock
        self.metadata = (
            environ.get(METADATA_ENV) or settings.metadata_endpoint or remote.METADATA_ENDPOINT
        ).rstrip("/")
        self.sts = (environ.get(STS_ENV) or settings.sts_endpoint or remote.STS_ENDPOINT).rstrip("/")
        self.tried: list[str] = []
        self._ssl_context: bool | ssl_module.SSLContext | None = None

    def refreshing(self, fetch: Fetch, source: str, initial: Credentials) -> RefreshingCredentials:
        return RefreshingCredentials(
            fetch,
            source=source,
            clock=self.clock,
            margin=self.settings.credential_refresh_margin,
            initial=initial,
        )

    async def base(
        self, given: Credentials | None, profile: str, profile_files: Sequence[Path], tccli_dir: Path
    ) -> tuple[CredentialProvider, files.TccliProfile | None]:
        if given is not None:
            return StaticCredentials(given, "explicit credentials"), None
        found = files.from_environment(self.environ)
        if found is not None:
            return StaticCredentials(found, f"environment ({files.ENV_SECRET_ID})"), None
        self.tried.append(f"no {files.ENV_SECRET_ID}/{files.ENV_SECRET_KEY} in the environment")
        path = files.profile_file(profile_files)
        if path is not None:
            found = files.from_profile_file(path, profile)
            if found is not None:
                return StaticCredentials(found, f"profile file {path} [{profile}]"), None
            self.tried.append(f"no [{profile}] section in {path}")
        else:
            self.tried.append(f"no {' or '.join(str(p) for p in profile_files)}")
        tccli = files.from_tccli(tccli_dir, profile)
        if tccli is not None and tccli.credentials is not None:
            return StaticCredentials(tccli.credentials, f"tccli profile {tccli.path}"), tccli
        if tccli is None:
            self.tried.append(f"no {tccli_dir / (profile + '.credential')}")
            if profile != "default":
                raise ConfigError("profile", profile, "; ".join(self.tried))
        provider = await self.cvm_role(required=tccli is not None and tccli.cvm_role)
        if provider is None:
            provider = await self.tke()
        if provider is None:
            raise ConfigError("credentials", "", "none found: " + "; ".join(self.tried))
        return provider, tccli

    async def cvm_role(self, *, required: bool) -> CredentialProvider | None:
        try:
            role = await remote.metadata_role_name(self.metadata)
        except CredentialError as exc:  # CVMRoleCredential.get_role_name: any failure means "no role here"
            if required:
                raise ConfigError("use-cvm-role", "true", f"no metadata service ({exc})") from None
            self.tried.append(f"no metadata service at {self.metadata}")
            return None
        if role is None:
            self.tried.append(f"no CVM role at {self.metadata}")
            return None
        endpoint = self.metadata

        async def fetch() -> Credentials:
            return await remote.metadata_credentials(endpoint, role)

        return self.refreshing(fetch, f"CVM role {role} (metadata service {endpoint})", await fetch())

    async def tke(self) -> CredentialProvider | None:
        values = {name: self.environ.get(name, "") for name in TKE_ENV}
        if not any(values.values()):
            self.tried.append("no TKE_* OIDC variables")
            return None
        for name, value in values.items():
            if not value:  # OIDCRoleArnCredential._init_from_tke: "<NAME> not exist"
                raise ConfigError(name, "", "is not set while the other TKE_* variables are")
        region, provider_id, token_file, role_arn = values.values()

        async def fetch() -> Credentials:
            token = files.read_token_file(token_file)  # a few hundred bytes
            params = {
                "ProviderId": provider_id,
                "WebIdentityToken": token,
                "RoleArn": role_arn,
                "RoleSessionName": f"{TKE_SESSION_PREFIX}{int(self.clock.time() * 1e6)}",
                "DurationSeconds": remote.DURATION_SECONDS,
            }
            return await self.sts_call("AssumeRoleWithWebIdentity", params, region=region)

        return self.refreshing(fetch, f"TKE OIDC role {role_arn} (STS {self.sts})", await fetch())

    async def assume_role(self, base: CredentialProvider, role_arn: str, session: str) -> CredentialProvider:
        if not session:
            raise ConfigError(ROLE_SESSION_ENV, "", f"is needed with {ROLE_ARN_ENV}")

        async def fetch() -> Credentials:
            params = {
                "RoleArn": role_arn,
                "RoleSessionName": session,
                "DurationSeconds": remote.DURATION_SECONDS,
            }
            return await self.sts_call("AssumeRole", params, region=remote.STS_REGION, base=await base.get())

        source = f"assumed role {role_arn} (STS {self.sts}) over {base.source}"
        return self.refreshing(fetch, source, await fetch())

    async def sts_call(
        self, action: str, params: dict[str, object], *, region: str, base: Credentials | None = None
    ) -> Credentials:
        t = self.settings.timeouts
        return await remote.sts_call(
            self.sts,
            action,
            params,
            region=region,
            clock=self.clock,
            base=base,
            timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.read),
            proxy=remote.proxy_for(self.sts, self.settings.proxy),
            ssl=self._ssl(),
        )

    def _ssl(self) -> bool | ssl_module.SSLContext:
        """TLS for STS, built once: loading a CA file costs milliseconds of CPU."""
        if self._ssl_context is None:
            self._ssl_context = self._make_ssl()
        return self._ssl_context

    def _make_ssl(self) -> bool | ssl_module.SSLContext:
        if not self.sts.startswith("https://"):
            return True
        if not self.settings.verify_tls:
            return False
        if self.settings.ca_file:
            try:
                return ssl_module.create_default_context(cafile=self.settings.ca_file)
            except (OSError, ssl_module.SSLError) as exc:
                raise ConfigError(
                    "ca_file", self.settings.ca_file, f"cannot load certificates ({exc})"
                ) from None
        return True
