"""One exception tree for everything eni_async raises, and the tables that map API codes onto it.

::

    EniAsyncError
    ├── InputError (ValueError)            bad ids, IPs, lists or files, caught before any request
    │   └── ConfigError                    bad settings or credentials
    ├── TransportError                     the HTTP exchange itself failed
    │   ├── ConnectError                   refused or never connected: the request surely had no effect
    │   ├── ConnectionLostError            lost after sending, or a read timeout: the server may have acted
    │   └── ProtocolError                  an answer that is not HTTP 200 JSON in the API's envelope
    ├── OutcomeUnknownError                a submit that may have taken effect (carries what was sent)
    ├── TaskTimeoutError (TimeoutError)    a task still not SUCCESS/FAILED at the poll deadline
    ├── TaskFailedError                    a task that ended FAILED
    └── ApiError                           an error answer from the API (code, message, request id)
        ├── AuthError                      signature, key, token or permission: every later call fails too
        │   ├── SignatureError
        │   ├── SecretIdNotFoundError
        │   └── ReplayError                stale timestamp or reused nonce
        ├── ThrottledError                 over the action's rate limit; the call had no effect
        ├── InvalidParameterError
        ├── InvalidActionError
        ├── NotFoundError
        │   ├── VpcNotFoundError
        │   ├── EniNotFoundError
        │   ├── IpNotOnEniError
        │   └── TaskNotFoundError
        ├── PrimaryIpError                 the primary IP cannot be released
        ├── MutexError                     another task is running on the ENI
        └── ServerError                    InternalError and other server-side faults

Two class attributes classify every error for retrying (one table, read by ``policy``): ``transient``
(worth another try) and ``no_effect`` (the request surely changed nothing, so even a mutating call may be
retried). A code missing from the tables becomes a plain ``ApiError``, never a crash. No message, repr or
attribute here ever holds a secret.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import ClassVar

# Values quoted in messages are shortened: a 2 MB field must not make a 2 MB error.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = 6
_SHORT.maxlevel = 2


class EniAsyncError(Exception):
    """Base class of every error eni_async raises."""

    transient: ClassVar[bool] = False
    no_effect: ClassVar[bool] = False


class InputError(EniAsyncError, ValueError):
    """Bad input, found before any request was sent; names the field and the value."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {_SHORT.repr(value)})")


class ConfigError(InputError):
    """Bad settings, settings file or credentials."""


class TransportError(EniAsyncError):
    """The HTTP exchange failed; ``action`` says which call."""

    def __init__(self, message: str, *, action: str = "", request_id: str | None = None) -> None:
        self.action = action
        self.request_id = request_id
        super().__init__(message)


class ConnectError(TransportError):
    """No connection was made, so the request surely had no effect."""

    transient = True
    no_effect = True


class ConnectionLostError(TransportError):
    """The connection broke or timed out after the request was sent: the server may have acted."""

    transient = True


class ProtocolError(TransportError):
    """The answer was not HTTP 200 JSON in the API's envelope (HTTP 5xx, HTML, truncated, ...)."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        action: str = "",
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        super().__init__(message, action=action, request_id=request_id)


class ApiError(EniAsyncError):
    """An error answer from the API: ``code``, ``message``, ``request_id`` and, when known, ``task_id``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        action: str = "",
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.action = action
        self.request_id = request_id
        self.task_id = task_id
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.code}: {self.message}" if self.message else self.code
        if self.action:
            text = f"{self.action} failed: {text}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class AuthError(ApiError):
    """Authentication or authorisation failed; every later call with these credentials fails too."""


class SignatureError(AuthError):
    """The signature did not match."""


class SecretIdNotFoundError(AuthError):
    """The SecretId is unknown."""


class ReplayError(AuthError):
    """The timestamp is too far from the server's clock, or the nonce was used before."""


