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
    ├── ServiceError                       an error answer of ``eni-async serve`` (service.service_client)
    └── ApiError                           an error answer from the API (code, message, request id)
        ├── AuthError                      the credentials themselves fail: every later call fails too
        │   ├── SignatureError             bad signature (or an Authorization header that does not parse)
        │   ├── SecretIdNotFoundError      unknown or disabled SecretId
        │   ├── TokenError                 expired or invalid session token
        │   ├── ReplayError                timestamp too far from the server's clock
        │   └── CredentialError            no credentials to sign with: metadata service or STS failed
        │                                  (credentials.refresh)
        ├── PermissionDeniedError          access control refused this call (a resource, an action): that item
        │                                  fails, the batch goes on; the call had no effect
        ├── NonceReusedError               API 2.0 replay guard saw the nonce before; a retry uses a new one
        ├── ThrottledError                 over the action's rate limit; the call had no effect
        ├── InvalidParameterError
        ├── InvalidActionError
        ├── NotFoundError
        │   ├── VpcNotFoundError
        │   ├── EniNotFoundError
        │   ├── IpNotOnEniError
        │   └── TaskNotFoundError
        ├── PrimaryIpError                 the primary IP cannot be released
        ├── MutexError                     another task is running on the ENI; the call had no effect
        └── ServerError                    InternalError, a bare API 2.0 5100 and other server-side faults

Two public exceptions stand outside the tree on purpose, since neither is ever one item's outcome:
``JournalError`` (journal: the journal cannot be used or written; it stops a batch) and ``StopSubmitting``
(calls: the gate closed before a submit, so nothing was sent; the release path turns it into an
interrupted outcome). Every exception raised for a release carries, once a chunk was submitted,
``.result`` (an ``UnassignResult``) and ``.fate`` (the last chunk's ``ChunkFate``, when a task was
watched); ``ServiceClient`` adds ``.release`` (the release as JSON). They are declared on
``EniAsyncError`` and present only once set (``hasattr`` tells).

Only ``AuthError`` stops a batch (D17): it is raised for credential failures alone, since every
later call would fail the same way. A per-resource denial (``UnauthorizedOperation``, its sub-codes,
``AuthFailure.UnauthorizedOperation``, API 2.0 4101/4102/4103/4110/4300) is a ``PermissionDeniedError``, which is
deliberately *not* an ``AuthError``: one ENI the sub-account may not touch fails alone.

Codes are classified by tables, in this order: (1) an exact entry of ``CODE_CLASSES``; (2) for API 2.0, the
numeric code when the ``codeDesc`` only names a family (only 4100's ``AuthFailure`` is documented, and the
same name may come with any 41xx number, so 4102 with ``AuthFailure`` is a denial, not a signature failure)
or is missing or unknown; (3) a family rule
of ``FAMILY_CLASSES``: a code ``Family.SubCode`` not listed exactly is classified as its family, and only the
families listed there have such a rule (``AuthFailure.*`` -> ``AuthError``, since that family is about the
request's credentials and its one per-resource member is listed exactly; ``UnauthorizedOperation.*`` ->
``PermissionDeniedError``; ``RequestLimitExceeded.*`` -> ``ThrottledError``; parameter, ``ResourceNotFound``
and ``InternalError`` families likewise); (4) a plain ``ApiError``, never a crash. Two codes need their
message: API 2.0 5100 is the mutex only with ``codeDesc`` ``ActionLocked`` or a message saying another task
is running, otherwise a server error of unknown effect (D19); 4500 / ``ReplayAttack`` is a reused nonce when
the message says so, otherwise a clock problem (``ReplayError``). Throttle messages state the limit in the
plain, the backtick or the Chinese form (D6, D18); ``ThrottledError.limit`` reads all three.

Two class attributes classify every error for retrying (one table, read by ``policy``): ``transient``
(worth another try) and ``no_effect`` (the request surely changed nothing, so even a mutating call may be
retried). A code missing from the tables becomes a plain ``ApiError``, never a crash. No message, repr or
attribute here ever holds a secret.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from eni_async.models import ChunkFate, UnassignResult

# Values quoted in messages are shortened: a 2 MB field must not make a 2 MB error.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = 6
_SHORT.maxlevel = 2


class EniAsyncError(Exception):
    """Base class of every error eni_async raises."""

    transient: ClassVar[bool] = False
    no_effect: ClassVar[bool] = False
    # Declared for errors raised for a release (see the module docstring); present only once set.
    result: UnassignResult
    fate: ChunkFate
    release: dict[str, Any]


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
    """The credentials themselves failed (signature, SecretId, token, clock); every later call fails too."""


class SignatureError(AuthError):
    """The signature did not match, or the Authorization header does not parse."""


class SecretIdNotFoundError(AuthError):
    """The SecretId is unknown or disabled."""


class TokenError(AuthError):
    """The session token is expired or invalid."""


class ReplayError(AuthError):
    """The request's timestamp is too far from the server's clock (a clock or signing problem)."""


