"""Injected faults: every kind observable by a client and counted in stats, before or after the effect as
documented; profiles load from names and files, reject unknown keys, and replay the same way from one seed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from eni_async import signing
from eni_async.clock import FakeClock
from eni_async.errors import ConfigError
from eni_async.simulator import (
    FaultProfile,
    FaultRates,
    Simulator,
    SimulatorConfig,
    load_fault_profile,
    running,
)
from eni_async.simulator.faults import ALL_KINDS, PROFILE_NAMES, FaultInjector
from tests.simhelpers import DOC_KEYS, DOC_SECRET_ID, DOC_SECRET_KEY, V2, V3, client_for, first_eni, make_sim

REPO = Path(__file__).resolve().parents[1]
UNASSIGN = "UnassignPrivateIpAddresses"


def only(kind: str, **settings: Any) -> FaultProfile:
    """A profile where ``kind`` strikes every UnassignPrivateIpAddresses call and nothing else happens."""
    return FaultProfile(name=kind, actions={UNASSIGN: FaultRates(**{kind: 1.0})}, **settings)


async def _raw_unassign(kind: str) -> tuple[Any, int | Exception, bytes, FakeClock]:
    """Send one signed API 2.0 unassign under a one-fault profile; return what the client saw."""
    clock = FakeClock()
    sim = make_sim(clock, faults=only(kind, withhold_seconds=30.0))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        v2 = V2(client, clock)
        params = v2.signed(
            UNASSIGN,
            {
                "vpcId": eni["vpc_id"],
                "networkInterfaceId": eni["eni_id"],
                "privateIpAddress.0": eni["secondary_ips"][0],
            },
        )
        try:
            resp = await client.get(
                "/v2/index.php", params=params, headers={"Host": f"127.0.0.1:{client.port}"}
            )
            status: int | Exception = resp.status
            body = await resp.read()
        except aiohttp.ClientError as exc:
            status, body = exc, b""
    return sim, status, body, clock


@pytest.mark.parametrize(
    ("kind", "seen", "took_effect"),
    [
        ("throttle", "4400", False),
        ("http_500", 500, False),
        ("http_502", 502, False),
        ("http_503", 503, False),
        ("internal_error", "6000", False),
        ("drop_before", aiohttp.ServerDisconnectedError, False),
        ("malformed_body", "html", True),
        ("truncated_body", aiohttp.ClientPayloadError, True),
        ("drop_after", aiohttp.ServerDisconnectedError, True),
        ("withhold_after", aiohttp.ServerDisconnectedError, True),
    ],
)
async def test_response_faults(kind: str, seen: Any, took_effect: bool) -> None:
    """Each response fault shows the client its symptom, takes effect only if documented so, and is counted."""
    sim, status, body, clock = await _raw_unassign(kind)
    if isinstance(seen, type):
        assert isinstance(status, seen)
    elif isinstance(seen, int):
        assert status == seen
        assert body.startswith(b"<html>")
    elif seen == "html":
        assert status == 200
        with pytest.raises(ValueError, match="Expecting value"):
            json.loads(body)
    else:
        answer = json.loads(body)
        assert answer["code"] == int(seen)
        if kind == "throttle":
            assert (
                answer["message"]
                == "request times equals to 101 in a second, which exceeds the frequency limit 100"
            )
    assert bool(sim.ground_truth()["tasks"]) is took_effect
    assert sim.stats()["faults"][kind] == 1
    if kind == "withhold_after":
        assert 30.0 in clock.sleeps


async def test_plain_aiohttp_session_replays_a_dropped_get() -> None:
    """aiohttp resends an idempotent GET once after a disconnect; the simulator refuses the replayed nonce (4500).

    A pinned trap for API 2.0 clients: a signed GET that was dropped after its effect comes back as ReplayAttack.
    """
    sim = Simulator(SimulatorConfig(enis=2, keys=DOC_KEYS, faults=only("drop_after")))
    eni = first_eni(sim)
    async with running(sim) as server, aiohttp.ClientSession() as session:
        host = server.endpoint.removeprefix("http://")
        params = {
            "Action": UNASSIGN,
            "Region": sim.region,
            "SecretId": DOC_SECRET_ID,
            "Timestamp": str(int(time.time())),
            "Nonce": "77",
            "vpcId": eni["vpc_id"],
            "networkInterfaceId": eni["eni_id"],
            "privateIpAddress.0": eni["secondary_ips"][0],
        }
        params["Signature"] = signing.v2_sign(DOC_SECRET_KEY, "GET", host, "/v2/index.php", params, "")
        async with session.get(f"{server.endpoint}/v2/index.php?{urlencode(params)}") as resp:
            answer = json.loads(await resp.read())
    assert answer["code"] == 4500
    assert sim.stats()["requests"] == {UNASSIGN: 2}
    assert len(sim.ground_truth()["tasks"]) == 1


async def test_latency_fault_sleeps_on_the_clock() -> None:
    """The latency fault delays the answer on the injected clock and the call still succeeds."""
    clock = FakeClock()
    sim = make_sim(clock, faults=only("latency", latency_seconds=4.0))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        answer = await V2(client, clock).unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
    assert answer["code"] == 0
    assert len(clock.sleeps) == 1
    assert 0 < clock.sleeps[0] <= 4.0
    assert sim.stats()["faults"]["latency"] == 1


async def test_internal_error_in_api3() -> None:
    """An injected server fault is an InternalError envelope in API 3.0 too."""
    clock = FakeClock()
    sim = make_sim(clock, faults=only("internal_error"))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        answer = await V3(client, clock).call(
            UNASSIGN,
            {
                "NetworkInterfaceId": eni["eni_id"],
                "PrivateIpAddresses": [{"PrivateIpAddress": eni["secondary_ips"][0]}],
            },
        )
    assert answer["Response"]["Error"]["Code"] == "InternalError"


@pytest.mark.parametrize("kind", ["task_failed", "task_partial", "task_slow"])
async def test_task_faults(kind: str) -> None:
    """Tasks fail wholly (nothing released), fail part-way (some released), or stay RUNNING a long time."""
    clock = FakeClock()
    sim = make_sim(clock, task_latency=(1.0, 0.0), faults=only(kind, slow_task_factor=50.0))
    eni = first_eni(sim)
    ips = eni["secondary_ips"]
    async with client_for(sim) as client:
        v3 = V3(client, clock)
        started = await v3.call(
            UNASSIGN,
            {
                "NetworkInterfaceId": eni["eni_id"],
                "PrivateIpAddresses": [{"PrivateIpAddress": i} for i in ips],
            },
        )
        task_id = started["Response"]["RequestId"]
        clock.advance(1.0)
        first = (await v3.call("DescribeVpcTaskResult", {"TaskId": task_id}))["Response"]
        clock.advance(60.0)
        later = (await v3.call("DescribeVpcTaskResult", {"TaskId": task_id}))["Response"]
    left = first_eni(sim)["secondary_ips"]
    if kind == "task_slow":
        assert (first["Status"], later["Status"]) == ("RUNNING", "SUCCESS")
        assert left == []
    else:
        assert first["Status"] == "FAILED"
        assert first["Output"]
        assert first["Output"] != "SUCCESS"
        assert (left == ips) is (kind == "task_failed")
        assert 0 < len(left) < len(ips) or kind == "task_failed"
    assert sim.stats()["faults"][kind] == 1
    assert sim.stats()["tasks"]["RUNNING"] == 0


def test_same_seed_same_fault_sequence() -> None:
    """Two injectors with one profile and seed draw identical plans; another seed draws different ones."""
    profile = load_fault_profile("hostile")
    injectors = [FaultInjector(profile, seed) for seed in (5, 5, 6)]
    draws = [[injector.draw(UNASSIGN) for _ in range(300)] for injector in injectors]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    kinds = {p.response for p in draws[0]} | {p.task.kind for p in draws[0]}
    assert kinds >= {"throttle", "drop_after", "task_partial"}


def test_named_profiles_load_and_match_config_copies() -> None:
    """The built-in profiles load by name, get stricter from none to hostile, and equal config/faults/ copies."""
    profiles = {name: load_fault_profile(name) for name in PROFILE_NAMES}
    assert not profiles["none"].active
    assert profiles["flaky"].active
    hostile = profiles["hostile"].rates
    assert all(0.03 <= getattr(hostile, kind) <= 0.08 for kind in ALL_KINDS)
    package = REPO / "eni_async" / "simulator" / "profiles"
    for name in PROFILE_NAMES:
        assert (REPO / "config" / "faults" / f"{name}.toml").read_text() == (
            package / f"{name}.toml"
        ).read_text()
        assert load_fault_profile(str(REPO / "config" / "faults" / f"{name}.toml")) == profiles[name]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour = 1\n", "colour"),
        ("[rates]\nexplode = 0.1\n", "rates.explode"),
        ("[rates]\nthrottle = 2\n", "rates.throttle"),
        ("[rates]\nhttp_500 = 0.6\nhttp_502 = 0.6\n", "rates"),
        ("[actions.Reboot]\nthrottle = 0.1\n", "actions.Reboot"),
        ("latency_seconds = -1\n", "latency_seconds"),
    ],
)
def test_bad_profile_files_name_the_key(tmp_path: Path, text: str, field: str) -> None:
    """A profile file with an unknown or invalid key raises ConfigError naming that key."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_fault_profile(str(path))
    assert caught.value.field == field


