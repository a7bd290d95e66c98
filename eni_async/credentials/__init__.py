"""Credentials, found the way Tencent's own tools find them, renewed before they expire, and never shown.

``load_credentials()`` is the synchronous, static part (environment, then ``~/.tencentcloud/credentials``);
``await credential_chain()`` is the whole chain of the official SDK and tccli, role and login credentials
included, and returns a ``CredentialProvider`` that an ``EniClient`` takes in place of fixed ``Credentials``;
``await caller_identity(provider)`` says who the API takes them for. Modules: ``files`` (environment and
files, no I/O beyond small reads), ``plan`` (which source wins, pure), ``remote`` (metadata service, STS,
tccli's login service), ``login`` (tccli's oauth and sso keys), ``refresh`` (the provider protocol, the
shared refresher and the renewal schedules), ``chain`` (builds the winner), ``identity`` (who the caller is).
"""

from eni_async.credentials.chain import credential_chain, settings_credentials
from eni_async.credentials.files import CREDENTIALS_FILE, load_credentials
from eni_async.credentials.identity import CallerIdentity, caller_identity, quota_account
from eni_async.credentials.refresh import (
    CredentialError,
    CredentialProvider,
    RefreshingCredentials,
    StaticCredentials,
    as_provider,
)

__all__ = [
    "CREDENTIALS_FILE",
    "CallerIdentity",
    "CredentialError",
    "CredentialProvider",
    "RefreshingCredentials",
    "StaticCredentials",
    "as_provider",
    "caller_identity",
    "credential_chain",
    "load_credentials",
    "quota_account",
    "settings_credentials",
]