class PermissionDeniedError(ApiError):
    """Access control refused this call for this resource or action; other items may still succeed.

    Not an ``AuthError`` on purpose: the credentials work, so a batch goes on past it (D17).
    """

    no_effect = True


class NonceReusedError(ApiError):
    """The API 2.0 replay guard has seen this nonce before; the call had no effect and a retry signs anew."""

    transient = True
    no_effect = True


class ThrottledError(ApiError):
    """Over the action's rate limit; the call had no effect. ``limit`` is the limit the message states."""

    transient = True
    no_effect = True

    @property
    def limit(self) -> int | None:
        """The per-second limit stated in Tencent's throttle message, in any of its forms (D6, D18)."""
        match = _LIMIT_RE.search(self.message)
        return int(match.group(1)) if match else None


# The three published forms: "... exceeds the frequency limit 20", "... the frequency limit `20` for a
# second" and "您当前每秒请求 `6` 次，超过了每秒频率上限 `5`，请稍后重试".
_LIMIT_RE = re.compile(r"(?:frequency\s+limit|频率上限)\s*[`'\"]?\s*(\d+)", re.IGNORECASE)


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
        reason = str(cause)  # the cause names the action too: said once
        if action:
            reason = reason.removeprefix(f"{action} failed: ").removeprefix(f"{action}: ")
        super().__init__(
            f"{action} on {eni_id} for {', '.join(self.ips)}: outcome unknown ({reason}); "
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


# Business codes (API 2.0 ``codeDesc`` and API 3.0 ``Error.Code``) -> class, matched exactly.
CODE_CLASSES: Mapping[str, type[ApiError]] = {
    # API 2.0 codeDesc strings (docs/protocol.md, the error table)
    "InvalidVpc.NotFound": VpcNotFoundError,
    "InvalidNetworkInterface.NotFound": EniNotFoundError,
    "InvalidPrivateip.IsPrimary": PrimaryIpError,
    "InvalidPrivateIpAddress.NotFound": IpNotOnEniError,
    "InvalidTask.NotFound": TaskNotFoundError,
    "ActionLocked": MutexError,
    "SecretIdNotFound": SecretIdNotFoundError,
    "ReplayAttack": ReplayError,
    # Shared and API 3.0 codes. Credential failures (D17) are AuthError; access-control denials are not.
    "AuthFailure": AuthError,
    "AuthFailure.SignatureFailure": SignatureError,
    "AuthFailure.InvalidAuthorization": SignatureError,
    "AuthFailure.SecretIdNotFound": SecretIdNotFoundError,
    "AuthFailure.InvalidSecretId": SecretIdNotFoundError,
    "AuthFailure.SignatureExpire": ReplayError,
    "AuthFailure.TokenFailure": TokenError,
    "AuthFailure.MFAFailure": AuthError,
    "AuthFailure.UnauthorizedOperation": PermissionDeniedError,
    "UnauthorizedOperation": PermissionDeniedError,
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

# The only families with a prefix rule: ``Family.AnySubCode`` not listed above is classified as its family.
# ``AuthFailure.*`` is about the request's credentials (its one per-resource member is listed exactly above);
# ``RequestLimitExceeded.*`` sub-codes are throttles (D7). Other families (``UnsupportedOperation``,
# ``LimitExceeded``, ``InvalidVpc``, ...) have none: an unlisted sub-code of theirs is a plain ``ApiError``.
FAMILY_CLASSES: Mapping[str, type[ApiError]] = {
    "AuthFailure": AuthError,
    "UnauthorizedOperation": PermissionDeniedError,
    "RequestLimitExceeded": ThrottledError,
    "InvalidParameter": InvalidParameterError,
    "InvalidParameterValue": InvalidParameterError,
    "MissingParameter": InvalidParameterError,
    "UnknownParameter": InvalidParameterError,
    "ResourceNotFound": NotFoundError,
    "InternalError": ServerError,
}

# API 2.0 numeric public codes -> class (Tencent's public code table), used when ``codeDesc`` is missing, unknown, or only
# names a family (``V2_FAMILY_DESCS``). 4101-4103, 4110 and 4300 are access-control denials (D17).
V2_NUMERIC_CLASSES: Mapping[int, type[ApiError]] = {
    4000: InvalidParameterError,
    4100: SignatureError,
    4101: PermissionDeniedError,
    4102: PermissionDeniedError,
    4103: PermissionDeniedError,
    4104: SecretIdNotFoundError,
    4105: TokenError,
    4106: AuthError,
    4110: PermissionDeniedError,
    4200: ReplayError,
    4300: PermissionDeniedError,
    4400: ThrottledError,
    4500: ReplayError,
    5000: NotFoundError,
    5100: ServerError,
    6000: ServerError,
    6100: ServerError,
    6200: ServerError,
}

# API 2.0 ``codeDesc`` values that name a family only: the numeric code says which member it is.
V2_FAMILY_DESCS = frozenset({"AuthFailure"})

# A 5100 that is the mutex says so in words (D19); Tencent's pages word it in English or Chinese.
_MUTEX_RE = re.compile(
    r"another (?:task|operation)|task is running|locked by (?:a )?running task|being operated|"
    r"正在(?:执行|进行|被操作|操作)|任务.{0,8}(?:运行|执行)中",
    re.IGNORECASE,
)
_NONCE_RE = re.compile(r"nonce", re.IGNORECASE)
_TOKEN_RE = re.compile(r"token", re.IGNORECASE)


def class_for_code(code: str, numeric: int | None = None, message: str = "") -> type[ApiError]:
    """Return the exception class for an API code (see the module docstring); unknown codes give ``ApiError``."""
    cls = CODE_CLASSES.get(code)
    if numeric is not None and numeric in V2_NUMERIC_CLASSES and (cls is None or code in V2_FAMILY_DESCS):
        cls = V2_NUMERIC_CLASSES[numeric]
    if cls is None and "." in code:
        family = code.split(".", 1)[0]
        cls = FAMILY_CLASSES.get(family)
    if cls is None:
        return ApiError
    return _refine(cls, code, numeric, message)


def _refine(cls: type[ApiError], code: str, numeric: int | None, message: str) -> type[ApiError]:
    """The two API 2.0 codes whose meaning depends on the message."""
    if numeric == 5100 and code != "ActionLocked" and cls is ServerError and _MUTEX_RE.search(message):
        return MutexError
    if cls is ReplayError and (numeric == 4500 or code == "ReplayAttack") and _NONCE_RE.search(message):
        return NonceReusedError
    if cls is SignatureError and numeric == 4100 and _TOKEN_RE.search(message):
        return TokenError
    return cls


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
    cls = class_for_code(code, numeric, message)
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


# Local codes -> the class each stands for (the inverse of ``LOCAL_CODES``).
_LOCAL_CLASSES: Mapping[str, type[EniAsyncError]] = {code: cls for cls, code in LOCAL_CODES.items()}


def error_code(exc: BaseException) -> str:
    """The code to report for ``exc``: the API's code, or a local one for everything else."""
    if isinstance(exc, ApiError):
        return exc.code
    for cls in type(exc).__mro__:
        if cls in LOCAL_CODES:
            return LOCAL_CODES[cls]
    return "Error" if isinstance(exc, EniAsyncError) else "InternalBug"


def error_from_info(
    info: Mapping[str, Any],
    *,
    vpc_id: str = "",
    eni_id: str = "",
    ips: Sequence[str] = (),
    task_id: str | None = None,
) -> EniAsyncError:
    """The exception an ``error_info`` record stands for, rebuilt from its code (an outcome read back from
    JSON keeps only code and message): an API code through the code tables (``api_error_from_info``), a
    local code as the class ``LOCAL_CODES`` gives it, with the item's ids, IPs and last task. ``str()`` of
    the result is the recorded message, exactly."""
    code = str(info.get("code") or "")
    cls = _LOCAL_CLASSES.get(code)
    if cls is None:
        return api_error_from_info(info, task_id=task_id)
    message = str(info.get("message") or "")
    request_id = info.get("request_id") or None
    task = task_id or "(none)"
    exc: EniAsyncError
    if cls is TaskFailedError:
        found = re.search(r"ended FAILED: (.*?)(?: \(request id [^)]*\))?$", message, re.DOTALL)
        exc = TaskFailedError(
            task, eni_id=eni_id, ips=ips, request_id=request_id, output=found[1] if found else None
        )
    elif cls is TaskTimeoutError:
        exc = TaskTimeoutError(task, None, 0.0)
    elif cls is OutcomeUnknownError:
        exc = OutcomeUnknownError("UnassignPrivateIpAddresses", vpc_id, eni_id, ips, RuntimeError(message))
    elif issubclass(cls, InputError):
        exc = cls("input", "", message)
    else:
        exc = cls(message)
    exc.args = (message,)  # the record's words, not a second rendering of them
    return exc


def api_error_from_info(info: Mapping[str, Any], *, task_id: str | None = None) -> ApiError:
    """The typed ``ApiError`` an ``error_info`` was made from, rebuilt: the API's own message is taken back
    out of the recorded one, so ``str()`` of the result is the recorded message again (never its action,
    code or request id twice)."""
    code = str(info.get("code") or "")
    text = str(info.get("message") or "")
    request_id = info.get("request_id") or None
    shape = re.compile(
        rf"(?:(?P<action>\w+) failed: )?{re.escape(code)}(?:: (?P<message>.*?))?"
        + (rf"(?: \(request id {re.escape(str(request_id))}\))?" if request_id else ""),
        re.DOTALL,
    )
    match = shape.fullmatch(text)
    action, message = (match["action"] or "", match["message"] or "") if match else ("", text)
    return api_error(code, message, action=action, request_id=request_id, task_id=task_id)


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
