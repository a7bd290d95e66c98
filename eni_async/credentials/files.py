"""Credentials that sit in the environment and in files, read the way Tencent's own tools read them.

Nothing here awaits or touches the network: the files are a few hundred bytes, read synchronously. Each
rule names its source in Tencent's code: the official Python SDK's ``tencentcloud/common/credential.py``
(``EnvironmentVariableCredential``, ``ProfileCredential``) and tccli (``tccli/configure.py``,
``tccli/credentials.py``, ``tccli/oauth.py``, ``tccli/sso.py``). The one write is ``save_tccli``: renewed
login keys go back into tccli's file, as tccli puts them there. A value that cannot go into a request is a ``ConfigError`` naming where it came
from; a secret key or token is never shown, not even in that error.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eni_async.errors import ConfigError
from eni_async.models import Credentials

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
# TENCENTCLOUD_TOKEN is tccli's name, TENCENTCLOUD_SECURITY_TOKEN the Go SDK's and Terraform's.
ENV_TOKENS = ("TENCENTCLOUD_TOKEN", "TENCENTCLOUD_SECURITY_TOKEN")
# ProfileCredential: the home file, else the system one; the first that exists is the profile file.
CREDENTIALS_FILE = Path("~/.tencentcloud/credentials")
SYSTEM_CREDENTIALS_FILE = Path("/etc/tencentcloud/credentials")
# tccli keeps each profile in ~/.tccli/<profile>.credential (tccli/credentials.py cred_path_of_profile).
TCCLI_DIR = Path("~/.tccli")


def from_environment(environ: Mapping[str, str]) -> Credentials | None:
    """``TENCENTCLOUD_SECRET_ID``/``_SECRET_KEY`` (and a token), or ``None`` when neither is set.

    The SDK's ``EnvironmentVariableCredential`` yields nothing unless both are non-empty; one without the
    other is surely a mistake, so it is an error here rather than a silent fall-through to the next source.
    """
    secret_id = environ.get(ENV_SECRET_ID, "")
    secret_key = environ.get(ENV_SECRET_KEY, "")
    if not (secret_id or secret_key):
        return None
    if not (secret_id and secret_key):
        missing = ENV_SECRET_KEY if secret_id else ENV_SECRET_ID
        raise ConfigError(missing, "", "is not set while its pair is")
    token = next((environ[name] for name in ENV_TOKENS if environ.get(name)), None)
    return checked(Credentials(secret_id, secret_key, token), "the environment")


def profile_file(files: Sequence[Path]) -> Path | None:
    """The first of ``files`` that exists (``ProfileCredential`` does not look further), or ``None``."""
    for file in files:
        path = file.expanduser()
        if path.exists():
            return path
    return None


def from_profile_file(path: Path, profile: str) -> Credentials | None:
    """The ``[profile]`` section's ``secret_id``/``secret_key``/``token``; ``None`` when there is no such section.

    INI as the SDK's ``ProfileCredential`` reads it (values stripped). ``token`` is our addition, for
    temporary keys written by hand.
    """
    if not path.is_file():
        raise ConfigError("credentials", str(path), "is not a file")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("credentials", str(path), f"unreadable ({type(exc).__name__})") from None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    secret_id = section.get("secret_id", "").strip()
    secret_key = section.get("secret_key", "").strip()
    if not secret_id or not secret_key:
        raise ConfigError(f"{path} [{profile}]", "", "needs both secret_id and secret_key")
    token = section.get("token", "").strip() or None
    return checked(Credentials(secret_id, secret_key, token), f"{path} [{profile}]")


# tccli's credential types: ``tccli configure`` writes keys (``type`` absent or ``default``) or
# ``"type": "cvm-role"`` (``set use-cvm-role true``, leaving any old keys in place); ``tccli auth login`` and
# ``tccli sso login`` write temporary keys with ``expiresAt`` and what renews them (oauth.py, sso.py).
TCCLI_TYPES = ("default", "cvm-role", "oauth", "sso")
LOGIN_FIELDS: Mapping[str, tuple[str, ...]] = {
    "oauth": ("openId", "accessToken", "expiresAt", "refreshToken", "site"),
    "sso": ("token", "uin", "roleConfigurationId", "roleConfigurationName", "zoneId", "site", "expiresAt"),
}


@dataclass(frozen=True)
class TccliProfile:
    """What one ``<profile>.credential`` file says: keys (temporary ones for ``oauth``/``sso``, with what
    renews them), a role to assume with them, the CVM role, a region."""

    path: Path
    credentials: Credentials | None
    role_arn: str = ""
    role_session_name: str = ""
    kind: str = "default"
    region: str = ""
    login: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def cvm_role(self) -> bool:
        """``tccli configure set use-cvm-role true``: the CVM role, whatever keys the file still holds."""
        return self.kind == "cvm-role"


def from_tccli(directory: Path, profile: str) -> TccliProfile | None:
    """Read ``<directory>/<profile>.credential`` as tccli writes it; ``None`` when absent.

    Keys (``tccli/configure.py``, ``cred_list``): ``secretId``, ``secretKey``, ``token``, ``role-arn``,
    ``role-session-name``, ``type``; ``oauth`` and ``sso`` files add ``expiresAt`` and their section. A file
    without keys is read (the environment or a role may supply them); which source wins is the chain's call.
    """
    path = directory.expanduser() / f"{profile}.credential"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("credentials", str(path), f"unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError("credentials", str(path), "expected a JSON object")

    def text(key: str) -> str:
        value = data.get(key) or ""
        if not isinstance(value, str):
            raise ConfigError(f"{path} {key}", "***", "expected a string")
        return value.strip()

    kind = text("type") or "default"
    if kind not in TCCLI_TYPES:
        raise ConfigError(f"{path} type", kind, f"expected one of {', '.join(TCCLI_TYPES)}")
    secret_id, secret_key = text("secretId"), text("secretKey")
    if bool(secret_id) != bool(secret_key):
        raise ConfigError(str(path), "", "needs both secretId and secretKey")
    login: dict[str, Any] = {}
    expires_at: float | None = None
    if kind in LOGIN_FIELDS:
        section = data.get(kind)
        missing = [f for f in LOGIN_FIELDS[kind] if not isinstance(section, dict) or f not in section]
        expiry = data.get("expiresAt")
        if not secret_id or missing or isinstance(expiry, bool) or not isinstance(expiry, int | float):
            what = ", ".join(missing) or ("expiresAt" if secret_id else "secretId, secretKey")
            raise ConfigError(str(path), "", f"a {kind} login file lacking {what}: log in again with tccli")
        assert isinstance(section, dict)  # no field missing means there is a section
        login, expires_at = dict(section), float(expiry)
    credentials = None
    if secret_id:
        credentials = checked(
            Credentials(secret_id, secret_key, text("token") or None, expires_at), str(path)
        )
    return TccliProfile(
        path,
        credentials,
        text("role-arn"),
        text("role-session-name"),
        kind,
        text("region"),
        login,
    )


def save_tccli(path: Path, data: Mapping[str, Any]) -> None:
    """Write a tccli credential file back, as tccli does after renewing its login keys: whole or not at all
    (a temporary file renamed over it), readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=4)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(
            "credentials", str(path), f"cannot write the renewed keys ({exc.strerror})"
        ) from None


