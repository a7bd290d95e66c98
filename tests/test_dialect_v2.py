"""The API 2.0 dialect signs requests to the spec's vectors and reads every answer into a model or an error."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import pytest

from eni_async import errors, signing
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN, DescribePage, Dialect, SignContext
from eni_async.dialects.v2 import DIALECT, PATH, V2Dialect
from eni_async.models import Credentials, EniInfo, HttpRequest, HttpResponse, Submitted, TaskState, TaskStatus

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
TOKEN = "session-token-xyz"
ENDPOINT = "https://vpc.api.qcloud.com"
HOST = "vpc.api.qcloud.com"
VPC, ENI, IPS = "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2", "10.0.0.3"]
TASK_ID = "16284"


def _ctx(
    *,
    timestamp: int = 1465185768,
    nonce: int = 11886,
    token: str | None = None,
    endpoint: str = ENDPOINT,
    sign_method: str = "HmacSHA256",
) -> SignContext:
    return SignContext(
        credentials=Credentials(SECRET_ID, SECRET_KEY, token),
        endpoint=endpoint,
        region="gz",
        timestamp=timestamp,
        nonce=nonce,
        sign_method=sign_method,
    )


V2C_PARAMS = {
    "Action": "UnassignPrivateIpAddresses",
    "Nonce": "11886",
    "Region": "gz",
    "SecretId": SECRET_ID,
    "SignatureMethod": "HmacSHA256",
    "Timestamp": "1465185768",
    "vpcId": VPC,
    "networkInterfaceId": ENI,
    "privateIpAddress.0": "10.0.0.2",
    "privateIpAddress.1": "10.0.0.3",
}
V2C_GET_SIGNATURE = "d2YYeo+4ApKJAanob66husmn0jSEeHRhM3isLkSLoqM="
V2C_POST_SIGNATURE = "qXyaHxukMNFVW6Smey9JwcWIpc8iFwXL/fzIch4v01c="
V2C_GET_SHA1_SIGNATURE = "hp6VW3ZaNzu3GavTWBvjsIzDZvA="
V2D_PARAMS = {
    "Action": "DescribeVpcTaskResult",
    "Nonce": "11887",
    "Region": "gz",
    "SecretId": SECRET_ID,
    "SignatureMethod": "HmacSHA256",
    "Timestamp": "1465185770",
    "taskId": TASK_ID,
}
V2D_GET_SIGNATURE = "jbbL3MJ8ZImj1wIfof5Rv/5KWDt7+769PkxRVDFTnD4="


def _sent_params(request: HttpRequest) -> dict[str, str]:
    """The parameters a server would decode from the query (GET) or the form body (POST)."""
    if request.method == "GET":
        raw = urlsplit(request.url).query
    else:
        assert request.body is not None
        raw = request.body.decode("ascii")
    pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    assert len(params) == len(pairs), "a parameter was sent twice"
    return params


def _verifies(request: HttpRequest, sign_method: str = "HmacSHA256") -> bool:
    """Whether the request's Signature is what a server recomputes from the parameters it received."""
    params = _sent_params(request)
    signature = params.pop("Signature")
    host = urlsplit(request.url).netloc
    expected = signing.v2_sign(
        SECRET_KEY, request.method, host, urlsplit(request.url).path, params, sign_method
    )
    return signing.signatures_equal(signature, expected)


def _answer(body: object, *, status: int = 200) -> HttpResponse:
    """An HTTP answer carrying ``body`` as JSON."""
    return HttpResponse(
        status=status, headers={"Content-Type": "application/json"}, body=json.dumps(body).encode()
    )


def _raw(body: bytes, *, status: int = 200, content_type: str = "application/json") -> HttpResponse:
    return HttpResponse(status=status, headers={"Content-Type": content_type}, body=body)


def _ok(**fields: object) -> dict[str, object]:
    return {"code": 0, "message": "", "codeDesc": "Success", **fields}


