"""The API 3.0 dialect builds the official SDK's exact requests and reads each answer as a model or error."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tencentcloud.common.sign import Sign
from tencentcloud.vpc.v20170312 import models as sdk_models

from eni_async import errors, signing
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN, DescribePage, Dialect, SignContext, v3
from eni_async.dialects.base import json_document
from eni_async.dialects.v3 import DIALECT
from eni_async.models import Credentials, EniInfo, HttpResponse, Submitted, TaskState, TaskStatus

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
TOKEN = "session-token-xyz"
REQUEST_ID = "481e9b6e-81d1-4859-b8cf-a673e010b388"
TASK_ID = "f23d1450-ed00-4442-98d4-be409e625e6c"
CTX = SignContext(
    credentials=Credentials(SECRET_ID, SECRET_KEY),
    endpoint="https://vpc.tencentcloudapi.com",
    region="ap-guangzhou",
    timestamp=1700000000,
    nonce=11886,
)
V3B_BODY = (
    b'{"NetworkInterfaceId": "eni-m6dyj72l", "PrivateIpAddresses": '
    b'[{"PrivateIpAddress": "10.0.0.2"}, {"PrivateIpAddress": "10.0.0.3"}]}'
)
V3B_AUTHORIZATION = (
    f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2023-11-14/vpc/tc3_request, SignedHeaders=content-type;host, "
    "Signature=29b68416573b464f06910eea6bad27123527d31c75e0b9ea5eb2ca4f9d7a74fb"
)
V3C_SIGNATURE = "57a821a940d36abeb6d7946bd6b0a228a54a9dd5567c884c4a7f391ecb455a5d"


def _answer(response: object, *, status: int = 200) -> HttpResponse:
    """An HTTP answer whose body is ``{"Response": response}`` as the server serialises it."""
    body = json.dumps({"Response": response}).encode()
    return HttpResponse(status=status, headers={"Content-Type": "application/json"}, body=body)


def _raw(body: bytes, *, status: int = 200, content_type: str = "application/json") -> HttpResponse:
    return HttpResponse(status=status, headers={"Content-Type": content_type}, body=body)


def _error(code: str, message: str = "something went wrong") -> HttpResponse:
    return _answer({"Error": {"Code": code, "Message": message}, "RequestId": REQUEST_ID})


PARSERS: dict[str, Callable[[HttpResponse], object]] = {
    UNASSIGN: DIALECT.parse_unassign,
    TASK_QUERY: lambda response: DIALECT.parse_task_query(response, TASK_ID),
    DESCRIBE: DIALECT.parse_describe,
}


# -- the dialect itself ------------------------------------------------------------------------------------


def test_dialect_satisfies_protocol_and_names_itself() -> None:
    """``DIALECT`` is a ``Dialect`` called ``v3`` with the public endpoint and a describe page of 100."""
    dialect: Dialect = DIALECT
    assert (dialect.name, dialect.default_endpoint, dialect.max_describe_limit) == (
        "v3",
        "https://vpc.tencentcloudapi.com",
        100,
    )


# -- requests ----------------------------------------------------------------------------------------------


def test_build_unassign_matches_v3_b() -> None:
    """UnassignPrivateIpAddresses is a POST to ``/`` with V3-B's exact body bytes and Authorization."""
    request = DIALECT.build_unassign(CTX, "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2", "10.0.0.3"])
    assert (request.action, request.method, request.url) == (
        UNASSIGN,
        "POST",
        "https://vpc.tencentcloudapi.com/",
    )
    assert request.body == V3B_BODY
    assert dict(request.headers) == {
        "Authorization": V3B_AUTHORIZATION,
        "Content-Type": "application/json",
        "Host": "vpc.tencentcloudapi.com",
        "X-TC-Action": "UnassignPrivateIpAddresses",
        "X-TC-Version": "2017-03-12",
        "X-TC-Region": "ap-guangzhou",
        "X-TC-Timestamp": "1700000000",
    }


def test_build_unassign_does_not_send_vpc_id() -> None:
    """API 3.0 has no VPC parameter, so the VPC id never reaches the body."""
    request = DIALECT.build_unassign(CTX, "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"])
    assert request.body is not None
    assert b"vpc-7t9nf3pu" not in request.body


