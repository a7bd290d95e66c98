"""The deployment kit in deploy/: each file checked by the tool made for it, and against the service itself.

No image registry is reachable here, so the container is never built: what can be checked is, namely that
its entrypoint parses as a ``serve`` command, runs, and answers its own healthcheck on its port, and that
the Kubernetes probes, port, Secret and volume agree with it. The manifests are validated offline against
the Kubernetes schemas that ``kubernetes-validate`` bundles (strict: unknown fields fail). The systemd unit
goes through ``systemd-analyze verify``; the alert rules through ``promtool check rules`` and ``promtool test
rules``; every metric the rules and the dashboard name is one a running service exports.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from eni_async.cli import build_parser
from eni_async.errors import ConfigError
from eni_async.service.command import load_tokens
from eni_async.service.listener import RESERVED_DESCRIPTORS
from eni_async.service.server import running_service
from eni_async.settings import NOT_SETTINGS, Settings, from_environment
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.servehelpers import TOKEN, read, simulated

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
SERVE_ROUTES = {"/healthz", "/readyz", "/metrics"}


def _manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in KUBERNETES:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[doc["kind"]] = doc
    return found


def _dockerfile() -> dict[str, list[str]]:
    """The container file's instructions (continuation lines joined), by keyword."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def _entrypoint() -> list[str]:
    (entry,) = _dockerfile()["ENTRYPOINT"]
    argv: list[str] = json.loads(entry)
    return argv


@pytest.mark.parametrize("path", KUBERNETES, ids=[p.name for p in KUBERNETES])
def test_kubernetes_manifests_pass_the_schema_validator(path: Path) -> None:
    """Each manifest validates, strictly (no unknown field), against the Kubernetes schemas bundled offline."""
    version = kubernetes_validate.latest_version()
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_manifest_with_a_typo() -> None:
    """The validator is strict enough to catch a misspelt field of the Deployment (so the test above can fail)."""
    deployment = _manifests()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_agrees_with_the_service_and_the_other_manifests() -> None:
    """Probes on /readyz and /healthz at the container's port (the entrypoint's), resource requests, the
    Secret, volume and Service it names exist, and its ENI_ASYNC_* variables are settings serve reads."""
    objects = _manifests()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (port,) = container["ports"]
    args = build_parser().parse_args(_entrypoint()[1:])
    assert port["containerPort"] == args.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert objects["Deployment"]["spec"]["replicas"] == 1  # one writer per SQLite journal
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(args.journal).parent) in mounts
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {objects["PersistentVolumeClaim"]["metadata"]["name"]}
    secret = objects["Secret"]
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
    names = {env["name"]: env.get("value", "x") for env in container["env"]}
    from_environment({k: v for k, v in names.items() if k not in NOT_SETTINGS})  # refuses unknown ones
    service = objects["Service"]
    assert (
        service["spec"]["selector"].items()
        <= objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_example_secret_holds_no_usable_token() -> None:
    """The Secret's placeholder is refused as a token, so nobody serves with a token everyone can read here."""
    placeholder = _manifests()["Secret"]["stringData"]["callers-tokens"]
    with pytest.raises(ConfigError):
        load_tokens(Settings(), {"ENI_ASYNC_SERVICE_TOKENS": placeholder})


def test_the_container_file_runs_serve_unprivileged_with_its_own_port_and_probe() -> None:
    """The container runs as a non-root user, exposes the entrypoint's port, keeps the journal in its volume,
    and its healthcheck asks /healthz on that port; what it copies exists in the clone."""
    instructions = _dockerfile()
    (user,) = instructions["USER"]
    assert user.split(":")[0] not in ("root", "0")
    entry = _entrypoint()
    assert entry[:2] == ["eni-async", "serve"]
    args = build_parser().parse_args(entry[1:])
    assert instructions["EXPOSE"] == [str(args.port)]
    (volume,) = instructions["VOLUME"]
    assert Path(args.journal).parent == Path(json.loads(volume)[0])
    (health,) = instructions["HEALTHCHECK"]
    assert f"http://127.0.0.1:{args.port}/healthz" in health
    for copy in instructions["COPY"]:
        *sources, _ = copy.split()
        assert all((ROOT / source).exists() for source in sources), copy


async def test_the_container_entrypoint_starts_serve_and_passes_its_own_healthcheck(tmp_path: Path) -> None:
    """The entrypoint's command, run here (its port and journal moved into a temporary place), serves the
    probe paths, and the healthcheck command, pointed at that port, exits 0."""
    entry = _entrypoint()
    (health,) = _dockerfile()["HEALTHCHECK"]
    check = json.loads(health[health.index("CMD") + 3 :].strip())
    async with simulated(tmp_path, grace=0.5, enis=1, ips_per_eni=1, seed=1) as served:
        log = tmp_path / "serve.log"
        argv = [
            *entry[1:],
            "--port",
            "0",
            "--journal",
            str(tmp_path / "releases.db"),
            "--endpoint",
            served.endpoint,
        ]
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eni_async", *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env=served.env,
            )  # fmt: skip
        try:
            assert proc.stdout is not None
            endpoint = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["endpoint"]
            port = endpoint.rsplit(":", 1)[1]
            probe = [sys.executable if check[0] == "python" else check[0], *check[1:]]
            probe[-1] = probe[-1].replace(":8750/", f":{port}/")
            done = await asyncio.create_subprocess_exec(*probe)
            assert await asyncio.wait_for(done.wait(), 10) == 0
            async with aiohttp.ClientSession() as http:
                for path in SERVE_ROUTES:
                    async with http.get(f"{endpoint}{path}") as resp:
                        assert resp.status == 200, path
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert "Traceback" not in read(log)


