"""The exception tree classifies every API code by its tables and decides retries by two flags; end to end,
per-resource denials fail one item, credential failures stop a batch, and throttle limits are learnt."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import pytest

from eni_async import errors
from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.credentials import load_credentials
from eni_async.dialects import SignContext
from eni_async.dialects.v2 import V2Dialect
from eni_async.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    EniAsyncError,
    EniNotFoundError,
    InputError,
    InvalidActionError,
    InvalidParameterError,
    IpNotOnEniError,
    MutexError,
    NonceReusedError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    PrimaryIpError,
    ProtocolError,
    ReplayError,
    SecretIdNotFoundError,
    ServerError,
    SignatureError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ThrottledError,
    TokenError,
    TransportError,
    VpcNotFoundError,
)
from eni_async.models import Credentials
from eni_async.outcomes import Item, Outcome, check_against_truth
from eni_async.policy import PollPolicy, retryable
from eni_async.settings import Settings
from eni_async.simulator import FaultProfile
from tests.aioresp import Mocked, mocked
from tests.batchhelpers import World, world

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
TOKEN = "session-token-that-must-stay-hidden"
V2_URL = "https://vpc.api.qcloud.com/v2/index.php"
VPC, ENI = "vpc-7t9nf3pu", "eni-m6dyj72l"
THROTTLE_MESSAGE = "request times equals to 21 in a second, which exceeds the frequency limit 20"

# -- the code table (docs/protocol.md) -------------------------------------------------------------------------

# (API 2.0 numeric code, codeDesc, expected class): the v2 column of the error table of docs/protocol.md.
V2_TABLE = [
    (5000, "InvalidVpc.NotFound", VpcNotFoundError),
    (5000, "InvalidNetworkInterface.NotFound", EniNotFoundError),
    (4000, "InvalidPrivateip.IsPrimary", PrimaryIpError),
    (4000, "InvalidPrivateIpAddress.NotFound", IpNotOnEniError),
    (4000, "InvalidParameter", InvalidParameterError),
    (5100, "ActionLocked", MutexError),
    (4400, "RequestLimitExceeded", ThrottledError),
    (4100, "AuthFailure", SignatureError),
    (4104, "SecretIdNotFound", SecretIdNotFoundError),
    (4500, "ReplayAttack", ReplayError),
    (4000, "InvalidAction", InvalidActionError),
    (5000, "InvalidTask.NotFound", TaskNotFoundError),
    (6000, "InternalError", ServerError),
]

# (API 3.0 Error.Code, expected class from the shared table): the v3 column of the error table of docs/protocol.md.
# ``ResourceNotFound`` and plain ``UnsupportedOperation`` are ambiguous in API 3.0; the v3 dialect refines
# them by action and message, so the shared table gives the general class for them.
V3_TABLE = [
    ("ResourceNotFound", NotFoundError),
    ("UnsupportedOperation", ApiError),
    ("UnsupportedOperation.AttachmentNotFound", IpNotOnEniError),
    ("InvalidParameterValue.LimitExceeded", InvalidParameterError),
    ("InvalidParameterValue.Malformed", InvalidParameterError),
    ("MissingParameter", InvalidParameterError),
    ("InvalidParameterValue.DuplicatePara", InvalidParameterError),
    ("UnsupportedOperation.MutexOperationTaskRunning", MutexError),
    ("RequestLimitExceeded", ThrottledError),
    ("AuthFailure.SignatureFailure", SignatureError),
    ("AuthFailure.SecretIdNotFound", SecretIdNotFoundError),
    ("AuthFailure.SignatureExpire", ReplayError),
    ("InvalidAction", InvalidActionError),
    ("InternalError", ServerError),
]


@pytest.mark.parametrize(("numeric", "code", "expected"), V2_TABLE, ids=[row[1] for row in V2_TABLE])
def test_v2_code_desc_maps_to_its_class(numeric: int, code: str, expected: type[ApiError]) -> None:
    """Every API 2.0 ``codeDesc`` of the error table of docs/protocol.md, with its numeric code, maps to exactly its class."""
    assert errors.class_for_code(code, numeric) is expected


# A family-only codeDesc needs its number to say which member it is; every other one decides alone.
V2_DESC_ALONE = [row for row in V2_TABLE if row[1] not in errors.V2_FAMILY_DESCS]


@pytest.mark.parametrize(("numeric", "code", "expected"), V2_DESC_ALONE, ids=[r[1] for r in V2_DESC_ALONE])
def test_v2_code_desc_alone_maps_to_its_class(numeric: int, code: str, expected: type[ApiError]) -> None:
    """The ``codeDesc`` decides the class by itself, without the numeric code."""
    assert errors.class_for_code(code) is expected


@pytest.mark.parametrize(
    ("numeric", "expected"),
    [
        (4100, SignatureError),
        (4101, PermissionDeniedError),
        (4102, PermissionDeniedError),
        (4103, PermissionDeniedError),
        (4104, SecretIdNotFoundError),
        (4105, TokenError),
        (4106, AuthError),
        (4110, PermissionDeniedError),
        (None, AuthError),
    ],
)
def test_family_code_desc_is_decided_by_the_number(numeric: int | None, expected: type[ApiError]) -> None:
    """``codeDesc`` ``AuthFailure`` only names the family: the API 2.0 number says which failure it is."""
    assert errors.class_for_code("AuthFailure", numeric) is expected


# docs/protocol.md D17: the failures that stop a batch, and the denials that fail one item.
CREDENTIAL_FAILURES = [
    ("AuthFailure.SignatureFailure", None),
    ("AuthFailure.SecretIdNotFound", None),
    ("AuthFailure.SignatureExpire", None),
    ("AuthFailure.TokenFailure", None),
    ("AuthFailure.InvalidSecretId", None),
    ("AuthFailure.MFAFailure", None),
    ("AuthFailure", 4100),
    ("4100", 4100),
    ("SecretIdNotFound", 4104),
    ("4104", 4104),
    ("ReplayAttack", 4500),
    ("4500", 4500),
]
PER_RESOURCE_DENIALS = [
    ("UnauthorizedOperation", None),
    ("UnauthorizedOperation.NoPermission", None),
    ("UnauthorizedOperation.SomethingUnlisted", None),
    ("AuthFailure.UnauthorizedOperation", None),
    ("4102", 4102),
    ("4103", 4103),
    ("AuthFailure", 4102),
    ("AuthFailure", 4103),
    ("UnauthorizedOperation", 4102),
]


@pytest.mark.parametrize(("code", "numeric"), CREDENTIAL_FAILURES)
def test_credential_failures_are_auth_errors(code: str, numeric: int | None) -> None:
    """Each credential-level failure of D17 is an ``AuthError``, the one class that stops a batch."""
    assert issubclass(errors.class_for_code(code, numeric, "timestamp is 900s off"), AuthError)


@pytest.mark.parametrize(("code", "numeric"), PER_RESOURCE_DENIALS)
def test_per_resource_denials_are_not_auth_errors(code: str, numeric: int | None) -> None:
    """Each per-resource denial of D17 is a ``PermissionDeniedError``, which is not an ``AuthError``."""
    cls = errors.class_for_code(code, numeric, "子账号未被主账号授权访问特定资源")
    assert cls is PermissionDeniedError
    assert not issubclass(cls, AuthError)


@pytest.mark.parametrize(("code", "expected"), V3_TABLE, ids=[row[0] for row in V3_TABLE])
def test_v3_code_maps_to_its_class(code: str, expected: type[ApiError]) -> None:
    """Every API 3.0 ``Error.Code`` of the error table of docs/protocol.md maps to exactly its class."""
    assert errors.class_for_code(code) is expected


@pytest.mark.parametrize(
    "code",
    [
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
        "RequestLimitExceeded.IPLimitExceeded",
        "LimitExceeded.ActionLimited",
    ],
)
def test_throttle_codes_and_sub_codes_are_throttles(code: str) -> None:
    """``RequestLimitExceeded``, its sub-codes and ``LimitExceeded.ActionLimited`` are throttles (D7)."""
    assert errors.class_for_code(code) is ThrottledError


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AuthFailure.SomethingUnlisted", AuthError),
        ("UnauthorizedOperation.SomethingUnlisted", PermissionDeniedError),
        ("RequestLimitExceeded.SomethingUnlisted", ThrottledError),
        ("InternalError.ModuleError", ServerError),
        ("InvalidParameter.Coexist", InvalidParameterError),
        ("InvalidParameterValue.Range", InvalidParameterError),
        ("MissingParameter.Ips", InvalidParameterError),
        ("UnknownParameter.Foo", InvalidParameterError),
        ("ResourceNotFound.Eni", NotFoundError),
    ],
)
def test_unlisted_sub_code_of_a_family_is_classified_by_its_family(
    code: str, expected: type[ApiError]
) -> None:
    """A sub-code not listed exactly takes its family's class, for the families that have a rule."""
    assert errors.class_for_code(code) is expected


