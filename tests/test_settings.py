"""Settings come from code defaults, a TOML file and arguments; credentials from the environment or a file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from eni_async.clock import FakeClock
from eni_async.credentials import load_credentials
from eni_async.errors import ConfigError
from eni_async.models import Credentials
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings import (
    CONFIG_ENV,
    RateLimits,
    Settings,
    Timeouts,
    defaults_file,
    env_name,
    from_mapping,
    load_settings,
    scalar_keys,
)
from eni_async.throttle import WINDOW, Budgets

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config" / "eni-async.toml"
SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
TOKEN = "session-token-xyz"


def _write(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and the documented file ----------------------------------------------------------------------


def test_documented_file_equals_the_defaults_in_code() -> None:
    """``config/eni-async.toml`` lists every setting with exactly the default the code uses."""
    documented = tomllib.loads(CONFIG_FILE.read_text(encoding="utf-8"))
    assert documented == dataclasses.asdict(Settings())


def test_loading_the_documented_file_changes_nothing() -> None:
    """Loading the documented file gives the default settings."""
    assert load_settings(CONFIG_FILE, environ={}) == Settings()


def test_no_file_gives_the_defaults() -> None:
    """Without a path or ``ENI_ASYNC_CONFIG`` the settings are the defaults."""
    assert load_settings(environ={}) == Settings()


def test_defaults_follow_decisions_d8() -> None:
    """The default rate limits are D8's: 100/s for the mutating calls and describe, 20/s for task queries."""
    assert Settings().rate_limits.by_action() == {
        "UnassignPrivateIpAddresses": 100,
        "DescribeVpcTaskResult": 20,
        "DescribeNetworkInterfaces": 100,
        "AssignPrivateIpAddresses": 100,
    }


# -- files, environment and overrides ----------------------------------------------------------------------


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    """Keys in the file replace the defaults; keys left out keep them, within sections too."""
    path = _write(
        tmp_path,
        'region = "ap-shanghai"\nendpoint = "http://127.0.0.1:8080"\n'
        "[rate_limits]\ntask_query = 5\n[poll]\ntimeout = 30\nadaptive = false\n",
    )
    settings = load_settings(path, environ={})
    assert settings == dataclasses.replace(
        Settings(),
        region="ap-shanghai",
        endpoint="http://127.0.0.1:8080",
        rate_limits=RateLimits(task_query=5),
        poll=PollPolicy(timeout=30.0, adaptive=False),
    )
    assert isinstance(settings.poll.timeout, float)


def test_config_file_from_the_environ_argument(tmp_path: Path) -> None:
    """``ENI_ASYNC_CONFIG`` in the given environ names the file to read."""
    path = _write(tmp_path, 'region = "ap-beijing"\n')
    assert load_settings(environ={CONFIG_ENV: str(path)}).region == "ap-beijing"


def test_explicit_path_beats_the_environment(tmp_path: Path) -> None:
    """A path given as an argument wins over ``ENI_ASYNC_CONFIG``."""
    from_env = _write(tmp_path, 'region = "ap-beijing"\n', "env.toml")
    given = _write(tmp_path, 'region = "ap-chengdu"\n', "given.toml")
    assert load_settings(given, environ={CONFIG_ENV: str(from_env)}).region == "ap-chengdu"


def test_empty_environment_variable_means_no_file() -> None:
    """An empty ``ENI_ASYNC_CONFIG`` reads no file."""
    assert load_settings(environ={CONFIG_ENV: ""}) == Settings()


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    """Arguments override the file, key by key, within sections too."""
    path = _write(tmp_path, 'region = "ap-shanghai"\n[poll]\ntimeout = 30.0\nfirst = 2.0\n')
    settings = load_settings(path, environ={}, overrides={"region": "ap-beijing", "poll": {"timeout": 5.0}})
    assert settings.region == "ap-beijing"
    assert settings.poll == PollPolicy(timeout=5.0, first=2.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('regoin = "gz"\n', "regoin"),
        ("[timeouts]\nconect = 1.0\n", "timeouts.conect"),
        ("[rate_limits]\nUnassignPrivateIpAddresses = 10\n", "rate_limits.UnassignPrivateIpAddresses"),
        ("[poll]\nfirst = 1.0\nlast = 2.0\n", "poll.last"),
        ("[retry]\ntries = 3\n", "retry.tries"),
        ("[credentials]\nsecret_id = 'x'\n", "credentials"),
    ],
)
def test_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    """An unknown top-level or section key is a ``ConfigError`` that names the key."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    assert info.value.field == key
    assert key in str(info.value)


@pytest.mark.parametrize(
    "text", ['secret_key = "SUPERSECRETVALUE123"\n', '[timeouts]\nsecret_key = "SUPERSECRETVALUE123"\n']
)
def test_an_unknown_keys_value_is_never_shown(tmp_path: Path, text: str) -> None:
    """A secret put under an unknown key is named by its key only, never echoed in the error."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    assert "secret_key" in str(info.value)
    assert "SUPERSECRETVALUE123" not in str(info.value)


