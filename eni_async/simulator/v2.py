"""The API 2.0 front end (``/v2/index.php``): read the parameters, verify the signature, run the action, and
write the ``code``/``message``/``codeDesc`` envelope (docs/protocol.md §1, D2, D3 and the error table).

The signature is checked with ``eni_async.signing`` over every received parameter except ``Signature``, with
the ``Host`` header as sent (D16); a temporary key's token error is 4105, and ``Region`` (long or old short
form) must be the simulator's, as API 3.0's ``X-TC-Region`` must. Errors are HTTP 200 with a non-zero ``code``; ``V2_CODES`` maps every
``Reason`` to its ``code`` and ``codeDesc``. Nothing here awaits except reading the request body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from eni_async import signing
from eni_async.models import TaskStatus
from eni_async.simulator.frontend import ActionTable, Call
from eni_async.simulator.rejects import Reason, Reject
from eni_async.simulator.resources import Eni, TaskFate
from eni_async.simulator.validate import MAX_IPS_PER_CALL, integer, ip_list, resource_id

_PARAM = (4000, "InvalidParameter")
V2_CODES: Mapping[Reason, tuple[int, str]] = {
    Reason.MISSING: _PARAM,
    Reason.MALFORMED: _PARAM,
    Reason.TOO_MANY: _PARAM,
    Reason.OUT_OF_RANGE: _PARAM,
    Reason.DUPLICATE: _PARAM,
    Reason.COEXIST: _PARAM,
    Reason.FILTER_KEY: _PARAM,
    Reason.IP_OUT_OF_SUBNET: _PARAM,
    Reason.IP_QUOTA: _PARAM,
    Reason.VPC_NOT_FOUND: (5000, "InvalidVpc.NotFound"),
    Reason.ENI_NOT_FOUND: (5000, "InvalidNetworkInterface.NotFound"),
    Reason.ENI_ID_UNKNOWN: _PARAM,
    Reason.TASK_NOT_FOUND: (5000, "InvalidTask.NotFound"),
    Reason.IP_IS_PRIMARY: (4000, "InvalidPrivateip.IsPrimary"),
    Reason.IP_NOT_ON_ENI: (4000, "InvalidPrivateIpAddress.NotFound"),
    Reason.IP_IN_USE: (4000, "InvalidPrivateIpAddress.InUse"),
    Reason.MUTEX: (5100, "ActionLocked"),
    Reason.THROTTLED: (4400, "RequestLimitExceeded"),
    # 4102: "sub-account not authorized for this resource". Its codeDesc is not documented (only 4100's
    # "AuthFailure" is); the API 3.0 name is assumed. Clients must not rely on it: the number decides.
    Reason.UNAUTHORIZED: (4102, "UnauthorizedOperation"),
    Reason.SIGNATURE: (4100, "AuthFailure"),
    Reason.BAD_AUTHORIZATION: (4100, "AuthFailure"),
    Reason.SECRET_ID_NOT_FOUND: (4104, "SecretIdNotFound"),
    Reason.EXPIRED: (4500, "ReplayAttack"),
    # 4105 is the public code for a token error; its codeDesc is not documented (the family name is sent, so
    # that a client reading codeDesc alone still sees an authentication failure).
    Reason.TOKEN: (4105, "AuthFailure"),
    Reason.WEB_IDENTITY_TOKEN: _PARAM,
    Reason.ROLE_NOT_FOUND: (5000, "ResourceNotFound"),
    Reason.NONCE_REUSED: (4500, "ReplayAttack"),
    Reason.INVALID_ACTION: (4000, "InvalidAction"),
    Reason.NO_SUCH_VERSION: (6100, "VersionNotSupported"),
    Reason.UNSUPPORTED_REGION: (4000, "UnsupportedRegion"),
    Reason.INTERNAL: (6000, "InternalError"),
}
TASK_STATUS_CODES: Mapping[TaskStatus, int] = {
    TaskStatus.SUCCESS: 0,
    TaskStatus.FAILED: 1,
    TaskStatus.RUNNING: 2,
}
DESCRIBE_MAX_LIMIT = 50
# API 2.0 also takes the old short region codes (docs/protocol.md §1.2).
SHORT_REGIONS: Mapping[str, str] = {
    "gz": "ap-guangzhou",
    "sh": "ap-shanghai",
    "bj": "ap-beijing",
    "cd": "ap-chengdu",
    "cq": "ap-chongqing",
    "hk": "ap-hongkong",
    "sg": "ap-singapore",
    "ca": "na-toronto",
    "siliconvalley": "na-siliconvalley",
}
_REQUIRED_AUTH = ("SecretId", "Signature", "Timestamp", "Nonce")


def _indexed(params: Mapping[str, str], prefix: str, field: str = "") -> list[str]:
    """Collect ``prefix.N`` (or ``prefix.N.field``) values in index order."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+){re.escape('.' + field) if field else ''}")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pattern.fullmatch(k)))
    return [v for _, v in found]