@pytest.mark.parametrize(("family", "cls"), sorted(errors.FAMILY_CLASSES.items()))
def test_family_table_rules_apply_to_any_sub_code(family: str, cls: type[ApiError]) -> None:
    """Every family rule of the table applies to any sub-code, one or two levels deep."""
    assert errors.class_for_code(f"{family}.Unlisted") is cls
    assert errors.class_for_code(f"{family}.Unlisted.Deeper") is cls


@pytest.mark.parametrize(
    "code",
    [
        "InvalidVpc.NotFound.Extra",
        "UnsupportedOperation.SomethingUnlisted",
        "UnsupportedOperation.AttachmentNotFound.Extra",
        "ActionLocked.Extra",
        "ServiceUnavailable.Extra",
        "LimitExceeded.Quota",
    ],
)
def test_no_prefix_rule_where_the_table_gives_none(code: str) -> None:
    """A code that merely starts with a listed code is a plain ``ApiError``: prefixes match only for families."""
    assert errors.class_for_code(code) is ApiError


def test_plain_limit_exceeded_is_not_a_throttle() -> None:
    """``LimitExceeded`` (a quota, not a rate) is not a throttle: only its ``ActionLimited`` sub-code is."""
    assert errors.class_for_code("LimitExceeded") is ApiError
    assert errors.class_for_code("LimitExceeded.Quota") is ApiError