def _unit() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (DEPLOY / "systemd" / "eni-async.service").read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, value)
    return found


def test_the_systemd_unit_runs_serve_as_its_own_user_and_passes_systemd_analyze(tmp_path: Path) -> None:
    """The unit's ExecStart is a serve command the CLI accepts, run by a user of its own with the tokens as a
    credential, stopped by SIGTERM with more time than the grace, with descriptors for its connection cap;
    then systemd-analyze verify (where installed) finds nothing, its binary pointed at this clone's."""
    unit = _unit()
    command = shlex.split(unit["ExecStart"])
    assert Path(command[0]).name == "eni-async"
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve"
    assert unit["User"] not in ("root", "0")
    assert unit["KillSignal"] == "SIGTERM"
    assert float(unit["TimeoutStopSec"]) > Settings().grace
    assert int(unit["LimitNOFILE"]) >= Settings().service_max_connections + RESERVED_DESCRIPTORS
    assert unit["LoadCredential"].startswith("tokens:")
    variable, _, value = unit["Environment"].partition("=")
    assert from_environment({variable: value}) == {"service_tokens_file": "%d/tokens"}
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed: the unit's static checks above passed, verify did not run"
        )
    text = (DEPLOY / "systemd" / "eni-async.service").read_text(encoding="utf-8")
    here = tmp_path / "eni-async.service"
    here.write_text(
        text.replace(command[0], str(Path(sys.executable).parent / "eni-async")), encoding="utf-8"
    )
    done = subprocess.run(
        [analyze, "verify", str(here)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


PROMETHEUS = DEPLOY / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's prometheus package (the README's test command does)"
    return found


@pytest.mark.parametrize("check", ["check", "test"])
def test_alert_rules_pass_promtool(check: str) -> None:
    """promtool check rules accepts the rules; promtool test rules shows each alert fires when it should."""
    target = "eni-async.rules.yaml" if check == "check" else "eni-async.rules.test.yaml"
    done = subprocess.run(
        [_promtool(), check, "rules", target],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_cover_failures_stuck_releases_throttling_and_readiness() -> None:
    """There is an alert on failed releases, stuck releases, throttling and readiness."""
    rules = yaml.safe_load((PROMETHEUS / "eni-async.rules.yaml").read_text(encoding="utf-8"))
    exprs = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    assert 'eni_async_service_releases{status="failed"}' in exprs["EniAsyncReleasesFailing"]
    assert 'status=~"pending|running"' in exprs["EniAsyncReleasesStuck"]
    assert "eni_async_throttled_total" in exprs["EniAsyncThrottled"]
    assert "eni_async_service_ready" in exprs["EniAsyncNotReady"]


SUFFIXES = {"counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


async def test_the_rules_and_the_dashboard_name_only_metrics_the_service_exports(tmp_path: Path) -> None:
    """Every eni_async_* series an alert or a dashboard panel names is one a running service's /metrics has."""
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1, task_latency=(0.0, 0.0)))
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region)
        async with (
            running_service(sim.credentials, settings, tmp_path / "j.db", tokens=[TOKEN]) as svc,
            aiohttp.ClientSession() as http,
            http.get(f"{svc.endpoint}/metrics") as resp,
        ):
            text = await resp.text()
    exported = {
        family + suffix
        for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE)
        for suffix in SUFFIXES.get(kind, ("",))
    }
    named = set(
        re.findall(r"eni_async_[a-z_]+", (PROMETHEUS / "eni-async.rules.yaml").read_text(encoding="utf-8"))
    )
    dashboard = json.loads((DEPLOY / "grafana" / "eni-async.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            named |= set(re.findall(r"eni_async_[a-z_]+", target["expr"]))
    assert len(named) > 10
    assert named <= exported, sorted(named - exported)