class ThrottledError(ApiError):
    """Over the action's rate limit; the call had no effect. ``limit`` is the limit the message states."""

    transient = True
    no_effect = True

    @property
    def limit(self) -> int | None:
        """The per-second limit stated in Tencent's throttle message, if any (decisions.md D6)."""
        match = _LIMIT_RE.search(self.message)
        return int(match.group(1)) if match else None


_LIMIT_RE = re.compile(r"frequency limit (\d+)")


class InvalidParameterError(ApiError):
    """The server rejected a parameter (empty list, over 10 IPs, malformed value, duplicate)."""


class InvalidActionError(ApiError):
    """The server does not know the action."""


class NotFoundError(ApiError):
    """A resource named in the call does not exist."""


class VpcNotFoundError(NotFoundError):
    """The VPC does not exist."""


class EniNotFoundError(NotFoundError):
    """The ENI does not exist, or is not in that VPC."""


class IpNotOnEniError(NotFoundError):
    """An IP asked for is not assigned to the ENI."""


class TaskNotFoundError(NotFoundError):
    """The task id is unknown to the server."""


class PrimaryIpError(ApiError):
    """An IP asked for is the ENI's primary IP, which cannot be released."""


class MutexError(ApiError):
    """Another task is running on the ENI; the call had no effect."""

    no_effect = True


class ServerError(ApiError):
    """A server-side fault (``InternalError``); the server may or may not have acted."""

    transient = True


class OutcomeUnknownError(EniAsyncError):
    """A submit whose effect is unknown: the server may have acted. Carries what was sent."""

    def __init__(
        self, action: str, vpc_id: str, eni_id: str, ips: Sequence[str], cause: BaseException
    ) -> None:
        self.action = action
        self.vpc_id = vpc_id
        self.eni_id = eni_id
        self.ips = tuple(ips)
        self.cause = cause
        self.request_id: str | None = getattr(cause, "request_id", None)
        super().__init__(
            f"{action} on {eni_id} for {', '.join(self.ips)}: outcome unknown ({cause}); "
            "look at the ENI before resubmitting"
        )


class TaskTimeoutError(EniAsyncError, TimeoutError):
    """The task did not reach SUCCESS or FAILED before the deadline."""

    def __init__(self, task_id: str, last_status: str | None, waited: float) -> None:
        self.task_id = task_id
        self.last_status = last_status
        self.waited = waited
        super().__init__(
            f"task {task_id} still {last_status or 'unknown'} after {waited:.1f}s (poll deadline passed)"
        )