@pytest.mark.parametrize(
    ("numeric", "expected"),
    [
        (4000, InvalidParameterError),
        (4100, SignatureError),
        (4101, PermissionDeniedError),
        (4102, PermissionDeniedError),
        (4103, PermissionDeniedError),
        (4104, SecretIdNotFoundError),
        (4105, TokenError),
        (4400, ThrottledError),
        (4500, ReplayError),
        (5000, NotFoundError),
        (5100, ServerError),
        (6000, ServerError),
    ],
)
def test_numeric_code_decides_only_when_code_desc_is_unknown(numeric: int, expected: type[ApiError]) -> None:
    """An unknown or missing ``codeDesc`` falls back to the numeric API 2.0 code."""
    assert errors.class_for_code("SomethingNew.Unheard", numeric) is expected
    assert errors.class_for_code(str(numeric), numeric) is expected


def test_known_code_desc_beats_the_numeric_code() -> None:
    """A known ``codeDesc`` wins over a numeric code that would mean something else."""
    assert errors.class_for_code("InvalidVpc.NotFound", 4400) is VpcNotFoundError
    assert errors.class_for_code("RequestLimitExceeded", 5000) is ThrottledError


@pytest.mark.parametrize(
    ("code", "numeric"),
    [("TotallyUnknown", None), ("Totally.Unknown.Code", 9999), ("", None), ("", 1), ("...", 12345)],
)
def test_unknown_code_becomes_plain_api_error(code: str, numeric: int | None) -> None:
    """An unknown code gives a plain ``ApiError`` that keeps the code and message, never a crash."""
    assert errors.class_for_code(code, numeric) is ApiError
    exc = errors.api_error(code, "odd", numeric=numeric, action="X")
    assert type(exc) is ApiError
    assert (exc.code, exc.message, exc.action) == (code, "odd", "X")


