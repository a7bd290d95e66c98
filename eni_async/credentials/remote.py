"""Temporary credentials over the network: the CVM instance metadata service, STS and tccli's login service.

Every exchange goes through ``eni_async.transport.exchange`` (one request on a short-lived session: renewals
come minutes or hours apart), with the proxy and TLS rules of the client. Paths, actions, versions and answers
follow the official Python SDK's ``tencentcloud/common/credential.py``: ``CVMRoleCredential`` (``GET
/latest/meta-data/cam/security-credentials/`` for the role name, then ``.../<role>`` for ``TmpSecretId``/
``TmpSecretKey``/``Token``/``ExpiredTime`` with ``Code: Success``), ``OIDCRoleArnCredential`` (STS
``AssumeRoleWithWebIdentity``, version 2018-08-13, unsigned: ``Authorization: SKIP``) and
``STSAssumeRoleCredential`` (STS ``AssumeRole`` signed with the base credentials, region ``ap-guangzhou``);
STS ``GetCallerIdentity`` says who a key is. tccli's ``oauth.py`` and ``sso.py`` renew its login keys at
``https://cli.cloud.tencent.com`` (``/refresh_user_token``, ``/get_temp_cred``; ``/api/org/gen_saml_response``,
``/api/sts/assume_role_with_saml``), answering plain JSON with ``Error`` on failure. Only the hosts can change
(settings). Every failure, an error answer of STS included, is a ``CredentialError`` (an ``AuthError``: the
work stops, since every later call would fail too) carrying STS's code; ``Unreachable`` when nothing answered
at all. No secret is ever put in a message.
"""

from __future__ import annotations

import json
import ssl as ssl_module
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from eni_async import signing, transport
from eni_async.clock import Clock
from eni_async.credentials.refresh import CredentialError
from eni_async.errors import ConnectError, TransportError
from eni_async.models import Credentials, HttpRequest

METADATA_ENDPOINT = "http://metadata.tencentyun.com"
ROLE_PATH = "/latest/meta-data/cam/security-credentials/"
STS_ENDPOINT = "https://sts.tencentcloudapi.com"
STS_VERSION = "2018-08-13"
STS_SERVICE = "sts"
STS_REGION = "ap-guangzhou"  # STSAssumeRoleCredential._region
DURATION_SECONDS = 7200  # the SDK's default DurationSeconds for both STS exchanges
LOGIN_ENDPOINT = "https://cli.cloud.tencent.com"  # tccli's oauth.py and sso.py _API_ENDPOINT
# Off a CVM the metadata host does not answer: a short probe keeps the chain quick there.
METADATA_TIMEOUT = aiohttp.ClientTimeout(total=2.0, sock_connect=1.0)
MAX_ANSWER = 64 * 1024


class Unreachable(CredentialError):
    """The service could not be reached at all (not on a CVM, no route): the chain moves on."""


@dataclass(frozen=True)
class Network:
    """How to reach a credential service: timeout, proxy and TLS (the client's rules, per endpoint)."""

    timeout: aiohttp.ClientTimeout = METADATA_TIMEOUT
    proxy: str | None = None
    ssl: bool | ssl_module.SSLContext = True


async def _send(
    method: str,
    url: str,
    *,
    service: str,
    network: Network,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    what = f"{service} at {urlsplit(url).netloc}"
    request = HttpRequest(service, method, url, headers or {}, body)
    try:
        answer = await transport.exchange(
            request, timeout=network.timeout, proxy=network.proxy, ssl=network.ssl, max_body=MAX_ANSWER
        )
    except ConnectError as exc:
        raise Unreachable(f"{what}: {_cause(exc)}") from None
    except TransportError as exc:
        raise CredentialError(f"{what}: no answer ({_cause(exc)})") from None
    return answer.status, answer.body


def _cause(exc: TransportError) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


async def metadata_role_name(endpoint: str) -> str | None:
    """The CVM's role name, or ``None`` when the instance has none (404 or an empty answer).

    Raises ``Unreachable`` when there is no metadata service (not a CVM), ``CredentialError`` on a bad answer.
    """
    status, data = await _send(
        "GET", endpoint.rstrip("/") + ROLE_PATH, service="metadata service", network=Network()
    )
    if status == 404:
        return None
    if status != 200:
        raise CredentialError(f"metadata service: HTTP {status} for the role name")
    lines = data.decode("utf-8", "replace").split()
    return lines[0] if lines else None


async def metadata_credentials(endpoint: str, role: str) -> Credentials:
    """The role's temporary credentials (``CVMRoleCredential.update_credential``)."""
    url = endpoint.rstrip("/") + ROLE_PATH + quote(role, safe="")
    status, data = await _send("GET", url, service="metadata service", network=Network())
    if status != 200:
        raise CredentialError(f"metadata service: HTTP {status} for role {role}")
    answer = _json(data, "metadata service")
    if answer.get("Code") != "Success":
        raise CredentialError(f"metadata service: role {role} answered Code {answer.get('Code')!r}")
    return _temporary(answer, answer.get("ExpiredTime"), "metadata service")


async def sts_call(
    endpoint: str,
    action: str,
    params: dict[str, Any],
    *,
    region: str,
    clock: Clock,
    base: Credentials | None = None,
    network: Network,
) -> dict[str, Any]:
    """One STS call; its ``Response``. Signed with ``base`` (TC3), else ``SKIP``; an error answer is a
    ``CredentialError`` with STS's code."""
    host = urlsplit(endpoint).netloc
    body = json.dumps(params, separators=(",", ":")).encode("utf-8")
    timestamp = int(clock.time())
    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": STS_VERSION,
        "X-TC-Region": region,
    }
    if base is None:
        headers["Authorization"] = "SKIP"
    else:
        headers["Authorization"] = signing.tc3_authorization(
            base.secret_id,
            base.secret_key,
            method="POST",
            query="",
            headers={"content-type": headers["Content-Type"], "host": host},
            payload=body,
            timestamp=timestamp,
            service=STS_SERVICE,
        )
        if base.token:
            headers["X-TC-Token"] = base.token
    status, data = await _send(
        "POST",
        endpoint.rstrip("/") + "/",
        service=f"STS {action}",
        network=network,
        headers=headers,
        body=body,
    )
    if status != 200:
        raise CredentialError(f"STS {action}: HTTP {status}")
    response = _json(data, f"STS {action}").get("Response")
    if not isinstance(response, dict):
        raise CredentialError(f"STS {action}: answer without Response")
    error = response.get("Error")
    if isinstance(error, dict):
        request_id = response.get("RequestId")
        raise CredentialError(
            f"STS {action}: {error.get('Message') or 'refused'}",
            code=str(error.get("Code") or "Unknown"),
            request_id=request_id if isinstance(request_id, str) and request_id else None,
        )
    return response


