"""tccli's login service in the simulator: the endpoints that renew ``tccli auth login`` and ``tccli sso login``
keys, at the paths tccli's ``oauth.py`` and ``sso.py`` call on ``cli.cloud.tencent.com``.

``POST /refresh_user_token`` (``RefreshToken``, ``OpenId``, ``Site``) answers a new ``AccessToken`` and its
``ExpiresAt``; ``POST /get_temp_cred`` (``AccessToken``, ``Site``) answers ``SecretId``, ``SecretKey``, ``Token``
and ``ExpiresAt``; ``POST /api/org/gen_saml_response`` (``LoginToken``, ``TargetUin``,
``RoleConfigurationId``...) answers a ``SAMLResponse`` while the SSO login lasts, and ``POST
/api/sts/assume_role_with_saml`` exchanges it for ``TmpSecretId``, ``TmpSecretKey``, ``Token`` and
``ExpiredTime``. Refusals are ``{"Error": {"Code", "Message"}}``. Outside Tencent's paths, ``POST
/_sim/tccli-login`` (``{"type": "oauth"|"sso", "access_lifetime": s, "login_lifetime": s}``) logs in and
answers the ``~/.tccli/<profile>.credential`` file tccli would write. Keys are issued by the key ring, so both
dialects accept them until they expire. Nothing here awaits but reading a body.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from eni_async.clock import Clock
from eni_async.simulator.keys import ACCOUNT_UIN, KeyRing, role_identity, user_identity

_ALNUM = string.ascii_letters + string.digits
LOGIN_PATHS = (
    "/refresh_user_token",
    "/get_temp_cred",
    "/api/org/gen_saml_response",
    "/api/sts/assume_role_with_saml",
)


@dataclass
class _Token:
    owner: str
    expires_at: float


def _json(body: Any) -> web.Response:
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return web.Response(body=data, headers={"Content-Type": "application/json"})


class Refused(Exception):
    """A login call refused: its code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LoginService:
    """OAuth and SSO logins and their renewals; ``lifetime`` bounds every key pair issued."""

    def __init__(self, keys: KeyRing, clock: Clock, lifetime: float, *, seed: int = 0) -> None:
        self._keys = keys
        self._clock = clock
        self._lifetime = lifetime
        self._rng = random.Random(f"login:{seed}")
        self._refresh: dict[str, str] = {}  # open id -> refresh token
        self._access: dict[str, _Token] = {}  # access token -> open id
        self._sso: dict[str, _Token] = {}  # SSO login token -> uin
        self._saml: dict[str, str] = {}  # one-use SAML response -> uin
        self.calls: dict[str, int] = dict.fromkeys(LOGIN_PATHS, 0)

    def add_routes(self, app: web.Application) -> None:
        """Serve the login paths and the test seam on ``app``."""
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "/refresh_user_token": self._refresh_user_token,
            "/get_temp_cred": self._get_temp_cred,
            "/api/org/gen_saml_response": self._gen_saml_response,
            "/api/sts/assume_role_with_saml": self._assume_role_with_saml,
        }
        for path, handler in handlers.items():
            app.router.add_route("POST", path, self._serving(path, handler))
        app.router.add_route("POST", "/_sim/tccli-login", self._login)

    def _serving(
        self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.Response:
            self.calls[path] += 1
            try:
                body = json.loads(await request.read() or b"{}")
                if not isinstance(body, dict):
                    raise Refused("InvalidParameter", "the body must be a JSON object")
                return _json(handler(body))
            except ValueError:
                return _json({"Error": {"Code": "InvalidParameter", "Message": "the body is not JSON"}})
            except Refused as exc:
                return _json({"Error": {"Code": exc.code, "Message": exc.message}})

        return serve

    def _draw(self, k: int) -> str:
        return "".join(self._rng.choices(_ALNUM, k=k))

    def _valid(self, table: dict[str, _Token], token: object, what: str) -> str:
        found = table.get(token) if isinstance(token, str) else None
        if found is None:
            raise Refused("AuthFailure.TokenFailure", f"the {what} is invalid")
        if self._clock.time() >= found.expires_at:
            raise Refused("AuthFailure.TokenExpired", f"the {what} expired at {found.expires_at:.0f}")
        return found.owner

    def _new_access(self, open_id: str, lifetime: float) -> tuple[str, int]:
        token = self._draw(48)
        expires = int(self._clock.time() + lifetime)
        self._access[token] = _Token(open_id, expires)
        return token, expires

    def _refresh_user_token(self, body: dict[str, Any]) -> dict[str, Any]:
        open_id = body.get("OpenId")
        if not isinstance(open_id, str) or self._refresh.get(open_id) != body.get("RefreshToken"):
            raise Refused("AuthFailure.TokenFailure", "the refresh token is invalid")
        token, expires = self._new_access(open_id, 7200.0)
        return {"AccessToken": token, "ExpiresAt": expires}

    def _get_temp_cred(self, body: dict[str, Any]) -> dict[str, Any]:
        open_id = self._valid(self._access, body.get("AccessToken"), "access token")
        issued = self._keys.issue(self._lifetime, user_identity(f"oauth:{open_id}"))
        return {
            "SecretId": issued["TmpSecretId"],
            "SecretKey": issued["TmpSecretKey"],
            "Token": issued["Token"],
            "ExpiresAt": issued["ExpiredTime"],
        }

    def _gen_saml_response(self, body: dict[str, Any]) -> dict[str, Any]:
        uin = self._valid(self._sso, body.get("LoginToken"), "SSO login")
        if body.get("TargetUin") != uin or not body.get("RoleConfigurationId"):
            raise Refused("InvalidParameter", "TargetUin or RoleConfigurationId does not match the login")
        saml = self._draw(64)
        self._saml[saml] = uin
        return {"SAMLResponse": saml}

    def _assume_role_with_saml(self, body: dict[str, Any]) -> dict[str, Any]:
        uin = self._saml.pop(str(body.get("SAMLAssertion")), None)
        role_arn = body.get("RoleArn")
        if uin is None or not isinstance(role_arn, str):
            raise Refused("InvalidParameter.SAMLAssertionError", "the SAML assertion is invalid or used")
        duration = body.get("DurationSeconds", 7200)
        lifetime = min(float(duration) if isinstance(duration, int) else 7200.0, self._lifetime)
        session = str(body.get("RoleSessionName") or "ses")
        issued = self._keys.issue(lifetime, role_identity(role_arn.rpartition("/")[2], session, uin))
        return {k: issued[k] for k in ("TmpSecretId", "TmpSecretKey", "Token", "ExpiredTime")}

    def issue(
        self, kind: str, *, access_lifetime: float = 7200.0, login_lifetime: float = 86400.0
    ) -> dict[str, Any]:
        """Log in as tccli would (``oauth`` or ``sso``) and return the credential file it would write."""
        if kind == "oauth":
            open_id = self._draw(16)
            self._refresh[open_id] = self._draw(48)
            token, expires = self._new_access(open_id, access_lifetime)
            keys = self._get_temp_cred({"AccessToken": token})
            oauth = {"openId": open_id, "accessToken": token, "expiresAt": expires,
                     "refreshToken": self._refresh[open_id], "site": "cn"}  # fmt: skip
            return {"type": "oauth", "secretId": keys["SecretId"], "secretKey": keys["SecretKey"],
                    "token": keys["Token"], "expiresAt": keys["ExpiresAt"], "oauth": oauth}  # fmt: skip
        if kind == "sso":
            token = self._draw(48)
            expires = int(self._clock.time() + login_lifetime)
            self._sso[token] = _Token(ACCOUNT_UIN, expires)
            sso = {"token": token, "uin": ACCOUNT_UIN, "roleConfigurationId": "rc-simulated",
                   "roleConfigurationName": "eni-releaser", "zoneId": "z-simulated", "site": "cn",
                   "loginUrl": "https://simulated.login/", "expiresAt": expires}  # fmt: skip
            saml = self._gen_saml_response({"LoginToken": token, "TargetUin": ACCOUNT_UIN,
                                            "RoleConfigurationId": "rc-simulated"})  # fmt: skip
            arn = f"qcs::cam::uin/{ACCOUNT_UIN}:roleName/TencentCloudSSO-eni-releaser"
            keys = self._assume_role_with_saml(
                {"SAMLAssertion": saml["SAMLResponse"], "RoleArn": arn, "RoleSessionName": "ses-login"}
            )
            return {"type": "sso", "secretId": keys["TmpSecretId"], "secretKey": keys["TmpSecretKey"],
                    "token": keys["Token"], "expiresAt": keys["ExpiredTime"], "sso": sso}  # fmt: skip
        raise ValueError(f"kind must be oauth or sso, not {kind!r}")

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
            kind = body.get("type", "oauth")
            options = {k: float(body[k]) for k in ("access_lifetime", "login_lifetime") if k in body}
            return _json(self.issue(kind, **options))
        except (ValueError, TypeError, AttributeError) as exc:
            return _json({"Error": {"Code": "InvalidParameter", "Message": str(exc)}})
