"""The shared quota from the outside: settings, the CLI, the client across a Redis restart, the simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from eni_async.cli import build_parser, main, settings_from
from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.credentials import credential_chain
from eni_async.errors import ConfigError
from eni_async.models import Credentials
from eni_async.outcomes import Item
from eni_async.settings import RateLimits, Settings, load_settings
from eni_async.shared_quota import SharedBudgets
from eni_async.simulator import Simulator, SimulatorConfig, running
from eni_async.simulator.command import build_config, parse_sub_accounts
from eni_async.simulator.keys import role_id_of, uin_of
from eni_async.simulator.limits import RateLimiter
from eni_async.simulator.rejects import Reject
from eni_async.testing import jsonl_lines
from eni_async.throttle import Budgets, BudgetTable
from tests.conftest import RedisServer, _free_port

SERVED = {"enis": 6, "ips_per_eni": 2, "seed": 9, "task_latency": (0.0, 0.0)}


def test_without_the_setting_redis_is_never_imported() -> None:
    """A client and the CLI without ``shared_quota`` do not import ``redis`` (checked in a fresh interpreter)."""
    code = (
        "import sys\n"
        "import eni_async.cli\n"
        "from eni_async import EniClient, Settings\n"
        "from eni_async.models import Credentials\n"
        "client = EniClient(Credentials('AKIDx', 'k'), Settings())\n"
        "print(type(client.budgets).__name__, 'redis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["Budgets", "False"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379/0", "expected redis://"),
        ("redis://:pw@127.0.0.1:99999/0", "not a URL"),
        ("redis:///0", "expected redis://"),
        ("redis://127.0.0.1:6379/zero", "database number"),
    ],
)
def test_a_bad_shared_quota_url_is_a_config_error_without_the_password(url: str, reason: str) -> None:
    """A URL that is not redis[s]://HOST[:PORT][/DB] is refused up front, naming the key."""
    with pytest.raises(ConfigError) as caught:
        Settings(shared_quota=url)
    assert caught.value.field == "shared_quota"
    assert reason in str(caught.value)
    assert ":pw@" not in str(caught.value)


def test_settings_take_the_shared_quota_from_the_file_and_mask_its_password(tmp_path: Path) -> None:
    """``shared_quota`` and ``quota_key`` come from the settings file; the repr hides the password."""
    config = tmp_path / "c.toml"
    config.write_text('shared_quota = "rediss://u:pa55@redis.internal:6380/2"\nquota_key = "team-a"\n')
    settings = load_settings(config)
    assert (settings.shared_quota, settings.quota_key) == ("rediss://u:pa55@redis.internal:6380/2", "team-a")
    assert "pa55" not in repr(settings)
    assert "rediss://u:***@redis.internal:6380/2" in repr(settings)
    with pytest.raises(ConfigError, match="quota_key"):
        Settings(quota_key="has space")


def test_the_client_builds_budgets_in_redis_only_with_the_setting(redis_server: RedisServer) -> None:
    """With ``shared_quota`` the client's budgets are ``SharedBudgets`` keyed by ``quota_key`` and region."""
    creds = SimulatorConfig().key_pairs()
    secret_id = next(iter(creds))
    shared = EniClient(
        Credentials(secret_id, creds[secret_id]),
        Settings(shared_quota=redis_server.url, quota_key="team", region="ap-shanghai"),
    )
    assert isinstance(shared.budgets, SharedBudgets)
    assert shared.budgets["DescribeVpcTaskResult"]._keys[0] == (
        "eni_async:{team:ap-shanghai:DescribeVpcTaskResult}:sends"
    )
    assert isinstance(EniClient(Credentials(secret_id, "k"), Settings()).budgets, Budgets)