PARSERS: dict[str, Callable[[HttpResponse], object]] = {
    UNASSIGN: DIALECT.parse_unassign,
    TASK_QUERY: lambda response: DIALECT.parse_task_query(response, TASK_ID),
    DESCRIBE: DIALECT.parse_describe,
}


# -- the dialect itself ------------------------------------------------------------------------------------


def test_dialect_satisfies_protocol_and_names_itself() -> None:
    """``DIALECT`` is a POST ``Dialect`` called ``v2`` with the documented endpoint and a page of 50."""
    dialect: Dialect = DIALECT
    assert (dialect.name, dialect.default_endpoint, dialect.max_describe_limit) == ("v2", ENDPOINT, 50)
    assert DIALECT.method == "POST"


def test_unknown_http_method_is_refused() -> None:
    """Only GET and POST are API 2.0 methods."""
    with pytest.raises(ValueError, match="PUT"):
        V2Dialect("PUT")


# -- requests ----------------------------------------------------------------------------------------------


def test_build_unassign_post_matches_v2_c() -> None:
    """A POST unassign sends exactly V2-C's parameters as a form body, signed with V2-C's POST signature."""
    request = V2Dialect("POST").build_unassign(_ctx(), VPC, ENI, IPS)
    assert (request.action, request.method, request.url) == (UNASSIGN, "POST", f"{ENDPOINT}{PATH}")
    assert dict(request.headers) == {"Host": HOST, "Content-Type": "application/x-www-form-urlencoded"}
    assert _sent_params(request) == {**V2C_PARAMS, "Signature": V2C_POST_SIGNATURE}
    assert _verifies(request)


def test_build_unassign_get_matches_v2_c() -> None:
    """A GET unassign puts exactly V2-C's parameters in the query, signed with V2-C's GET signature."""
    request = V2Dialect("GET").build_unassign(_ctx(), VPC, ENI, IPS)
    assert request.method == "GET"
    assert request.body is None
    assert request.url.startswith(f"{ENDPOINT}{PATH}?")
    assert dict(request.headers) == {"Host": HOST}
    assert _sent_params(request) == {**V2C_PARAMS, "Signature": V2C_GET_SIGNATURE}
    assert _verifies(request)


def test_get_query_url_encodes_the_signature() -> None:
    """The Signature's ``+``, ``/`` and ``=`` travel URL-encoded in a GET query."""
    request = V2Dialect("GET").build_unassign(_ctx(), VPC, ENI, IPS)
    assert "Signature=d2YYeo%2B4ApKJAanob66husmn0jSEeHRhM3isLkSLoqM%3D" in request.url


def test_build_unassign_get_hmac_sha1_matches_v2_c() -> None:
    """With ``sign_method="HmacSHA1"`` the GET unassign carries V2-C's HMAC-SHA1 signature."""
    request = V2Dialect("GET").build_unassign(_ctx(sign_method="HmacSHA1"), VPC, ENI, IPS)
    params = _sent_params(request)
    assert params["SignatureMethod"] == "HmacSHA1"
    assert params["Signature"] == V2C_GET_SHA1_SIGNATURE
    assert _verifies(request, "HmacSHA1")


def test_build_task_query_get_matches_v2_d() -> None:
    """A GET task query sends exactly V2-D's parameters with V2-D's signature."""
    request = V2Dialect("GET").build_task_query(_ctx(timestamp=1465185770, nonce=11887), TASK_ID)
    assert request.action == TASK_QUERY
    assert _sent_params(request) == {**V2D_PARAMS, "Signature": V2D_GET_SIGNATURE}
    assert _verifies(request)


