"""The simulator's key ring: permanent and temporary key pairs, and who each one is (``GetCallerIdentity``).

``KeyRing`` is the ``Mapping`` of SecretId to SecretKey the front ends verify signatures with; ``check_token``
refuses a temporary SecretId whose token is missing, wrong or expired (``Reason.TOKEN``: API 3.0
``AuthFailure.TokenFailure``, API 2.0 4105). ``identity`` answers what STS ``GetCallerIdentity`` answers for a
SecretId, and ``sub_account`` the part of it Tencent counts rate limits by (docs/protocol.md D21, D29): a
permanent key belongs to the sub-account ``accounts`` names for it (by default each key is its own), a
temporary one to the role it was issued for, whatever its session. UINs are drawn from names by a digest, so a
name always has the same UIN and a test can predict it. Nothing here performs I/O.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eni_async.clock import Clock
from eni_async.simulator.rejects import Reason, Reject

# The simulated main account (the owner of every sub-account and role).
ACCOUNT_UIN = "100000000001"
_ALNUM = string.ascii_letters + string.digits


def uin_of(name: str) -> str:
    """A stable 12-digit UIN for a sub-account name (or a SecretId that is its own sub-account)."""
    digest = int.from_bytes(hashlib.sha256(f"uin:{name}".encode()).digest()[:8], "big")
    return str(100_000_000_000 + digest % 900_000_000_000)


def role_id_of(role: str) -> str:
    """A stable role id for a role name (Tencent's role ids are 4611686... numbers)."""
    digest = int.from_bytes(hashlib.sha256(f"role:{role}".encode()).digest()[:8], "big")
    return f"4611686{digest % 10**12:012d}"


@dataclass(frozen=True)
class Identity:
    """Who a key is, as STS ``GetCallerIdentity`` answers it. Written here, not shared with the client's
    ``CallerIdentity``, so that a client misreading the answer fails its tests."""

    arn: str
    account_id: str
    user_id: str
    principal_id: str
    type: str

    @property
    def sub_account(self) -> str:
        """What rate limits are counted by: the user's UIN, or a role's id (every session of it)."""
        return self.user_id.partition(":")[0]

    def answer(self) -> dict[str, str]:
        """The ``GetCallerIdentity`` fields."""
        return {
            "Arn": self.arn,
            "AccountId": self.account_id,
            "UserId": self.user_id,
            "PrincipalId": self.principal_id,
            "Type": self.type,
        }


def user_identity(name: str) -> Identity:
    """The identity of a sub-account user named ``name``."""
    uin = uin_of(name)
    return Identity(f"qcs::cam::uin/{ACCOUNT_UIN}:uin/{uin}", ACCOUNT_UIN, uin, uin, "CAMUser")


def role_identity(role: str, session: str, principal: str) -> Identity:
    """The identity of a session of ``role``, obtained by ``principal`` (a UIN)."""
    role_id = role_id_of(role)
    arn = f"qcs::sts:{ACCOUNT_UIN}:assumed-role/{role_id}/{session}"
    return Identity(arn, ACCOUNT_UIN, f"{role_id}:{session}", principal, "CAMRole")


@dataclass(frozen=True)
class TemporaryKey:
    """One issued temporary key pair: its key, its token, when it stops being accepted (epoch s), and who."""

    secret_key: str
    token: str
    expires_at: float
    identity: Identity


class KeyRing(Mapping[str, str]):
    """Permanent key pairs plus the temporary ones issued so far, by SecretId, and who each one is."""

    def __init__(
        self,
        permanent: Mapping[str, str],
        clock: Clock,
        *,
        seed: int = 0,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self._permanent = dict(permanent)
        self._accounts = dict(accounts or {})
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

    def identity(self, secret_id: str) -> Identity:
        """Who ``secret_id`` is: its sub-account's user, or the role session it was issued for."""
        issued = self._temporary.get(secret_id)
        if issued is not None:
            return issued.identity
        return user_identity(self._accounts.get(secret_id, secret_id))

    def sub_account(self, secret_id: str) -> str:
        """The sub-account (or role) whose rate limits ``secret_id`` spends."""
        return self.identity(secret_id).sub_account

    def issue(self, lifetime: float, identity: Identity | None = None) -> dict[str, Any]:
        """Issue a temporary key pair valid for ``lifetime`` seconds; return it as Tencent writes it."""
        draw = self._rng.choices
        secret_id = "AKID" + "".join(draw(_ALNUM, k=32))
        secret_key, token = "".join(draw(_ALNUM, k=32)), "".join(draw(_ALNUM, k=96))
        expires = int(self._clock.time() + lifetime)
        who = identity or role_identity("anonymous", "session", ACCOUNT_UIN)
        self._temporary[secret_id] = TemporaryKey(secret_key, token, float(expires), who)
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
