"""Credentials, found the way Tencent's own tools find them, renewed before they expire, and never shown.

``load_credentials()`` is the synchronous, static part (environment, then ``~/.tencentcloud/credentials``);
``await credential_chain()`` is the whole chain of the official SDK and tccli, role credentials included, and
returns a ``CredentialProvider`` that an ``EniClient`` takes in place of fixed ``Credentials``. Modules:
``files`` (environment and files, no I/O beyond small reads), ``remote`` (metadata service and STS),
``refresh`` (the provider protocol and the shared refresher), ``chain`` (the order).
"""

from eni_async.credentials.chain import credential_chain, settings_credentials
from eni_async.credentials.files import CREDENTIALS_FILE, load_credentials
from eni_async.credentials.refresh import (
    CredentialError,
    CredentialProvider,
    RefreshingCredentials,
    StaticCredentials,
    as_provider,
)

__all__ = [
    "CREDENTIALS_FILE",
    "CredentialError",
    "CredentialProvider",
    "RefreshingCredentials",
    "StaticCredentials",
    "as_provider",
    "credential_chain",
    "load_credentials",
    "settings_credentials",
]