def test_build_task_query_post_verifies() -> None:
    """A POST task query carries V2-D's parameters and a signature a server recomputes."""
    request = V2Dialect("POST").build_task_query(_ctx(timestamp=1465185770, nonce=11887), TASK_ID)
    params = _sent_params(request)
    assert {k: v for k, v in params.items() if k != "Signature"} == V2D_PARAMS
    assert _verifies(request)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, {"offset": "0", "limit": "20"}, id="defaults"),
        pytest.param(
            {"vpc_id": VPC, "eni_ids": [ENI], "offset": 50, "limit": 50},
            {"offset": "50", "limit": "50", "vpcId": VPC, "networkInterfaceId": ENI},
            id="filtered",
        ),
    ],
)
def test_build_describe_sends_filters_and_verifies(
    method: str, kwargs: dict[str, object], expected: dict[str, str]
) -> None:
    """DescribeNetworkInterfaces sends its paging and filters as API 2.0 parameters, correctly signed."""
    request = V2Dialect(method).build_describe(_ctx(), **kwargs)  # type: ignore[arg-type]
    params = _sent_params(request)
    assert request.action == DESCRIBE
    assert params["Action"] == DESCRIBE
    own = {k: v for k, v in params.items() if k[0].islower()}
    assert own == expected
    assert _verifies(request)


def test_build_describe_refuses_several_eni_ids() -> None:
    """API 2.0 filters on one ENI id, so asking for two is a ``ValueError``, not a silent drop."""
    with pytest.raises(ValueError, match="one networkInterfaceId"):
        DIALECT.build_describe(_ctx(), eni_ids=[ENI, "eni-aaaaaaaa"])


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("build", ["unassign", "task_query", "describe"])
def test_token_is_sent_and_signed_when_set(method: str, build: str) -> None:
    """Temporary credentials add a ``Token`` parameter, and the signature covers it."""
    dialect, ctx = V2Dialect(method), _ctx(token=TOKEN)
    builders: dict[str, Callable[[], HttpRequest]] = {
        "unassign": lambda: dialect.build_unassign(ctx, VPC, ENI, IPS),
        "task_query": lambda: dialect.build_task_query(ctx, TASK_ID),
        "describe": lambda: dialect.build_describe(ctx, vpc_id=VPC),
    }
    request = builders[build]()
    assert _sent_params(request)["Token"] == TOKEN
    assert _verifies(request)


def test_no_token_parameter_without_a_token() -> None:
    """Without a session token no ``Token`` parameter is sent."""
    assert "Token" not in _sent_params(DIALECT.build_task_query(_ctx(), TASK_ID))


def test_host_with_port_is_signed_as_sent() -> None:
    """An endpoint with a port signs ``host:port`` and sends it as the ``Host`` header (D16)."""
    request = DIALECT.build_unassign(_ctx(endpoint="http://127.0.0.1:8080/"), VPC, ENI, IPS)
    assert request.url == "http://127.0.0.1:8080/v2/index.php"
    assert request.headers["Host"] == "127.0.0.1:8080"
    assert _verifies(request)


def test_twelve_ips_are_numbered_from_zero() -> None:
    """IPs travel as ``privateIpAddress.0`` to ``privateIpAddress.N-1``, signed in byte order."""
    ips = [f"10.0.0.{i}" for i in range(2, 14)]
    request = DIALECT.build_unassign(_ctx(), VPC, ENI, ips)
    params = _sent_params(request)
    assert [params[f"privateIpAddress.{i}"] for i in range(12)] == ips
    assert _verifies(request)


# -- parsing: success --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_ok(data={"taskId": 16284}), id="data.taskId"),
        pytest.param(_ok(taskId=16284), id="top-level-taskId"),
        pytest.param(
            {"code": "0", "message": "", "codeDesc": "Success", "taskId": 16284}, id="code-as-string"
        ),
        pytest.param(_ok(data={"taskId": "16284"}), id="taskId-as-string"),
        pytest.param({"code": 0, "data": {"taskId": 16284}}, id="no-message-no-codeDesc"),
        pytest.param(_ok(data={}, taskId=16284), id="empty-data-then-top-level"),
    ],
)
def test_parse_unassign_accepts_every_documented_shape(body: dict[str, object]) -> None:
    """The task id is read from ``data.taskId`` or the top level, with ``code`` 0 or "0", as a string (D1, D2)."""
    assert DIALECT.parse_unassign(_answer(body)) == Submitted(task_id="16284", request_id=None)