def test_unknown_override_is_an_error_naming_it() -> None:
    """An unknown key among the overrides is a ``ConfigError`` too."""
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(environ={}, overrides={"bogus": 1})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"region": 5}, "region"),
        ({"endpoint": ["https://a"]}, "endpoint"),
        ({"verify_tls": "yes"}, "verify_tls"),
        ({"verify_tls": 1}, "verify_tls"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": "64"}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"timeouts": 5}, "timeouts"),
        ({"timeouts": {"connect": "5"}}, "timeouts.connect"),
        ({"timeouts": {"read": True}}, "timeouts.read"),
        ({"rate_limits": {"task_query": "20"}}, "rate_limits.task_query"),
        ({"retry": {"attempts": 3.0}}, "retry.attempts"),
        ({"poll": {"adaptive": 1}}, "poll.adaptive"),
        ({"poll": {"timeout": "600"}}, "poll.timeout"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(data: dict[str, Any], key: str) -> None:
    """A value of the wrong type (booleans are not numbers, numbers not strings) names its key."""
    with pytest.raises(ConfigError) as info:
        from_mapping(data)
    assert info.value.field == key


def test_integer_is_accepted_for_a_float_setting() -> None:
    """TOML integers are fine where a float is expected, and become floats."""
    settings = from_mapping({"timeouts": {"connect": 2}})
    assert settings.timeouts == Timeouts(connect=2.0)
    assert type(settings.timeouts.connect) is float


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"endpoint": "https://vpc.api.qcloud.com/v2/index.php"}, "endpoint"),
    ({"endpoint": "ftp://vpc.api.qcloud.com"}, "endpoint"),
    ({"endpoint": "vpc.api.qcloud.com"}, "endpoint"),
    ({"endpoint": "https://"}, "endpoint"),
    ({"endpoint": "https://vpc.api.qcloud.com:99999"}, "endpoint"),
    ({"endpoint": "https://vpc.api.qcloud.com:abc"}, "endpoint"),
    ({"endpoint": "https://vpc.api.qcloud.com?x=1"}, "endpoint"),
    ({"endpoint": "https://vpc.api.qcloud.com#frag"}, "endpoint"),
    ({"endpoint": "https://user:pw@vpc.api.qcloud.com"}, "endpoint"),
    ({"dialect": "v1"}, "dialect"),
    ({"dialect": "V2"}, "dialect"),
    ({"sign_method": "HmacSHA512"}, "sign_method"),
    ({"sign_method": "hmacsha256"}, "sign_method"),
    ({"proxy": "socks5://127.0.0.1:1080"}, "proxy"),
    ({"region": ""}, "region"),
    ({"concurrency": 0}, "concurrency"),
    ({"timeouts": {"connect": 0.0}}, "timeouts.connect"),
    ({"timeouts": {"total": -1.0}}, "timeouts.total"),
    ({"rate_limits": {"task_query": 0}}, "rate_limits.task_query"),
    ({"rate_limits": {"unassign": -5}}, "rate_limits.unassign"),
    ({"retry": {"attempts": 0}}, "retry.attempts"),
    ({"retry": {"deadline": 0.0}}, "retry.deadline"),
    ({"retry": {"initial": -1.0}}, "retry.initial"),
    ({"poll": {"timeout": -600.0}}, "poll.timeout"),
    ({"poll": {"maximum": 0.0}}, "poll.maximum"),
    ({"poll": {"initial": -0.5}}, "poll.initial"),
]


