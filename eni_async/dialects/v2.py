"""API 2.0 (``vpc.api.qcloud.com/v2/index.php``): request building and response parsing, with no I/O.

Requests are form POSTs (or GET queries) signed with HmacSHA1/HmacSHA256 over the sorted raw parameters
(docs/protocol.md §1.3). Parsing is tolerant where docs/protocol.md says so: the task id at ``data.taskId`` or at the
top level, ``code`` as an integer or a numeric string (D2), and both DescribeNetworkInterfaces envelopes (D3).
Any answer that is not HTTP 200 JSON in the envelope is a ``ProtocolError`` (D5), never a business answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from eni_async import signing
from eni_async.dialects.base import (
    DESCRIBE,
    TASK_QUERY,
    UNASSIGN,
    Capabilities,
    DescribePage,
    SignContext,
    json_document,
)
from eni_async.errors import ProtocolError, api_error
from eni_async.models import EniInfo, HttpRequest, HttpResponse, Submitted, TaskState, TaskStatus

PATH = "/v2/index.php"
# data.status -> task state (docs/protocol.md §1.5); anything else is a protocol fault.
TASK_STATUSES: Mapping[int, TaskStatus] = {
    0: TaskStatus.SUCCESS,
    1: TaskStatus.FAILED,
    2: TaskStatus.RUNNING,
}


class V2Dialect:
    """The API 2.0 dialect. ``method`` is ``POST`` (form body) or ``GET`` (query string)."""

    name = "v2"
    default_endpoint = "https://vpc.api.qcloud.com"
    max_describe_limit = 50
    # One ``networkInterfaceId`` per call, or a ``vpcId`` page; no per-IP state is listed (D22).
    describe_ids_per_call = 1
    lists_ip_state = False
    capabilities = Capabilities(
        describe_ids_per_call=1, describe_page_limit=50, lists_ip_state=False, release_names_vpc=True
    )

    def __init__(self, method: str = "POST") -> None:
        if method not in ("GET", "POST"):
            raise ValueError(f"method must be GET or POST, not {method!r}")
        self.method = method

    def __repr__(self) -> str:
        return f"V2Dialect(method={self.method!r})"

    # -- requests -------------------------------------------------------------------------------------

    def build(self, ctx: SignContext, action: str, params: Mapping[str, str]) -> HttpRequest:
        """Sign ``params`` for ``action`` and return the request to send."""
        creds = ctx.credentials
        full: dict[str, str] = {
            "Action": action,
            "Region": ctx.region,
            "Timestamp": str(ctx.timestamp),
            "Nonce": str(ctx.nonce),
            "SecretId": creds.secret_id,
            "SignatureMethod": ctx.sign_method,
            **params,
        }
        if creds.token:
            full["Token"] = creds.token
        full["Signature"] = signing.v2_sign(
            creds.secret_key, self.method, ctx.host, PATH, full, ctx.sign_method
        )
        encoded = urlencode(full)
        url = ctx.endpoint.rstrip("/") + PATH
        if self.method == "GET":
            return HttpRequest(action, "GET", f"{url}?{encoded}", {"Host": ctx.host})
        headers = {"Host": ctx.host, "Content-Type": "application/x-www-form-urlencoded"}
        return HttpRequest(action, "POST", url, headers, encoded.encode("ascii"))

    def build_unassign(self, ctx: SignContext, vpc_id: str, eni_id: str, ips: Sequence[str]) -> HttpRequest:
        params = {"vpcId": vpc_id, "networkInterfaceId": eni_id}
        params.update({f"privateIpAddress.{i}": ip for i, ip in enumerate(ips)})
        return self.build(ctx, UNASSIGN, params)

    def build_task_query(self, ctx: SignContext, task_id: str) -> HttpRequest:
        return self.build(ctx, TASK_QUERY, {"taskId": task_id})

    def build_describe(
        self,
        ctx: SignContext,
        *,
        vpc_id: str | None = None,
        eni_ids: Sequence[str] = (),
        offset: int = 0,
        limit: int = 20,
    ) -> HttpRequest:
        params = {"offset": str(offset), "limit": str(limit)}
        if vpc_id:
            params["vpcId"] = vpc_id
        if len(eni_ids) > 1:
            raise ValueError("API 2.0 DescribeNetworkInterfaces filters on one networkInterfaceId")
        if eni_ids:
            params["networkInterfaceId"] = eni_ids[0]
        return self.build(ctx, DESCRIBE, params)

    # -- responses ------------------------------------------------------------------------------------

    def parse_unassign(self, response: HttpResponse) -> Submitted:
        body = _envelope(response, UNASSIGN)
        data = body.get("data")
        raw = data.get("taskId") if isinstance(data, dict) else None
        if raw is None:
            raw = body.get("taskId")
        task_id = _as_int(raw)
        if task_id is None:
            raise ProtocolError(f"{UNASSIGN}: answer has no integer taskId", action=UNASSIGN)
        return Submitted(task_id=str(task_id), request_id=_request_id(body))

    def parse_task_query(self, response: HttpResponse, task_id: str) -> TaskState:
        body = _envelope(response, TASK_QUERY, task_id=task_id)
        data = body.get("data")
        raw = data.get("status") if isinstance(data, dict) else None
        code = _as_int(raw)
        status = TASK_STATUSES.get(code) if code is not None else None
        if status is None:
            raise ProtocolError(f"{TASK_QUERY}: unknown task status {raw!r}", action=TASK_QUERY)
        return TaskState(task_id=task_id, status=status, request_id=_request_id(body))

    def parse_describe(self, response: HttpResponse) -> DescribePage:
        body = _envelope(response, DESCRIBE)
        data = body.get("data")
        if isinstance(data, dict):  # live-page envelope (D3)
            items, total = data.get("data"), data.get("totalNum")
        else:  # QDOC envelope: top-level totalCount + data[]
            items, total = data, body.get("totalCount")
        if not isinstance(items, list) or _as_int(total) is None:
            raise ProtocolError(f"{DESCRIBE}: answer has no ENI list", action=DESCRIBE)
        enis = tuple(_eni(item) for item in items)
        return DescribePage(enis=enis, total=_as_int(total) or 0, request_id=_request_id(body))


def _envelope(response: HttpResponse, action: str, *, task_id: str | None = None) -> dict[str, Any]:
    """Check HTTP status and envelope; raise the typed API error for a non-zero code."""
    if response.status != 200:
        raise ProtocolError(f"{action}: HTTP {response.status}", action=action, status=response.status)
    try:
        body = json_document(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(f"{action}: answer is not JSON", action=action, status=200) from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{action}: answer is not a JSON object", action=action, status=200)
    code = _as_int(body.get("code"))
    if code is None:
        raise ProtocolError(f"{action}: answer has no integer code", action=action, status=200)
    if code != 0:
        desc = body.get("codeDesc")
        message = body.get("message")
        raise api_error(
            desc if isinstance(desc, str) and desc else str(code),
            message if isinstance(message, str) else "",
            numeric=code,
            action=action,
            request_id=_request_id(body),
            task_id=task_id,
        )
    return body


def _as_int(value: object) -> int | None:
    """An int, or a numeric string (D2); booleans and anything else are ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return None