def test_unknown_profile_name() -> None:
    """An unknown profile name raises ConfigError listing the known ones."""
    with pytest.raises(ConfigError, match="none, flaky, hostile"):
        load_fault_profile("apocalyptic")


def test_action_overrides_inherit_rates(tmp_path: Path) -> None:
    """An [actions.X] table overrides only the kinds it names and inherits the rest from [rates]."""
    path = tmp_path / "mine.toml"
    path.write_text(
        "seed = 3\n[rates]\nthrottle = 0.2\nhttp_502 = 0.1\n[actions.DescribeVpcTaskResult]\nthrottle = 0\n"
    )
    profile = load_fault_profile(str(path))
    task_rates = profile.rates_for("DescribeVpcTaskResult")
    assert (profile.name, profile.seed) == ("mine", 3)
    assert (task_rates.throttle, task_rates.http_502) == (0.0, 0.1)
    assert profile.rates_for(UNASSIGN).throttle == 0.2


# -- throttle message forms and per-resource denials (docs/protocol.md D17, D18) --------------------------------

# The texts Tencent sends, written out here so that the simulator is checked against them, not against itself.
THROTTLE_TEXTS = {
    "plain": "request times equals to {n} in a second, which exceeds the frequency limit {limit}",
    "backticks": "request times equals to `{n}` in a second, which exceeds the frequency limit `{limit}` for a second",
    "chinese": "您当前每秒请求 `{n}` 次，超过了每秒频率上限 `{limit}`，请稍后重试",
}
DESCRIBE = "DescribeNetworkInterfaces"