def read_token_file(path: str) -> str:
    """The web identity token in ``TKE_WEB_IDENTITY_TOKEN_FILE`` (re-read at each renewal: TKE rotates it)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "TKE_WEB_IDENTITY_TOKEN_FILE", path, f"cannot read ({type(exc).__name__})"
        ) from None
    if not token:
        raise ConfigError("TKE_WEB_IDENTITY_TOKEN_FILE", path, "is empty")
    return token


def load_credentials(
    profile: str = "default",
    *,
    environ: Mapping[str, str] = os.environ,
    file: Path | None = None,
) -> Credentials:
    """The static part of the chain, synchronously: the environment, else the profile file's ``[profile]``.

    Raises ``ConfigError`` when neither holds credentials. Role credentials (CVM, TKE, assumed roles) and
    tccli's files need ``await credential_chain(...)``.
    """
    found = from_environment(environ)
    if found is not None:
        return found
    path = (file or CREDENTIALS_FILE).expanduser()
    if not path.exists():
        raise ConfigError(
            "credentials",
            str(path),
            f"no {ENV_SECRET_ID}/{ENV_SECRET_KEY} in the environment and no credentials file",
        )
    found = from_profile_file(path, profile)
    if found is None:
        raise ConfigError("profile", profile, f"no such section in {path}")
    return found


def checked(credentials: Credentials, where: str) -> Credentials:
    """Refuse values that cannot go into a request (whitespace or control characters), never showing them."""
    for name, value, shown in (
        ("secret_id", credentials.secret_id, credentials.secret_id[:40]),
        ("secret_key", credentials.secret_key, "***"),
        ("token", credentials.token or "", "***"),
    ):
        if (value and not value.isascii()) or any(not c.isprintable() or c.isspace() for c in value):
            raise ConfigError(
                f"{name} from {where}", shown, "contains whitespace, control or non-ASCII characters"
            )
    return credentials
