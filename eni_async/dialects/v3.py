"""The API 3.0 dialect (``vpc.tencentcloudapi.com``, version 2017-03-12, TC3-HMAC-SHA256), sans-I/O.

Builders turn an operation into a signed ``HttpRequest`` whose JSON body has exactly the bytes the official
Python SDK sends (``json.dumps`` with default separators, docs/protocol.md V3-B), and parsers turn an
``HttpResponse`` into a model or a typed exception. Nothing here awaits, reads the clock or draws a random
number; the timestamp comes in ``SignContext``. One rule decides "their bad answer": anything that is not
HTTP 200 JSON of the form ``{"Response": {..., "RequestId": str}}`` with fields of the documented types is a
``ProtocolError`` (docs/protocol.md D5), never a ``KeyError`` or ``TypeError``; an ``Error`` object in the
envelope is an ``ApiError`` from the shared tree in ``errors``, refined here only where API 3.0 needs the
action or the message to tell cases apart (docs/protocol.md, the error table).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from eni_async import errors, signing
from eni_async.dialects.base import (
    DESCRIBE,
    TASK_QUERY,
    UNASSIGN,
    Capabilities,
    DescribePage,
    SignContext,
    endpoint_parts,
    json_document,
)
from eni_async.models import EniInfo, HttpRequest, HttpResponse, Submitted, TaskState, TaskStatus

SERVICE = "vpc"
VERSION = "2017-03-12"
CONTENT_TYPE = "application/json"

TASK_STATUSES: Mapping[str, TaskStatus] = {
    "RUNNING": TaskStatus.RUNNING,
    "SUCCESS": TaskStatus.SUCCESS,
    "FAILED": TaskStatus.FAILED,
}

# API 3.0 answers ``ResourceNotFound`` for both a missing ENI and an unknown task id; the action says which.
ACTION_CODE_CLASSES: Mapping[tuple[str, str], type[errors.ApiError]] = {
    (UNASSIGN, "ResourceNotFound"): errors.EniNotFoundError,
    (TASK_QUERY, "ResourceNotFound"): errors.TaskNotFoundError,
}

# API 3.0 common codes that the shared table in ``errors`` does not classify. The caller's
# address being refused is access control, not a credential failure, so it does not stop a batch (D17).
V3_CODE_CLASSES: Mapping[str, type[errors.ApiError]] = {
    "IpInBlacklist": errors.PermissionDeniedError,
    "IpNotInWhitelist": errors.PermissionDeniedError,
    "InvalidRequest": errors.InvalidParameterError,
    "RequestSizeLimitExceeded": errors.InvalidParameterError,
    "UnsupportedRegion": errors.InvalidParameterError,
    "UnsupportedProtocol": errors.InvalidParameterError,
    "NoSuchProduct": errors.InvalidActionError,
    "NoSuchVersion": errors.InvalidActionError,
    "ActionOffline": errors.InvalidActionError,
}

# API 3.0 has no "is primary" code; docs/protocol.md has the server answer ``UnsupportedOperation`` with a
# message that names the primary IP, in English or Chinese.
_PRIMARY_IP_RE = re.compile(r"primary|主\s*(?:内网\s*)?ip", re.IGNORECASE)
_EXCERPT = 80

_T = TypeVar("_T")


class V3Dialect:
    """API 3.0: POST JSON to ``/``, TC3-signed over ``content-type;host``."""

    name = "v3"
    default_endpoint = "https://vpc.tencentcloudapi.com"
    max_describe_limit = 100
    # ENI ids one DescribeNetworkInterfaces call can name, and whether it lists each IP's ``State`` (D22).
    describe_ids_per_call = 100
    lists_ip_state = True
    capabilities = Capabilities(
        describe_ids_per_call=100, describe_page_limit=100, lists_ip_state=True, release_names_vpc=False
    )

    def __repr__(self) -> str:
        return "V3Dialect()"

    # -- requests -----------------------------------------------------------------------------------------

    def build_unassign(self, ctx: SignContext, vpc_id: str, eni_id: str, ips: Sequence[str]) -> HttpRequest:
        """Sign an UnassignPrivateIpAddresses call; API 3.0 has no VPC parameter, so ``vpc_id`` is unsent."""
        return self._build(ctx, UNASSIGN, _unassign_body(eni_id, ips))

    def build_task_query(self, ctx: SignContext, task_id: str) -> HttpRequest:
        """Sign a DescribeVpcTaskResult call; the task id is the RequestId of the call that started it."""
        return self._build(ctx, TASK_QUERY, _body({"TaskId": task_id}))

    def build_describe(
        self,
        ctx: SignContext,
        *,
        vpc_id: str | None = None,
        eni_ids: Sequence[str] = (),
        offset: int = 0,
        limit: int = 20,
    ) -> HttpRequest:
        """Sign a DescribeNetworkInterfaces call by ENI ids, else by a ``vpc-id`` filter (never both)."""
        if not 1 <= limit <= self.max_describe_limit:
            raise errors.InputError("limit", limit, f"must be between 1 and {self.max_describe_limit}")
        if offset < 0:
            raise errors.InputError("offset", offset, "must not be negative")
        # Key order follows the SDK's model (NetworkInterfaceIds, Filters, Offset, Limit).
        params: dict[str, object] = {}
        if eni_ids:
            params["NetworkInterfaceIds"] = list(eni_ids)
        elif vpc_id is not None:
            params["Filters"] = [{"Name": "vpc-id", "Values": [vpc_id]}]
        params["Offset"] = offset
        params["Limit"] = limit
        return self._build(ctx, DESCRIBE, _body(params))

    def _build(self, ctx: SignContext, action: str, body: bytes) -> HttpRequest:
        host, url = endpoint_parts(ctx.endpoint)
        credentials = ctx.credentials
        authorization = signing.tc3_authorization(
            credentials.secret_id,
            credentials.secret_key,
            method="POST",
            query="",
            headers={"content-type": CONTENT_TYPE, "host": host},
            payload=body,
            timestamp=ctx.timestamp,
            service=SERVICE,
        )
        headers = {
            "Authorization": authorization,
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": action,
            "X-TC-Version": VERSION,
            "X-TC-Region": ctx.region,
            "X-TC-Timestamp": str(ctx.timestamp),
        }
        if credentials.token:
            headers["X-TC-Token"] = credentials.token
        return HttpRequest(action, "POST", url, headers, body)

    # -- responses ----------------------------------------------------------------------------------------

    def parse_unassign(self, response: HttpResponse) -> Submitted:
        """Return the task started (its id is the call's RequestId), or raise the typed error."""
        _, request_id = _envelope(response, UNASSIGN)
        return Submitted(task_id=request_id, request_id=request_id)

    def parse_task_query(self, response: HttpResponse, task_id: str) -> TaskState:
        """Return the task's status and ``Output``; a status outside the table is a ``ProtocolError``."""
        body, request_id = _envelope(response, TASK_QUERY, task_id=task_id)
        raw_status = _field(body, "Status", str, TASK_QUERY, request_id)
        if raw_status not in TASK_STATUSES:
            raise errors.ProtocolError(
                f"{TASK_QUERY}: unknown task Status {raw_status[:_EXCERPT]!r} "
                f"(expected one of {', '.join(TASK_STATUSES)})",
                action=TASK_QUERY,
                status=response.status,
                request_id=request_id,
            )
        output = _optional(body, "Output", str, TASK_QUERY, request_id)
        return TaskState(task_id, TASK_STATUSES[raw_status], request_id=request_id, output=output)

    def parse_describe(self, response: HttpResponse) -> DescribePage:
        """Return one page of ENIs: primary IP, secondary IPs in the server's order, and EIP ids by IP."""
        body, request_id = _envelope(response, DESCRIBE)
        total = _field(body, "TotalCount", int, DESCRIBE, request_id)
        enis = tuple(
            _eni(item, request_id) for item in _field(body, "NetworkInterfaceSet", list, DESCRIBE, request_id)
        )
        return DescribePage(enis=enis, total=total, request_id=request_id)


DIALECT = V3Dialect()


def _body(params: Mapping[str, object]) -> bytes:
    """A request's JSON body as the SDK sends it: ``json.dumps`` with its default separators (V3-B)."""
    return json.dumps(params).encode("utf-8")


# What ``json.dumps`` writes for a string (ASCII, escaped): the body of every submit is built from it directly,
# without ``json.dumps`` making an encoder per call (``test_unassign_body_is_json_dumps`` pins the equality).
_quoted = json.encoder.encode_basestring_ascii


def _unassign_body(eni_id: str, ips: Sequence[str]) -> bytes:
    """``_body`` of an UnassignPrivateIpAddresses call's parameters, written out."""
    try:
        addresses = ", ".join([f'{{"PrivateIpAddress": {_quoted(ip)}}}' for ip in ips])
        return f'{{"NetworkInterfaceId": {_quoted(eni_id)}, "PrivateIpAddresses": [{addresses}]}}'.encode()
    except TypeError:  # not strings after all: whatever json.dumps makes of them
        addresses_of = [{"PrivateIpAddress": ip} for ip in ips]
        return _body({"NetworkInterfaceId": eni_id, "PrivateIpAddresses": addresses_of})


def _eni(item: object, request_id: str) -> EniInfo:
    """One ENI of a describe answer: the common, well-formed case read at once (``_eni_fast``), anything
    else through the checks that name what is wrong."""
    try:
        known = _eni_fast(item) if type(item) is dict else None
    except (KeyError, TypeError, AttributeError):
        known = None
    if known is not None:
        return known
    return _eni_checked(_as(item, dict, "NetworkInterfaceSet[]", DESCRIBE, request_id), request_id)


def _eni_fast(item: dict[str, Any]) -> EniInfo | None:
    """``_eni_checked``'s result for an entry of exactly the types JSON gives (else ``None``: checked then),
    without its calls per field: a describe of 100 ENIs is read for every look."""
    primary_ip: str | None = None
    secondary: list[str] = []
    eips: dict[str, str] = {}
    states: dict[str, str] = {}
    entries = item["PrivateIpAddressSet"]
    if type(entries) is not list:
        return None
    for spec in entries:
        ip = spec["PrivateIpAddress"]
        state = spec.get("State")
        primary = spec.get("Primary")
        address_id = spec.get("AddressId")
        if (
            type(spec) is not dict
            or type(ip) is not str
            or (state is not None and type(state) is not str)
            or (primary is not None and type(primary) is not bool)
            or (address_id is not None and type(address_id) is not str)
        ):
            return None
        if state:
            states[ip] = state.upper()
        if primary:
            primary_ip = ip
        else:
            secondary.append(ip)
        if address_id:
            eips[ip] = address_id
    vpc_id, eni_id = item["VpcId"], item["NetworkInterfaceId"]
    if type(vpc_id) is not str or type(eni_id) is not str:
        return None
    return EniInfo(vpc_id, eni_id, primary_ip, tuple(secondary), eips, states)


def _eni_checked(item: Mapping[str, Any], request_id: str) -> EniInfo:
    primary_ip: str | None = None
    secondary: list[str] = []
    eips: dict[str, str] = {}
    states: dict[str, str] = {}
    for entry in _field(item, "PrivateIpAddressSet", list, DESCRIBE, request_id):
        spec = _as(entry, dict, "PrivateIpAddressSet[]", DESCRIBE, request_id)
        ip = _field(spec, "PrivateIpAddress", str, DESCRIBE, request_id)
        state = _optional(spec, "State", str, DESCRIBE, request_id)
        if state:
            states[ip] = state.upper()
        if _optional(spec, "Primary", bool, DESCRIBE, request_id):
            primary_ip = ip
        else:
            secondary.append(ip)
        address_id = _optional(spec, "AddressId", str, DESCRIBE, request_id)
        if address_id:
            eips[ip] = address_id
    return EniInfo(
        vpc_id=_field(item, "VpcId", str, DESCRIBE, request_id),
        eni_id=_field(item, "NetworkInterfaceId", str, DESCRIBE, request_id),
        primary_ip=primary_ip,
        secondary_ips=tuple(secondary),
        eips=eips,
        ip_states=states,
    )


def _envelope(
    response: HttpResponse, action: str, *, task_id: str | None = None
) -> tuple[dict[str, Any], str]:
    """Check status and envelope; raise the API error if there is one; return ``(Response, RequestId)``."""
    status = response.status
    if status != 200:
        raise errors.ProtocolError(
            f"{action}: HTTP {status} (expected 200){_excerpt(response.body)}", action=action, status=status
        )
    try:
        document = json_document(response.body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise errors.ProtocolError(
            f"{action}: body is not JSON{_excerpt(response.body)}", action=action, status=status
        ) from None
    if not isinstance(document, dict):
        raise errors.ProtocolError(
            f"{action}: body is {_type_name(document)}, expected an object with 'Response'",
            action=action,
            status=status,
        )
    if "Response" not in document:
        raise errors.ProtocolError(f"{action}: body has no 'Response' object", action=action, status=status)
    body = document["Response"]
    if type(body) is not dict:  # (what JSON gives is a dict exactly)
        body = _as(body, dict, "Response", action, None)
    raw_request_id = body.get("RequestId")
    request_id = raw_request_id if isinstance(raw_request_id, str) and raw_request_id else None
    if "Error" in body:
        raise _api_error(
            _as(body["Error"], dict, "Response.Error", action, request_id), action, request_id, task_id
        )
    if request_id is None:
        raise errors.ProtocolError(
            f"{action}: Response has no RequestId string (got {_type_name(raw_request_id)})",
            action=action,
            status=status,
        )
    return body, request_id


def _api_error(
    error: Mapping[str, Any], action: str, request_id: str | None, task_id: str | None
) -> errors.ApiError:
    code = _field(error, "Code", str, action, request_id, where="Response.Error")
    message = _optional(error, "Message", str, action, request_id, where="Response.Error") or ""
    cls = ACTION_CODE_CLASSES.get((action, code)) or V3_CODE_CLASSES.get(code)
    if cls is None and _PRIMARY_IP_RE.search(message) and _is_unsupported_operation(code):
        cls = errors.PrimaryIpError
    if cls is None:
        return errors.api_error(code, message, action=action, request_id=request_id, task_id=task_id)
    return cls(code, message, action=action, request_id=request_id, task_id=task_id)


def _is_unsupported_operation(code: str) -> bool:
    """``UnsupportedOperation`` itself, or a sub-code the shared table does not already classify."""
    return code == "UnsupportedOperation" or (
        code.startswith("UnsupportedOperation.") and errors.class_for_code(code) is errors.ApiError
    )


def _field(
    obj: Mapping[str, Any],
    name: str,
    kind: type[_T],
    action: str,
    request_id: str | None,
    *,
    where: str = "Response",
) -> _T:
    if name not in obj:
        raise errors.ProtocolError(
            f"{action}: {where} has no '{name}'", action=action, status=200, request_id=request_id
        )
    return _as(obj[name], kind, f"{where}.{name}", action, request_id)


def _optional(
    obj: Mapping[str, Any],
    name: str,
    kind: type[_T],
    action: str,
    request_id: str | None,
    *,
    where: str = "Response",
) -> _T | None:
    value = obj.get(name)
    return None if value is None else _as(value, kind, f"{where}.{name}", action, request_id)


def _as(value: object, kind: type[_T], what: str, action: str, request_id: str | None) -> _T:
    # bool is an int subclass in Python, but never a count in JSON.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise errors.ProtocolError(
        f"{action}: {what} is {_type_name(value)}, expected {_JSON_NAMES.get(kind, kind.__name__)}",
        action=action,
        status=200,
        request_id=request_id,
    )


_JSON_NAMES: Mapping[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
}


def _type_name(value: object) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def _excerpt(body: bytes) -> str:
    if not body:
        return " (empty body)"
    text = body[:_EXCERPT].decode("utf-8", "replace")
    return f": {text!r}{'...' if len(body) > _EXCERPT else ''}"