def test_build_task_query_matches_v3_c() -> None:
    """DescribeVpcTaskResult sends ``{"TaskId": ...}`` and signs to V3-C's signature."""
    request = DIALECT.build_task_query(CTX, TASK_ID)
    assert request.body == b'{"TaskId": "f23d1450-ed00-4442-98d4-be409e625e6c"}'
    assert request.headers["X-TC-Action"] == "DescribeVpcTaskResult"
    assert request.headers["Authorization"].endswith(f"Signature={V3C_SIGNATURE}")


def _loads_or_error(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        return type(exc)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300)
@given(
    body=st.binary(max_size=12)
    | st.builds(
        lambda value, encoding, bom, pad: (
            (pad + json.dumps(value, ensure_ascii=False)).encode(encoding)
            if not bom
            else codecs.BOM_UTF8 + json.dumps(value).encode()
        ),
        _JSON_VALUES,
        st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]),
        st.booleans(),
        st.sampled_from(["", " ", "\n"]),
    )
)
def test_json_document_is_json_loads(body: bytes) -> None:
    """An answer is read exactly as ``json.loads`` reads it, whatever its bytes and encoding (a byte-order
    mark, UTF-16 or 32, bytes that are not UTF-8 or not JSON): the same value, or the same kind of error."""
    try:
        got: object = json_document(body)
    except ValueError as exc:
        got = type(exc)
    assert repr(got) == repr(_loads_or_error(body))


@settings(max_examples=200)
@given(eni_id=st.text(), ips=st.lists(st.text(), max_size=11))
def test_unassign_body_is_json_dumps(eni_id: str, ips: list[str]) -> None:
    """The submit's body, written out without ``json.dumps``, has the very bytes ``json.dumps`` gives (any
    text: quotes, controls, non-ASCII), so V3-B's pinned body speaks for every call."""
    params = {"NetworkInterfaceId": eni_id, "PrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in ips]}
    expected = json.dumps(params).encode("utf-8")
    assert DIALECT.build_unassign(CTX, "vpc-7t9nf3pu", eni_id, ips).body == expected


def test_unassign_body_of_values_not_strings_is_json_dumps() -> None:
    """Values that are not strings (never sent by the client, which validates first) serialise as
    ``json.dumps`` makes them, as before the body was written out."""
    ips: list[Any] = [1, None]
    request = DIALECT.build_unassign(CTX, "vpc-7t9nf3pu", "eni-m6dyj72l", ips)
    assert (
        request.body == b'{"NetworkInterfaceId": "eni-m6dyj72l", "PrivateIpAddresses": '
        b'[{"PrivateIpAddress": 1}, {"PrivateIpAddress": null}]}'
    )


@pytest.mark.parametrize(
    ("kwargs", "sdk_params"),
    [
        pytest.param(
            {"eni_ids": ["eni-1", "eni-2"], "offset": 0, "limit": 20},
            {"NetworkInterfaceIds": ["eni-1", "eni-2"], "Offset": 0, "Limit": 20},
            id="by-eni-ids",
        ),
        pytest.param(
            {"vpc_id": "vpc-7t9nf3pu", "offset": 100, "limit": 100},
            {"Filters": [{"Name": "vpc-id", "Values": ["vpc-7t9nf3pu"]}], "Offset": 100, "Limit": 100},
            id="by-vpc-filter",
        ),
        pytest.param(
            {"vpc_id": "vpc-7t9nf3pu", "eni_ids": ["eni-1"]},
            {"NetworkInterfaceIds": ["eni-1"], "Offset": 0, "Limit": 20},
            id="ids-win-over-filter",
        ),
    ],
)
def test_build_describe_body_matches_official_sdk(
    kwargs: dict[str, Any], sdk_params: dict[str, object]
) -> None:
    """DescribeNetworkInterfaces serialises byte for byte as the official SDK's request model does."""
    sdk_request = sdk_models.DescribeNetworkInterfacesRequest()
    sdk_request.from_json_string(json.dumps(sdk_params))
    request = DIALECT.build_describe(CTX, **kwargs)
    assert request.action == DESCRIBE
    assert request.body == json.dumps(sdk_request._serialize()).encode()


@pytest.mark.parametrize(
    ("field", "kwargs"), [("limit", {"limit": 0}), ("limit", {"limit": 101}), ("offset", {"offset": -1})]
)
def test_build_describe_rejects_bad_paging(field: str, kwargs: dict[str, Any]) -> None:
    """A describe page outside 1..100 or a negative offset is an ``InputError`` before any request exists."""
    with pytest.raises(errors.InputError) as caught:
        DIALECT.build_describe(CTX, vpc_id="vpc-1", **kwargs)
    assert caught.value.field == field


def test_signature_agrees_with_official_sdk_signer() -> None:
    """A describe request's signature equals the official SDK's ``Sign.sign_tc3`` over its canonical form."""
    request = DIALECT.build_describe(CTX, vpc_id="vpc-7t9nf3pu")
    assert request.body is not None
    canonical = signing.tc3_canonical_request(
        "POST",
        "",
        {"content-type": "application/json", "host": "vpc.tencentcloudapi.com"},
        ("content-type", "host"),
        request.body,
    )
    string_to_sign = signing.tc3_string_to_sign(canonical, 1700000000, "vpc")
    expected = Sign.sign_tc3(SECRET_KEY, "2023-11-14", "vpc", string_to_sign)
    assert request.headers["Authorization"].endswith(f"Signature={expected}")


def test_host_keeps_port_and_is_signed_with_it() -> None:
    """With a ``host:port`` endpoint the Host header, the URL and the signed host all carry the port (D16)."""
    ctx = SignContext(CTX.credentials, "http://127.0.0.1:8080", "ap-guangzhou", 1700000000, 1)
    request = DIALECT.build_task_query(ctx, TASK_ID)
    assert request.url == "http://127.0.0.1:8080/"
    assert request.headers["Host"] == "127.0.0.1:8080"
    assert request.body is not None
    assert request.headers["Authorization"] == signing.tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        method="POST",
        query="",
        headers={"content-type": "application/json", "host": "127.0.0.1:8080"},
        payload=request.body,
        timestamp=1700000000,
        service="vpc",
    )