def test_parse_unassign_keeps_a_request_id_when_sent() -> None:
    """A request id the server volunteers is kept."""
    submitted = DIALECT.parse_unassign(_answer(_ok(data={"taskId": 1}, requestId="r-1")))
    assert submitted == Submitted(task_id="1", request_id="r-1")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, TaskStatus.SUCCESS),
        (1, TaskStatus.FAILED),
        (2, TaskStatus.RUNNING),
        ("0", TaskStatus.SUCCESS),
        ("1", TaskStatus.FAILED),
        ("2", TaskStatus.RUNNING),
    ],
)
def test_parse_task_query_reads_status(status: object, expected: TaskStatus) -> None:
    """``data.status`` 0, 1 and 2 (as numbers or numeric strings) are SUCCESS, FAILED and RUNNING."""
    state = DIALECT.parse_task_query(_answer(_ok(data={"status": status})), TASK_ID)
    assert state == TaskState(task_id=TASK_ID, status=expected)


def test_parse_task_query_accepts_the_doc_example_without_code_desc() -> None:
    """The doc's example answer, which has no ``codeDesc``, is a SUCCESS."""
    body = b'{"code":0,"message":"","data":{"status":0}}'
    assert DIALECT.parse_task_query(_raw(body), "15454").status is TaskStatus.SUCCESS


ENI_ENTRY = {
    "vpcId": VPC,
    "subnetId": "subnet-1",
    "networkInterfaceId": ENI,
    "primary": False,
    "privateIpAddressesSet": [
        {"privateIpAddress": "10.0.0.1", "primary": True, "wanIp": "", "eipId": ""},
        {"privateIpAddress": "10.0.0.2", "primary": False, "wanIp": "1.2.3.4", "eipId": "eip-abc"},
        {"privateIpAddress": "10.0.0.3", "primary": False},
    ],
}
EXPECTED_ENI = EniInfo(
    vpc_id=VPC,
    eni_id=ENI,
    primary_ip="10.0.0.1",
    secondary_ips=("10.0.0.2", "10.0.0.3"),
    eips={"10.0.0.2": "eip-abc"},
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_ok(data={"totalNum": 1, "data": [ENI_ENTRY]}), id="live-page"),
        pytest.param(_ok(totalCount=1, data=[ENI_ENTRY]), id="qdoc"),
        pytest.param({"code": "0", "message": "", "totalCount": "1", "data": [ENI_ENTRY]}, id="qdoc-strings"),
    ],
)
def test_parse_describe_reads_both_envelopes(body: dict[str, object]) -> None:
    """Both DescribeNetworkInterfaces envelopes give the ENI with its primary IP, secondaries and EIPs (D3)."""
    page = DIALECT.parse_describe(_answer(body))
    assert page == DescribePage(enis=(EXPECTED_ENI,), total=1, request_id=None)


def test_parse_describe_reads_an_empty_page() -> None:
    """A page with no ENIs is an empty, valid page."""
    page = DIALECT.parse_describe(_answer(_ok(data={"totalNum": 0, "data": []})))
    assert page == DescribePage(enis=(), total=0, request_id=None)


def test_parse_describe_without_a_primary_ip() -> None:
    """An ENI listing only secondary IPs has no primary IP."""
    entry = {**ENI_ENTRY, "privateIpAddressesSet": [{"privateIpAddress": "10.0.0.9", "primary": False}]}
    page = DIALECT.parse_describe(_answer(_ok(data={"totalNum": 1, "data": [entry]})))
    assert page.enis[0].primary_ip is None
    assert page.enis[0].secondary_ips == ("10.0.0.9",)


# -- parsing: business errors ------------------------------------------------------------------------------