class V2Frontend(ActionTable):
    """API 2.0 over a ``World``: one instance per simulator."""

    dialect = "v2"

    async def read(self, request: web.Request) -> Call:
        """Read the GET query or the POST form into a flat ``{name: value}``."""
        source = await request.post() if request.method == "POST" else request.query
        params: dict[str, str] = {}
        for key, value in source.items():
            if key in params:
                raise Reject(Reason.MALFORMED, f"parameter {key} given more than once")
            if not isinstance(value, str):
                raise Reject(Reason.MALFORMED, f"parameter {key} must be a plain value")
            params[key] = value
        return Call(params.get("Action", ""), params)

    def authenticate(self, request: web.Request, call: Call) -> str:
        """Verify SecretId, signature, token, timestamp, nonce and region, in that order; return the SecretId."""
        params = call.params
        for name in _REQUIRED_AUTH:
            if not params.get(name):
                raise Reject(Reason.MISSING, f"missing required parameter {name}")
        secret_id = str(params["SecretId"])
        secret_key = self._keys.get(secret_id)
        if secret_key is None:
            raise Reject(Reason.SECRET_ID_NOT_FOUND, "the SecretId does not exist")
        host = request.headers.get("Host", request.host)
        unsigned = {k: v for k, v in params.items() if k != "Signature"}
        expected = signing.v2_sign(
            secret_key, request.method, host, request.path, unsigned, params.get("SignatureMethod", "")
        )
        if not signing.signatures_equal(expected, params["Signature"]):
            raise Reject(Reason.SIGNATURE, "signature verification failed")
        self._keys.check_token(secret_id, params.get("Token"))
        timestamp = integer(params["Timestamp"], name="Timestamp", default=0, low=0)
        self._replay.check_timestamp(timestamp)
        self._replay.check_nonce(secret_id, params["Nonce"])
        region = params.get("Region", "")
        if not region:
            raise Reject(Reason.MISSING, "missing required parameter Region")
        if SHORT_REGIONS.get(region, region) != self._world.region:
            raise Reject(Reason.UNSUPPORTED_REGION, f"region {region} is not served here")
        return secret_id

    def dispatch(self, call: Call, fate: TaskFate) -> dict[str, Any]:
        """Run ``call.action``; return the success body or raise ``Reject``."""
        return {"code": 0, "message": "", "codeDesc": "Success", "data": self._run(call, fate)}

    def error(self, reject: Reject) -> dict[str, Any]:
        """The error envelope for ``reject``."""
        code, desc = V2_CODES[reject.reason]
        return {"code": code, "message": reject.message, "codeDesc": desc}

    # --- actions ------------------------------------------------------------------------------------

    def _target(self, params: Mapping[str, str]) -> tuple[str, str]:
        vpc_id = resource_id("vpc", params.get("vpcId"), name="vpcId")
        eni_id = resource_id("eni", params.get("networkInterfaceId"), name="networkInterfaceId")
        return vpc_id, eni_id

    def _unassign(self, params: Mapping[str, str], fate: TaskFate) -> dict[str, Any]:
        vpc_id, eni_id = self._target(params)
        ips = ip_list(_indexed(params, "privateIpAddress"), name="privateIpAddress")
        eni = self._world.find_eni(eni_id, vpc_id)
        task = self._world.unassign(eni, ips, self._world.new_v2_task_id, fate)
        return {"taskId": int(task.task_id)}

    def _assign(self, params: Mapping[str, str], fate: TaskFate) -> dict[str, Any]:
        vpc_id, eni_id = self._target(params)
        given = _indexed(params, "privateIpAddressSet", "privateIpAddress")
        if any(v.lower() == "true" for v in _indexed(params, "privateIpAddressSet", "primary")):
            raise Reject(Reason.IP_IS_PRIMARY, "the primary IP cannot be assigned or changed")
        count_given = params.get("secondaryPrivateIpAddressCount")
        if not given and not count_given:
            raise Reject(Reason.MISSING, "give privateIpAddressSet.n or secondaryPrivateIpAddressCount")
        ips = ip_list(given, name="privateIpAddressSet", required=False)
        count = integer(
            count_given, name="secondaryPrivateIpAddressCount", default=0, low=0, high=MAX_IPS_PER_CALL
        )
        if len(ips) + count > MAX_IPS_PER_CALL:
            raise Reject(Reason.TOO_MANY, f"at most {MAX_IPS_PER_CALL} addresses per call")
        eni = self._world.find_eni(eni_id, vpc_id)
        task, _ = self._world.assign(eni, ips, count, self._world.new_v2_task_id)
        return {"taskId": int(task.task_id)}

    def _task_result(self, params: Mapping[str, str], fate: TaskFate) -> dict[str, Any]:
        if not params.get("taskId"):
            raise Reject(Reason.MISSING, "missing required parameter taskId")
        task_id = integer(params["taskId"], name="taskId", default=0, low=0)
        task = self._world.task(str(task_id))
        return {"status": TASK_STATUS_CODES[task.status]}

    def _describe(self, params: Mapping[str, str], fate: TaskFate) -> dict[str, Any]:
        vpc_id = params.get("vpcId") or None
        eni_id = params.get("networkInterfaceId") or None
        if vpc_id is not None:
            resource_id("vpc", vpc_id, name="vpcId")
        if eni_id is not None:
            resource_id("eni", eni_id, name="networkInterfaceId")
        offset = integer(params.get("offset"), name="offset", default=0, low=0)
        limit = integer(params.get("limit"), name="limit", default=20, low=1, high=DESCRIBE_MAX_LIMIT)
        if vpc_id is not None and vpc_id not in self._world.vpcs:
            raise Reject(Reason.VPC_NOT_FOUND, f"vpc {vpc_id} does not exist")
        if eni_id is not None:
            self._check_named([eni_id], name="networkInterfaceId")
        page, total = self._world.describe(
            eni_ids=[eni_id] if eni_id else None,
            vpc_ids=[vpc_id] if vpc_id else None,
            offset=offset,
            limit=limit,
        )
        return {"totalNum": total, "data": [render_eni(eni) for eni in page]}


def render_eni(eni: Eni) -> dict[str, Any]:
    """One ENI as the API 2.0 DescribeNetworkInterfaces lists it (docs/protocol.md §1.6)."""
    addresses = [
        {
            "privateIpAddress": eni.primary_ip,
            "primary": True,
            "wanIp": "",
            "eipId": "",
            "description": "",
            "isWanIpBlocked": False,
        }
    ]
    for ip, eip in eni.secondary.items():
        addresses.append(
            {
                "privateIpAddress": ip,
                "primary": False,
                "wanIp": eip.public_ip if eip else "",
                "eipId": eip.eip_id if eip else "",
                "description": "",
                "isWanIpBlocked": False,
            }
        )
    return {
        "vpcId": eni.vpc_id,
        "subnetId": eni.subnet.subnet_id,
        "zoneId": eni.subnet.zone,
        "eniName": "",
        "eniDescription": "",
        "networkInterfaceId": eni.eni_id,
        "primary": False,
        "macAddress": eni.mac,
        "privateIpAddressesSet": addresses,
        "instanceSet": {},
        "groupSet": [],
    }
