"""The simulator's CVM metadata service, its STS, and how both dialects treat temporary keys and their tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from eni_async import signing
from eni_async.clock import FakeClock
from eni_async.simulator.keys import ACCOUNT_UIN, role_id_of, uin_of
from eni_async.simulator.rejects import Reason
from eni_async.simulator.roles import ROLE_PATH, STS_CODES
from eni_async.simulator.v2 import V2_CODES
from eni_async.simulator.v3 import V3_CODES
from tests.simhelpers import DOC_SECRET_ID, DOC_SECRET_KEY, V2, V3, client_for, host_of, make_sim

STS_HEADERS = {
    "Content-Type": "application/json",
    "X-TC-Version": "2018-08-13",
    "X-TC-Region": "ap-guangzhou",
}


async def _role_credentials(client: Any, role: str = "eni-async-role") -> dict[str, Any]:
    resp = await client.get(ROLE_PATH + role)
    assert resp.status == 200
    answer: dict[str, Any] = json.loads(await resp.read())
    return answer


async def test_metadata_names_the_role_and_issues_expiring_credentials() -> None:
    """The role list names the one role; the role answers D23's fields with an expiry one lifetime ahead."""
    clock = FakeClock()
    sim = make_sim(clock, credential_lifetime=900.0)
    async with client_for(sim) as client:
        resp = await client.get(ROLE_PATH)
        assert resp.status == 200
        assert await resp.text() == "eni-async-role"
        answer = await _role_credentials(client)
    assert answer["Code"] == "Success"
    assert answer["ExpiredTime"] == int(clock.time() + 900)
    assert answer["Expiration"].endswith("Z")
    assert answer["Expiration"][:4] == "2023"
    assert answer["TmpSecretId"].startswith("AKID")
    assert answer["TmpSecretKey"]
    assert answer["Token"]


async def test_metadata_without_a_role_or_with_another_name_is_404() -> None:
    """An instance without a role answers 404 for the list; an unknown role name is 404 too."""
    async with client_for(make_sim(role_name="")) as client:
        assert (await client.get(ROLE_PATH)).status == 404
    async with client_for(make_sim()) as client:
        assert (await client.get(ROLE_PATH + "other-role")).status == 404


async def test_v3_accepts_a_temporary_key_until_expiry_and_refuses_it_after() -> None:
    """API 3.0 takes the temporary SecretId with its token, then answers AuthFailure.TokenFailure once expired."""
    clock = FakeClock()
    sim = make_sim(clock, credential_lifetime=60.0)
    async with client_for(sim) as client:
        tmp = await _role_credentials(client)
        v3 = V3(client, clock, secret_id=tmp["TmpSecretId"], region=sim.region)
        token = {"X-TC-Token": tmp["Token"]}
        ok = await v3.call(
            "DescribeNetworkInterfaces", {}, secret_key=tmp["TmpSecretKey"], extra_headers=token
        )
        assert "Error" not in ok["Response"], ok
        missing = await v3.call("DescribeNetworkInterfaces", {}, secret_key=tmp["TmpSecretKey"])
        assert missing["Response"]["Error"]["Code"] == "AuthFailure.TokenFailure"
        clock.advance(61)
        late = await v3.call(
            "DescribeNetworkInterfaces", {}, secret_key=tmp["TmpSecretKey"], extra_headers=token
        )
    assert late["Response"]["Error"]["Code"] == "AuthFailure.TokenFailure"
    assert "expired" in late["Response"]["Error"]["Message"]


async def test_v2_accepts_a_temporary_key_until_expiry_and_refuses_it_after() -> None:
    """API 2.0 takes the temporary SecretId with its Token, then answers 4105 (token error) once expired."""
    clock = FakeClock()
    sim = make_sim(clock, credential_lifetime=60.0)
    async with client_for(sim) as client:
        tmp = await _role_credentials(client)
        v2 = V2(client, clock, secret_id=tmp["TmpSecretId"])
        params = {"offset": "0", "limit": "10", "Token": tmp["Token"]}
        ok = await v2.call("DescribeNetworkInterfaces", params, secret_key=tmp["TmpSecretKey"])
        assert ok["code"] == 0, ok
        wrong = await v2.call(
            "DescribeNetworkInterfaces", {**params, "Token": "x" * 96}, secret_key=tmp["TmpSecretKey"]
        )
        assert (wrong["code"], wrong["codeDesc"]) == (4105, "AuthFailure")
        clock.advance(60)
        late = await v2.call("DescribeNetworkInterfaces", params, secret_key=tmp["TmpSecretKey"])
    assert (late["code"], late["codeDesc"]) == (4105, "AuthFailure")
    assert "token" in late["message"].lower()