def test_token_header_only_with_token_and_unsigned() -> None:
    """``X-TC-Token`` is sent only when the credentials carry a token, and does not change the signature."""
    with_token = SignContext(
        Credentials(SECRET_ID, SECRET_KEY, TOKEN), CTX.endpoint, CTX.region, 1700000000, 1
    )
    plain = DIALECT.build_task_query(CTX, TASK_ID)
    tokened = DIALECT.build_task_query(with_token, TASK_ID)
    assert "X-TC-Token" not in plain.headers
    assert tokened.headers["X-TC-Token"] == TOKEN
    assert tokened.headers["Authorization"] == plain.headers["Authorization"]


def test_region_header_follows_context() -> None:
    """``X-TC-Region`` is the context's region, and the region is not signed into the scope."""
    ctx = SignContext(CTX.credentials, CTX.endpoint, "ap-shanghai", 1700000000, 1)
    assert DIALECT.build_task_query(ctx, TASK_ID).headers["X-TC-Region"] == "ap-shanghai"


def test_builders_are_pure() -> None:
    """Building the same call twice from the same context gives identical requests (no clock, no random)."""
    first = DIALECT.build_unassign(CTX, "vpc-1", "eni-1", ["10.0.0.2"])
    second = DIALECT.build_unassign(CTX, "vpc-1", "eni-1", ["10.0.0.2"])
    assert (first.url, dict(first.headers), first.body) == (second.url, dict(second.headers), second.body)


def test_no_secret_in_reprs() -> None:
    """Neither the request, the context nor the dialect shows the secret key, the token or the signature."""
    ctx = SignContext(Credentials(SECRET_ID, SECRET_KEY, TOKEN), CTX.endpoint, CTX.region, 1700000000, 1)
    request = DIALECT.build_unassign(ctx, "vpc-1", "eni-m6dyj72l", ["10.0.0.2"])
    signature = request.headers["Authorization"].rsplit("=", 1)[1]
    for text in (repr(request), str(request), repr(ctx), repr(DIALECT)):
        assert SECRET_KEY not in text
        assert TOKEN not in text
        assert signature not in text


# -- successful answers ------------------------------------------------------------------------------------


def test_parse_unassign_request_id_is_task_id() -> None:
    """An accepted UnassignPrivateIpAddresses returns its RequestId as the task id to poll."""
    submitted = DIALECT.parse_unassign(_answer({"RequestId": REQUEST_ID}))
    assert submitted == Submitted(task_id=REQUEST_ID, request_id=REQUEST_ID)


@pytest.mark.parametrize(
    ("status", "output", "expected"),
    [
        ("RUNNING", "", TaskStatus.RUNNING),
        ("SUCCESS", "SUCCESS", TaskStatus.SUCCESS),
        ("FAILED", "ip 10.0.0.2 release failed", TaskStatus.FAILED),
    ],
)
def test_parse_task_query_states(status: str, output: str, expected: TaskStatus) -> None:
    """Each documented task Status maps to its ``TaskStatus`` and keeps ``Output`` as given."""
    answer = _answer(
        {
            "Status": status,
            "Output": output,
            "Result": [{"ResourceId": "eni-olifj433", "Status": status}],
            "RequestId": REQUEST_ID,
        }
    )
    state = DIALECT.parse_task_query(answer, TASK_ID)
    assert state == TaskState(TASK_ID, expected, request_id=REQUEST_ID, output=output)


