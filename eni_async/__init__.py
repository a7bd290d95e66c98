"""eni_async: release secondary private IPs from Tencent Cloud ENIs, asynchronously and within rate limits.

One ENI is one await::

    async with EniClient(load_credentials(), Settings()) as client:
        result = await client.unassign("vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"])

Many ENIs are one loop over ``client.unassign_many(items)``. ``__all__`` is the public API.
"""

from eni_async.batch import Batch
from eni_async.client import EniClient
from eni_async.clock import Clock, FakeClock, SystemClock
from eni_async.credentials import (
    CredentialError,
    CredentialProvider,
    RefreshingCredentials,
    StaticCredentials,
    credential_chain,
    load_credentials,
)
from eni_async.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    EniAsyncError,
    EniNotFoundError,
    InputError,
    InvalidParameterError,
    IpNotOnEniError,
    MutexError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    PrimaryIpError,
    ProtocolError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    ThrottledError,
    TransportError,
    VpcNotFoundError,
    error_info,
)
from eni_async.journal import Journal
from eni_async.models import ChunkFate, Credentials, EniInfo, TaskState, TaskStatus, UnassignResult
from eni_async.outcomes import Item, Outcome
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.service.service_client import ReleaseCancelledError, ServiceClient, ServiceError
from eni_async.settings import RateLimits, Settings, Timeouts, load_settings
from eni_async.tracker import Tracker

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthError",
    "Batch",
    "ChunkFate",
    "Clock",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "CredentialError",
    "CredentialProvider",
    "Credentials",
    "EniAsyncError",
    "EniClient",
    "EniInfo",
    "EniNotFoundError",
    "FakeClock",
    "InputError",
    "InvalidParameterError",
    "IpNotOnEniError",
    "Item",
    "Journal",
    "MutexError",
    "NotFoundError",
    "Outcome",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "PollPolicy",
    "PrimaryIpError",
    "ProtocolError",
    "RateLimits",
    "RefreshingCredentials",
    "ReleaseCancelledError",
    "RetryPolicy",
    "ServerError",
    "ServiceClient",
    "ServiceError",
    "Settings",
    "StaticCredentials",
    "SystemClock",
    "TaskFailedError",
    "TaskState",
    "TaskStatus",
    "TaskTimeoutError",
    "ThrottledError",
    "Timeouts",
    "Tracker",
    "TransportError",
    "UnassignResult",
    "VpcNotFoundError",
    "__version__",
    "credential_chain",
    "error_info",
    "load_credentials",
    "load_settings",
]