# (numeric code, codeDesc, class) from the error table of docs/protocol.md.
BUSINESS_ERRORS = [
    (5000, "InvalidVpc.NotFound", errors.VpcNotFoundError),
    (5000, "InvalidNetworkInterface.NotFound", errors.EniNotFoundError),
    (4000, "InvalidPrivateip.IsPrimary", errors.PrimaryIpError),
    (4000, "InvalidPrivateIpAddress.NotFound", errors.IpNotOnEniError),
    (4000, "InvalidParameter", errors.InvalidParameterError),
    (5100, "ActionLocked", errors.MutexError),
    (4400, "RequestLimitExceeded", errors.ThrottledError),
    (4100, "AuthFailure", errors.SignatureError),
    (4101, "AuthFailure", errors.PermissionDeniedError),
    (4102, "AuthFailure", errors.PermissionDeniedError),
    (4102, "UnauthorizedOperation", errors.PermissionDeniedError),
    (4103, "AuthFailure", errors.PermissionDeniedError),
    (4104, "SecretIdNotFound", errors.SecretIdNotFoundError),
    (4105, "AuthFailure", errors.TokenError),
    (4500, "ReplayAttack", errors.ReplayError),
    (4000, "InvalidAction", errors.InvalidActionError),
    (5000, "InvalidTask.NotFound", errors.TaskNotFoundError),
    (6000, "InternalError", errors.ServerError),
]


@pytest.mark.parametrize("action", [UNASSIGN, TASK_QUERY, DESCRIBE])
@pytest.mark.parametrize(
    ("numeric", "code_desc", "cls"), BUSINESS_ERRORS, ids=[f"{r[0]}-{r[1]}" for r in BUSINESS_ERRORS]
)
def test_business_error_becomes_its_class(
    action: str, numeric: int, code_desc: str, cls: type[errors.ApiError]
) -> None:
    """Each business error of the error table of docs/protocol.md raises its class with the action, codeDesc and message."""
    body = {"code": numeric, "message": "(100004) it went wrong", "codeDesc": code_desc}
    with pytest.raises(cls) as info:
        PARSERS[action](_answer(body))
    assert type(info.value) is cls
    assert (info.value.code, info.value.message, info.value.action) == (
        code_desc,
        "(100004) it went wrong",
        action,
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (4400, errors.ThrottledError),
        ("4400", errors.ThrottledError),
        (4102, errors.PermissionDeniedError),
        (5100, errors.ServerError),
    ],
)
def test_numeric_code_classifies_when_code_desc_is_missing(code: object, cls: type[errors.ApiError]) -> None:
    """Without a ``codeDesc`` the numeric code picks the class, and the code is reported as its digits."""
    with pytest.raises(cls) as info:
        DIALECT.parse_unassign(_answer({"code": code, "message": "no"}))
    assert info.value.code == str(code)


@pytest.mark.parametrize(
    ("code_desc", "message", "cls"),
    [
        ("ActionLocked", "resource is being operated on", errors.MutexError),
        ("ActionLocked", "", errors.MutexError),
        (None, "network interface eni-1 is locked by running task 16290", errors.MutexError),
        (None, "another task is running on this ENI, retry later", errors.MutexError),
        (None, "(100002)该网卡有任务正在执行，请稍后重试", errors.MutexError),
        (None, "(100004)resource operation failed", errors.ServerError),
        (None, "", errors.ServerError),
        ("InternalError", "internal error", errors.ServerError),
        ("ResourceOperationFailed", "unassign failed", errors.ServerError),
    ],
)
def test_5100_is_the_mutex_only_when_it_says_so(
    code_desc: str | None, message: str, cls: type[errors.ApiError]
) -> None:
    """5100 is the mutex only with ``codeDesc`` ActionLocked or a message naming a running task (D19)."""
    body: dict[str, object] = {"code": 5100, "message": message}
    if code_desc is not None:
        body["codeDesc"] = code_desc
    with pytest.raises(errors.ApiError) as info:
        DIALECT.parse_unassign(_answer(body))
    assert type(info.value) is cls