async def test_a_permanent_key_needs_no_token() -> None:
    """The permanent doc key pair still works without any token in both dialects."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        assert (await V2(client, clock).call("DescribeNetworkInterfaces", {"offset": "0"}))["code"] == 0
        assert "Error" not in (await V3(client, clock).call("DescribeNetworkInterfaces", {}))["Response"]


async def _sts(
    client: Any,
    action: str,
    params: dict[str, Any],
    *,
    key: tuple[str, str] | None,
    clock: FakeClock,
    token: str = "",
) -> dict[str, Any]:
    body = json.dumps(params).encode()
    ts = int(clock.time())
    headers = {**STS_HEADERS, "Host": host_of(client), "X-TC-Action": action, "X-TC-Timestamp": str(ts)}
    if token:
        headers["X-TC-Token"] = token
    if key is None:
        headers["Authorization"] = "SKIP"
    else:
        headers["Authorization"] = signing.tc3_authorization(
            key[0],
            key[1],
            method="POST",
            query="",
            headers={"content-type": "application/json", "host": host_of(client)},
            payload=body,
            timestamp=ts,
            service="sts",
        )
    resp = await client.post("/", data=body, headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    answer: dict[str, Any] = json.loads(await resp.read())["Response"]
    return answer


def jwt(payload: dict[str, Any]) -> str:
    """A JWT-shaped web identity token with ``payload`` (unsigned: the simulator checks shape and expiry)."""
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2lnbmF0dXJl"


OIDC = {
    "ProviderId": "tke-oidc",
    "WebIdentityToken": jwt({"sub": "sa"}),
    "RoleArn": "qcs::cam::uin/1:roleName/r",
}


async def test_sts_web_identity_exchange_answers_credentials_capped_by_the_lifetime() -> None:
    """AssumeRoleWithWebIdentity (unsigned) answers Credentials and ExpiredTime within the lifetime option."""
    clock = FakeClock()
    sim = make_sim(clock, credential_lifetime=1800.0)
    async with client_for(sim) as client:
        answer = await _sts(
            client, "AssumeRoleWithWebIdentity", {**OIDC, "RoleSessionName": "s", "DurationSeconds": 7200},
            key=None, clock=clock,
        )  # fmt: skip
        missing = await _sts(
            client, "AssumeRoleWithWebIdentity", {"RoleSessionName": "s"}, key=None, clock=clock
        )
    assert set(answer["Credentials"]) == {"Token", "TmpSecretId", "TmpSecretKey"}
    assert answer["ExpiredTime"] == int(clock.time() + 1800)
    assert missing["Error"]["Code"] == "MissingParameter"
    assert sim.sts.calls["AssumeRoleWithWebIdentity"] == 1


async def test_sts_assume_role_checks_the_base_signature() -> None:
    """AssumeRole signed with a known key answers credentials; signed with a wrong key it is refused."""
    clock = FakeClock()
    async with client_for(make_sim(clock)) as client:
        params = {"RoleArn": OIDC["RoleArn"], "RoleSessionName": "s"}
        good = await _sts(client, "AssumeRole", params, key=(DOC_SECRET_ID, DOC_SECRET_KEY), clock=clock)
        bad = await _sts(client, "AssumeRole", params, key=(DOC_SECRET_ID, "not-the-key"), clock=clock)
    assert good["Credentials"]["TmpSecretId"].startswith("AKID")
    assert bad["Error"]["Code"] == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"WebIdentityToken": "not-a-jwt"}, "InvalidParameter.WebIdentityTokenError"),
        ({"WebIdentityToken": jwt({"exp": 1})}, "InvalidParameter.WebIdentityTokenError"),
        ({"RoleArn": "qcs::cam::uin/1:roleName/unknown"}, "ResourceNotFound.RoleNotFound"),
        ({"RoleArn": "arn:aws:iam::1:role/r"}, "InvalidParameter.ParamError"),
        ({"DurationSeconds": 86400}, "InvalidParameter.OverTimeError"),
        ({"ProviderId": ""}, "MissingParameter"),
    ],
    ids=["not-jwt", "expired-jwt", "no-such-role", "not-an-arn", "too-long", "missing"],
)
async def test_sts_answers_in_its_own_codes(change: dict[str, Any], code: str) -> None:
    """A bad web identity token, an unknown role or a bad duration get STS's own error codes, not generic ones."""
    clock = FakeClock()
    async with client_for(make_sim(clock, roles=("r",))) as client:
        params = {**OIDC, "RoleSessionName": "s", **change}
        answer = await _sts(client, "AssumeRoleWithWebIdentity", params, key=None, clock=clock)
    assert answer["Error"]["Code"] == code


async def test_get_caller_identity_names_the_sub_account_and_the_role() -> None:
    """GetCallerIdentity answers a permanent key's sub-account UIN, and a role session's role id and session."""
    clock = FakeClock()
    sim = make_sim(clock, accounts={DOC_SECRET_ID: "ops"})
    async with client_for(sim) as client:
        user = await _sts(client, "GetCallerIdentity", {}, key=(DOC_SECRET_ID, DOC_SECRET_KEY), clock=clock)
        params = {"RoleArn": OIDC["RoleArn"], "RoleSessionName": "nightly"}
        role = await _sts(client, "AssumeRole", params, key=(DOC_SECRET_ID, DOC_SECRET_KEY), clock=clock)
        creds = role["Credentials"]
        assumed = await _sts(
            client, "GetCallerIdentity", {}, key=(creds["TmpSecretId"], creds["TmpSecretKey"]),
            clock=clock, token=creds["Token"],
        )  # fmt: skip
        unsigned = await _sts(client, "GetCallerIdentity", {}, key=None, clock=clock)
    assert (user["UserId"], user["PrincipalId"], user["AccountId"]) == (uin_of("ops"),) * 2 + (ACCOUNT_UIN,)
    assert user["Arn"].endswith(f":uin/{uin_of('ops')}")
    assert assumed["UserId"] == f"{role_id_of('r')}:nightly"
    assert assumed["PrincipalId"] == uin_of("ops")
    assert unsigned["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    assert sim.sts.calls["GetCallerIdentity"] == 2


def test_every_reason_has_a_code_in_each_dialect() -> None:
    """The API 2.0 and 3.0 code tables cover every refusal reason; STS's covers every reason STS raises."""
    assert set(V2_CODES) == set(Reason)
    assert set(V3_CODES) == set(Reason)
    assert {Reason.WEB_IDENTITY_TOKEN, Reason.ROLE_NOT_FOUND, Reason.TOKEN} <= set(STS_CODES)