def test_api_error_carries_action_code_message_and_ids() -> None:
    """``api_error`` builds the typed error with its action, code, message, request id and task id."""
    exc = errors.api_error(
        "ActionLocked",
        "busy",
        numeric=5100,
        action="UnassignPrivateIpAddresses",
        request_id="r-1",
        task_id="7",
    )
    assert isinstance(exc, MutexError)
    assert (exc.code, exc.message, exc.action, exc.request_id, exc.task_id) == (
        "ActionLocked",
        "busy",
        "UnassignPrivateIpAddresses",
        "r-1",
        "7",
    )
    assert str(exc) == "UnassignPrivateIpAddresses failed: ActionLocked: busy (request id r-1)"


def test_api_error_without_message_or_action_renders_the_code() -> None:
    """An error with neither message nor action reads as its bare code."""
    assert str(ApiError("InternalError", "")) == "InternalError"


# -- the throttle message (D6) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (THROTTLE_MESSAGE, 20),
        ("request times equals to 101 in a second, which exceeds the frequency limit 100", 100),
        ("Requests over the frequency limit 7.", 7),
        (
            "request times equals to `21` in a second, which exceeds the frequency limit `20` for a second",
            20,
        ),
        ("您当前每秒请求 `6` 次，超过了每秒频率上限 `5`，请稍后重试", 5),
        ("您当前每秒请求 6 次，超过了每秒频率上限 5，请稍后重试", 5),
        ("request times equals to `21` in a second", None),
        ("too many requests", None),
        ("", None),
    ],
)
def test_throttled_error_reads_the_limit_from_the_message(message: str, limit: int | None) -> None:
    """``ThrottledError.limit`` is the limit stated in Tencent's throttle message, or ``None``."""
    assert ThrottledError("RequestLimitExceeded", message).limit == limit


# -- the retry table ---------------------------------------------------------------------------------------


def _sample(cls: type[BaseException]) -> BaseException:
    """One instance of ``cls``, built with whatever arguments its constructor wants."""
    if issubclass(cls, ApiError):
        return cls("Code", "message")
    if issubclass(cls, InputError):
        return cls("field", "value", "reason")
    if issubclass(cls, TransportError):
        return cls("message")
    if cls is OutcomeUnknownError:
        return OutcomeUnknownError(
            "A", "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"], ConnectionLostError("x")
        )
    if cls is TaskTimeoutError:
        return TaskTimeoutError("1", "RUNNING", 1.0)
    if cls is TaskFailedError:
        return TaskFailedError("1")
    return cls("message")


# (class, retried for a read-only call, retried for a mutating call)
RETRY_TABLE = [
    (ConnectError, True, True),
    (ThrottledError, True, True),
    (ConnectionLostError, True, False),
    (ProtocolError, True, False),
    (ServerError, True, False),
    (TransportError, False, False),
    (ApiError, False, False),
    (AuthError, False, False),
    (SignatureError, False, False),
    (SecretIdNotFoundError, False, False),
    (TokenError, False, False),
    (ReplayError, False, False),
    (PermissionDeniedError, False, False),
    (NonceReusedError, True, True),
    (InvalidParameterError, False, False),
    (InvalidActionError, False, False),
    (NotFoundError, False, False),
    (VpcNotFoundError, False, False),
    (EniNotFoundError, False, False),
    (IpNotOnEniError, False, False),
    (TaskNotFoundError, False, False),
    (PrimaryIpError, False, False),
    (MutexError, False, False),
    (InputError, False, False),
    (ConfigError, False, False),
    (OutcomeUnknownError, False, False),
    (TaskTimeoutError, False, False),
    (TaskFailedError, False, False),
    (ValueError, False, False),
    (TimeoutError, False, False),
    (KeyError, False, False),
]