@pytest.mark.parametrize("output", [pytest.param({}, id="absent"), pytest.param({"Output": None}, id="null")])
def test_parse_task_query_without_output(output: dict[str, None]) -> None:
    """A missing or null ``Output`` reads as ``None``."""
    state = DIALECT.parse_task_query(
        _answer({"Status": "RUNNING", **output, "RequestId": REQUEST_ID}), TASK_ID
    )
    assert state.output is None


@pytest.mark.parametrize("status", ["PENDING", "success", "", "DONE"])
def test_parse_task_query_unknown_status(status: str) -> None:
    """A Status outside SUCCESS/FAILED/RUNNING is a ``ProtocolError`` naming the status, never a guess."""
    with pytest.raises(errors.ProtocolError, match="unknown task Status") as caught:
        DIALECT.parse_task_query(_answer({"Status": status, "RequestId": REQUEST_ID}), TASK_ID)
    assert caught.value.action == TASK_QUERY


DESCRIBE_ANSWER = {
    "TotalCount": 3,
    "NetworkInterfaceSet": [
        {
            "VpcId": "vpc-7t9nf3pu",
            "SubnetId": "subnet-1",
            "NetworkInterfaceId": "eni-m6dyj72l",
            "Primary": False,
            "State": "AVAILABLE",
            "PrivateIpAddressSet": [
                {"PrivateIpAddress": "10.0.0.5", "Primary": False, "AddressId": "", "State": "AVAILABLE"},
                {
                    "PrivateIpAddress": "10.0.0.1",
                    "Primary": True,
                    "PublicIpAddress": "1.2.3.4",
                    "AddressId": "eip-primary",
                    "State": "AVAILABLE",
                },
                {
                    "PrivateIpAddress": "10.0.0.2",
                    "Primary": False,
                    "PublicIpAddress": "5.6.7.8",
                    "AddressId": "eip-abc123",
                    "State": "DELETING",
                },
                {"PrivateIpAddress": "10.0.0.3", "Primary": False, "AddressId": None, "State": "AVAILABLE"},
            ],
        },
        {
            "VpcId": "vpc-7t9nf3pu",
            "NetworkInterfaceId": "eni-empty",
            "PrivateIpAddressSet": [{"PrivateIpAddress": "10.0.1.1", "Primary": True}],
        },
    ],
    "RequestId": REQUEST_ID,
}


def test_parse_describe_page() -> None:
    """A page gives each ENI's primary IP, its other IPs in order (DELETING too), EIP ids and states by IP."""
    page = DIALECT.parse_describe(_answer(DESCRIBE_ANSWER))
    assert page == DescribePage(
        enis=(
            EniInfo(
                vpc_id="vpc-7t9nf3pu",
                eni_id="eni-m6dyj72l",
                primary_ip="10.0.0.1",
                secondary_ips=("10.0.0.5", "10.0.0.2", "10.0.0.3"),
                eips={"10.0.0.1": "eip-primary", "10.0.0.2": "eip-abc123"},
                ip_states={
                    "10.0.0.1": "AVAILABLE",
                    "10.0.0.5": "AVAILABLE",
                    "10.0.0.2": "DELETING",
                    "10.0.0.3": "AVAILABLE",
                },
            ),
            EniInfo(vpc_id="vpc-7t9nf3pu", eni_id="eni-empty", primary_ip="10.0.1.1", secondary_ips=()),
        ),
        total=3,
        request_id=REQUEST_ID,
    )


def test_parse_describe_empty_page() -> None:
    """An empty page is no ENIs with the server's total."""
    page = DIALECT.parse_describe(
        _answer({"TotalCount": 0, "NetworkInterfaceSet": [], "RequestId": REQUEST_ID})
    )
    assert page == DescribePage(enis=(), total=0, request_id=REQUEST_ID)


# -- error answers -----------------------------------------------------------------------------------------

