"""Credentials as tccli and the SDK resolve them: named profiles, tccli's credential types, the two orders,
the renewal schedules, ``whoami`` and ``config --show-origin`` (against files and the simulator over HTTP)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eni_async import EniClient
from eni_async.cli import main
from eni_async.credentials import CredentialError, RefreshingCredentials, StaticCredentials
from eni_async.credentials.plan import SDK, TCCLI, Found, choose
from eni_async.credentials.refresh import ASSUME_ROLE, CVM_ROLE, OIDC_ROLE, Renewal
from eni_async.errors import ConfigError
from eni_async.models import Credentials
from eni_async.settings import Settings
from eni_async.simulator.keys import uin_of
from tests.test_credentials_chain import ENV, ROLE_ARN, Home, keys_env, remote_env, role_server


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


def login_env(endpoint: str) -> dict[str, str]:
    return {**remote_env(endpoint), "ENI_ASYNC_LOGIN_ENDPOINT": endpoint}


# -- named profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "TCCLI_PROFILE"])
async def test_a_named_profile_beats_the_environment_keys_and_role(home: Home, how: str) -> None:
    """A profile named by the argument or TCCLI_PROFILE is used even with keys and a role in the environment."""
    home.write_tccli("test", {"secretId": "AKIDtest", "secretKey": "k"})
    environ = {**ENV, "TENCENTCLOUD_ROLE_ARN": ROLE_ARN, "TENCENTCLOUD_ROLE_SESSION_NAME": "s"}
    if how == "argument":
        provider = await home.chain(environ, profile="test")
    else:
        provider = await home.chain({**environ, "TCCLI_PROFILE": "test"})
    assert isinstance(provider, StaticCredentials)
    assert provider.credentials.secret_id == "AKIDtest"
    assert "test.credential" in provider.source


async def test_a_named_profile_no_file_holds_is_an_error_even_with_keys_in_the_environment(
    home: Home,
) -> None:
    """``--profile nosuch`` with keys in the environment is refused, not run with the environment's keys."""
    with pytest.raises(ConfigError) as caught:
        await home.chain(ENV, profile="nosuch")
    assert caught.value.field == "profile"
    assert "nosuch.credential" in str(caught.value)


def test_cli_named_profile_found_nowhere_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line refuses an unknown --profile in one line before any request, keys in the environment
    or not."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["whoami", "--profile", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("eni-async: error: profile: ")


# -- tccli's credential types ----------------------------------------------------------------------------


async def test_use_cvm_role_beats_the_stale_keys_of_the_same_file(home: Home) -> None:
    """``type: cvm-role`` uses the CVM role though the file still holds the old keys (tccli's rule)."""
    async with role_server() as (sim, endpoint, clock):
        home.write_tccli("default", {"type": "cvm-role", "secretId": "AKIDstale", "secretKey": "old"})
        provider = await home.chain(remote_env(endpoint), clock=clock)
        credentials = await provider.get()
    assert "CVM role eni-async-role" in provider.source
    assert "type cvm-role" in provider.source
    assert credentials.secret_id != "AKIDstale"
    assert sim.metadata.issued == 1


async def test_environment_keys_switch_the_files_cvm_role_off_unless_a_profile_is_named(home: Home) -> None:
    """Without a named profile the environment's keys replace the file's CVM role (tccli's cvm_role_flag);
    with the profile named, the environment is not read and the CVM role is used."""
    async with role_server() as (_sim, endpoint, clock):
        home.write_tccli("default", {"type": "cvm-role"})
        unnamed = await home.chain({**remote_env(endpoint), **ENV}, clock=clock)
        named = await home.chain({**remote_env(endpoint), **ENV}, clock=clock, profile="default")
    assert "environment" in unnamed.source
    assert "CVM role" in named.source


async def test_the_cvm_role_comes_before_an_assumed_role_and_is_never_its_base(home: Home) -> None:
    """A file with ``type: cvm-role`` and a role-arn uses the CVM role, never AssumeRole on top of it; a role
    with no keys to assume it with is an error, not an AssumeRole on the CVM role."""
    async with role_server() as (sim, endpoint, clock):
        home.write_tccli("default", {"type": "cvm-role", "role-arn": ROLE_ARN, "role-session-name": "s"})
        provider = await home.chain(remote_env(endpoint), clock=clock)
        roles = {"TENCENTCLOUD_ROLE_ARN": ROLE_ARN, "TENCENTCLOUD_ROLE_SESSION_NAME": "s"}
        (home.tccli / "default.credential").unlink()
        with pytest.raises(ConfigError) as caught:
            await home.chain({**remote_env(endpoint), **roles}, clock=clock)
    assert provider.source.startswith("CVM role")
    assert sim.sts.calls["AssumeRole"] == 0
    assert caught.value.field == "role-arn"
    assert "needs keys" in str(caught.value)