async def sts_credentials(endpoint: str, action: str, params: dict[str, Any], **kwargs: Any) -> Credentials:
    """An STS exchange answering ``Credentials`` and ``ExpiredTime`` (AssumeRole, AssumeRoleWithWebIdentity)."""
    response = await sts_call(endpoint, action, params, **kwargs)
    credentials = response.get("Credentials")
    if not isinstance(credentials, dict):
        raise CredentialError(f"STS {action}: answer without Credentials")
    return _temporary(credentials, response.get("ExpiredTime"), f"STS {action}")


@dataclass(frozen=True)
class CallerIdentity:
    """Who the API says a key is (STS ``GetCallerIdentity``)."""

    arn: str
    account_id: str
    user_id: str
    principal_id: str
    type: str

    @property
    def sub_account(self) -> str:
        """Whose rate limits the key spends: a user's UIN; for a role (``roleId:roleSessionName``), the role,
        whatever the session; ``PrincipalId`` when ``UserId`` is empty."""
        return self.user_id.partition(":")[0] or self.principal_id

    def as_json(self) -> dict[str, str]:
        """The fields as GetCallerIdentity names them."""
        return {
            "Arn": self.arn,
            "AccountId": self.account_id,
            "UserId": self.user_id,
            "PrincipalId": self.principal_id,
            "Type": self.type,
        }


async def caller_identity(
    endpoint: str, credentials: Credentials, *, clock: Clock, network: Network
) -> CallerIdentity:
    """Ask STS who ``credentials`` are."""
    response = await sts_call(
        endpoint, "GetCallerIdentity", {}, region=STS_REGION, clock=clock, base=credentials, network=network
    )
    fields = [response.get(k) for k in ("Arn", "AccountId", "UserId", "PrincipalId", "Type")]
    if not all(isinstance(v, str) for v in fields[:4]) or not (fields[2] or fields[3]):
        raise CredentialError("STS GetCallerIdentity: answer lacks Arn, AccountId, UserId or PrincipalId")
    return CallerIdentity(*(str(v or "") for v in fields))


async def login_call(endpoint: str, path: str, body: dict[str, Any], *, network: Network) -> dict[str, Any]:
    """One call to tccli's login service (a JSON POST with a ``TraceId``); ``Error`` is a ``CredentialError``."""
    payload = json.dumps({"TraceId": str(uuid.uuid4()), **body}).encode("utf-8")
    status, data = await _send(
        "POST",
        endpoint.rstrip("/") + path,
        service=f"tccli login service {path}",
        network=network,
        headers={"Content-Type": "application/json"},
        body=payload,
    )
    if status != 200:
        raise CredentialError(f"tccli login service {path}: HTTP {status}")
    answer = _json(data, f"tccli login service {path}")
    error = answer.get("Error")
    if error is not None:
        code = str(error.get("Code") or "Unknown") if isinstance(error, dict) else "Unknown"
        message = str(error.get("Message") or "") if isinstance(error, dict) else ""
        raise CredentialError(f"tccli login service {path}: {message or 'refused'}", code=code)
    return answer


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        raise CredentialError(f"{what}: answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialError(f"{what}: answer is not a JSON object")
    return answer


def _temporary(fields: dict[str, Any], expired_time: object, what: str) -> Credentials:
    secret_id, secret_key, token = (fields.get(k) for k in ("TmpSecretId", "TmpSecretKey", "Token"))
    if not all(isinstance(v, str) and v for v in (secret_id, secret_key, token)):
        raise CredentialError(f"{what}: answer lacks TmpSecretId, TmpSecretKey or Token")
    if isinstance(expired_time, bool) or not isinstance(expired_time, int | float):
        raise CredentialError(f"{what}: answer lacks a numeric ExpiredTime")
    return Credentials(str(secret_id), str(secret_key), str(token), float(expired_time))