# docs/protocol.md, the error table, API 3.0 column, plus the tolerated throttle forms (D7).
DECIDED_CODES = [
    (UNASSIGN, "ResourceNotFound", "eni not found", errors.EniNotFoundError),
    (UNASSIGN, "UnsupportedOperation", "can not unassign primary ip 10.0.0.1", errors.PrimaryIpError),
    (
        UNASSIGN,
        "UnsupportedOperation",
        "The primary private IP address cannot be released",
        errors.PrimaryIpError,
    ),
    (UNASSIGN, "UnsupportedOperation", "主IP不能退还", errors.PrimaryIpError),
    (UNASSIGN, "UnsupportedOperation.AttachmentNotFound", "10.0.0.9 not on eni", errors.IpNotOnEniError),
    (UNASSIGN, "InvalidParameterValue.LimitExceeded", "over 10", errors.InvalidParameterError),
    (UNASSIGN, "InvalidParameterValue.Malformed", "bad ip", errors.InvalidParameterError),
    (UNASSIGN, "MissingParameter", "PrivateIpAddresses", errors.InvalidParameterError),
    (UNASSIGN, "InvalidParameterValue.DuplicatePara", "10.0.0.2 twice", errors.InvalidParameterError),
    (UNASSIGN, "UnsupportedOperation.MutexOperationTaskRunning", "task running", errors.MutexError),
    (UNASSIGN, "RequestLimitExceeded", "request times equals to 101 in a second", errors.ThrottledError),
    (UNASSIGN, "LimitExceeded.ActionLimited", "action limited", errors.ThrottledError),
    (UNASSIGN, "RequestLimitExceeded.UinLimitExceeded", "uin limited", errors.ThrottledError),
    (UNASSIGN, "AuthFailure.SignatureFailure", "signature mismatch", errors.SignatureError),
    (UNASSIGN, "AuthFailure.SecretIdNotFound", "no such key", errors.SecretIdNotFoundError),
    (UNASSIGN, "AuthFailure.SignatureExpire", "timestamp too old", errors.ReplayError),
    (UNASSIGN, "AuthFailure.TokenFailure", "token expired", errors.TokenError),
    (UNASSIGN, "AuthFailure.InvalidSecretId", "not a SecretId", errors.SecretIdNotFoundError),
    (UNASSIGN, "AuthFailure.MFAFailure", "mfa", errors.AuthError),
    (UNASSIGN, "AuthFailure.InvalidAuthorization", "bad header", errors.SignatureError),
    (UNASSIGN, "AuthFailure.UnauthorizedOperation", "no permission", errors.PermissionDeniedError),
    (UNASSIGN, "UnauthorizedOperation", "no permission on eni-1", errors.PermissionDeniedError),
    (UNASSIGN, "UnauthorizedOperation.NoPermission", "no permission", errors.PermissionDeniedError),
    (UNASSIGN, "AuthFailure.SomethingNew", "unlisted sub-code: its family", errors.AuthError),
    (UNASSIGN, "InvalidAction", "no such action", errors.InvalidActionError),
    (UNASSIGN, "InternalError", "injected fault", errors.ServerError),
    (TASK_QUERY, "ResourceNotFound", "no such task", errors.TaskNotFoundError),
    (TASK_QUERY, "RequestLimitExceeded", "over 20", errors.ThrottledError),
    (TASK_QUERY, "InternalError.ModuleError", "module", errors.ServerError),
    (DESCRIBE, "ResourceNotFound", "no such eni", errors.NotFoundError),
    (DESCRIBE, "InvalidParameter.Coexist", "ids and filters", errors.InvalidParameterError),
]


@pytest.mark.parametrize(("action", "code", "message", "cls"), DECIDED_CODES)
def test_error_code_maps_to_class(action: str, code: str, message: str, cls: type[errors.ApiError]) -> None:
    """Each API 3.0 error code of the decided table becomes exactly its class in the shared tree."""
    with pytest.raises(errors.ApiError) as caught:
        PARSERS[action](_error(code, message))
    error = caught.value
    assert type(error) is cls
    assert (error.code, error.message, error.action, error.request_id) == (code, message, action, REQUEST_ID)