@pytest.mark.parametrize(
    ("cls", "read_only", "mutating"), RETRY_TABLE, ids=[row[0].__name__ for row in RETRY_TABLE]
)
def test_retry_table(cls: type[BaseException], read_only: bool, mutating: bool) -> None:
    """Read-only calls retry transient faults; mutating calls retry only faults that surely had no effect."""
    exc = _sample(cls)
    assert retryable(mutating=False)(exc) is read_only
    assert retryable(mutating=True)(exc) is mutating


@pytest.mark.parametrize(
    ("cls", "read_only", "mutating"), RETRY_TABLE[:5], ids=[row[0].__name__ for row in RETRY_TABLE[:5]]
)
def test_retry_flags_are_class_attributes(cls: type[EniAsyncError], read_only: bool, mutating: bool) -> None:
    """The retried classes say so through their ``transient`` and ``no_effect`` flags."""
    assert (cls.transient, cls.no_effect) == (read_only, mutating)


def test_mutex_error_had_no_effect_but_is_not_transient() -> None:
    """A mutex answer changed nothing, yet it is not retried blindly: the running task must end first."""
    assert (MutexError.transient, MutexError.no_effect) == (False, True)


# -- the tree ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (InputError, (EniAsyncError, ValueError)),
        (ConfigError, (InputError, ValueError)),
        (ConnectError, (TransportError,)),
        (ConnectionLostError, (TransportError,)),
        (ProtocolError, (TransportError,)),
        (TaskTimeoutError, (EniAsyncError, TimeoutError)),
        (SignatureError, (AuthError, ApiError)),
        (SecretIdNotFoundError, (AuthError,)),
        (ReplayError, (AuthError,)),
        (TokenError, (AuthError,)),
        (PermissionDeniedError, (ApiError,)),
        (NonceReusedError, (ApiError,)),
        (VpcNotFoundError, (NotFoundError,)),
        (EniNotFoundError, (NotFoundError,)),
        (IpNotOnEniError, (NotFoundError,)),
        (TaskNotFoundError, (NotFoundError,)),
        (ThrottledError, (ApiError,)),
        (ServerError, (ApiError,)),
        (ApiError, (EniAsyncError,)),
        (OutcomeUnknownError, (EniAsyncError,)),
        (TaskFailedError, (EniAsyncError,)),
    ],
)
def test_exception_tree(cls: type[BaseException], bases: tuple[type[BaseException], ...]) -> None:
    """Each class sits where the docstring of ``errors`` draws it, inheriting builtins where it helps."""
    for base in bases:
        assert issubclass(cls, base)


def test_every_mapped_class_is_an_api_error() -> None:
    """Both code tables map only onto ``ApiError`` subclasses."""
    classes = [
        *errors.CODE_CLASSES.values(),
        *errors.FAMILY_CLASSES.values(),
        *errors.V2_NUMERIC_CLASSES.values(),
    ]
    assert all(issubclass(cls, ApiError) for cls in classes)


def test_task_timeout_error_carries_task_id_status_and_wait() -> None:
    """``TaskTimeoutError`` keeps the task id, its last status and how long was waited, and says so."""
    exc = TaskTimeoutError("16284", "RUNNING", 600.04)
    assert (exc.task_id, exc.last_status, exc.waited) == ("16284", "RUNNING", 600.04)
    assert str(exc) == "task 16284 still RUNNING after 600.0s (poll deadline passed)"


def test_outcome_unknown_error_carries_what_was_sent() -> None:
    """``OutcomeUnknownError`` keeps the action, ids, IPs, cause and the cause's request id."""
    cause = ProtocolError("HTTP 502", status=502, request_id="r-9")
    exc = OutcomeUnknownError(
        "UnassignPrivateIpAddresses", "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"], cause
    )
    assert (exc.vpc_id, exc.eni_id, exc.ips, exc.cause, exc.request_id) == (
        "vpc-7t9nf3pu",
        "eni-m6dyj72l",
        ("10.0.0.2",),
        cause,
        "r-9",
    )
    assert "outcome unknown" in str(exc)
    assert "eni-m6dyj72l" in str(exc)


