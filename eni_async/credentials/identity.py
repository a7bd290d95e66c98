"""Who the API takes the credentials for (STS ``GetCallerIdentity``), asked once per credential source.

``caller_identity`` asks STS with the provider's current credentials and caches the answer per source (fixed
keys by their SecretId, renewed ones by their provider: a renewal changes the SecretId, not who it is).
``quota_account`` is the sub-account a shared quota is keyed by (D29): ``quota_key`` when set, else a
coroutine that asks ``caller_identity`` once, when the client opens, for ``SharedBudgets``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Awaitable, Callable, Mapping

from eni_async.clock import Clock, SystemClock
from eni_async.credentials import remote
from eni_async.credentials.chain import endpoint_of, network_for
from eni_async.credentials.refresh import CredentialProvider, StaticCredentials, as_provider
from eni_async.models import Credentials
from eni_async.settings import Settings

CallerIdentity = remote.CallerIdentity

_BY_PROVIDER: weakref.WeakKeyDictionary[CredentialProvider, CallerIdentity] = weakref.WeakKeyDictionary()
_BY_SECRET_ID: dict[tuple[str, str], CallerIdentity] = {}
asked = 0  # how many times STS was asked (for tests: once per source)


async def caller_identity(
    credentials: Credentials | CredentialProvider,
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] = os.environ,
) -> CallerIdentity:
    """Who STS says ``credentials`` are (cached per source); a ``CredentialError`` when STS refuses them."""
    global asked
    settings = settings or Settings()
    provider = as_provider(credentials)
    sts = endpoint_of(settings, environ, "sts")
    fixed = provider.credentials.secret_id if isinstance(provider, StaticCredentials) else None
    cached = _BY_SECRET_ID.get((sts, fixed)) if fixed is not None else _BY_PROVIDER.get(provider)
    if cached is not None:
        return cached
    asked += 1
    found = await remote.caller_identity(
        sts,
        await provider.get(),
        clock=clock if clock is not None else SystemClock(),
        network=network_for(settings, sts),
    )
    if fixed is not None:
        _BY_SECRET_ID[(sts, fixed)] = found
    else:
        _BY_PROVIDER[provider] = found
    return found


def quota_account(
    credentials: Credentials | CredentialProvider, settings: Settings, *, clock: Clock | None = None
) -> str | Callable[[], Awaitable[str]]:
    """The sub-account a shared quota is keyed by: ``quota_key``, or a coroutine function asking STS once."""
    if settings.quota_key:
        return settings.quota_key
    provider = as_provider(credentials)

    async def ask() -> str:
        return "uin-" + (await caller_identity(provider, settings, clock=clock)).sub_account

    return ask