async def test_batch_with_an_unreachable_redis_exits_2_naming_the_url(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch --shared-quota`` with nothing listening: one line naming the URL (password masked), exit 2."""
    sim, endpoint = served
    source = tmp_path / "in.jsonl"
    eni = sim.ground_truth()["enis"][0]
    source.write_text(jsonl_lines([eni | {"ips": ["10.0.0.9"]}], ips="ips"))
    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    code = await asyncio.to_thread(
        main, ["batch", str(source), "--endpoint", endpoint, "--shared-quota", url, "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert url.replace("hunter2", "***") in err
    assert "hunter2" not in err
    assert sum(sim.requests.values()) == 0


async def test_batch_with_shared_quota_spends_the_accounts_quota_in_redis(
    served: tuple[Simulator, str], redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch --shared-quota URL`` releases everything and its calls were reserved in that Redis."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    output = tmp_path / "out.jsonl"
    monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", endpoint)  # who the keys are: the simulator's STS says
    args = ["batch", str(source), "--endpoint", endpoint, "--region", sim.region, "--output", str(output)]
    code = await asyncio.to_thread(main, [*args, "--shared-quota", redis_server.url, "--no-progress"])
    assert code == 0
    assert all(e["secondary_ips"] == [] for e in sim.ground_truth()["enis"])
    client = aioredis.Redis.from_url(redis_server.url)
    keys = [k.decode() if isinstance(k, bytes) else k for k in await client.keys("eni_async:*")]
    await client.aclose()
    assert any(k.endswith(f":{sim.region}:UnassignPrivateIpAddresses}}:sends") for k in keys)


async def test_redis_killed_and_restarted_mid_batch_changes_no_outcome(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis killed mid-batch and started again: one WARNING each way, every IP released, no call doubled."""
    limits = {"UnassignPrivateIpAddresses": 20, "DescribeVpcTaskResult": 20}
    sim = Simulator(
        SimulatorConfig(enis=30, ips_per_eni=1, seed=4, task_latency=(0.0, 0.0), rate_limits=limits)
    )
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", server.endpoint)
        settings = Settings(
            endpoint=server.endpoint,
            region=sim.region,
            shared_quota=redis_server.url,
            rate_limits=RateLimits(unassign=20, task_query=20),
            shared_quota_probe=0.2,
        )
        settings = replace(settings, poll=replace(settings.poll, first=0.01, initial=0.01))
        items = [
            Item(e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"])) for e in sim.ground_truth()["enis"]
        ]

        async def outage() -> None:
            await asyncio.sleep(0.4)
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(redis_server.start)

        with caplog.at_level(logging.WARNING, logger="eni_async"):
            async with EniClient(sim.credentials, settings) as client:
                fault = asyncio.create_task(outage())
                outcomes = [o async for o in client.unassign_many(items)]
                await fault
                # The outage may outlast the batch: one more call, a probe later, shows it back on Redis.
                await asyncio.sleep(0.25)
                await client.describe_eni(items[0].eni_id)
    messages = [r.getMessage() for r in caplog.records]
    assert sorted(o.status for o in outcomes) == ["succeeded"] * 30
    assert all(e["secondary_ips"] == [] for e in sim.ground_truth()["enis"])
    assert sim.requests["UnassignPrivateIpAddresses"] == 30
    assert sum(sim.throttled.values()) == 0
    assert sum("lost" in m for m in messages) == 1
    assert sum("is back" in m for m in messages) == 1


def test_simulator_counts_limits_per_sub_account() -> None:
    """SecretIds told to share a sub-account share its limits; others each have their own."""
    clock = FakeClock()
    limits = {"DescribeVpcTaskResult": 2}
    shared = RateLimiter(clock, limits, accounts=parse_sub_accounts(["team=AKID1,AKID2"]), region="r")
    alone = RateLimiter(clock, limits, region="r")
    for limiter in (shared, alone):
        limiter.check("AKID1", "DescribeVpcTaskResult")
        limiter.check("AKID1", "DescribeVpcTaskResult")
    with pytest.raises(Reject):
        shared.check("AKID2", "DescribeVpcTaskResult")
    alone.check("AKID2", "DescribeVpcTaskResult")
    with pytest.raises(Exception, match="--sub-account"):
        parse_sub_accounts(["team"])


def test_every_command_that_makes_a_client_takes_shared_quota(tmp_path: Path) -> None:
    """Each command with client options (``--endpoint``) accepts ``--shared-quota`` into its settings."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_client = {
        name: sub
        for name, sub in commands.choices.items()
        if any("--endpoint" in a.option_strings for a in sub._actions)
    }
    assert {"unassign", "batch", "resume"} <= set(with_client)
    for sub in with_client.values():
        assert any("--shared-quota" in a.option_strings for a in sub._actions)
    args = parser.parse_args(["resume", str(tmp_path / "j"), "--shared-quota", "redis://127.0.0.1:6379/1"])
    assert settings_from(args).shared_quota == "redis://127.0.0.1:6379/1"


def test_simulate_takes_several_keys_and_sub_accounts() -> None:
    """``simulate`` accepts repeated key pairs and ``--sub-account``, and refuses unpaired keys."""
    parser = build_parser()
    args = parser.parse_args(
        ["simulate", "--secret-id", "AKID1", "--secret-key", "k1", "--secret-id", "AKID2", "--secret-key", "k2",
         "--sub-account", "team=AKID1,AKID2"]
    )  # fmt: skip
    config = build_config(args)
    assert config.key_pairs() == {"AKID1": "k1", "AKID2": "k2"}
    assert config.accounts == {"AKID1": "team", "AKID2": "team"}
    with pytest.raises(ConfigError, match="as many of each"):
        build_config(parser.parse_args(["simulate", "--secret-id", "AKID1"]))


def test_both_kinds_of_budget_table_give_the_same_interface(redis_server: RedisServer) -> None:
    """``Budgets`` and ``SharedBudgets`` both satisfy ``BudgetTable``, so client code takes either."""

    def rate_of(table: BudgetTable) -> float:
        return table["DescribeVpcTaskResult"].rate

    rates = {"DescribeVpcTaskResult": 7}
    local = Budgets(rates, FakeClock())
    shared = SharedBudgets(rates, FakeClock(), url=redis_server.url, account="a", region="r")
    assert (rate_of(local), rate_of(shared)) == (7, 7)


async def test_the_quota_is_the_sub_accounts_asked_once_per_source(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two SecretIds of one sub-account share one quota, a third has its own; STS is asked once per source;
    ``quota_key`` overrides it without asking; a regional endpoint names the access region."""
    keys = {"AKIDone": "k1", "AKIDtwo": "k2", "AKIDthree": "k3"}
    config = SimulatorConfig(enis=1, keys=keys, accounts={"AKIDone": "ops", "AKIDtwo": "ops"})
    sim = Simulator(config)
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", server.endpoint)
        settings = Settings(shared_quota=redis_server.url, endpoint=server.endpoint)
        accounts = []
        for secret_id in ["AKIDone", "AKIDtwo", "AKIDthree", "AKIDone"]:
            async with EniClient(Credentials(secret_id, keys[secret_id]), settings) as client:
                assert isinstance(client.budgets, SharedBudgets)
                accounts.append(client.budgets.account)
        asked = sim.sts.calls["GetCallerIdentity"]
        named = EniClient(Credentials("AKIDone", "k1"), replace(settings, quota_key="team-a"))
        regional = EniClient(
            Credentials("AKIDone", "k1"),
            replace(settings, endpoint="https://vpc.ap-beijing.tencentcloudapi.com", quota_key="q"),
        )
    assert accounts[0] == accounts[1] == accounts[3] == f"uin-{uin_of('ops')}"
    assert accounts[2] == f"uin-{uin_of('AKIDthree')}"
    assert asked == 3, "once per source: the second client of AKIDone asked no more"
    assert isinstance(named.budgets, SharedBudgets)
    assert named.budgets.account == "team-a"
    assert sim.sts.calls["GetCallerIdentity"] == asked
    assert isinstance(regional.budgets, SharedBudgets)
    assert regional.budgets.region == "ap-beijing"


async def test_renewed_role_credentials_keep_one_quota(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CVM role's keys change their SecretId at each renewal but not their quota: the role's, asked once."""
    clock = FakeClock()
    sim = Simulator(SimulatorConfig(enis=1, credential_lifetime=600.0), clock=clock)
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("ENI_ASYNC_METADATA_ENDPOINT", server.endpoint)
        monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", server.endpoint)
        provider = await credential_chain(clock=clock, profile_files=())
        settings = Settings(shared_quota=redis_server.url, endpoint=server.endpoint)
        first = await provider.get()
        async with EniClient(provider, settings, clock=clock) as client:
            assert isinstance(client.budgets, SharedBudgets)
            before = client.budgets.account
        clock.advance(590)
        assert (await provider.get()).secret_id != first.secret_id
        async with EniClient(provider, settings, clock=clock) as client:
            assert isinstance(client.budgets, SharedBudgets)
            after = client.budgets.account
    assert before == after == f"uin-{role_id_of('eni-async-role')}"
    assert sim.sts.calls["GetCallerIdentity"] == 1


def test_discovery_is_refused_with_a_shared_quota() -> None:
    """Probing the limits upward is per process, so it does not go with a quota shared by many."""
    with pytest.raises(ConfigError) as caught:
        Settings(shared_quota="redis://127.0.0.1:6379/0", discovery=True)
    assert caught.value.field == "discovery"