@pytest.mark.parametrize("dialect", ["v2", "v3"])
@pytest.mark.parametrize("form", sorted(THROTTLE_TEXTS))
async def test_rate_limit_answers_in_the_chosen_message_form(dialect: str, form: str) -> None:
    """Over the limit, the throttle answer carries Tencent's text in the profile's chosen form."""
    clock = FakeClock()
    sim = make_sim(clock, rate_limits={DESCRIBE: 1}, faults=FaultProfile(name=form, throttle_message=form))
    async with client_for(sim) as client:
        if dialect == "v2":
            v2 = V2(client, clock)
            assert (await v2.call(DESCRIBE))["code"] == 0
            answer = await v2.call(DESCRIBE)
            assert (answer["code"], answer["codeDesc"]) == (4400, "RequestLimitExceeded")
            message = answer["message"]
        else:
            v3 = V3(client, clock)
            assert "Error" not in (await v3.call(DESCRIBE))["Response"]
            error = (await v3.call(DESCRIBE))["Response"]["Error"]
            assert error["Code"] == "RequestLimitExceeded"
            message = error["Message"]
    assert message == THROTTLE_TEXTS[form].format(n=2, limit=1)


@pytest.mark.parametrize("form", sorted(THROTTLE_TEXTS))
async def test_injected_throttle_fault_uses_the_chosen_form(form: str) -> None:
    """An injected throttle states the action's limit in the profile's message form too."""
    clock = FakeClock()
    sim = make_sim(clock, faults=only("throttle", throttle_message=form))
    eni = first_eni(sim)
    async with client_for(sim) as client:
        answer = await V2(client, clock).unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"][:1])
    assert answer["message"] == THROTTLE_TEXTS[form].format(n=101, limit=100)