@pytest.mark.parametrize(("data", "key"), BAD_VALUES, ids=[repr(data) for data, _ in BAD_VALUES])
def test_bad_value_is_an_error_naming_the_key(data: dict[str, Any], key: str) -> None:
    """Bad endpoints, dialects, sign methods, proxies and non-positive numbers are errors naming the key."""
    with pytest.raises(ConfigError) as info:
        from_mapping(data)
    assert info.value.field == key


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://vpc.api.qcloud.com",
        "https://vpc.api.qcloud.com/",
        "http://127.0.0.1:8080",
        "http://[::1]:9000",
    ],
)
def test_good_endpoints_are_accepted(endpoint: str) -> None:
    """``scheme://host[:port]`` with http or https, and an optional trailing slash, is a valid endpoint."""
    assert from_mapping({"endpoint": endpoint}).endpoint == endpoint


def test_bad_value_in_a_file_is_an_error(tmp_path: Path) -> None:
    """The checks apply to values read from a file, not only to arguments."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, 'endpoint = "ftp://x"\n'), environ={})
    assert info.value.field == "endpoint"


@pytest.mark.parametrize(
    ("name", "content"), [("missing.toml", None), ("broken.toml", "region = \n"), ("binary.toml", "\udcff")]
)
def test_unreadable_file_is_a_config_error(tmp_path: Path, name: str, content: str | None) -> None:
    """A missing file, bad TOML or bad UTF-8 is a ``ConfigError`` about the config file."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.field == "config"


