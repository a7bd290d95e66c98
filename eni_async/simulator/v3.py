"""The API 3.0 front end (``POST /`` with a JSON body, ``GET /`` with a query string), TC3-HMAC-SHA256 auth.

Verification follows docs/protocol.md §2.2 with ``eni_async.signing``: whatever ``SignedHeaders`` the client
lists, the raw query string as received, the SHA-256 of the body bytes (or ``UNSIGNED-PAYLOAD``), the
credential date checked against ``X-TC-Timestamp``. Answers are ``{"Response": {..., "RequestId"}}``; an
UnassignPrivateIpAddresses' RequestId is its task id. ``V3_CODES`` maps every ``Reason`` to an ``Error.Code``.
Only fields the official SDK's models know are emitted (it warns about any other, and tests treat warnings
as errors). The older "signature v1" form of API 3.0 is not served.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from eni_async import signing
from eni_async.models import TaskStatus
from eni_async.simulator.frontend import ActionTable, Call
from eni_async.simulator.keys import KeyRing
from eni_async.simulator.limits import ReplayGuard
from eni_async.simulator.rejects import Reason, Reject
from eni_async.simulator.resources import Eni, TaskFate
from eni_async.simulator.state import World
from eni_async.simulator.validate import MAX_IPS_PER_CALL, integer, ip_list, resource_id

API_VERSION = "2017-03-12"
SERVICE = "vpc"
DESCRIBE_MAX_LIMIT = 100
V3_CODES: Mapping[Reason, str] = {
    Reason.MISSING: "MissingParameter",
    Reason.MALFORMED: "InvalidParameterValue.Malformed",
    Reason.TOO_MANY: "InvalidParameterValue.LimitExceeded",
    Reason.OUT_OF_RANGE: "InvalidParameterValue.Range",
    Reason.DUPLICATE: "InvalidParameterValue.DuplicatePara",
    Reason.COEXIST: "InvalidParameter.Coexist",
    Reason.FILTER_KEY: "InvalidParameter.FilterInvalidKey",
    Reason.IP_OUT_OF_SUBNET: "InvalidParameterValue.Range",
    Reason.IP_QUOTA: "LimitExceeded",
    Reason.VPC_NOT_FOUND: "ResourceNotFound",
    Reason.ENI_NOT_FOUND: "ResourceNotFound",
    Reason.ENI_ID_UNKNOWN: "InvalidParameterValue",
    Reason.TASK_NOT_FOUND: "ResourceNotFound",
    Reason.IP_IS_PRIMARY: "UnsupportedOperation",
    Reason.IP_NOT_ON_ENI: "UnsupportedOperation.AttachmentNotFound",
    Reason.IP_IN_USE: "ResourceInUse",
    Reason.MUTEX: "UnsupportedOperation.MutexOperationTaskRunning",
    Reason.THROTTLED: "RequestLimitExceeded",
    Reason.UNAUTHORIZED: "UnauthorizedOperation",
    Reason.SIGNATURE: "AuthFailure.SignatureFailure",
    Reason.BAD_AUTHORIZATION: "AuthFailure.InvalidAuthorization",
    Reason.SECRET_ID_NOT_FOUND: "AuthFailure.SecretIdNotFound",
    Reason.EXPIRED: "AuthFailure.SignatureExpire",
    Reason.TOKEN: "AuthFailure.TokenFailure",
    Reason.WEB_IDENTITY_TOKEN: "InvalidParameterValue",
    Reason.ROLE_NOT_FOUND: "ResourceNotFound",
    Reason.NONCE_REUSED: "AuthFailure.SignatureExpire",
    Reason.INVALID_ACTION: "InvalidAction",
    Reason.NO_SUCH_VERSION: "NoSuchVersion",
    Reason.UNSUPPORTED_REGION: "UnsupportedRegion",
    Reason.INTERNAL: "InternalError",
}
_AUTH_RE = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/\s]+)/tc3_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_FILTERS = {"vpc-id": "vpc_ids", "subnet-id": "subnet_ids", "network-interface-id": "eni_ids"}


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Turn ``A.0.B=x`` query pairs into ``{"A": [{"B": "x"}]}``, as API 3.0 GET requests flatten them."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        node: Any = root
        try:
            for i, part in enumerate(parts):
                child: Any = value if i == len(parts) - 1 else ([] if parts[i + 1].isdigit() else {})
                if isinstance(node, list):
                    index = int(part)
                    node.extend([None] * (index + 1 - len(node)))
                    if node[index] is None:
                        node[index] = child
                    node = node[index]
                else:
                    node = node.setdefault(part, child)
        except (ValueError, TypeError, AttributeError):
            raise Reject(Reason.MALFORMED, f"parameter {key} conflicts with another parameter") from None
    return root


class V3Frontend(ActionTable):
    """API 3.0 over a ``World``: one instance per simulator."""

    dialect = "v3"

    def __init__(self, world: World, keys: KeyRing, replay: ReplayGuard, region: str) -> None:
        super().__init__(world, keys, replay)
        self._region = region

    async def read(self, request: web.Request) -> Call:
        """Read the action header and the JSON body (POST) or the flattened query (GET)."""
        action = request.headers.get("X-TC-Action", "")
        if not action:
            raise Reject(Reason.MISSING, "missing required header X-TC-Action")
        body = await request.read()
        if request.method == "GET":
            params = unflatten(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        elif body.strip():
            try:
                params = json.loads(body)
            except ValueError:
                raise Reject(Reason.MALFORMED, "the request body is not valid JSON") from None
            if not isinstance(params, dict):
                raise Reject(Reason.MALFORMED, "the request body must be a JSON object")
        else:
            params = {}
        return Call(action, params, body)

    def verify(self, request: web.Request, body: bytes, service: str) -> str:
        """Verify a TC3 signature for ``service``, the session token and the timestamp; return the SecretId."""
        match = _AUTH_RE.fullmatch(request.headers.get("Authorization", "").strip())
        if match is None:
            raise Reject(Reason.BAD_AUTHORIZATION, "the Authorization header is missing or malformed")
        raw_ts = request.headers.get("X-TC-Timestamp", "")
        if not raw_ts:
            raise Reject(Reason.MISSING, "missing required header X-TC-Timestamp")
        timestamp = integer(raw_ts, name="X-TC-Timestamp", default=0, low=0)
        secret_key = self._keys.get(match["id"])
        if secret_key is None:
            raise Reject(Reason.SECRET_ID_NOT_FOUND, "the SecretId does not exist")
        signed = match["headers"].split(";")
        headers = {name: request.headers.get(name) for name in signed}
        if any(v is None for v in headers.values()) or match["service"] != service:
            raise Reject(Reason.SIGNATURE, "signature verification failed")
        canonical = signing.tc3_canonical_request(
            request.method,
            request.rel_url.raw_query_string,
            {k: v for k, v in headers.items() if v is not None},
            signed,
            body,
            unsigned_payload=request.headers.get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD",
        )
        to_sign = signing.tc3_string_to_sign(canonical, timestamp, service)
        expected = signing.tc3_signature(secret_key, timestamp, service, to_sign)
        if match["date"] != signing.tc3_date(timestamp) or not signing.signatures_equal(
            expected, match["signature"]
        ):
            raise Reject(Reason.SIGNATURE, "signature verification failed")
        self._keys.check_token(match["id"], request.headers.get("X-TC-Token"))
        self._replay.check_timestamp(timestamp)
        return match["id"]

    def authenticate(self, request: web.Request, call: Call) -> str:
        """Verify the TC3 Authorization header, the token, the timestamp window, version and region."""
        secret_id = self.verify(request, call.body, SERVICE)
        version = request.headers.get("X-TC-Version")
        if not version:
            raise Reject(Reason.MISSING, "missing required header X-TC-Version")
        if version != API_VERSION:
            raise Reject(Reason.NO_SUCH_VERSION, f"version {version} does not exist")
        region = request.headers.get("X-TC-Region")
        if not region:
            raise Reject(Reason.MISSING, "missing required header X-TC-Region")
        if region != self._region:
            raise Reject(Reason.UNSUPPORTED_REGION, f"region {region} is not served here")
        return secret_id

    def dispatch(self, call: Call, fate: TaskFate) -> dict[str, Any]:
        """Run ``call.action``; return the success body or raise ``Reject``."""
        return {"Response": self._run(call, fate)}

    def error(self, reject: Reject) -> dict[str, Any]:
        """The error envelope for ``reject``."""
        error = {"Code": V3_CODES[reject.reason], "Message": reject.message}
        return {"Response": {"Error": error, "RequestId": self._world.new_uuid()}}

    # --- actions ------------------------------------------------------------------------------------

    @staticmethod
    def _ip_specs(params: Mapping[str, Any], name: str) -> tuple[list[Any], bool]:
        specs = params.get(name)
        if specs is None:
            return [], False
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise Reject(Reason.MALFORMED, f"{name} must be a list of objects")
        primary = any(s.get("Primary") in (True, "true", "True") for s in specs)
        return [s.get("PrivateIpAddress") for s in specs], primary

    def _unassign(self, params: Mapping[str, Any], fate: TaskFate) -> dict[str, Any]:
        eni_id = resource_id("eni", params.get("NetworkInterfaceId"), name="NetworkInterfaceId")
        values, _ = self._ip_specs(params, "PrivateIpAddresses")
        ips = ip_list(values, name="PrivateIpAddresses")
        eni = self._world.find_eni(eni_id)
        task = self._world.unassign(eni, ips, self._world.new_uuid, fate)
        return {"RequestId": task.task_id}

    def _assign(self, params: Mapping[str, Any], fate: TaskFate) -> dict[str, Any]:
        eni_id = resource_id("eni", params.get("NetworkInterfaceId"), name="NetworkInterfaceId")
        values, primary = self._ip_specs(params, "PrivateIpAddresses")
        if primary:
            raise Reject(Reason.IP_IS_PRIMARY, "the primary IP cannot be assigned or changed")
        raw_count = params.get("SecondaryPrivateIpAddressCount")
        if not values and raw_count in (None, ""):
            raise Reject(Reason.MISSING, "give PrivateIpAddresses or SecondaryPrivateIpAddressCount")
        ips = ip_list(values, name="PrivateIpAddresses", required=False)
        count = integer(
            raw_count, name="SecondaryPrivateIpAddressCount", default=0, low=0, high=MAX_IPS_PER_CALL
        )
        if len(ips) + count > MAX_IPS_PER_CALL:
            raise Reject(Reason.TOO_MANY, f"at most {MAX_IPS_PER_CALL} addresses per call")
        eni = self._world.find_eni(eni_id)
        task, chosen = self._world.assign(eni, ips, count, self._world.new_uuid)
        specs = [_address(ip, False, None, "PENDING") for ip in chosen]
        return {"PrivateIpAddressSet": specs, "RequestId": task.task_id}

    def _task_result(self, params: Mapping[str, Any], fate: TaskFate) -> dict[str, Any]:
        task_id = params.get("TaskId")
        if task_id in (None, ""):
            raise Reject(Reason.MISSING, "missing required parameter TaskId")
        task = self._world.task(str(task_id))
        output = "" if task.status is TaskStatus.RUNNING else task.output
        return {
            "Status": str(task.status),
            "Output": output,
            "Result": None,
            "RequestId": self._world.new_uuid(),
        }

    def _describe(self, params: Mapping[str, Any], fate: TaskFate) -> dict[str, Any]:
        ids, filters = params.get("NetworkInterfaceIds"), params.get("Filters")
        if ids and filters:
            raise Reject(Reason.COEXIST, "NetworkInterfaceIds and Filters cannot be given together")
        wanted: dict[str, list[str] | None] = {"eni_ids": None, "vpc_ids": None, "subnet_ids": None}
        if ids:
            if not isinstance(ids, list):
                raise Reject(Reason.MALFORMED, "NetworkInterfaceIds must be a list")
            if len(ids) > DESCRIBE_MAX_LIMIT:
                raise Reject(Reason.TOO_MANY, f"at most {DESCRIBE_MAX_LIMIT} NetworkInterfaceIds")
            wanted["eni_ids"] = named = [resource_id("eni", i, name="NetworkInterfaceIds") for i in ids]
        for item in filters or []:
            if not isinstance(item, dict) or not isinstance(item.get("Values"), list):
                raise Reject(Reason.MALFORMED, "each filter needs a Name and a list of Values")
            field = _FILTERS.get(str(item.get("Name")))
            if field is None:
                raise Reject(Reason.FILTER_KEY, f"unknown filter {item.get('Name')!r}")
            wanted[field] = [*(wanted[field] or []), *(str(v) for v in item["Values"])]
        offset = integer(params.get("Offset"), name="Offset", default=0, low=0)
        limit = integer(params.get("Limit"), name="Limit", default=20, low=1, high=DESCRIBE_MAX_LIMIT)
        if ids:  # resources after parameters (D11); a filter naming no ENI matches nothing, as ever
            self._check_named(named, name="NetworkInterfaceIds")
        page, total = self._world.describe(offset=offset, limit=limit, **wanted)
        return {
            "NetworkInterfaceSet": [render_eni(eni) for eni in page],
            "TotalCount": total,
            "RequestId": self._world.new_uuid(),
        }


def _address(ip: str, primary: bool, eip: Any, state: str) -> dict[str, Any]:
    return {
        "PrivateIpAddress": ip,
        "Primary": primary,
        "PublicIpAddress": eip.public_ip if eip else "",
        "AddressId": eip.eip_id if eip else "",
        "Description": "",
        "IsWanIpBlocked": False,
        "State": state,
        "QosLevel": "DEFAULT",
    }


def render_eni(eni: Eni) -> dict[str, Any]:
    """One ENI as the API 3.0 DescribeNetworkInterfaces lists it (docs/protocol.md §2.6)."""
    task = eni.task
    busy = set(task.ips) if task is not None else set()
    busy_state = "DELETING" if task is not None and task.kind == "unassign" else "PENDING"
    addresses = [_address(eni.primary_ip, True, None, "AVAILABLE")]
    addresses.extend(
        _address(ip, False, eip, busy_state if ip in busy else "AVAILABLE")
        for ip, eip in eni.secondary.items()
    )
    return {
        "NetworkInterfaceId": eni.eni_id,
        "NetworkInterfaceName": "",
        "NetworkInterfaceDescription": "",
        "SubnetId": eni.subnet.subnet_id,
        "VpcId": eni.vpc_id,
        "GroupSet": [],
        "Primary": False,
        "MacAddress": eni.mac,
        "State": "AVAILABLE",
        "NetworkInterfaceState": "AVAILABLE",
        "PrivateIpAddressSet": addresses,
        "Attachment": None,
        "Zone": eni.subnet.zone,
        "CreatedTime": "2024-01-01 00:00:00",
        "Ipv6AddressSet": [],
        "TagSet": [],
        "EniType": 0,
        "Business": "cvm",
        "CdcId": "",
        "AttachType": 0,
        "ResourceId": "",
        "QosLevel": "DEFAULT",
    }