@pytest.mark.parametrize(("code", "cls"), sorted(v3.V3_CODE_CLASSES.items()))
def test_v3_only_codes_map_to_class(code: str, cls: type[errors.ApiError]) -> None:
    """Common API 3.0 codes the shared table lacks are classified by the dialect's own table."""
    with pytest.raises(errors.ApiError) as caught:
        DIALECT.parse_unassign(_error(code))
    assert type(caught.value) is cls


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("NoSuchCode.AtAll", "the primary ip"),
        ("UnsupportedOperation", "eni is in an invalid state"),
        ("UnsupportedOperation.InvalidState", "eni busy"),
        ("FailedOperation.TaskFailed", "task failed"),
    ],
)
def test_unknown_code_is_plain_api_error(code: str, message: str) -> None:
    """An unknown code, or ``UnsupportedOperation`` not naming the primary IP, is a plain ``ApiError``."""
    with pytest.raises(errors.ApiError) as caught:
        DIALECT.parse_unassign(_error(code, message))
    assert type(caught.value) is errors.ApiError
    assert caught.value.code == code


def test_task_query_error_carries_task_id() -> None:
    """An error answer to a task query names the task it was about."""
    with pytest.raises(errors.TaskNotFoundError) as caught:
        DIALECT.parse_task_query(_error("ResourceNotFound"), TASK_ID)
    assert caught.value.task_id == TASK_ID


def test_throttle_limit_read_from_message() -> None:
    """The D6 throttle message lets the caller read the per-second limit."""
    message = "request times equals to 21 in a second, which exceeds the frequency limit 20"
    with pytest.raises(errors.ThrottledError) as caught:
        DIALECT.parse_task_query(_error("RequestLimitExceeded", message), TASK_ID)
    assert caught.value.limit == 20


@pytest.mark.parametrize(
    "message",
    [
        "request times equals to 21 in a second, which exceeds the frequency limit 20",
        "request times equals to `21` in a second, which exceeds the frequency limit `20` for a second",
        "您当前每秒请求 `21` 次，超过了每秒频率上限 `20`，请稍后重试",
    ],
    ids=["plain", "backticks", "chinese"],
)
def test_throttle_limit_read_from_every_message_form(message: str) -> None:
    """Each published throttle message form (D6, D18) gives the stated limit through the v3 dialect."""
    with pytest.raises(errors.ThrottledError) as caught:
        DIALECT.parse_unassign(_error("RequestLimitExceeded", message))
    assert caught.value.limit == 20


def test_error_without_request_id_is_still_the_api_error() -> None:
    """An ``Error`` answer that lacks a RequestId is still the API's error, with no request id."""
    answer = _answer({"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "bad"}})
    with pytest.raises(errors.SignatureError) as caught:
        DIALECT.parse_unassign(answer)
    assert caught.value.request_id is None


def test_error_without_message_has_empty_message() -> None:
    """An ``Error`` with only a ``Code`` reads with an empty message."""
    with pytest.raises(errors.MutexError) as caught:
        DIALECT.parse_unassign(
            _answer(
                {"Error": {"Code": "UnsupportedOperation.MutexOperationTaskRunning"}, "RequestId": REQUEST_ID}
            )
        )
    assert caught.value.message == ""


# -- malformed answers -------------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(_answer({"RequestId": REQUEST_ID}, status=500), 500, id="http-500"),
    pytest.param(_raw(_error("InternalError").body, status=502), 502, id="http-502-with-error"),
    pytest.param(
        _raw(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"), 200, id="html"
    ),
    pytest.param(_raw(b""), 200, id="empty-body"),
    pytest.param(_raw(b'{"Response": {"RequestId": "481e9b6e'), 200, id="truncated-json"),
    pytest.param(_raw(b"\xff\xfe{}"), 200, id="not-utf8"),
    pytest.param(_raw(b'[{"Response": {}}]'), 200, id="json-list"),
    pytest.param(_raw(b'"Response"'), 200, id="json-string"),
    pytest.param(_raw(b'{"RequestId": "481e9b6e"}'), 200, id="missing-response"),
    pytest.param(_answer([REQUEST_ID]), 200, id="response-is-list"),
    pytest.param(_answer(None), 200, id="response-is-null"),
    pytest.param(
        _answer({"Status": "SUCCESS", "TotalCount": 0, "NetworkInterfaceSet": []}), 200, id="no-request-id"
    ),
    pytest.param(_answer({"RequestId": 42}), 200, id="request-id-not-string"),
    pytest.param(_answer({"RequestId": ""}), 200, id="request-id-empty"),
    pytest.param(_answer({"Error": "InternalError", "RequestId": REQUEST_ID}), 200, id="error-not-object"),
    pytest.param(
        _answer({"Error": {"Message": "no code"}, "RequestId": REQUEST_ID}), 200, id="error-without-code"
    ),
    pytest.param(
        _answer({"Error": {"Code": 4000, "Message": "x"}, "RequestId": REQUEST_ID}), 200, id="code-not-string"
    ),
]


@pytest.mark.parametrize("action", [UNASSIGN, TASK_QUERY, DESCRIBE])
@pytest.mark.parametrize(("response", "status"), MALFORMED)
def test_malformed_answer_is_protocol_error(action: str, response: HttpResponse, status: int) -> None:
    """Any answer that is not HTTP 200 JSON in the ``Response`` envelope is a ``ProtocolError``."""
    with pytest.raises(errors.ProtocolError) as caught:
        PARSERS[action](response)
    assert (caught.value.action, caught.value.status) == (action, status)
    assert str(caught.value).startswith(f"{action}: ")


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"RequestId": REQUEST_ID}, id="missing-status"),
        pytest.param({"Status": 0, "RequestId": REQUEST_ID}, id="status-int"),
        pytest.param({"Status": None, "RequestId": REQUEST_ID}, id="status-null"),
        pytest.param({"Status": ["SUCCESS"], "RequestId": REQUEST_ID}, id="status-list"),
        pytest.param({"Status": "SUCCESS", "Output": {"x": 1}, "RequestId": REQUEST_ID}, id="output-object"),
    ],
)
def test_malformed_task_answer_is_protocol_error(response: dict[str, object]) -> None:
    """A task answer without a string Status, or with a non-string Output, is a ``ProtocolError``."""
    with pytest.raises(errors.ProtocolError) as caught:
        DIALECT.parse_task_query(_answer(response), TASK_ID)
    assert caught.value.request_id == REQUEST_ID