@pytest.mark.parametrize(
    ("dialect", "endpoint", "resolved"),
    [
        ("v2", "", "https://vpc.api.qcloud.com"),
        ("v3", "", "https://vpc.tencentcloudapi.com"),
        ("v2", "http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("v3", "https://vpc.intl.tencentcloudapi.com", "https://vpc.intl.tencentcloudapi.com"),
    ],
)
def test_resolved_endpoint(dialect: str, endpoint: str, resolved: str) -> None:
    """The endpoint used is the configured one without a trailing slash, or the dialect's documented one."""
    assert Settings(dialect=dialect, endpoint=endpoint).resolved_endpoint == resolved


def test_settings_are_frozen() -> None:
    """A ``Settings`` value cannot be changed in place."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().region = "x"  # type: ignore[misc]


def test_direct_construction_is_checked() -> None:
    """Building ``Settings`` directly runs the same checks as loading it."""
    with pytest.raises(ConfigError):
        Settings(retry=RetryPolicy(attempts=0))


# -- the environment, the profile and the region -------------------------------------------------------------


def test_every_scalar_setting_has_an_environment_variable() -> None:
    """Each scalar key maps to ``ENI_ASYNC_<KEY>``, sections joined with ``_``, and every one is honoured."""
    assert env_name("rate_limits.task_query") == "ENI_ASYNC_RATE_LIMITS_TASK_QUERY"
    samples = {bool: "false", int: "7", float: "3.5", str: ""}
    defaults = Settings()
    for key in scalar_keys():
        section, _, leaf = key.rpartition(".")
        default = getattr(getattr(defaults, section), leaf) if section else getattr(defaults, leaf)
        chosen = {
            "region": "ap-chengdu",
            "dialect": "v3",
            "sign_method": "HmacSHA1",
            "profile": "ops",
            "confirm": "task",
        }
        text = chosen.get(key, samples[type(default)])
        loaded = load_settings(environ={env_name(key): text})
        value = getattr(getattr(loaded, section), leaf) if section else getattr(loaded, leaf)
        expected = {"false": False, "7": 7, "3.5": 3.5, "": ""}.get(text, text)
        assert value == expected, key


def test_environment_beats_the_file_and_arguments_beat_the_environment(tmp_path: Path) -> None:
    """File < ``ENI_ASYNC_*`` < arguments, key by key; keys not overridden keep the file's value."""
    path = _write(tmp_path, 'dialect = "v3"\nconcurrency = 5\n[poll]\ntimeout = 30.0\n')
    environ = {
        "ENI_ASYNC_CONCURRENCY": "9",
        "ENI_ASYNC_POLL_TIMEOUT": "12.5",
        "ENI_ASYNC_POLL_ADAPTIVE": "no",
    }
    settings = load_settings(path, environ=environ, overrides={"concurrency": 11})
    assert (settings.dialect, settings.concurrency) == ("v3", 11)
    assert settings.poll == PollPolicy(timeout=12.5, adaptive=False)


@pytest.mark.parametrize(
    ("name", "text", "hint"),
    [
        ("ENI_ASYNC_CONCURRENCY", "many", "whole number"),
        ("ENI_ASYNC_POLL_ADAPTIVE", "maybe", "true or false"),
        ("ENI_ASYNC_TIMEOUTS_READ", "1s", "number"),
        ("ENI_ASYNC_CONCURRENCY", "0", "between 1 and"),
        ("ENI_ASYNC_POLL_TIMEOUT", "-1", "positive"),
        ("ENI_ASYNC_DIALECT", "v9", "v2, v3"),
        ("TENCENTCLOUD_REGION", "Bad_Region", "lowercase"),
        ("ENI_ASYNC_REGOIN", "ap-shanghai", "did you mean 'ENI_ASYNC_REGION'?"),
        ("ENI_ASYNC_RATE_LIMIT_TASK_QUERY", "5", "did you mean 'ENI_ASYNC_RATE_LIMITS_TASK_QUERY'?"),
    ],
)
def test_bad_environment_variable_is_an_error_naming_it(name: str, text: str, hint: str) -> None:
    """A bad value from a variable, or an unknown ``ENI_ASYNC_*`` name, is a ``ConfigError`` naming the variable."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: text})
    assert info.value.field == name
    assert hint in str(info.value)


# What the kubelet injects for a Service named eni-async (port 8750, named http) and one named
# eni-async-metrics, into every pod of the namespace (D28).
SERVICE_LINKS = {
    "ENI_ASYNC_SERVICE_HOST": "10.96.0.12",
    "ENI_ASYNC_SERVICE_PORT": "8750",
    "ENI_ASYNC_SERVICE_PORT_HTTP": "8750",
    "ENI_ASYNC_PORT": "tcp://10.96.0.12:8750",
    "ENI_ASYNC_PORT_8750_TCP": "tcp://10.96.0.12:8750",
    "ENI_ASYNC_PORT_8750_TCP_PROTO": "tcp",
    "ENI_ASYNC_PORT_8750_TCP_PORT": "8750",
    "ENI_ASYNC_PORT_8750_TCP_ADDR": "10.96.0.12",
    "ENI_ASYNC_METRICS_SERVICE_HOST": "fd00:10:96::c",
    "ENI_ASYNC_METRICS_PORT": "tcp://[fd00:10:96::c]:9100",
    "ENI_ASYNC_METRICS_PORT_9100_UDP_PROTO": "udp",
}


def test_kubernetes_service_links_are_ignored_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    """Kubernetes service-link variables change no setting and stop nothing; each is named in a debug line."""
    caplog.set_level(logging.DEBUG, logger="eni_async.settings")
    assert load_settings(environ={**SERVICE_LINKS, "ENI_ASYNC_REGION": "ap-beijing"}) == Settings(
        region="ap-beijing"
    )
    ignored = {r.getMessage().partition(":")[0] for r in caplog.records if "service-link" in r.getMessage()}
    assert ignored == set(SERVICE_LINKS)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ENI_ASYNC_PORT", "8750"),  # someone meant --port: not the kubelet's tcp://ADDR:PORT
        ("ENI_ASYNC_SERVICE_HOST", "eni-async.default.svc"),
        ("ENI_ASYNC_PORT_8750_TCP_PROTO", "http"),
        ("ENI_ASYNC_SERVICE_PORT", "http"),
        ("ENI_ASYNC_SERVICE_HOSTS", "10.96.0.12"),
        ("ENI_ASYNC_BOGUS", "1"),
    ],
)
def test_other_unknown_variables_are_still_refused(name: str, text: str) -> None:
    """A variable that is not a service link by both name and value is still refused as an unknown setting."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**SERVICE_LINKS, name: text})
    assert info.value.field == name
    assert "unknown setting" in str(info.value)
    assert text not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "closest"),
    [
        ('regoin = "gz"\n', "regoin", "region"),
        ("[rate_limits]\ntask_qeury = 5\n", "rate_limits.task_qeury", "rate_limits.task_query"),
        ("task_query = 5\n", "task_query", "rate_limits.task_query"),
        ("[poll]\ntimout = 5.0\n", "poll.timout", "poll.timeout"),
    ],
)
def test_unknown_key_names_the_closest_valid_key(tmp_path: Path, text: str, key: str, closest: str) -> None:
    """An unknown key's error says which valid key was probably meant."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    assert info.value.field == key
    assert f"did you mean '{closest}'?" in str(info.value)


def test_unknown_key_far_from_any_is_not_guessed(tmp_path: Path) -> None:
    """No suggestion is made when nothing is close."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, "xyzzy = 1\n"), environ={})
    assert "did you mean" not in str(info.value)


