"""Pure request signing for Tencent Cloud API 2.0 (HmacSHA1/HmacSHA256) and API 3.0 (TC3-HMAC-SHA256).

Nothing here reads the clock, draws a random number or performs I/O: timestamps, nonces and keys are
arguments, so every function is pinned by the official vectors in ``docs/protocol.md`` §3. The same
functions sign for the client and verify for the simulator.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

V2_METHODS = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}
TC3_ALGORITHM = "TC3-HMAC-SHA256"
TC3_SIGNED_HEADERS = ("content-type", "host")


def v2_digest_for(sign_method: str | None) -> str:
    """Return the HMAC name a server applies for a ``SignatureMethod`` value.

    Tencent uses SHA-256 only when the value is exactly ``HmacSHA256``; anything else, or nothing, is SHA-1.
    """
    return "HmacSHA256" if sign_method == "HmacSHA256" else "HmacSHA1"


def v2_string_to_sign(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """Build the API 2.0 string to sign: METHOD + host + path + '?' + sorted raw ``k=v`` pairs."""
    joined = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "Signature")
    return f"{method.upper()}{host}{path}?{joined}"


def v2_signature(secret_key: str, string_to_sign: str, sign_method: str) -> str:
    """Return the Base64 HMAC of ``string_to_sign`` under ``secret_key`` (API 2.0 and signature v1)."""
    digest = V2_METHODS[v2_digest_for(sign_method)]
    mac = hmac.new(secret_key.encode("utf-8"), string_to_sign.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def v2_sign(
    secret_key: str, method: str, host: str, path: str, params: Mapping[str, str], sign_method: str
) -> str:
    """Sign an API 2.0 parameter set; ``params`` excludes ``Signature`` and includes ``SignatureMethod``."""
    return v2_signature(secret_key, v2_string_to_sign(method, host, path, params), sign_method)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256, as TC3 hashes payloads and canonical requests."""
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=8)  # asked for every call; the timestamps of a second share one
def tc3_date(timestamp: int) -> str:
    """The UTC date of ``timestamp`` as TC3's credential scope wants it (never local time)."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def tc3_canonical_request(
    method: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload: bytes,
    *,
    unsigned_payload: bool = False,
) -> str:
    """Build the TC3 CanonicalRequest; ``headers`` is keyed by lower-case name."""
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    hashed = sha256_hex(b"UNSIGNED-PAYLOAD" if unsigned_payload else payload)
    return "\n".join([method.upper(), "/", query, canonical_headers, ";".join(signed_headers), hashed])


def tc3_string_to_sign(canonical_request: str, timestamp: int, service: str) -> str:
    """Build the TC3 StringToSign from a canonical request."""
    return _string_to_sign(canonical_request, timestamp, _tc3_scope(tc3_date(timestamp), service))


def _tc3_scope(date: str, service: str) -> str:
    return f"{date}/{service}/tc3_request"


def _string_to_sign(canonical_request: str, timestamp: int, scope: str) -> str:
    hashed = sha256_hex(canonical_request.encode("utf-8"))
    return f"{TC3_ALGORITHM}\n{timestamp}\n{scope}\n{hashed}"


def tc3_signature(secret_key: str, timestamp: int, service: str, string_to_sign: str) -> str:
    """Derive the TC3 signing key for the date and service and return the hex signature."""
    return _signature(secret_key, tc3_date(timestamp), service, string_to_sign)


def _signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    key = _tc3_signing_key(secret_key, date, service)
    return hmac.digest(key, string_to_sign.encode("utf-8"), "sha256").hex()


@functools.lru_cache(maxsize=16)
def _tc3_signing_key(secret_key: str, date: str, service: str) -> bytes:
    """TC3's signing key, HMAC'd down from the secret key through the date and the service: the same for
    every call of a day, so derived once per (key, day, service) rather than three HMACs per call (the
    cache holds a few keys, never shown: ``lru_cache`` has no repr of its entries)."""
    k_date = hmac.digest(("TC3" + secret_key).encode("utf-8"), date.encode("utf-8"), "sha256")
    k_service = hmac.digest(k_date, service.encode("utf-8"), "sha256")
    return hmac.digest(k_service, b"tc3_request", "sha256")


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    *,
    method: str,
    query: str,
    headers: Mapping[str, str],
    payload: bytes,
    timestamp: int,
    service: str,
    signed_headers: Sequence[str] = TC3_SIGNED_HEADERS,
) -> str:
    """Return the full ``Authorization`` header value for a TC3 request."""
    canonical = tc3_canonical_request(method, query, headers, signed_headers, payload)
    date = tc3_date(timestamp)  # once for the scope, the string to sign and the key
    scope = _tc3_scope(date, service)
    signature = _signature(secret_key, date, service, _string_to_sign(canonical, timestamp, scope))
    return (
        f"{TC3_ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )


def signatures_equal(a: str, b: str) -> bool:
    """Compare two signatures in constant time."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