def _eni_with(**changes: object) -> dict[str, object]:
    eni: dict[str, object] = {
        "VpcId": "vpc-1",
        "NetworkInterfaceId": "eni-1",
        "PrivateIpAddressSet": [{"PrivateIpAddress": "10.0.0.1", "Primary": True}],
    }
    eni.update(changes)
    return {k: v for k, v in eni.items() if v is not ...}


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"NetworkInterfaceSet": [], "RequestId": REQUEST_ID}, id="missing-total"),
        pytest.param(
            {"TotalCount": "1", "NetworkInterfaceSet": [], "RequestId": REQUEST_ID}, id="total-string"
        ),
        pytest.param(
            {"TotalCount": True, "NetworkInterfaceSet": [], "RequestId": REQUEST_ID}, id="total-bool"
        ),
        pytest.param({"TotalCount": 0, "RequestId": REQUEST_ID}, id="missing-set"),
        pytest.param({"TotalCount": 1, "NetworkInterfaceSet": {}, "RequestId": REQUEST_ID}, id="set-object"),
        pytest.param(
            {"TotalCount": 1, "NetworkInterfaceSet": ["eni-1"], "RequestId": REQUEST_ID}, id="eni-string"
        ),
        pytest.param(
            {"TotalCount": 1, "NetworkInterfaceSet": [_eni_with(VpcId=...)], "RequestId": REQUEST_ID},
            id="no-vpc",
        ),
        pytest.param(
            {
                "TotalCount": 1,
                "NetworkInterfaceSet": [_eni_with(NetworkInterfaceId=7)],
                "RequestId": REQUEST_ID,
            },
            id="eni-id-int",
        ),
        pytest.param(
            {
                "TotalCount": 1,
                "NetworkInterfaceSet": [_eni_with(PrivateIpAddressSet=...)],
                "RequestId": REQUEST_ID,
            },
            id="no-ip-set",
        ),
        pytest.param(
            {
                "TotalCount": 1,
                "NetworkInterfaceSet": [_eni_with(PrivateIpAddressSet=[{"Primary": True}])],
                "RequestId": REQUEST_ID,
            },
            id="ip-without-address",
        ),
        pytest.param(
            {
                "TotalCount": 1,
                "NetworkInterfaceSet": [
                    _eni_with(PrivateIpAddressSet=[{"PrivateIpAddress": "10.0.0.1", "Primary": "true"}])
                ],
                "RequestId": REQUEST_ID,
            },
            id="primary-string",
        ),
        pytest.param(
            {
                "TotalCount": 1,
                "NetworkInterfaceSet": [
                    _eni_with(PrivateIpAddressSet=[{"PrivateIpAddress": "10.0.0.1", "AddressId": 5}])
                ],
                "RequestId": REQUEST_ID,
            },
            id="address-id-int",
        ),
    ],
)
def test_malformed_describe_answer_is_protocol_error(response: dict[str, object]) -> None:
    """A describe answer with a missing or mistyped field is a ``ProtocolError``, never a ``KeyError``."""
    with pytest.raises(errors.ProtocolError) as caught:
        DIALECT.parse_describe(_answer(response))
    assert caught.value.action == DESCRIBE