def test_fractional_rate_is_accepted_and_spent_at_that_rate(tmp_path: Path) -> None:
    """``task_query = 6.5`` loads as 6.5, and the client's budget then spends 6.5 calls per window over time."""
    settings = load_settings(_write(tmp_path, "[rate_limits]\ntask_query = 6.5\n"), environ={})
    assert settings.rate_limits.task_query == 6.5
    clock = FakeClock()
    budget = Budgets(settings.rate_limits.by_action(), clock)["DescribeVpcTaskResult"]

    async def run() -> list[float]:
        times = []
        for _ in range(66):
            await budget.acquire()
            times.append(clock.monotonic())
        return times

    times = asyncio.run(run())
    # 65 intervals at 6.5 per window take 10 windows; 7 would take about 9.3, 6 about 10.8.
    assert times[-1] == pytest.approx(10 * WINDOW, rel=0.01)
    assert max(sum(1 for u in times if t <= u < t + WINDOW) for t in times) <= 7
    assert budget.rate == 6.5


def _profile_home(
    tmp_path: Path,
    *,
    credentials: str | None = None,
    tccli: dict[str, Any] | None = None,
    profile: str = "default",
) -> Path:
    home = tmp_path / "home"
    (home / ".tencentcloud").mkdir(parents=True, exist_ok=True)
    (home / ".tccli").mkdir(exist_ok=True)
    if credentials is not None:
        (home / ".tencentcloud" / "credentials").write_text(credentials, encoding="utf-8")
    if tccli is not None:
        (home / ".tccli" / f"{profile}.configure").write_text(json.dumps(tccli), encoding="utf-8")
    return home


REGION_CASES = [
    # (arguments, environment, file, profile file region, tccli region) -> chosen
    (
        {"region": "ap-a"},
        {"ENI_ASYNC_REGION": "ap-b", "TENCENTCLOUD_REGION": "ap-c"},
        "ap-d",
        "ap-e",
        "ap-f",
        "ap-a",
    ),
    ({}, {"ENI_ASYNC_REGION": "ap-b", "TENCENTCLOUD_REGION": "ap-c"}, "ap-d", "ap-e", "ap-f", "ap-b"),
    ({}, {"TENCENTCLOUD_REGION": "ap-c"}, "ap-d", "ap-e", "ap-f", "ap-c"),
    ({}, {}, "ap-d", "ap-e", "ap-f", "ap-d"),
    ({}, {}, None, "ap-e", "ap-f", "ap-e"),
    ({}, {}, None, None, "ap-f", "ap-f"),
    ({}, {}, None, None, None, "ap-guangzhou"),
]


@pytest.mark.parametrize(("overrides", "environ", "file", "profile", "tccli", "chosen"), REGION_CASES)
def test_region_precedence(
    tmp_path: Path,
    overrides: dict[str, str],
    environ: dict[str, str],
    file: str | None,
    profile: str | None,
    tccli: str | None,
    chosen: str,
) -> None:
    """--region > ENI_ASYNC_REGION > TENCENTCLOUD_REGION > settings file > the profile's region > the default."""
    path = _write(tmp_path, f'region = "{file}"\n' if file else "")
    home = _profile_home(
        tmp_path,
        credentials=f"[default]\nsecret_id = x\nsecret_key = y\nregion = {profile}\n" if profile else None,
        tccli={"_sys_param": {"region": tccli, "output": "json"}} if tccli else None,
    )
    settings = load_settings(path, environ=environ, overrides=overrides, home=home, etc=tmp_path / "etc")
    assert settings.region == chosen


