"""Role credentials in the simulator: the CVM metadata service and STS, at Tencent's own paths.

The metadata service answers ``GET /latest/meta-data/cam/security-credentials/`` with the role name and
``.../<role>`` with ``TmpSecretId``, ``TmpSecretKey``, ``Token``, ``ExpiredTime``, ``Expiration`` and
``Code: Success`` (as the official SDK's ``CVMRoleCredential`` reads it). STS (``POST /`` with ``X-TC-Action``,
version 2018-08-13) serves ``AssumeRoleWithWebIdentity`` (unsigned), ``AssumeRole`` and ``GetCallerIdentity``
(TC3-signed for service ``sts``), answering in STS's own codes (``STS_CODES``): a web identity token that is
not a JWT, or whose ``exp`` has passed, is ``InvalidParameter.WebIdentityTokenError``; a role the account does
not hold (``SimulatorConfig.roles``; ``None``: every well-formed role ARN exists) is
``ResourceNotFound.RoleNotFound``; a bad ``DurationSeconds`` is ``InvalidParameter.OverTimeError``. Lifetimes
are ``min(DurationSeconds, the configured lifetime)``. Nothing here awaits but reading a body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from eni_async.simulator.keys import ACCOUNT_UIN, KeyRing, role_identity
from eni_async.simulator.rejects import Reason, Reject

ROLE_PATH = "/latest/meta-data/cam/security-credentials/"
STS_VERSION = "2018-08-13"
STS_SERVICE = "sts"
STS_ACTIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRole", "GetCallerIdentity"})
ROLE_ARN = re.compile(r"qcs::cam::uin/(?P<uin>\d+):roleName/(?P<role>[\w+=,.@-]{1,128})")
# The session name Tencent gives a CVM role's keys is not documented; the simulator names the instance.
CVM_SESSION = "ins-simulated"


def _json(body: Any, status: int = 200) -> web.Response:
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return web.Response(body=data, status=status, headers={"Content-Type": "application/json"})


class MetadataService:
    """The CVM instance metadata service's role endpoints, for one role (none when ``role`` is empty)."""

    def __init__(self, keys: KeyRing, role: str, lifetime: float) -> None:
        self._keys = keys
        self._role = role
        self._lifetime = lifetime
        self.issued = 0

    def add_routes(self, app: web.Application) -> None:
        """Serve the two paths on ``app``."""
        app.router.add_route("GET", ROLE_PATH, self._role_name)
        app.router.add_route("GET", ROLE_PATH + "{role}", self._credentials)

    async def _role_name(self, request: web.Request) -> web.Response:
        if not self._role:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=self._role)

    async def _credentials(self, request: web.Request) -> web.Response:
        if not self._role or request.match_info["role"] != self._role:
            return web.Response(status=404, text="Not Found")
        self.issued += 1
        who = role_identity(self._role, CVM_SESSION, ACCOUNT_UIN)
        return _json({**self._keys.issue(self._lifetime, who), "Code": "Success"})


