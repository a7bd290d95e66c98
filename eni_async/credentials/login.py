"""Keys from ``tccli auth login`` (``type: oauth``) and ``tccli sso login`` (``type: sso``), renewed as tccli
renews them and written back to its file, as tccli writes them.

tccli (``oauth.py``, ``sso.py``, ``maybe_refresh_credential``) renews such keys when they have less than 300 s
left: an OAuth login first renews its access token when that has less than 300 s left too
(``/refresh_user_token`` with the refresh token), then trades it for keys (``/get_temp_cred``); an SSO login
asks for a SAML response with its login token (``/api/org/gen_saml_response``) and exchanges it at STS for the
role ``TencentCloudSSO-<role configuration>`` (``/api/sts/assume_role_with_saml``). An SSO login with less
than 300 s left cannot be renewed ("re-login is required"): that is a ``CredentialError`` naming the command
that logs in again. Where tccli rewrites the file with its own keys only, keys it does not know are kept. Nothing
here decides *when* to renew: ``RefreshingCredentials`` does, on the ``TCCLI_LOGIN`` schedule.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from eni_async.clock import Clock
from eni_async.credentials import files, remote
from eni_async.credentials.refresh import DEFAULT_MARGIN, CredentialError
from eni_async.models import Credentials

# tccli's _ACCESS_REFRESH_SAFE_DUR and _SKEY_REFRESH_SAFE_DUR.
SAFE_SECONDS = DEFAULT_MARGIN
SSO_DURATION = 7200


def login_command(kind: str, profile: str) -> str:
    """The tccli command that logs ``profile`` in again."""
    option = "" if profile == "default" else f" --profile {profile}"
    return f"tccli {'sso' if kind == 'sso' else 'auth'} login{option}"


class TccliLogin:
    """Renews one tccli login file's keys (its ``fetch`` is a ``RefreshingCredentials`` source)."""

    def __init__(
        self, profile: files.TccliProfile, name: str, *, endpoint: str, network: remote.Network, clock: Clock
    ) -> None:
        self.profile = profile
        self.name = name
        self._endpoint = endpoint
        self._network = network
        self._clock = clock

    @property
    def source(self) -> str:
        """Where the keys come from (no secret)."""
        return f"tccli {self.profile.kind} login {self.profile.path}"

    def renewable(self) -> bool:
        """Whether the login itself still lasts long enough to renew the keys (an SSO login cannot be)."""
        if self.profile.kind != "sso":
            return True
        return float(self.profile.login["expiresAt"]) - self._clock.time() >= SAFE_SECONDS

    async def fetch(self) -> Credentials:
        """Renew the keys, write them to tccli's file and return them."""
        if self.profile.kind == "oauth":
            keys, data = await self._oauth()
        else:
            keys, data = await self._sso()
        written = {**_read(self.profile.path), **data}
        files.save_tccli(self.profile.path, written)
        self.profile = replace(self.profile, credentials=keys, login=dict(data[self.profile.kind]))
        return keys

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await remote.login_call(self._endpoint, path, body, network=self._network)

    async def _oauth(self) -> tuple[Credentials, dict[str, Any]]:
        info = dict(self.profile.login)
        if float(info["expiresAt"]) - self._clock.time() < SAFE_SECONDS:
            body = {"RefreshToken": info["refreshToken"], "OpenId": info["openId"], "Site": info["site"]}
            fresh = await self._call("/refresh_user_token", body)
            info |= {
                "accessToken": _field(fresh, "AccessToken", str),
                "expiresAt": _field(fresh, "ExpiresAt"),
            }
        answer = await self._call(
            "/get_temp_cred", {"AccessToken": info["accessToken"], "Site": info["site"]}
        )
        keys = _keys(answer, "SecretId", "SecretKey", "Token", "ExpiresAt")
        return keys, _written("oauth", keys, info)

    async def _sso(self) -> tuple[Credentials, dict[str, Any]]:
        sso = dict(self.profile.login)
        if not self.renewable():
            raise CredentialError(
                f"the SSO login of tccli profile {self.name} ended at {float(sso['expiresAt']):.0f}; "
                f"log in again: {login_command('sso', self.name)}",
                code="LoginExpired",
            )
        saml = await self._call(
            "/api/org/gen_saml_response",
            {"Site": sso["site"], "LoginToken": sso["token"], "LoginType": "RoleSAML", "TargetUin": sso["uin"],
             "UserId": "", "RoleConfigurationId": sso["roleConfigurationId"]},
        )  # fmt: skip
        uin = sso["uin"]
        answer = await self._call(
            "/api/sts/assume_role_with_saml",
            {"Site": sso["site"], "SAMLAssertion": _field(saml, "SAMLResponse", str),
             "PrincipalArn": f"qcs::cam::uin/{uin}:saml-provider/TencentReservedSSO-{sso['zoneId']}",
             "RoleArn": f"qcs::cam::uin/{uin}:roleName/TencentCloudSSO-{sso['roleConfigurationName']}",
             "RoleSessionName": f"ses-{uuid.uuid4()}", "DurationSeconds": SSO_DURATION},
        )  # fmt: skip
        keys = _keys(answer, "TmpSecretId", "TmpSecretKey", "Token", "ExpiredTime")
        # tccli's save_credential reads the SSO login's expiry from STS's answer, which has none: the
        # login's own expiry is kept instead (renewing the keys does not extend the login).
        return keys, _written("sso", keys, sso)


def _keys(answer: dict[str, Any], secret_id: str, secret_key: str, token: str, expiry: str) -> Credentials:
    """Keys from an answer that names them so (``/get_temp_cred`` and STS name them differently)."""
    return Credentials(
        _field(answer, secret_id, str),
        _field(answer, secret_key, str),
        _field(answer, token, str),
        float(_field(answer, expiry)),
    )


def _written(kind: str, keys: Credentials, section: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "secretId": keys.secret_id,
        "secretKey": keys.secret_key,
        "token": keys.token,
        "expiresAt": int(keys.expires_at or 0),
        kind: section,
    }


def _read(path: Path) -> dict[str, Any]:
    """The file as it is now (another tccli may have changed it), to keep what we do not rewrite."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _field(answer: dict[str, Any], name: str, kind: type[Any] = float) -> Any:
    value = answer.get(name)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CredentialError(f"tccli login service: answer lacks a numeric {name}")
        return value
    if not isinstance(value, kind) or not value:
        raise CredentialError(f"tccli login service: answer lacks {name}")
    return value