def test_chosen_region_and_its_source_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The region and where it came from are logged at INFO (what ``-v`` shows)."""
    home = _profile_home(tmp_path, tccli={"_sys_param": {"region": "ap-nanjing"}}, profile="ops")
    with caplog.at_level(logging.INFO, logger="eni_async.settings"):
        load_settings(environ={"TCCLI_PROFILE": "ops"}, home=home, etc=tmp_path / "etc")
    assert "region ap-nanjing (from " in caplog.text
    assert str(home / ".tccli" / "ops.configure") in caplog.text


@pytest.mark.parametrize(
    ("overrides", "environ", "file", "chosen"),
    [
        ({"profile": "a"}, {"ENI_ASYNC_PROFILE": "b", "TCCLI_PROFILE": "c"}, "d", "a"),
        ({}, {"ENI_ASYNC_PROFILE": "b", "TCCLI_PROFILE": "c"}, "d", "b"),
        ({}, {"TCCLI_PROFILE": "c"}, "d", "c"),
        ({}, {}, "d", "d"),
        ({}, {}, None, "default"),
    ],
)
def test_profile_precedence(
    tmp_path: Path, overrides: dict[str, str], environ: dict[str, str], file: str | None, chosen: str
) -> None:
    """--profile > ENI_ASYNC_PROFILE > TCCLI_PROFILE (as tccli reads it) > settings file > ``default``."""
    path = _write(tmp_path, f'profile = "{file}"\n' if file else "")
    settings = load_settings(path, environ=environ, overrides=overrides, home=tmp_path, etc=tmp_path)
    assert settings.profile == chosen


def test_profile_region_comes_from_the_named_profile(tmp_path: Path) -> None:
    """The region is read from the chosen profile's section, not from ``[default]``."""
    home = _profile_home(
        tmp_path, credentials="[default]\nregion = ap-a\n[ops]\nsecret_id = x\nregion = ap-b\n"
    )
    settings = load_settings(environ={}, overrides={"profile": "ops"}, home=home, etc=tmp_path / "etc")
    assert settings.region == "ap-b"


def test_bad_profile_region_names_the_file(tmp_path: Path) -> None:
    """A malformed region in a profile file is an error naming that file and section."""
    home = _profile_home(tmp_path, credentials="[default]\nregion = Not A Region\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, home=home, etc=tmp_path / "etc")
    assert info.value.field == f"region in {home / '.tencentcloud' / 'credentials'} [default]"


@pytest.mark.parametrize("content", ["not json", '["a list"]', '{"_sys_param": "x"}'])
def test_unreadable_tccli_configure_is_skipped(tmp_path: Path, content: str) -> None:
    """A broken tccli configure file does not stop loading; the default region is used."""
    home = _profile_home(tmp_path)
    (home / ".tccli" / "default.configure").write_text(content, encoding="utf-8")
    assert load_settings(environ={}, home=home, etc=tmp_path / "etc").region == "ap-guangzhou"


def test_repr_quotes_empty_strings_once() -> None:
    """Empty strings show as ``''`` in the repr, the proxy included, and a proxy password is masked."""
    text = repr(Settings())
    assert "proxy=''" in text
    assert "endpoint=''" in text
    assert "\"''\"" not in text
    masked = repr(Settings(proxy="http://user:pw@127.0.0.1:3128"))
    assert "proxy='http://user:***@127.0.0.1:3128'" in masked
    assert "pw" not in masked.replace("pwd", "")


def test_defaults_file_is_the_documented_file() -> None:
    """``defaults_file()`` (what ``eni-async config --defaults`` prints) is ``config/eni-async.toml``."""
    assert defaults_file() == CONFIG_FILE.read_text(encoding="utf-8")


# -- credentials -------------------------------------------------------------------------------------------


def test_credentials_from_environment() -> None:
    """``TENCENTCLOUD_SECRET_ID``/``_SECRET_KEY``/``_TOKEN`` give the credentials."""
    environ = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "TENCENTCLOUD_TOKEN": TOKEN,
    }
    assert load_credentials(environ=environ) == Credentials(SECRET_ID, SECRET_KEY, TOKEN)


def test_security_token_is_the_fallback() -> None:
    """``TENCENTCLOUD_SECURITY_TOKEN`` is used when ``TENCENTCLOUD_TOKEN`` is not set."""
    environ = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "TENCENTCLOUD_SECURITY_TOKEN": "sts",
    }
    assert load_credentials(environ=environ).token == "sts"


def test_token_beats_security_token() -> None:
    """``TENCENTCLOUD_TOKEN`` wins when both token variables are set."""
    environ = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "TENCENTCLOUD_TOKEN": TOKEN,
        "TENCENTCLOUD_SECURITY_TOKEN": "sts",
    }
    assert load_credentials(environ=environ).token == TOKEN