def check_web_identity_token(token: str, now: float) -> None:
    """A JWT (three base64url parts) whose payload, when it states ``exp``, has not expired."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise Reject(Reason.WEB_IDENTITY_TOKEN, "the web identity token is not a JWT")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        raise Reject(Reason.WEB_IDENTITY_TOKEN, "the web identity token's payload is not JSON") from None
    expires = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires <= now:
        raise Reject(Reason.WEB_IDENTITY_TOKEN, f"the web identity token expired at {expires:.0f}")


class StsService:
    """STS ``AssumeRoleWithWebIdentity``, ``AssumeRole`` and ``GetCallerIdentity``; ``verify`` checks a TC3
    signature for ``sts`` and returns the signing SecretId."""

    def __init__(
        self,
        keys: KeyRing,
        lifetime: float,
        verify: Callable[[web.Request, bytes, str], str],
        new_request_id: Callable[[], str],
        *,
        now: Callable[[], float],
        roles: Collection[str] | None = None,
    ) -> None:
        self._keys = keys
        self._lifetime = lifetime
        self._verify = verify
        self._new_request_id = new_request_id
        self._now = now
        self._roles = None if roles is None else frozenset(roles)
        self.calls: dict[str, int] = {action: 0 for action in STS_ACTIONS}

    async def handle(self, request: web.Request, action: str) -> web.Response:
        """Answer one STS call in the API 3.0 envelope."""
        body = await request.read()
        request_id = self._new_request_id()
        try:
            if request.headers.get("X-TC-Version") != STS_VERSION:
                raise Reject(Reason.NO_SUCH_VERSION, f"sts version must be {STS_VERSION}")
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise Reject(Reason.MALFORMED, "the request body is not JSON") from None
            if not isinstance(params, dict):
                raise Reject(Reason.MALFORMED, "the request body must be a JSON object")
            signer = "" if action == "AssumeRoleWithWebIdentity" else self._verify(request, body, STS_SERVICE)
            if action == "GetCallerIdentity":
                self.calls[action] += 1
                answer = self._keys.identity(signer).answer()
                return _json({"Response": {**answer, "RequestId": request_id}})
            issued = self._exchange(action, params, signer)
        except Reject as exc:
            return _json(_error(STS_CODES[exc.reason], exc.message, request_id))
        self.calls[action] += 1
        credentials = {k: issued[k] for k in ("Token", "TmpSecretId", "TmpSecretKey")}
        answer = {"ExpiredTime": issued["ExpiredTime"], "Expiration": issued["Expiration"]}
        return _json({"Response": {"Credentials": credentials, **answer, "RequestId": request_id}})

    def _exchange(self, action: str, params: Mapping[str, Any], signer: str) -> dict[str, Any]:
        """Check an AssumeRole* call's parameters and issue the role's keys."""
        needed: tuple[str, ...] = ("RoleArn", "RoleSessionName")
        if action == "AssumeRoleWithWebIdentity":
            needed = ("ProviderId", "WebIdentityToken", *needed)
        for name in needed:
            if not isinstance(params.get(name), str) or not params[name]:
                raise Reject(Reason.MISSING, f"missing required parameter {name}")
        duration = params.get("DurationSeconds", 7200)
        if isinstance(duration, bool) or not isinstance(duration, int) or not 0 < duration <= 43200:
            raise Reject(Reason.OUT_OF_RANGE, "DurationSeconds must be between 1 and 43200")
        if action == "AssumeRoleWithWebIdentity":
            check_web_identity_token(params["WebIdentityToken"], self._now())
        arn = ROLE_ARN.fullmatch(params["RoleArn"])
        if arn is None:
            raise Reject(Reason.MALFORMED, f"RoleArn {params['RoleArn'][:200]!r} is not a role ARN")
        if self._roles is not None and arn["role"] not in self._roles:
            raise Reject(Reason.ROLE_NOT_FOUND, f"the account has no role {arn['role']}")
        principal = self._keys.identity(signer).sub_account if signer else ACCOUNT_UIN
        who = role_identity(arn["role"], params["RoleSessionName"], principal)
        return self._keys.issue(min(float(duration), self._lifetime), who)


def _error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}


# STS's own codes (its SDK's errorcodes.py) where it has one, the common codes otherwise.
STS_CODES: Mapping[Reason, str] = {
    Reason.MISSING: "MissingParameter",
    Reason.MALFORMED: "InvalidParameter.ParamError",
    Reason.OUT_OF_RANGE: "InvalidParameter.OverTimeError",
    Reason.WEB_IDENTITY_TOKEN: "InvalidParameter.WebIdentityTokenError",
    Reason.ROLE_NOT_FOUND: "ResourceNotFound.RoleNotFound",
    Reason.NO_SUCH_VERSION: "NoSuchVersion",
    Reason.SIGNATURE: "AuthFailure.SignatureFailure",
    Reason.BAD_AUTHORIZATION: "AuthFailure.InvalidAuthorization",
    Reason.SECRET_ID_NOT_FOUND: "AuthFailure.SecretIdNotFound",
    Reason.EXPIRED: "AuthFailure.SignatureExpire",
    Reason.TOKEN: "AuthFailure.TokenFailure",
}
