"""Dialect-neutral reasons why the simulator refuses a call, and the exception that carries one.

The state, limits and front ends raise ``Reject(Reason.X, message)``; each front end (``v2``, ``v3``) owns a
table from ``Reason`` to its own codes, so a reason missing from a table is a loud ``KeyError`` in tests
rather than a silently wrong answer. Nothing here performs I/O.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a call was refused, independent of the API dialect."""

    MISSING = "missing"  # a required parameter is absent or empty
    MALFORMED = "malformed"  # an id, IP or number that does not parse
    TOO_MANY = "too_many"  # more than 10 IPs in one call
    OUT_OF_RANGE = "out_of_range"  # a number outside its allowed range (limit, offset)
    DUPLICATE = "duplicate"  # the same IP twice in one call
    COEXIST = "coexist"  # two parameters that may not be given together
    FILTER_KEY = "filter_key"  # an unknown Filters.N.Name
    VPC_NOT_FOUND = "vpc_not_found"
    ENI_NOT_FOUND = "eni_not_found"
    ENI_ID_UNKNOWN = "eni_id_unknown"  # a describe named an ENI that does not exist, answered as a bad value
    TASK_NOT_FOUND = "task_not_found"
    IP_IS_PRIMARY = "ip_is_primary"
    IP_NOT_ON_ENI = "ip_not_on_eni"
    IP_IN_USE = "ip_in_use"
    IP_OUT_OF_SUBNET = "ip_out_of_subnet"
    IP_QUOTA = "ip_quota"  # the ENI would hold more secondary IPs than its quota
    MUTEX = "mutex"  # a task is RUNNING on the ENI
    THROTTLED = "throttled"
    UNAUTHORIZED = "unauthorized"  # the caller may not act on this resource (a CAM denial, per ENI)
    SIGNATURE = "signature"
    SECRET_ID_NOT_FOUND = "secret_id_not_found"
    BAD_AUTHORIZATION = "bad_authorization"  # an Authorization header that does not parse
    EXPIRED = "expired"  # timestamp outside the replay window
    TOKEN = "token"  # a temporary SecretId whose session token is missing, wrong or expired
    WEB_IDENTITY_TOKEN = "web_identity_token"  # STS: an OIDC token that is malformed or expired
    ROLE_NOT_FOUND = "role_not_found"  # STS: the account has no such role
    NONCE_REUSED = "nonce_reused"
    INVALID_ACTION = "invalid_action"
    NO_SUCH_VERSION = "no_such_version"
    UNSUPPORTED_REGION = "unsupported_region"
    INTERNAL = "internal"


class Reject(Exception):
    """A refused call: a ``Reason`` and a human-readable message. The call had no effect."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")
