"""Role credentials in the simulator: the key ring, the CVM metadata service and STS, at Tencent's own paths.

``KeyRing`` holds the permanent key pairs and every temporary one issued; it is the ``Mapping`` of SecretId to
SecretKey the front ends verify signatures with, and ``check_token`` refuses a temporary SecretId whose token
is wrong or expired (``Reason.TOKEN``: API 3.0 ``AuthFailure.TokenFailure``, API 2.0 4100 naming the token).
The metadata service answers ``GET /latest/meta-data/cam/security-credentials/`` with the role name and
``.../<role>`` with ``TmpSecretId``, ``TmpSecretKey``, ``Token``, ``ExpiredTime``, ``Expiration`` and
``Code: Success`` (as the official SDK's ``CVMRoleCredential`` reads it). STS (``POST /`` with ``X-TC-Action``
``AssumeRoleWithWebIdentity``, unsigned, or ``AssumeRole``, TC3-signed for service ``sts``; version
2018-08-13) answers ``Credentials {TmpSecretId, TmpSecretKey, Token}``, ``ExpiredTime`` and ``Expiration``.
Lifetimes are ``min(DurationSeconds, the configured lifetime)``. Nothing here awaits but reading a body.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from eni_async.clock import Clock
from eni_async.simulator.rejects import Reason, Reject

ROLE_PATH = "/latest/meta-data/cam/security-credentials/"
STS_VERSION = "2018-08-13"
STS_SERVICE = "sts"
STS_ACTIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRole"})
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class TemporaryKey:
    """One issued temporary key pair: its key, its token and when it stops being accepted (epoch s)."""

    secret_key: str
    token: str
    expires_at: float


class KeyRing(Mapping[str, str]):
    """Permanent key pairs plus the temporary ones issued so far, by SecretId."""

    def __init__(self, permanent: Mapping[str, str], clock: Clock, *, seed: int = 0) -> None:
        self._permanent = dict(permanent)
        self._temporary: dict[str, TemporaryKey] = {}
        self._clock = clock
        self._rng = random.Random(f"temporary-keys:{seed}")

    def __repr__(self) -> str:
        return f"KeyRing(permanent={len(self._permanent)}, temporary={len(self._temporary)})"

    def __getitem__(self, secret_id: str) -> str:
        if secret_id in self._permanent:
            return self._permanent[secret_id]
        return self._temporary[secret_id].secret_key

    def __iter__(self) -> Iterator[str]:
        yield from self._permanent
        yield from self._temporary

    def __len__(self) -> int:
        return len(self._permanent) + len(self._temporary)

    def issue(self, lifetime: float) -> dict[str, Any]:
        """Issue a temporary key pair valid for ``lifetime`` seconds; return it as Tencent writes it."""
        draw = self._rng.choices
        secret_id = "AKID" + "".join(draw(_ALNUM, k=32))
        secret_key, token = "".join(draw(_ALNUM, k=32)), "".join(draw(_ALNUM, k=96))
        expires = int(self._clock.time() + lifetime)
        self._temporary[secret_id] = TemporaryKey(secret_key, token, float(expires))
        return {
            "TmpSecretId": secret_id,
            "TmpSecretKey": secret_key,
            "Token": token,
            "ExpiredTime": expires,
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        }

    def check_token(self, secret_id: str, token: str | None) -> None:
        """Refuse a temporary SecretId without its token, with another token, or after it expired."""
        issued = self._temporary.get(secret_id)
        if issued is None:
            return  # a permanent key: Tencent ignores a token it does not need
        if not token or token != issued.token:
            raise Reject(Reason.TOKEN, "the token is invalid for this SecretId")
        if self._clock.time() >= issued.expires_at:
            raise Reject(Reason.TOKEN, f"the token expired at {issued.expires_at:.0f}")


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
        return _json({**self._keys.issue(self._lifetime), "Code": "Success"})


class StsService:
    """STS ``AssumeRoleWithWebIdentity`` and ``AssumeRole``; ``verify`` checks a TC3 signature for ``sts``."""

    def __init__(
        self,
        keys: KeyRing,
        lifetime: float,
        verify: Callable[[web.Request, bytes, str], str],
        new_request_id: Callable[[], str],
    ) -> None:
        self._keys = keys
        self._lifetime = lifetime
        self._verify = verify
        self._new_request_id = new_request_id
        self.calls: dict[str, int] = {action: 0 for action in STS_ACTIONS}

    async def handle(self, request: web.Request, action: str) -> web.Response:
        """Answer one STS call in the API 3.0 envelope."""
        body = await request.read()
        request_id = self._new_request_id()
        try:
            if request.headers.get("X-TC-Version") != STS_VERSION:
                raise Reject(Reason.NO_SUCH_VERSION, f"sts version must be {STS_VERSION}")
            params = json.loads(body or b"{}")
            if not isinstance(params, dict):
                raise Reject(Reason.MALFORMED, "the request body must be a JSON object")
            if action == "AssumeRole":
                self._verify(request, body, STS_SERVICE)  # signature, token and timestamp
                needed: tuple[str, ...] = ("RoleArn", "RoleSessionName")
            else:
                needed = ("ProviderId", "WebIdentityToken", "RoleArn", "RoleSessionName")
            for name in needed:
                if not isinstance(params.get(name), str) or not params[name]:
                    raise Reject(Reason.MISSING, f"missing required parameter {name}")
            duration = params.get("DurationSeconds", 7200)
            if isinstance(duration, bool) or not isinstance(duration, int) or not 0 < duration <= 43200:
                raise Reject(Reason.OUT_OF_RANGE, "DurationSeconds must be between 1 and 43200")
        except ValueError:
            return _json(_error("InvalidParameterValue.Malformed", "body is not JSON", request_id))
        except Reject as exc:
            return _json(_error(STS_CODES[exc.reason], exc.message, request_id))
        self.calls[action] += 1
        issued = self._keys.issue(min(float(duration), self._lifetime))
        credentials = {k: issued[k] for k in ("Token", "TmpSecretId", "TmpSecretKey")}
        answer = {"ExpiredTime": issued["ExpiredTime"], "Expiration": issued["Expiration"]}
        return _json({"Response": {"Credentials": credentials, **answer, "RequestId": request_id}})


def _error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}


STS_CODES: Mapping[Reason, str] = {
    Reason.MISSING: "MissingParameter",
    Reason.MALFORMED: "InvalidParameterValue.Malformed",
    Reason.OUT_OF_RANGE: "InvalidParameterValue",
    Reason.NO_SUCH_VERSION: "NoSuchVersion",
    Reason.SIGNATURE: "AuthFailure.SignatureFailure",
    Reason.BAD_AUTHORIZATION: "AuthFailure.InvalidAuthorization",
    Reason.SECRET_ID_NOT_FOUND: "AuthFailure.SecretIdNotFound",
    Reason.EXPIRED: "AuthFailure.SignatureExpire",
    Reason.TOKEN: "AuthFailure.TokenFailure",
}
