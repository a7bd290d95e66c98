"""Which credential source wins: a pure function of what the environment and the files hold, in two orders.

``gather`` reads the environment and the small files (nothing remote); ``choose`` decides. The rules, each
from tccli's ``parse_global_arg`` and its generated clients (``tccli/services/*/..._client.py``) or the
official SDK's ``DefaultCredentialProvider`` (``tencentcloud/common/credential.py``):

- a profile named by ``--profile``, ``ENI_ASYNC_PROFILE``, ``TCCLI_PROFILE`` or the settings file beats the
  environment: ``TENCENTCLOUD_SECRET_ID``/``_KEY``/``_TOKEN`` and ``TENCENTCLOUD_ROLE_ARN``/``_SESSION_NAME``
  are then not read (tccli reads them only without ``--profile``); a named profile no file holds is an error;
- ``"type": "cvm-role"`` in the tccli file means the CVM role, whatever keys the file still holds, unless the
  environment's keys or role replaced the file's (tccli's ``cvm_role_flag``);
- the CVM role comes before an assumed role, and a role is assumed with keys only, never with the CVM role's;
- keys are the environment's, else the profile file's (``~/.tencentcloud/credentials``), else the tccli file's
  (temporary ones for its ``oauth`` and ``sso`` logins, renewed by ``login``).

The two orders differ where tccli and the SDK differ. ``TCCLI`` (the command line): CVM role (``type:
cvm-role``) > assumed role > TKE's OIDC role (the ``TKE_*`` variables) > keys > eni-async's own last resort,
the CVM role when the metadata service names one (tccli would stop with "secretId is invalid"). ``SDK`` (the
library): CVM role (``type: cvm-role``) > assumed role > keys > the CVM role found by asking > TKE's OIDC role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eni_async.credentials import files
from eni_async.errors import ConfigError
from eni_async.models import Credentials

TCCLI, SDK = "tccli", "sdk"
ORDERS = (TCCLI, SDK)
TKE_ENV = ("TKE_REGION", "TKE_PROVIDER_ID", "TKE_WEB_IDENTITY_TOKEN_FILE", "TKE_ROLE_ARN")
ROLE_ARN_ENV, ROLE_SESSION_ENV = "TENCENTCLOUD_ROLE_ARN", "TENCENTCLOUD_ROLE_SESSION_NAME"


@dataclass(frozen=True)
class Found:
    """What the environment and the files hold for one profile (``None``: nothing there)."""

    profile: str
    named: bool
    environment: Credentials | None = None
    environment_role: tuple[str, str] | None = None
    ini: tuple[Path, Credentials] | None = None
    tccli: files.TccliProfile | None = None
    tke: Mapping[str, str] | None = None
    tried: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # variables a named profile left unread


@dataclass(frozen=True)
class Choice:
    """The winning source: ``keys`` (fixed, or a tccli login's when ``login`` is set), ``cvm-role``,
    ``assume-role`` (with those keys), ``tke``, or ``search`` (ask the metadata service; then TKE's role when
    ``tke``)."""

    kind: str
    keys: Credentials | None = None
    keys_from: str = ""
    login: files.TccliProfile | None = None
    role_arn: str = ""
    session: str = ""
    role_from: str = ""
    tke: bool = False


def gather(
    profile: str,
    *,
    named: bool,
    environ: Mapping[str, str],
    profile_files: Sequence[Path],
    tccli_dir: Path,
) -> Found:
    """Read the environment and the files for ``profile``; a named profile that no file holds is an error."""
    tried: list[str] = []
    ignored: list[str] = []
    environment: Credentials | None = None
    environment_role: tuple[str, str] | None = None
    role_vars = (ROLE_ARN_ENV, ROLE_SESSION_ENV)
    if named:
        ignored = [n for n in (files.ENV_SECRET_ID, *role_vars) if environ.get(n)]
    else:
        environment = files.from_environment(environ)
        if environment is None:
            tried.append(f"no {files.ENV_SECRET_ID}/{files.ENV_SECRET_KEY} in the environment")
        arn, session = (environ.get(n, "") for n in role_vars)
        if arn and not session:
            raise ConfigError(ROLE_SESSION_ENV, "", f"is needed with {ROLE_ARN_ENV}")
        environment_role = (arn, session) if arn else None
    ini: tuple[Path, Credentials] | None = None
    path = files.profile_file(profile_files)
    if path is not None:
        found = files.from_profile_file(path, profile)
        if found is not None:
            ini = (path, found)
        else:
            tried.append(f"no [{profile}] section in {path}")
    else:
        tried.append(f"no {' or '.join(str(p) for p in profile_files) or 'profile file'}")
    tccli = files.from_tccli(tccli_dir, profile)
    if tccli is None:
        tried.append(f"no {tccli_dir / (profile + '.credential')}")
    if tccli is not None and tccli.role_arn and not tccli.role_session_name:
        raise ConfigError(f"{tccli.path} role-session-name", "", "is needed with role-arn")
    if named and ini is None and tccli is None:
        raise ConfigError("profile", profile, "; ".join(tried))
    values = {name: environ.get(name, "") for name in TKE_ENV}
    tke: Mapping[str, str] | None = None
    if any(values.values()):
        for name, value in values.items():
            if not value:  # OIDCRoleArnCredential._init_from_tke: "<NAME> not exist"
                raise ConfigError(name, "", "is not set while the other TKE_* variables are")
        tke = values
    else:
        tried.append("no TKE_* OIDC variables")
    return Found(profile, named, environment, environment_role, ini, tccli, tke, tuple(tried), tuple(ignored))


def choose(found: Found, *, order: str) -> Choice:
    """The winning source of ``found`` in ``order`` (``TCCLI`` or ``SDK``); see the module's docstring."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    tccli = found.tccli
    keys, keys_from, login = _keys(found)
    if tccli is not None and tccli.cvm_role and found.environment is None and found.environment_role is None:
        return Choice("cvm-role", role_from=f"tccli profile {tccli.path} (type cvm-role)")
    role = found.environment_role
    role_from = "the environment (TENCENTCLOUD_ROLE_ARN)"
    if role is None and tccli is not None and tccli.role_arn:
        role, role_from = (tccli.role_arn, tccli.role_session_name), f"tccli profile {tccli.path}"
    if role is not None:
        if keys is None:
            raise ConfigError(
                "role-arn", role[0], f"from {role_from} needs keys to assume it with (secretId/secretKey)"
            )
        return Choice("assume-role", keys, keys_from, login, role[0], role[1], role_from)
    if order == TCCLI and found.tke is not None:
        return Choice("tke", tke=True)
    if keys is not None:
        return Choice("keys", keys, keys_from, login)
    return Choice("search", tke=found.tke is not None)


def _keys(found: Found) -> tuple[Credentials | None, str, files.TccliProfile | None]:
    """The keys that win: the environment's, the profile file's, the tccli file's (and its login)."""
    if found.environment is not None:
        return found.environment, f"environment ({files.ENV_SECRET_ID})", None
    if found.ini is not None:
        path, credentials = found.ini
        return credentials, f"profile file {path} [{found.profile}]", None
    tccli = found.tccli
    if tccli is not None and tccli.credentials is not None:
        login = tccli if tccli.kind in files.LOGIN_FIELDS else None
        return tccli.credentials, f"tccli profile {tccli.path}", login
    return None, "", None