class TaskFailedError(EniAsyncError):
    """The task ended FAILED. ``output`` is the server's reason when the dialect carries one."""

    code = "TaskFailed"

    def __init__(
        self,
        task_id: str,
        *,
        eni_id: str = "",
        ips: Sequence[str] = (),
        request_id: str | None = None,
        output: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.eni_id = eni_id
        self.ips = tuple(ips)
        self.request_id = request_id
        self.output = output
        detail = f": {output}" if output else ""
        super().__init__(f"task {task_id} on {eni_id or 'ENI'} ended FAILED{detail}")


# Business codes (API 2.0 ``codeDesc`` and API 3.0 ``Error.Code``) -> class. Matched exactly first, then by
# the longest dotted prefix, so ``RequestLimitExceeded.UinLimitExceeded`` is a throttle (decisions.md D7).
CODE_CLASSES: Mapping[str, type[ApiError]] = {
    # API 2.0 codeDesc strings (decisions.md table)
    "InvalidVpc.NotFound": VpcNotFoundError,
    "InvalidNetworkInterface.NotFound": EniNotFoundError,
    "InvalidPrivateip.IsPrimary": PrimaryIpError,
    "InvalidPrivateIpAddress.NotFound": IpNotOnEniError,
    "InvalidTask.NotFound": TaskNotFoundError,
    "ActionLocked": MutexError,
    "SecretIdNotFound": SecretIdNotFoundError,
    "ReplayAttack": ReplayError,
    # Shared and API 3.0 codes
    "AuthFailure": AuthError,
    "AuthFailure.SignatureFailure": SignatureError,
    "AuthFailure.SecretIdNotFound": SecretIdNotFoundError,
    "AuthFailure.InvalidSecretId": SecretIdNotFoundError,
    "AuthFailure.SignatureExpire": ReplayError,
    "UnauthorizedOperation": AuthError,
    "RequestLimitExceeded": ThrottledError,
    "LimitExceeded.ActionLimited": ThrottledError,
    "InvalidParameter": InvalidParameterError,
    "InvalidParameterValue": InvalidParameterError,
    "MissingParameter": InvalidParameterError,
    "UnknownParameter": InvalidParameterError,
    "InvalidAction": InvalidActionError,
    "ResourceNotFound": NotFoundError,
    "UnsupportedOperation.AttachmentNotFound": IpNotOnEniError,
    "UnsupportedOperation.MutexOperationTaskRunning": MutexError,
    "InternalError": ServerError,
    "ServiceUnavailable": ServerError,
}

# API 2.0 numeric public codes -> class, used only when ``codeDesc`` is missing or unknown.
V2_NUMERIC_CLASSES: Mapping[int, type[ApiError]] = {
    4000: InvalidParameterError,
    4100: SignatureError,
    4101: AuthError,
    4102: AuthError,
    4103: AuthError,
    4104: SecretIdNotFoundError,
    4105: AuthError,
    4106: AuthError,
    4110: AuthError,
    4200: ReplayError,
    4300: AuthError,
    4400: ThrottledError,
    4500: ReplayError,
    5000: NotFoundError,
    5100: MutexError,
    6000: ServerError,
    6100: ServerError,
    6200: ServerError,
}


def class_for_code(code: str, numeric: int | None = None) -> type[ApiError]:
    """Return the exception class for an API code; unknown codes give ``ApiError``."""
    if code in CODE_CLASSES:
        return CODE_CLASSES[code]
    prefix = code
    while "." in prefix:
        prefix = prefix.rsplit(".", 1)[0]
        if prefix in CODE_CLASSES:
            return CODE_CLASSES[prefix]
    if numeric is not None and numeric in V2_NUMERIC_CLASSES:
        return V2_NUMERIC_CLASSES[numeric]
    return ApiError


def api_error(
    code: str,
    message: str,
    *,
    numeric: int | None = None,
    action: str = "",
    request_id: str | None = None,
    task_id: str | None = None,
) -> ApiError:
    """Build the typed error for an API answer."""
    cls = class_for_code(code, numeric)
    return cls(code, message, action=action, request_id=request_id, task_id=task_id)


# Codes for errors that are not API answers, as reported in outcomes and CLI output.
LOCAL_CODES: Mapping[type[EniAsyncError], str] = {
    InputError: "InvalidInput",
    ConfigError: "InvalidConfig",
    ConnectError: "ConnectFailed",
    ConnectionLostError: "ConnectionLost",
    ProtocolError: "BadAnswer",
    OutcomeUnknownError: "OutcomeUnknown",
    TaskTimeoutError: "TaskTimeout",
    TaskFailedError: "TaskFailed",
}


def error_code(exc: BaseException) -> str:
    """The code to report for ``exc``: the API's code, or a local one for everything else."""
    if isinstance(exc, ApiError):
        return exc.code
    for cls in type(exc).__mro__:
        if cls in LOCAL_CODES:
            return LOCAL_CODES[cls]
    return "Error" if isinstance(exc, EniAsyncError) else "InternalBug"


def error_info(exc: BaseException) -> dict[str, str]:
    """``{"code", "message"}`` for output, plus ``request_id`` as its own field when there is one (never
    ``null``: API 2.0 answers carry none); the message names the request id too, for people."""
    message = str(exc)
    request_id = getattr(exc, "request_id", None)
    if request_id and request_id not in message:
        message += f" (request id {request_id})"
    info = {"code": error_code(exc), "message": message}
    if request_id:
        info["request_id"] = request_id
    return info
