"""Temporary credentials over the network: the CVM instance metadata service and STS, over aiohttp.

Each function opens a short-lived aiohttp session (renewals come minutes or hours apart) and never blocks the
event loop. Paths, actions, versions and answers follow the official Python SDK's
``tencentcloud/common/credential.py``: ``CVMRoleCredential`` (``GET /latest/meta-data/cam/security-
credentials/`` for the role name, then ``.../<role>`` for ``TmpSecretId``/``TmpSecretKey``/``Token``/
``ExpiredTime`` with ``Code: Success``), ``OIDCRoleArnCredential`` (STS ``AssumeRoleWithWebIdentity``,
version 2018-08-13, unsigned: ``Authorization: SKIP``) and ``STSAssumeRoleCredential`` (STS ``AssumeRole``
signed with the base credentials, region ``ap-guangzhou``). Only the host can change (settings). A bad
answer is a ``CredentialError``; an STS error answer is the typed ``ApiError`` for its code. No secret is
ever put in a message.
"""

from __future__ import annotations

import json
import ssl as ssl_module
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from eni_async import signing
from eni_async.clock import Clock
from eni_async.credentials.refresh import CredentialError
from eni_async.errors import api_error
from eni_async.models import Credentials

METADATA_ENDPOINT = "http://metadata.tencentyun.com"
ROLE_PATH = "/latest/meta-data/cam/security-credentials/"
STS_ENDPOINT = "https://sts.tencentcloudapi.com"
STS_VERSION = "2018-08-13"
STS_SERVICE = "sts"
STS_REGION = "ap-guangzhou"  # STSAssumeRoleCredential._region
DURATION_SECONDS = 7200  # the SDK's default DurationSeconds for both STS exchanges
# Off a CVM the metadata host does not answer: a short probe keeps the chain quick there.
METADATA_TIMEOUT = aiohttp.ClientTimeout(total=2.0, sock_connect=1.0)
MAX_ANSWER = 64 * 1024


class Unreachable(CredentialError):
    """The service could not be reached at all (not on a CVM, no route): the chain moves on."""


async def _exchange(
    method: str,
    url: str,
    *,
    service: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: aiohttp.ClientTimeout,
    proxy: str | None = None,
    ssl: bool | ssl_module.SSLContext = True,
) -> tuple[int, bytes]:
    what = f"{service} at {urlsplit(url).netloc}"
    try:
        async with (
            aiohttp.ClientSession(trust_env=False, timeout=timeout) as session,
            session.request(
                method, url, headers=headers, data=body, proxy=proxy, ssl=ssl, allow_redirects=False
            ) as response,
        ):
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise CredentialError(f"{what}: answer larger than {MAX_ANSWER} bytes")
                chunks.append(chunk)
            return response.status, b"".join(chunks)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise Unreachable(f"{what}: cannot connect ({type(exc).__name__})") from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise CredentialError(f"{what}: no answer ({type(exc).__name__})") from None


async def metadata_role_name(endpoint: str) -> str | None:
    """The CVM's role name, or ``None`` when the instance has none (404 or an empty answer).

    Raises ``Unreachable`` when there is no metadata service (not a CVM), ``CredentialError`` on a bad answer.
    """
    status, data = await _exchange(
        "GET", endpoint.rstrip("/") + ROLE_PATH, service="metadata service", timeout=METADATA_TIMEOUT
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
    status, data = await _exchange("GET", url, service="metadata service", timeout=METADATA_TIMEOUT)
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
    timeout: aiohttp.ClientTimeout,
    proxy: str | None = None,
    ssl: bool | ssl_module.SSLContext = True,
) -> Credentials:
    """One STS call answering ``Credentials`` and ``ExpiredTime``; signed with ``base`` (TC3), else ``SKIP``."""
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
    status, data = await _exchange(
        "POST",
        endpoint.rstrip("/") + "/",
        service=f"STS {action}",
        headers=headers,
        body=body,
        timeout=timeout,
        proxy=proxy,
        ssl=ssl,
    )
    if status != 200:
        raise CredentialError(f"STS {action}: HTTP {status}")
    response = _json(data, f"STS {action}").get("Response")
    if not isinstance(response, dict):
        raise CredentialError(f"STS {action}: answer without Response")
    error = response.get("Error")
    if isinstance(error, dict):
        raise api_error(
            str(error.get("Code") or "Unknown"),
            str(error.get("Message") or ""),
            action=action,
            request_id=response.get("RequestId"),
        )
    credentials = response.get("Credentials")
    if not isinstance(credentials, dict):
        raise CredentialError(f"STS {action}: answer without Credentials")
    return _temporary(credentials, response.get("ExpiredTime"), f"STS {action}")


def proxy_for(endpoint: str, configured: str) -> str | None:
    """The configured proxy, else the environment's for the endpoint's scheme unless ``NO_PROXY`` covers it."""
    if configured:
        return configured
    parts = urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.netloc):
        return proxy
    return None


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