# -- error_code / error_info -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ThrottledError("RequestLimitExceeded", THROTTLE_MESSAGE), "RequestLimitExceeded"),
        (ApiError("Weird.Code", "x"), "Weird.Code"),
        (InputError("ips", [], "empty"), "InvalidInput"),
        (ConfigError("region", "", "empty"), "InvalidConfig"),
        (ConnectError("refused"), "ConnectFailed"),
        (ConnectionLostError("reset"), "ConnectionLost"),
        (ProtocolError("HTTP 502", status=502), "BadAnswer"),
        (TransportError("other"), "Error"),
        (TaskTimeoutError("1", "RUNNING", 1.0), "TaskTimeout"),
        (TaskFailedError("1"), "TaskFailed"),
        (OutcomeUnknownError("A", "vpc-7t9nf3pu", "eni-m6dyj72l", [], ConnectError("x")), "OutcomeUnknown"),
        (EniAsyncError("bare"), "Error"),
        (KeyError("bug"), "InternalBug"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_error_code(exc: BaseException, code: str) -> None:
    """``error_code`` reports the API's code, a local code for our own errors, ``InternalBug`` otherwise."""
    assert errors.error_code(exc) == code


def test_error_info_adds_a_missing_request_id() -> None:
    """``error_info`` gives code, message and ``request_id``, adding the request id to a message that lacks it."""
    info = errors.error_info(ProtocolError("DescribeVpcTaskResult: HTTP 502", status=502, request_id="r-2"))
    assert info == {
        "code": "BadAnswer",
        "message": "DescribeVpcTaskResult: HTTP 502 (request id r-2)",
        "request_id": "r-2",
    }


def test_error_info_without_a_request_id_has_no_such_field() -> None:
    """An error without a request id (API 2.0 answers carry none) has no ``request_id`` key, never null."""
    info = errors.error_info(ApiError("InternalError", "boom"))
    assert info == {"code": "InternalError", "message": "InternalError: boom"}


def test_error_info_does_not_repeat_the_request_id() -> None:
    """An API error whose message already names the request id keeps a single mention of it."""
    info = errors.error_info(ApiError("InternalError", "boom", request_id="r-3"))
    assert info == {
        "code": "InternalError",
        "message": "InternalError: boom (request id r-3)",
        "request_id": "r-3",
    }
    assert info["message"].count("r-3") == 1


# -- secrets -----------------------------------------------------------------------------------------------


def test_credentials_repr_hides_key_and_token() -> None:
    """``repr(Credentials)`` shows the SecretId but neither the key nor the token."""
    text = repr(Credentials(SECRET_ID, SECRET_KEY, TOKEN))
    assert SECRET_ID in text
    assert SECRET_KEY not in text
    assert TOKEN not in text


@pytest.mark.parametrize(
    "environ",
    [
        {"TENCENTCLOUD_SECRET_KEY": SECRET_KEY, "TENCENTCLOUD_TOKEN": TOKEN},
        {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_TOKEN": TOKEN},
    ],
)
def test_credential_errors_never_show_a_secret(environ: dict[str, str]) -> None:
    """A half-set key pair is an error whose message, args and repr hold neither key nor token."""
    with pytest.raises(ConfigError) as info:
        load_credentials(environ=environ)
    shown = " ".join([str(info.value), repr(info.value), repr(info.value.args), repr(info.value.value)])
    assert SECRET_KEY not in shown
    assert TOKEN not in shown


def test_signed_request_and_context_reprs_hide_secrets() -> None:
    """Neither a ``SignContext`` nor a signed ``HttpRequest`` shows the key, token or signature in its repr."""
    ctx = SignContext(
        credentials=Credentials(SECRET_ID, SECRET_KEY, TOKEN),
        endpoint="https://vpc.api.qcloud.com",
        region="gz",
        timestamp=1465185768,
        nonce=11886,
    )
    request = V2Dialect().build_task_query(ctx, "16284")
    text = repr(ctx) + repr(request)
    assert SECRET_KEY not in text
    assert TOKEN not in text
    assert "Signature" not in text


# -- end to end: what each class does to a batch (docs/protocol.md D17, D19) ------------------------------------


async def _release_all(w: World, credentials: Credentials | None = None) -> list[Outcome]:
    """Run ``unassign_many`` over every seeded ENI with the world's client (or one with ``credentials``)."""
    if credentials is None:
        return [o async for o in w.client.unassign_many(w.items(), concurrency=2)]
    async with EniClient(credentials, w.client.settings, clock=w.clock) as other:
        return [o async for o in other.unassign_many(w.items(), concurrency=2)]


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_a_denied_eni_fails_alone_and_the_batch_goes_on(dialect: str) -> None:
    """Over real HTTP, the ENI the sub-account may not touch fails with its IPs not released; all others go."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(enis=8, settings=settings) as w:
        denied = w.items()[3].eni_id
        w.sim.denied_enis.add(denied)
        outcomes = await _release_all(w)
        present = w.present()
    by_eni = {o.eni_id: o for o in outcomes}
    assert len(outcomes) == 8
    assert by_eni[denied].status == "failed"
    error = by_eni[denied].error
    assert error is not None
    assert error["code"] == "UnauthorizedOperation"
    assert sorted(by_eni[denied].not_released) == sorted(by_eni[denied].ips)
    assert by_eni[denied].released == []
    assert by_eni[denied].task_ids == []
    others = [o for o in outcomes if o.eni_id != denied]
    assert all(o.status == "succeeded" for o in others), [o.to_json() for o in others]
    assert [p for o in outcomes for p in check_against_truth(o.to_json(), present)] == []


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_a_credential_failure_still_stops_the_batch(dialect: str) -> None:
    """With a wrong key the batch stops after the first failures, denied ENI or not, and nothing is released."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(enis=12, settings=settings) as w:
        w.sim.denied_enis.add(w.items()[0].eni_id)
        outcomes = await _release_all(w, Credentials(w.sim.credentials.secret_id, "not-the-key"))
        requests = sum(w.sim.stats()["requests"].values())
        untouched = all(e["secondary_ips"] for e in w.sim.ground_truth()["enis"])
    statuses = [o.status for o in outcomes]
    assert len(outcomes) == 12
    assert statuses.count("not_attempted") >= 9
    assert requests <= 3
    assert untouched


# A v2 ENI as DescribeNetworkInterfaces lists it (live-page envelope), with the given secondary IPs.
def _described(ips: list[str]) -> dict[str, object]:
    addresses = [{"privateIpAddress": "10.0.0.1", "primary": True}]
    addresses += [{"privateIpAddress": ip, "primary": False} for ip in ips]
    entry = {"vpcId": VPC, "networkInterfaceId": ENI, "privateIpAddressesSet": addresses}
    return {"code": 0, "message": "", "codeDesc": "Success", "data": {"totalNum": 1, "data": [entry]}}


def _actions(m: Mocked) -> list[str]:
    calls = [call for calls in m.requests.values() for call in calls]
    return [parse_qs(call.kwargs["data"].decode())["Action"][0] for call in calls]


async def _one_item_batch(m: Mocked) -> Outcome:
    # These exchanges script task queries, as task-only confirmation asks them.
    settings = Settings(confirm="task", poll=PollPolicy(first=1.0, initial=0.5, timeout=60.0))
    async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
        outcomes = [o async for o in client.unassign_many([Item(VPC, ENI, ("10.0.0.2",))])]
    assert len(outcomes) == 1
    return outcomes[0]


async def test_bare_5100_is_reconciled_by_looking_not_resubmitted() -> None:
    """After a bare 5100 the client describes the ENI; the IP turned out gone, so nothing is sent again. No
    describe of ours saw it on the ENI (API 2.0 sends without looking first), so gone does not say the call
    released it (it may never have been there, the call refused): ``unknown``, never guessed."""
    with mocked() as m:
        m.post(V2_URL, payload={"code": 5100, "message": "(100004)operation failed"})
        m.post(V2_URL, payload=_described([]))
        outcome = await _one_item_batch(m)
        actions = _actions(m)
    assert actions == ["UnassignPrivateIpAddresses", "DescribeNetworkInterfaces"]
    assert (outcome.released, outcome.unknown) == ([], ["10.0.0.2"])
    assert any("never seen on the ENI" in d for d in outcome.decisions)


async def test_bare_5100_with_the_ip_still_there_is_resubmitted_only_after_looking() -> None:
    """After a bare 5100 with the IP still on the ENI, the one resubmit comes after a describe, never before."""
    with mocked() as m:
        m.post(V2_URL, payload={"code": 5100, "message": "(100004)operation failed"})
        m.post(V2_URL, payload=_described(["10.0.0.2"]))
        m.post(V2_URL, payload={"code": 0, "message": "", "codeDesc": "Success", "data": {"taskId": 9}})
        m.post(V2_URL, payload={"code": 0, "message": "", "codeDesc": "Success", "data": {"status": 0}})
        outcome = await _one_item_batch(m)
        actions = _actions(m)
    assert actions[:3] == [
        "UnassignPrivateIpAddresses",
        "DescribeNetworkInterfaces",
        "UnassignPrivateIpAddresses",
    ]
    assert (outcome.status, outcome.released, outcome.task_ids) == ("succeeded", ["10.0.0.2"], ["9"])


async def test_action_locked_5100_waits_and_resubmits_without_describing() -> None:
    """5100 with ``codeDesc`` ActionLocked is the mutex: the call had no effect, so it is simply sent again."""
    with mocked() as m:
        m.post(V2_URL, payload={"code": 5100, "message": "busy", "codeDesc": "ActionLocked"})
        m.post(V2_URL, payload={"code": 0, "message": "", "codeDesc": "Success", "data": {"taskId": 9}})
        m.post(V2_URL, payload={"code": 0, "message": "", "codeDesc": "Success", "data": {"status": 0}})
        outcome = await _one_item_batch(m)
        actions = _actions(m)
    assert actions == ["UnassignPrivateIpAddresses", "UnassignPrivateIpAddresses", "DescribeVpcTaskResult"]
    assert (outcome.status, outcome.released) == ("succeeded", ["10.0.0.2"])


@pytest.mark.parametrize("form", ["plain", "backticks", "chinese"])
async def test_client_learns_the_stated_limit_from_each_message_form(form: str) -> None:
    """Throttled by the simulator in each message form, the client caps its rate at the limit it stated."""
    async with world(
        enis=4,
        rate_limits={"DescribeNetworkInterfaces": 7},
        faults=FaultProfile(name=form, throttle_message=form),
    ) as w:
        eni_ids = [item.eni_id for item in w.items()] * 6
        await asyncio.gather(*(w.client.describe_eni(eni_id) for eni_id in eni_ids))
        budget = w.client.budgets["DescribeNetworkInterfaces"]
        throttled = w.sim.stats()["throttled"].get("DescribeNetworkInterfaces", 0)
    assert throttled >= 1
    assert budget.throttles >= 1
    assert budget.ceiling == 7


async def test_a_5100_that_never_clears_is_bounded_and_never_resent_blindly() -> None:
    """Bare 5100 after bare 5100 with the IP still there: each resubmit follows a describe, and they stop."""
    with mocked() as m:
        for _ in range(12):
            m.post(V2_URL, payload={"code": 5100, "message": "(100004)operation failed"})
            m.post(V2_URL, payload=_described(["10.0.0.2"]))
        outcome = await _one_item_batch(m)
        actions = _actions(m)
    submits = [i for i, action in enumerate(actions) if action == "UnassignPrivateIpAddresses"]
    assert 1 < len(submits) <= 6
    assert all(actions[i - 1] == "DescribeNetworkInterfaces" for i in submits[1:])
    assert outcome.status == "failed"
    assert outcome.released == []
    assert sorted(outcome.not_released + outcome.unknown) == ["10.0.0.2"]
