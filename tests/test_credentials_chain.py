"""The credential chain: every link against files and the in-process simulator over real HTTP, and their order."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eni_async import EniClient
from eni_async.cli import main
from eni_async.clock import FakeClock
from eni_async.credentials import CredentialError, RefreshingCredentials, StaticCredentials, credential_chain
from eni_async.errors import AuthError, ConfigError, TokenError
from eni_async.models import Credentials
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig, running

EXPLICIT = Credentials("AKIDexplicit", "explicit-key")
ENV = {"TENCENTCLOUD_SECRET_ID": "AKIDenv", "TENCENTCLOUD_SECRET_KEY": "env-key"}
ROLE_ARN = "qcs::cam::uin/100000000001:roleName/eni-releaser"


@dataclass
class Home:
    """A fake home: the profile file, the system profile file and tccli's directory."""

    root: Path

    @property
    def profile(self) -> Path:
        return self.root / ".tencentcloud" / "credentials"

    @property
    def system(self) -> Path:
        return self.root / "etc" / "credentials"

    @property
    def tccli(self) -> Path:
        return self.root / ".tccli"

    def write_profile(self, text: str, *, system: bool = False) -> None:
        path = self.system if system else self.profile
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def write_tccli(self, name: str, data: dict[str, Any]) -> None:
        self.tccli.mkdir(parents=True, exist_ok=True)
        (self.tccli / f"{name}.credential").write_text(json.dumps(data))

    async def chain(self, environ: dict[str, str], **kwargs: Any) -> Any:
        return await credential_chain(
            environ=environ, profile_files=(self.profile, self.system), tccli_dir=self.tccli, **kwargs
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@asynccontextmanager
async def role_server(**config: Any) -> AsyncIterator[tuple[Simulator, str, FakeClock]]:
    """A simulator on 127.0.0.1 that is also the metadata service and STS, on a fake clock."""
    clock = FakeClock()
    defaults: dict[str, Any] = {"enis": 2, "seed": 4, "task_latency": (0.0, 0.0)}
    sim = Simulator(SimulatorConfig(**(defaults | config)), clock=clock)
    async with running(sim, host="127.0.0.1", port=0) as server:
        yield sim, server.endpoint, clock


def remote_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {"ENI_ASYNC_METADATA_ENDPOINT": endpoint, "ENI_ASYNC_STS_ENDPOINT": endpoint, **extra}


def keys_env(sim: Simulator) -> dict[str, str]:
    """The simulator's own key pair as the environment names it."""
    return {
        "TENCENTCLOUD_SECRET_ID": sim.credentials.secret_id,
        "TENCENTCLOUD_SECRET_KEY": sim.credentials.secret_key,
    }


async def test_explicit_credentials_win_over_everything(home: Home) -> None:
    """Credentials given as an argument are used even with the environment and files set."""
    home.write_profile("[default]\nsecret_id = AKIDfile\nsecret_key = k\n")
    provider = await home.chain(ENV, credentials=EXPLICIT)
    assert await provider.get() == EXPLICIT
    assert provider.source == "explicit credentials"


@pytest.mark.parametrize("token_var", ["TENCENTCLOUD_TOKEN", "TENCENTCLOUD_SECURITY_TOKEN"])
async def test_environment_wins_over_files_and_carries_a_token(home: Home, token_var: str) -> None:
    """The environment pair (with either token variable) wins over the profile and tccli files."""
    home.write_profile("[default]\nsecret_id = AKIDfile\nsecret_key = k\n")
    home.write_tccli("default", {"secretId": "AKIDtccli", "secretKey": "k"})
    provider = await home.chain({**ENV, token_var: "session-token"})
    assert await provider.get() == Credentials("AKIDenv", "env-key", "session-token")
    assert "TENCENTCLOUD_SECRET_ID" in provider.source


async def test_home_profile_file_wins_over_the_system_one_and_tccli(home: Home) -> None:
    """~/.tencentcloud/credentials is read first; its [default] section wins over /etc and tccli."""
    home.write_profile("[default]\nsecret_id = AKIDhome\nsecret_key = k\ntoken = t\n")
    home.write_profile("[default]\nsecret_id = AKIDsystem\nsecret_key = k\n", system=True)
    home.write_tccli("default", {"secretId": "AKIDtccli", "secretKey": "k"})
    provider = await home.chain({})
    assert await provider.get() == Credentials("AKIDhome", "k", "t")
    assert str(home.profile) in provider.source


async def test_system_profile_file_is_read_when_home_has_none(home: Home) -> None:
    """Without a home profile file, /etc/tencentcloud/credentials is the profile file."""
    home.write_profile("[default]\nsecret_id = AKIDsystem\nsecret_key = k\n", system=True)
    assert (await (await home.chain({})).get()).secret_id == "AKIDsystem"


async def test_tccli_file_is_read_for_the_profile_tccli_would_use(home: Home) -> None:
    """tccli's <profile>.credential is used when the profile file lacks the profile; TCCLI_PROFILE names it."""
    home.write_profile("[default]\nsecret_id = AKIDhome\nsecret_key = k\n")
    home.write_tccli("prod", {"secretId": "AKIDprod", "secretKey": "k", "token": "t", "region": "ap-beijing"})
    provider = await home.chain({"TCCLI_PROFILE": "prod"})
    assert await provider.get() == Credentials("AKIDprod", "k", "t")
    assert "prod.credential" in provider.source
    assert (await (await home.chain({}, profile="prod")).get()).secret_id == "AKIDprod"


async def test_a_named_profile_found_nowhere_is_an_error_not_a_role(home: Home) -> None:
    """A profile other than default that no file holds is a ConfigError naming the profile."""
    home.write_profile("[default]\nsecret_id = AKIDhome\nsecret_key = k\n")
    with pytest.raises(ConfigError) as caught:
        await home.chain({}, profile="staging")
    assert caught.value.field == "profile"
    assert "[staging]" in str(caught.value)
    assert "staging.credential" in str(caught.value)


async def test_nothing_anywhere_is_one_error_saying_where_it_looked(home: Home) -> None:
    """With no source at all the error lists the environment, the files and the metadata service."""
    with pytest.raises(ConfigError) as caught:
        await home.chain({"ENI_ASYNC_METADATA_ENDPOINT": os.environ["ENI_ASYNC_METADATA_ENDPOINT"]})
    text = str(caught.value)
    for needle in ("TENCENTCLOUD_SECRET_ID", str(home.profile), "default.credential", "metadata", "TKE_"):
        assert needle in text
    assert "\n" not in text


async def test_cvm_role_from_the_metadata_service_signs_real_calls(home: Home) -> None:
    """Without keys or files, the CVM role's temporary credentials are found and accepted by the VPC API."""
    async with role_server(credential_lifetime=3600.0) as (sim, endpoint, clock):
        provider = await home.chain(remote_env(endpoint), clock=clock)
        assert isinstance(provider, RefreshingCredentials)
        assert "CVM role eni-async-role" in provider.source
        credentials = await provider.get()
        assert credentials.token
        assert credentials.expires_at == int(clock.time() + 3600)
        for dialect in ("v2", "v3"):
            settings = Settings(endpoint=endpoint, region=sim.region, dialect=dialect)
            async with EniClient(provider, settings, clock=clock) as client:
                eni = sim.ground_truth()["enis"][0]["eni_id"]
                assert (await client.describe_eni(eni)) is not None
    assert sim.metadata.issued == 1


async def test_tke_oidc_is_used_when_the_instance_has_no_role(home: Home, tmp_path: Path) -> None:
    """With no CVM role, the TKE variables' web identity token is exchanged at STS for credentials."""
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYSJ9.c2ln\n")
    tke = {
        "TKE_REGION": "ap-shanghai",
        "TKE_PROVIDER_ID": "tke-oidc",
        "TKE_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "TKE_ROLE_ARN": ROLE_ARN,
    }
    async with role_server(role_name="") as (sim, endpoint, clock):
        provider = await home.chain(remote_env(endpoint, **tke), clock=clock)
        credentials = await provider.get()
    assert "TKE OIDC role" in provider.source
    assert credentials.token
    assert credentials.secret_id.startswith("AKID")
    assert sim.sts.calls["AssumeRoleWithWebIdentity"] == 1


async def test_cvm_role_wins_over_tke(home: Home, tmp_path: Path) -> None:
    """On an instance with a role, the metadata service is asked and STS is not."""
    tke = {
        "TKE_REGION": "r",
        "TKE_PROVIDER_ID": "p",
        "TKE_WEB_IDENTITY_TOKEN_FILE": "/nope",
        "TKE_ROLE_ARN": "a",
    }
    async with role_server() as (sim, endpoint, clock):
        provider = await home.chain(remote_env(endpoint, **tke), clock=clock)
    assert "CVM role" in provider.source
    assert sim.sts.calls["AssumeRoleWithWebIdentity"] == 0


async def test_partial_tke_variables_name_the_missing_one(home: Home) -> None:
    """Some TKE variables without the others is a ConfigError naming a missing one."""
    with pytest.raises(ConfigError) as caught:
        await home.chain({"TKE_REGION": "ap-guangzhou", "TKE_ROLE_ARN": ROLE_ARN})
    assert caught.value.field == "TKE_PROVIDER_ID"


async def test_assumed_role_exchanges_the_environment_keys_at_sts(home: Home) -> None:
    """TENCENTCLOUD_ROLE_ARN + _ROLE_SESSION_NAME turn the environment keys into the role's via AssumeRole."""
    async with role_server() as (sim, endpoint, clock):
        base = keys_env(sim)
        roles = {"TENCENTCLOUD_ROLE_ARN": ROLE_ARN, "TENCENTCLOUD_ROLE_SESSION_NAME": "nightly"}
        provider = await home.chain(remote_env(endpoint, **base, **roles), clock=clock)
        credentials = await provider.get()
        wrong = {**base, "TENCENTCLOUD_SECRET_KEY": "not-the-key"}
        with pytest.raises(AuthError) as refused:
            await home.chain(remote_env(endpoint, **wrong, **roles), clock=clock)
    assert provider.source.startswith(f"assumed role {ROLE_ARN}")
    assert "environment" in provider.source
    assert credentials.secret_id != sim.credentials.secret_id
    assert credentials.token
    assert refused.value.code == "AuthFailure.SignatureFailure"
    assert sim.sts.calls["AssumeRole"] == 1


async def test_a_role_without_a_session_name_is_an_error(home: Home) -> None:
    """TENCENTCLOUD_ROLE_ARN alone is a ConfigError naming TENCENTCLOUD_ROLE_SESSION_NAME."""
    with pytest.raises(ConfigError) as caught:
        await home.chain({**ENV, "TENCENTCLOUD_ROLE_ARN": ROLE_ARN})
    assert caught.value.field == "TENCENTCLOUD_ROLE_SESSION_NAME"


async def test_tccli_role_arn_is_assumed_with_that_files_keys(home: Home) -> None:
    """A tccli file with role-arn and role-session-name assumes that role with its own keys."""
    async with role_server() as (sim, endpoint, clock):
        home.write_tccli(
            "default",
            {
                "secretId": sim.credentials.secret_id,
                "secretKey": sim.credentials.secret_key,
                "role-arn": ROLE_ARN,
                "role-session-name": "from-tccli",
            },
        )
        provider = await home.chain(remote_env(endpoint), clock=clock)
    assert "assumed role" in provider.source
    assert "tccli profile" in provider.source
    assert sim.sts.calls["AssumeRole"] == 1


async def test_settings_endpoints_are_used_when_the_environment_names_none(home: Home) -> None:
    """metadata_endpoint in settings points the chain at the simulator when no variable overrides it."""
    async with role_server() as (_sim, endpoint, clock):
        provider = await home.chain({}, settings=Settings(metadata_endpoint=endpoint), clock=clock)
    assert "CVM role" in provider.source
    assert endpoint in provider.source


async def test_the_winning_source_is_logged_without_secrets(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    """The chain logs which source won at INFO, and no key or token."""
    caplog.set_level(logging.DEBUG, logger="eni_async")
    async with role_server() as (_sim, endpoint, clock):
        provider = await home.chain(remote_env(endpoint), clock=clock)
        credentials = await provider.get()
    assert any(
        r.levelno == logging.INFO and "credentials: CVM role" in r.getMessage() for r in caplog.records
    )
    assert credentials.secret_key not in caplog.text
    assert str(credentials.token) not in caplog.text
    assert credentials.secret_key not in repr(provider)
    assert str(credentials.token) not in repr(credentials)


async def test_static_provider_refresh_returns_the_same_credentials() -> None:
    """Fixed credentials have nothing fresher: refresh returns them unchanged."""
    provider = StaticCredentials(EXPLICIT)
    assert await provider.refresh(EXPLICIT) is EXPLICIT


@pytest.mark.parametrize("source", ["tccli", "cvm"])
async def test_cli_uses_the_chain_and_says_which_source_with_v(
    source: str,
    served: tuple[Simulator, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """eni-async -v unassign works from a tccli file or the CVM role alone, and its log names the source."""
    sim, endpoint = served
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID")
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    if source == "tccli":
        keys = {"secretId": sim.credentials.secret_id, "secretKey": sim.credentials.secret_key}
        Home(tmp_path).write_tccli("default", keys)
    else:
        monkeypatch.setenv("ENI_ASYNC_METADATA_ENDPOINT", endpoint)
    eni = sim.ground_truth()["enis"][0]
    args = ["-v", "unassign", "--endpoint", endpoint, "--region", sim.region]
    args += ["--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"], "--ip", eni["secondary_ips"][0]]
    code = await asyncio.to_thread(main, args)
    err = capsys.readouterr().err
    assert code == 0, err
    expected = "credentials: tccli profile" if source == "tccli" else "credentials: CVM role eni-async-role"
    assert expected in err


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_an_expired_fixed_token_is_refused_once_not_retried(home: Home, dialect: str) -> None:
    """Fixed credentials whose token expired give one TokenError (API 3.0 AuthFailure.TokenFailure, API 2.0
    4105): nothing fresher exists, so no second send."""
    async with role_server(credential_lifetime=60.0) as (sim, endpoint, clock):
        provider = await home.chain(remote_env(endpoint), clock=clock)
        stale = await provider.get()
        clock.advance(61)
        settings = Settings(endpoint=endpoint, region=sim.region, dialect=dialect)
        async with EniClient(stale, settings, clock=clock) as client:
            assert repr(stale.secret_id) in repr(client)
            with pytest.raises(TokenError):
                await client.describe_eni(sim.ground_truth()["enis"][0]["eni_id"])
        async with EniClient(provider, settings, clock=clock) as client:
            assert "CVM role" in repr(client)
            assert stale.secret_key not in repr(client)
    assert sim.requests["DescribeNetworkInterfaces"] == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>gateway</html>",
        b'{"Code": "Failure"}',
        b'{"Code": "Success", "TmpSecretId": "AKIDx", "TmpSecretKey": "k", "ExpiredTime": 1}',
        b'{"Code": "Success", "TmpSecretId": "AKIDx", "TmpSecretKey": "k", "Token": "t"}',
        b"x" * 70_000,
    ],
    ids=["not-json", "not-success", "no-token", "no-expiry", "huge"],
)
async def test_a_role_with_a_bad_answer_is_a_credential_error(home: Home, answer: bytes) -> None:
    """A metadata service that names a role but answers nonsense for it is a CredentialError, not a skip."""

    async def role_name(request: web.Request) -> web.Response:
        return web.Response(text="broken-role")

    async def role(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_get("/latest/meta-data/cam/security-credentials/", role_name)
    app.router.add_get("/latest/meta-data/cam/security-credentials/broken-role", role)
    async with TestServer(app, host="127.0.0.1") as server:
        endpoint = f"http://127.0.0.1:{server.port}"
        with pytest.raises(CredentialError) as caught:
            await home.chain(remote_env(endpoint))
    assert "metadata service" in str(caught.value)