def test_bare_5100_is_ambiguous_for_a_mutating_call() -> None:
    """A bare 5100 is a server error of unknown effect: worth a retry when reading, never blind for a submit."""
    with pytest.raises(errors.ServerError) as info:
        DIALECT.parse_unassign(_answer({"code": 5100, "message": "operation failed"}))
    assert (info.value.transient, info.value.no_effect) == (True, False)


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        ("nonce 12345 was already used", errors.NonceReusedError),
        ("Nonce重复", errors.NonceReusedError),
        ("timestamp 1500000000 is 900s away from server time (limit 300s)", errors.ReplayError),
        ("", errors.ReplayError),
    ],
)
def test_4500_is_a_clock_problem_unless_it_names_the_nonce(message: str, cls: type[errors.ApiError]) -> None:
    """4500 stops a batch as a clock problem; a reused nonce is a one-off that a freshly signed retry clears."""
    with pytest.raises(errors.ApiError) as info:
        DIALECT.parse_unassign(_answer({"code": 4500, "message": message, "codeDesc": "ReplayAttack"}))
    assert type(info.value) is cls
    assert isinstance(info.value, errors.AuthError) is (cls is errors.ReplayError)


def test_4100_naming_the_token_is_a_token_error() -> None:
    """An expired session token comes back on API 2.0 as 4100 with a message naming the token."""
    with pytest.raises(errors.TokenError):
        DIALECT.parse_unassign(_answer({"code": 4100, "message": "token expired", "codeDesc": "AuthFailure"}))


def test_unknown_business_error_is_a_plain_api_error() -> None:
    """An unknown ``codeDesc`` with an unknown numeric code is a plain ``ApiError``, never a crash."""
    with pytest.raises(errors.ApiError) as info:
        DIALECT.parse_unassign(_answer({"code": 7777, "message": "huh", "codeDesc": "Brand.New"}))
    assert type(info.value) is errors.ApiError
    assert info.value.code == "Brand.New"


def test_throttle_answer_states_its_limit() -> None:
    """A v2 throttle answer becomes a ``ThrottledError`` whose ``limit`` comes from the D6 message."""
    message = "request times equals to 21 in a second, which exceeds the frequency limit 20"
    body = {"code": 4400, "message": message, "codeDesc": "RequestLimitExceeded"}
    with pytest.raises(errors.ThrottledError) as info:
        DIALECT.parse_task_query(_answer(body), TASK_ID)
    assert info.value.limit == 20


@pytest.mark.parametrize(
    "message",
    [
        "request times equals to 21 in a second, which exceeds the frequency limit 20",
        "request times equals to `21` in a second, which exceeds the frequency limit `20` for a second",
        "您当前每秒请求 `21` 次，超过了每秒频率上限 `20`，请稍后重试",
    ],
    ids=["plain", "backticks", "chinese"],
)
def test_throttle_answer_states_its_limit_in_every_form(message: str) -> None:
    """Each published throttle message form (D6, D18) gives the stated limit through the v2 dialect."""
    body = {"code": 4400, "message": message, "codeDesc": "RequestLimitExceeded"}
    with pytest.raises(errors.ThrottledError) as info:
        DIALECT.parse_unassign(_answer(body))
    assert info.value.limit == 20


def test_task_query_error_carries_the_task_id() -> None:
    """An error answer to a task query carries the task id asked about, as the v3 dialect's does."""
    body = {"code": 5000, "message": "no such task", "codeDesc": "InvalidTask.NotFound"}
    with pytest.raises(errors.TaskNotFoundError) as info:
        DIALECT.parse_task_query(_answer(body), TASK_ID)
    assert info.value.task_id == TASK_ID


# -- parsing: malformed answers (D5) -----------------------------------------------------------------------