def test_protocol_error_message_is_clear_and_short() -> None:
    """A non-JSON answer's message names the call, the fault and a short excerpt of the body."""
    html = b"<html>" + b"x" * 500 + b"</html>"
    with pytest.raises(errors.ProtocolError) as caught:
        DIALECT.parse_unassign(_raw(html, content_type="text/html"))
    text = str(caught.value)
    assert text.startswith("UnassignPrivateIpAddresses: body is not JSON: '<html>")
    assert len(text) < 200


def test_protocol_errors_are_transport_errors() -> None:
    """Malformed answers sit under ``TransportError`` and are marked transient, as the retry table expects."""
    with pytest.raises(errors.TransportError) as caught:
        DIALECT.parse_describe(_raw(b"", status=503))
    assert caught.value.transient


# -- the fast reading of a described ENI agrees with the checked one --------------------------------------

_JSON_VALUES = (
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False) | st.text(max_size=4)
    | st.lists(st.integers(), max_size=1) | st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)
)  # fmt: skip
_IP_ENTRY = st.fixed_dictionaries(
    {"PrivateIpAddress": st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"])},
    optional={
        "Primary": st.booleans() | st.none(),
        "State": st.sampled_from(["AVAILABLE", "deleting", "", None]),
        "AddressId": st.sampled_from(["eip-00000001", "", None]),
    },
)
_ENI_ENTRY = st.fixed_dictionaries(
    {
        "NetworkInterfaceId": st.just("eni-00000001"),
        "VpcId": st.just("vpc-00000001"),
        "PrivateIpAddressSet": st.lists(_IP_ENTRY, max_size=3),
    }
)


@st.composite
def _described_entries(draw: st.DrawFn) -> object:
    """A well-formed ENI entry, most often as it is, else with one field (of the ENI or of one IP entry)
    dropped or replaced by any JSON value, or the entry itself replaced."""
    entry: dict[str, Any] = draw(_ENI_ENTRY)
    where = draw(st.sampled_from(["none", "none", "eni", "ip", "entry"]))
    if where == "entry":
        return draw(_JSON_VALUES)
    target = entry
    if where == "ip":
        if not entry["PrivateIpAddressSet"]:
            return entry
        index = draw(st.integers(0, len(entry["PrivateIpAddressSet"]) - 1))
        if draw(st.booleans()):
            entry["PrivateIpAddressSet"][index] = draw(_JSON_VALUES)
            return entry
        target = entry["PrivateIpAddressSet"][index]
    if where != "none":
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(_JSON_VALUES)
    return entry


def _read(read: Callable[[Any, str], EniInfo], entry: object) -> EniInfo | str:
    try:
        return read(entry, "req-1")
    except errors.ProtocolError as exc:
        return str(exc)


@settings(max_examples=600, deadline=None)
@given(entry=_described_entries())
def test_fast_reading_of_a_described_eni_is_the_checked_reading(entry: object) -> None:
    """Every ENI of every describe answer goes through the fast reading; whatever the entry holds (any JSON
    value where a field is expected, fields missing), it reads exactly what the checked reading does, and
    where that refuses the entry, fails with the same error."""
    checked = _read(
        lambda e, rid: v3._eni_checked(v3._as(e, dict, "NetworkInterfaceSet[]", DESCRIBE, rid), rid), entry
    )
    assert _read(v3._eni, entry) == checked


def test_fast_reading_reads_a_well_formed_eni() -> None:
    entry = {
        "NetworkInterfaceId": "eni-00000001",
        "VpcId": "vpc-00000001",
        "PrivateIpAddressSet": [
            {"PrivateIpAddress": "10.0.0.1", "Primary": True, "State": "AVAILABLE"},
            {"PrivateIpAddress": "10.0.0.2", "Primary": False, "State": "deleting", "AddressId": "eip-1"},
        ],
    }
    assert v3._eni_fast(entry) == EniInfo(
        "vpc-00000001", "eni-00000001", "10.0.0.1", ("10.0.0.2",), {"10.0.0.2": "eip-1"},
        {"10.0.0.1": "AVAILABLE", "10.0.0.2": "DELETING"},
    )  # fmt: skip
    assert (
        v3._eni_fast({**entry, "VpcId": 7}) is None
    )  # not of JSON's exact types: the checked reading says why
