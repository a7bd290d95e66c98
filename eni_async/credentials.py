"""Credentials, read the way Tencent's own tools read them, and never shown.

Order: ``TENCENTCLOUD_SECRET_ID`` / ``TENCENTCLOUD_SECRET_KEY`` (and ``TENCENTCLOUD_TOKEN`` or
``TENCENTCLOUD_SECURITY_TOKEN``) from the environment; else the profile (``[default]`` unless named) of
``~/.tencentcloud/credentials`` with keys ``secret_id``, ``secret_key`` and optional ``token``.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

from eni_async.errors import ConfigError
from eni_async.models import Credentials

CREDENTIALS_FILE = Path("~/.tencentcloud/credentials")


def load_credentials(
    profile: str = "default",
    *,
    environ: Mapping[str, str] = os.environ,
    file: Path | None = None,
) -> Credentials:
    """Return the credentials from the environment or the credentials file, or raise ``ConfigError``."""
    secret_id = environ.get("TENCENTCLOUD_SECRET_ID", "")
    secret_key = environ.get("TENCENTCLOUD_SECRET_KEY", "")
    token = environ.get("TENCENTCLOUD_TOKEN") or environ.get("TENCENTCLOUD_SECURITY_TOKEN") or None
    if secret_id or secret_key:
        if not (secret_id and secret_key):
            missing = "TENCENTCLOUD_SECRET_KEY" if secret_id else "TENCENTCLOUD_SECRET_ID"
            raise ConfigError(missing, "", "is not set while its pair is")
        return _checked(Credentials(secret_id, secret_key, token), "the environment")
    path = (file or CREDENTIALS_FILE).expanduser()
    if not path.is_file():
        raise ConfigError(
            "credentials",
            str(path),
            "no TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY in the environment and no credentials file",
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("credentials", str(path), f"unreadable ({type(exc).__name__})") from None
    if not parser.has_section(profile):
        raise ConfigError("profile", profile, f"no such section in {path}")
    section = parser[profile]
    secret_id, secret_key = section.get("secret_id", ""), section.get("secret_key", "")
    if not secret_id or not secret_key:
        raise ConfigError(f"{path} [{profile}]", "", "needs both secret_id and secret_key")
    return _checked(Credentials(secret_id, secret_key, section.get("token") or None), f"{path} [{profile}]")


def _checked(credentials: Credentials, where: str) -> Credentials:
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