def test_no_token_is_none() -> None:
    """Without a token variable the token is ``None``, not an empty string."""
    environ = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
    assert load_credentials(environ=environ).token is None


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({"TENCENTCLOUD_SECRET_ID": SECRET_ID}, "TENCENTCLOUD_SECRET_KEY"),
        ({"TENCENTCLOUD_SECRET_KEY": SECRET_KEY}, "TENCENTCLOUD_SECRET_ID"),
        ({"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": ""}, "TENCENTCLOUD_SECRET_KEY"),
    ],
)
def test_half_a_key_pair_is_an_error(tmp_path: Path, environ: dict[str, str], missing: str) -> None:
    """Only one of the pair in the environment is a ``ConfigError`` naming the other, even if a file exists."""
    file = _write(tmp_path, f"[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n", "credentials")
    with pytest.raises(ConfigError) as info:
        load_credentials(environ=environ, file=file)
    assert info.value.field == missing


def test_environment_beats_the_file(tmp_path: Path) -> None:
    """Credentials in the environment win over the credentials file."""
    file = _write(tmp_path, "[default]\nsecret_id = AKIDfile\nsecret_key = filekey\n", "credentials")
    environ = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
    assert load_credentials(environ=environ, file=file).secret_id == SECRET_ID


CREDENTIALS_TEXT = f"""\
[default]
secret_id = {SECRET_ID}
secret_key = {SECRET_KEY}

[staging]
secret_id = AKIDstaging
secret_key = stagingkey%with%percent
token = {TOKEN}
"""


def test_credentials_file_default_profile(tmp_path: Path) -> None:
    """Without environment keys the ``[default]`` profile of the credentials file is used."""
    file = _write(tmp_path, CREDENTIALS_TEXT, "credentials")
    assert load_credentials(environ={}, file=file) == Credentials(SECRET_ID, SECRET_KEY, None)


def test_credentials_file_named_profile(tmp_path: Path) -> None:
    """A named profile reads its own section, token included, with no ``%`` interpolation."""
    file = _write(tmp_path, CREDENTIALS_TEXT, "credentials")
    assert load_credentials("staging", environ={}, file=file) == Credentials(
        "AKIDstaging", "stagingkey%with%percent", TOKEN
    )


def test_missing_profile_is_an_error(tmp_path: Path) -> None:
    """A profile the file does not have is a ``ConfigError`` naming it."""
    file = _write(tmp_path, CREDENTIALS_TEXT, "credentials")
    with pytest.raises(ConfigError) as info:
        load_credentials("prod", environ={}, file=file)
    assert (info.value.field, info.value.value) == ("profile", "prod")


def test_missing_credentials_file_is_an_error(tmp_path: Path) -> None:
    """No environment keys and no credentials file is a ``ConfigError``."""
    with pytest.raises(ConfigError, match="credentials"):
        load_credentials(environ={}, file=tmp_path / "nope")


@pytest.mark.parametrize(
    "text",
    [
        f"[default]\nsecret_id = {SECRET_ID}\n",
        f"[default]\nsecret_key = {SECRET_KEY}\n",
        f"[default]\nsecret_id = \nsecret_key = {SECRET_KEY}\ntoken = {TOKEN}\n",
        f"secret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n",
        f"[default]\nsecret_key = {SECRET_KEY}\n[default]\n",
    ],
    ids=["no-key", "no-id", "empty-id", "no-section", "duplicate-section"],
)
def test_incomplete_or_broken_credentials_file_is_an_error(tmp_path: Path, text: str) -> None:
    """A profile without both keys, or a file that is not INI, is a ``ConfigError`` that shows no secret."""
    file = _write(tmp_path, text, "credentials")
    with pytest.raises(ConfigError) as info:
        load_credentials(environ={}, file=file)
    shown = f"{info.value} {info.value!r} {info.value.args!r} {info.value.value!r} {info.value.__cause__!r}"
    assert SECRET_KEY not in shown
    assert TOKEN not in shown


def test_credentials_repr_never_shows_key_or_token(tmp_path: Path) -> None:
    """The repr and str of loaded credentials show neither the secret key nor the token."""
    file = _write(tmp_path, CREDENTIALS_TEXT, "credentials")
    for credentials in (
        load_credentials("staging", environ={}, file=file),
        Credentials(SECRET_ID, SECRET_KEY, TOKEN),
    ):
        for text in (repr(credentials), str(credentials), f"{credentials!r}"):
            assert credentials.secret_key not in text
            assert TOKEN not in text