MALFORMED_ANY = [
    pytest.param(_answer(_ok(data={"taskId": 1, "status": 0}), status=500), id="http-500"),
    pytest.param(_answer(_ok(data={"taskId": 1, "status": 0}), status=502), id="http-502"),
    pytest.param(_raw(b"Service Unavailable", status=503, content_type="text/plain"), id="http-503"),
    pytest.param(_raw(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"), id="html"),
    pytest.param(_raw(b""), id="empty"),
    pytest.param(_raw(b'{"code":0,"data":{"taskId":16'), id="truncated"),
    pytest.param(_raw(b"\xff\xfe\xfa"), id="not-utf8"),
    pytest.param(_raw(b"[" * 100_000), id="deeply-nested"),
    pytest.param(_answer([{"code": 0}]), id="json-list"),
    pytest.param(_answer("Success"), id="json-string"),
    pytest.param(_answer(None), id="json-null"),
    pytest.param(_answer({"message": "", "data": {"taskId": 1, "status": 0}}), id="code-missing"),
    pytest.param(_answer({"code": True, "data": {"taskId": 1, "status": 0}}), id="code-true"),
    pytest.param(_answer({"code": False, "data": {"taskId": 1, "status": 0}}), id="code-false"),
    pytest.param(_answer({"code": None, "data": {"taskId": 1, "status": 0}}), id="code-null"),
    pytest.param(_answer({"code": "abc", "data": {"taskId": 1, "status": 0}}), id="code-abc"),
    pytest.param(_answer({"code": "", "data": {"taskId": 1, "status": 0}}), id="code-empty"),
    pytest.param(_answer({"code": 0.0, "data": {"taskId": 1, "status": 0}}), id="code-float"),
    pytest.param(_answer({"code": [0], "data": {"taskId": 1, "status": 0}}), id="code-list"),
    pytest.param(_answer({"code": "--1", "data": {"taskId": 1, "status": 0}}), id="code-double-minus"),
    pytest.param(_answer({"code": "\u00b2", "data": {"taskId": 1, "status": 0}}), id="code-superscript"),
]


@pytest.mark.parametrize("action", [UNASSIGN, TASK_QUERY, DESCRIBE])
@pytest.mark.parametrize("response", MALFORMED_ANY)
def test_malformed_answer_is_a_protocol_error(action: str, response: HttpResponse) -> None:
    """An answer that is not HTTP 200 JSON in the envelope is a ``ProtocolError`` naming the action."""
    with pytest.raises(errors.ProtocolError) as info:
        PARSERS[action](response)
    assert info.value.action == action


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_error_status_is_kept(status: int) -> None:
    """A non-200 answer's HTTP status is kept on the ``ProtocolError``, even with an error-shaped body."""
    body = {"code": 4400, "message": "x", "codeDesc": "RequestLimitExceeded"}
    with pytest.raises(errors.ProtocolError) as info:
        DIALECT.parse_unassign(_answer(body, status=status))
    assert info.value.status == status


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_ok(), id="data-missing"),
        pytest.param(_ok(data=None), id="data-null"),
        pytest.param(_ok(data={}), id="taskId-missing"),
        pytest.param(_ok(data=[16284]), id="data-list"),
        pytest.param(_ok(data={"taskId": None}), id="taskId-null"),
        pytest.param(_ok(data={"taskId": "abc"}), id="taskId-abc"),
        pytest.param(_ok(data={"taskId": ""}), id="taskId-empty"),
        pytest.param(_ok(data={"taskId": True}), id="taskId-true"),
        pytest.param(_ok(data={"taskId": 16284.5}), id="taskId-float"),
        pytest.param(_ok(data={"taskId": [16284]}), id="taskId-list"),
        pytest.param(_ok(data={"taskId": "--5"}), id="taskId-double-minus"),
        pytest.param(_ok(data={"taskId": "1\u00b2"}), id="taskId-superscript"),
        pytest.param(_ok(taskId="x"), id="top-level-taskId-abc"),
    ],
)
def test_unassign_answer_without_a_task_id_is_a_protocol_error(body: dict[str, object]) -> None:
    """A success answer without an integer task id is a ``ProtocolError``, never a ``KeyError`` or ``ValueError``."""
    with pytest.raises(errors.ProtocolError):
        DIALECT.parse_unassign(_answer(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_ok(), id="data-missing"),
        pytest.param(_ok(data=None), id="data-null"),
        pytest.param(_ok(data={}), id="status-missing"),
        pytest.param(_ok(data=[0]), id="data-list"),
        pytest.param(_ok(status=0), id="status-top-level-only"),
        pytest.param(_ok(data={"status": 7}), id="status-7"),
        pytest.param(_ok(data={"status": -1}), id="status-negative"),
        pytest.param(_ok(data={"status": "7"}), id="status-7-string"),
        pytest.param(_ok(data={"status": None}), id="status-null"),
        pytest.param(_ok(data={"status": True}), id="status-true"),
        pytest.param(_ok(data={"status": False}), id="status-false"),
        pytest.param(_ok(data={"status": 0.0}), id="status-float"),
        pytest.param(_ok(data={"status": "SUCCESS"}), id="status-word"),
        pytest.param(_ok(data={"status": [0]}), id="status-list"),
        pytest.param(_ok(data={"status": "\u00b2"}), id="status-superscript"),
    ],
)
def test_task_answer_without_a_known_status_is_a_protocol_error(body: dict[str, object]) -> None:
    """A task answer whose ``data.status`` is missing, unknown or of the wrong type is a ``ProtocolError``."""
    with pytest.raises(errors.ProtocolError):
        DIALECT.parse_task_query(_answer(body), TASK_ID)