_INT = re.compile(r"-?[0-9]{1,18}")


def _request_id(body: Mapping[str, Any]) -> str | None:
    # API 2.0 documents no request id; keep one if a server sends it.
    for key in ("requestId", "RequestId"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _eni(item: object) -> EniInfo:
    if not isinstance(item, dict):
        raise ProtocolError(f"{DESCRIBE}: ENI entry is not an object", action=DESCRIBE)
    eni_id, vpc_id = item.get("networkInterfaceId"), item.get("vpcId")
    addresses = item.get("privateIpAddressesSet")
    if not isinstance(eni_id, str) or not isinstance(vpc_id, str) or not isinstance(addresses, list):
        raise ProtocolError(f"{DESCRIBE}: ENI entry lacks id, VPC or addresses", action=DESCRIBE)
    primary: str | None = None
    secondary: list[str] = []
    eips: dict[str, str] = {}
    for entry in addresses:
        ip = entry.get("privateIpAddress") if isinstance(entry, dict) else None
        if not isinstance(ip, str):
            raise ProtocolError(f"{DESCRIBE}: address entry without privateIpAddress", action=DESCRIBE)
        if entry.get("primary") is True:
            primary = ip
        else:
            secondary.append(ip)
        eip = entry.get("eipId")
        if isinstance(eip, str) and eip:
            eips[ip] = eip
    return EniInfo(
        vpc_id=vpc_id, eni_id=eni_id, primary_ip=primary, secondary_ips=tuple(secondary), eips=eips
    )


DIALECT = V2Dialect()