@pytest.mark.parametrize(("order", "winner"), [(TCCLI, "TKE OIDC role"), (SDK, "environment")])
async def test_tke_beats_keys_on_the_command_line_only(
    home: Home, tmp_path: Path, order: str, winner: str
) -> None:
    """tccli takes TKE's OIDC role over keys; the SDK takes keys over it (each used where it rules)."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYSJ9.c2ln")
    tke = {"TKE_REGION": "ap-guangzhou", "TKE_PROVIDER_ID": "p", "TKE_WEB_IDENTITY_TOKEN_FILE": str(token),
           "TKE_ROLE_ARN": ROLE_ARN}  # fmt: skip
    async with role_server() as (_sim, endpoint, clock):
        provider = await home.chain({**remote_env(endpoint), **ENV, **tke}, clock=clock, order=order)
    assert winner in provider.source


def test_the_choice_of_each_order_is_a_table() -> None:
    """The pure decision: for the same findings, tccli's order and the SDK's differ only where they should."""
    keys = Credentials("AKIDk", "k")
    tke = {"TKE_REGION": "r"}
    cases: list[tuple[Found, str, str]] = [
        (Found("default", False, environment=keys), "keys", "keys"),
        (Found("default", False, environment=keys, tke=tke), "tke", "keys"),
        (Found("default", False, tke=tke), "tke", "search"),
        (Found("default", False), "search", "search"),
        (
            Found("default", False, environment=keys, environment_role=(ROLE_ARN, "s")),
            "assume-role",
            "assume-role",
        ),
    ]
    for found, tccli_kind, sdk_kind in cases:
        assert (choose(found, order=TCCLI).kind, choose(found, order=SDK).kind) == (tccli_kind, sdk_kind)


async def _login_file(home: Home, endpoint: str, kind: str, **options: float) -> dict[str, Any]:
    """Log in at the simulator's login service; write the credential file tccli would (with a region)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{endpoint}/_sim/tccli-login", json={"type": kind, **options}) as resp,
    ):
        data: dict[str, Any] = await resp.json()
    home.write_tccli("default", {**data, "region": "ap-guangzhou"})
    return data


@pytest.mark.parametrize("kind", ["oauth", "sso"])
async def test_login_keys_are_used_while_fresh_and_renewed_as_tccli_renews_them(
    home: Home, kind: str
) -> None:
    """tccli login keys sign calls; near expiry they are renewed through the login service, written back to
    tccli's file (other keys kept) and accepted by the API."""
    async with role_server(credential_lifetime=1200.0) as (sim, endpoint, clock):
        data = await _login_file(home, endpoint, kind, access_lifetime=600.0)
        provider = await home.chain(login_env(endpoint), clock=clock)
        first = await provider.get()
        assert first.secret_id == data["secretId"]
        assert f"tccli {kind} login" in provider.source
        clock.advance(1200 - 299)  # inside tccli's 300 s
        fresh = await provider.get()
        written = json.loads((home.tccli / "default.credential").read_text())
        async with EniClient(provider, Settings(endpoint=endpoint), clock=clock) as client:
            assert await client.describe_eni(sim.ground_truth()["enis"][0]["eni_id"]) is not None
    assert fresh.secret_id != first.secret_id
    assert written["secretId"] == fresh.secret_id
    assert written["region"] == "ap-guangzhou"
    assert written["type"] == kind
    assert (home.tccli / "default.credential").stat().st_mode & 0o777 == 0o600
    if kind == "oauth":  # the access token had expired too: renewed with the refresh token first
        assert sim.login.calls["/refresh_user_token"] == 1
        assert written["oauth"]["accessToken"] != data["oauth"]["accessToken"]
    else:
        assert sim.login.calls["/api/org/gen_saml_response"] == 1  # the renewal (the login is not a call)
        assert written["sso"] == data["sso"], "renewing the keys does not extend the SSO login"


async def test_expired_login_keys_are_renewed_before_the_work_starts(home: Home) -> None:
    """Keys already expired in the file are renewed when the chain is built, as tccli does at a command's start."""
    async with role_server(credential_lifetime=600.0) as (sim, endpoint, clock):
        data = await _login_file(home, endpoint, "oauth")
        clock.advance(601)
        provider = await home.chain(login_env(endpoint), clock=clock)
        assert isinstance(provider, RefreshingCredentials)
        assert provider.fetches == 1
        assert (await provider.get()).secret_id != data["secretId"]
    assert sim.login.calls["/get_temp_cred"] == 1