async def test_denied_eni_is_refused_per_resource_in_both_dialects() -> None:
    """A denied ENI answers 4102 (API 2.0) and UnauthorizedOperation (API 3.0); it can still be described."""
    clock = FakeClock()
    sim = make_sim(clock)
    denied, allowed = sim.ground_truth()["enis"][:2]
    sim.denied_enis.add(denied["eni_id"])
    async with client_for(sim) as client:
        v2, v3 = V2(client, clock), V3(client, clock)
        refused2 = await v2.unassign(denied["vpc_id"], denied["eni_id"], denied["secondary_ips"][:1])
        refused3 = await v3.call(
            UNASSIGN,
            {
                "NetworkInterfaceId": denied["eni_id"],
                "PrivateIpAddresses": [{"PrivateIpAddress": denied["secondary_ips"][0]}],
            },
        )
        described = await v3.call(DESCRIBE, {"NetworkInterfaceIds": [denied["eni_id"]]})
        accepted = await v2.unassign(allowed["vpc_id"], allowed["eni_id"], allowed["secondary_ips"][:1])
    clock.advance(60.0)
    assert (refused2["code"], refused2["codeDesc"]) == (4102, "UnauthorizedOperation")
    assert refused3["Response"]["Error"]["Code"] == "UnauthorizedOperation"
    assert denied["eni_id"] in refused3["Response"]["Error"]["Message"]
    assert described["Response"]["TotalCount"] == 1
    assert accepted["code"] == 0
    after = {e["eni_id"]: e for e in sim.ground_truth()["enis"]}
    assert after[denied["eni_id"]]["secondary_ips"] == denied["secondary_ips"]
    assert len(after[allowed["eni_id"]]["secondary_ips"]) == len(allowed["secondary_ips"]) - 1


def test_profile_file_sets_throttle_form_and_denied_enis(tmp_path: Path) -> None:
    """A profile file may choose the throttle message form and list ENIs to deny."""
    path = tmp_path / "strict.toml"
    path.write_text('throttle_message = "chinese"\ndenied_enis = ["eni-aaaa1111", "eni-bbbb2222"]\n')
    profile = load_fault_profile(str(path))
    assert profile.throttle_message == "chinese"
    assert profile.denied_enis == {"eni-aaaa1111", "eni-bbbb2222"}
    sim = make_sim(faults=profile)
    assert sim.denied_enis == {"eni-aaaa1111", "eni-bbbb2222"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('throttle_message = "klingon"\n', "throttle_message"),
        ("throttle_message = 3\n", "throttle_message"),
        ('denied_enis = "eni-aaaa1111"\n', "denied_enis"),
        ('denied_enis = ["vpc-aaaa1111"]\n', "denied_enis"),
    ],
)
def test_bad_throttle_form_or_denied_list_names_the_key(tmp_path: Path, text: str, field: str) -> None:
    """A wrong throttle form or a denied list that is not ENI ids is a ConfigError naming the key."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_fault_profile(str(path))
    assert caught.value.field == field


def test_throttle_form_checked_on_the_profile_value() -> None:
    """A profile built in code with an unknown throttle form is refused at once."""
    with pytest.raises(ConfigError) as caught:
        FaultProfile(throttle_message="shouting")
    assert caught.value.field == "throttle_message"


def test_simulator_shares_no_client_error_logic() -> None:
    """The simulator's own code tables stand alone: from the client's errors it takes only config errors."""
    import ast

    allowed = {"ConfigError", "InputError"}
    for path in sorted((REPO / "eni_async" / "simulator").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("eni_async.errors", "eni_async.dialects"):
                assert {alias.name for alias in node.names} <= allowed, path.name
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("eni_async.dialects")
            ):
                raise AssertionError(f"{path.name} imports {node.module}")
            if isinstance(node, ast.Import):
                assert not any(
                    a.name.startswith(("eni_async.errors", "eni_async.dialects")) for a in node.names
                )