def _page(*entries: object) -> HttpResponse:
    return _answer(_ok(data={"totalNum": len(entries), "data": list(entries)}))


def _entry(**changes: object) -> dict[str, object]:
    return {**ENI_ENTRY, **changes}


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(_answer(_ok()), id="data-missing"),
        pytest.param(_answer(_ok(data={"totalNum": 1})), id="live-page-list-missing"),
        pytest.param(_answer(_ok(data={"data": [ENI_ENTRY]})), id="live-page-total-missing"),
        pytest.param(_answer(_ok(data={"totalNum": "x", "data": []})), id="live-page-total-abc"),
        pytest.param(_answer(_ok(data={"totalNum": 1, "data": {"0": ENI_ENTRY}})), id="live-page-list-dict"),
        pytest.param(_answer(_ok(data=[ENI_ENTRY])), id="qdoc-total-missing"),
        pytest.param(_answer(_ok(data="none", totalCount=0)), id="qdoc-data-string"),
        pytest.param(_page("eni-m6dyj72l"), id="entry-string"),
        pytest.param(_page(None), id="entry-null"),
        pytest.param(_page(_entry(networkInterfaceId=None)), id="entry-id-null"),
        pytest.param(_page({k: v for k, v in ENI_ENTRY.items() if k != "vpcId"}), id="entry-vpc-missing"),
        pytest.param(_page(_entry(privateIpAddressesSet=None)), id="addresses-null"),
        pytest.param(
            _page(_entry(privateIpAddressesSet={"privateIpAddress": "10.0.0.1"})), id="addresses-dict"
        ),
        pytest.param(_page(_entry(privateIpAddressesSet=["10.0.0.1"])), id="address-string"),
        pytest.param(_page(_entry(privateIpAddressesSet=[{"primary": True}])), id="address-ip-missing"),
        pytest.param(
            _page(_entry(privateIpAddressesSet=[{"privateIpAddress": 167772161}])), id="address-ip-int"
        ),
    ],
)
def test_malformed_describe_answer_is_a_protocol_error(response: HttpResponse) -> None:
    """A describe answer with a missing list, total or malformed ENI or address entry is a ``ProtocolError``."""
    with pytest.raises(errors.ProtocolError) as info:
        DIALECT.parse_describe(response)
    assert info.value.action == DESCRIBE