async def test_an_sso_login_that_ended_is_refused_in_one_line_before_the_work(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    """Expired keys of an ended SSO login cannot be renewed: one line naming 'tccli sso login'; keys still valid
    but not renewable give one WARNING."""
    caplog.set_level(logging.WARNING, logger="eni_async")
    async with role_server(credential_lifetime=7200.0) as (_sim, endpoint, clock):
        await _login_file(home, endpoint, "sso", login_lifetime=1000.0)
        clock.advance(900)
        await home.chain(login_env(endpoint), clock=clock)
        assert "cannot be renewed" in caplog.text
        clock.advance(7200)
        with pytest.raises(CredentialError) as caught:
            await home.chain(login_env(endpoint), clock=clock)
    assert "tccli sso login" in str(caught.value)
    assert "\n" not in str(caught.value)


# -- renewal schedules -------------------------------------------------------------------------------------


def test_each_source_renews_on_the_sdks_schedule() -> None:
    """CVM role 300 s before expiry; AssumeRole at ExpiredTime - 0.9 x 7200; OIDC at ExpiredTime - 0.1 x 7200;
    a lifetime shorter than a schedule assumes renews halfway instead of at every call."""
    now, expires = 1000.0, 1000.0 + 7200
    assert CVM_ROLE.renew_at(expires, now) == expires - 300
    assert ASSUME_ROLE.renew_at(expires, now) == expires - 6480
    assert OIDC_ROLE.renew_at(expires, now) == expires - 720
    assert ASSUME_ROLE.renew_at(now + 600, now) == now + 300
    assert Renewal(margin=300).renew_at(now + 60, now) == now + 30


async def test_an_assumed_role_is_renewed_at_a_tenth_of_its_duration(home: Home) -> None:
    """An assumed role's keys (7200 s asked) are kept 720 s, then renewed once, over real HTTP."""
    async with role_server() as (sim, endpoint, clock):
        base = keys_env(sim)
        roles = {"TENCENTCLOUD_ROLE_ARN": ROLE_ARN, "TENCENTCLOUD_ROLE_SESSION_NAME": "s"}
        provider = await home.chain({**remote_env(endpoint), **base, **roles}, clock=clock)
        first = await provider.get()
        clock.advance(719)
        assert await provider.get() == first
        clock.advance(2)
        assert await provider.get() != first
    assert sim.sts.calls["AssumeRole"] == 2


# -- whoami and config --show-origin -------------------------------------------------------------------


async def test_whoami_prints_the_caller_and_where_everything_came_from(
    served: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``whoami`` prints GetCallerIdentity's answer, the credentials' source and the region's and profile's
    origins."""
    sim, endpoint = served
    monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", endpoint)
    monkeypatch.setenv("TENCENTCLOUD_REGION", sim.region)
    code = await asyncio.to_thread(main, ["whoami", "--endpoint", endpoint])
    out, err = capsys.readouterr()
    assert code == 0, err
    shown = json.loads(out)
    uin = uin_of(sim.credentials.secret_id)
    assert shown["caller"]["UserId"] == uin
    assert shown["caller"]["Arn"].endswith(f"uin/{uin}")
    assert "environment (TENCENTCLOUD_SECRET_ID)" in shown["credentials"]
    assert shown["region"] == {"value": sim.region, "origin": "TENCENTCLOUD_REGION"}
    assert shown["profile"] == {"value": "default", "origin": "the default"}
    assert shown["quota"] == {"sub_account": f"uin-{uin}", "sub_account_origin": "GetCallerIdentity",
                              "access_region": sim.region}  # fmt: skip
    assert sim.credentials.secret_key not in out + err


def test_config_show_origin_names_the_origin_of_every_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every key is listed with its value and origin: default, the settings file, a variable, an option."""
    config = tmp_path / "s.toml"
    config.write_text("grace = 2.5\n[poll]\ninitial = 0.5\n")
    monkeypatch.setenv("ENI_ASYNC_CONCURRENCY", "64")
    monkeypatch.setenv("TCCLI_PROFILE", "ops")
    assert main(["config", "--show-origin", "--config", str(config), "--region", "ap-beijing"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["grace"] == {"value": 2.5, "origin": f"the settings file {config}"}
    assert shown["poll.initial"] == {"value": 0.5, "origin": f"the settings file {config}"}
    assert shown["concurrency"] == {"value": 64, "origin": "ENI_ASYNC_CONCURRENCY"}
    assert shown["profile"] == {"value": "ops", "origin": "TCCLI_PROFILE"}
    assert shown["region"] == {"value": "ap-beijing", "origin": "--region"}
    assert shown["dialect"] == {"value": "v2", "origin": "the default"}
    assert shown["rate_limits.task_query"]["origin"] == "the default"


def test_the_region_of_a_tccli_credential_file_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``"region"`` in ``~/.tccli/<profile>.credential`` is the profile's region when nothing else names one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    Home(tmp_path).write_tccli("ops", {"secretId": "AKIDo", "secretKey": "k", "region": "ap-chengdu"})
    assert main(["config", "--show-origin", "--profile", "ops"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["region"] == {"value": "ap-chengdu", "origin": str(tmp_path / ".tccli" / "ops.credential")}
