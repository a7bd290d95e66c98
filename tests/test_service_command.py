"""``eni-async serve`` where services run: Kubernetes variables, the endpoint line, tokens files, TLS, /metrics."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from eni_async.cli import main
from eni_async.service.command import load_metrics_tokens, load_tokens
from eni_async.settings import Settings
from tests.servehelpers import AUTH, TOKEN, read, serve_process, simulated
from tests.test_settings import SERVICE_LINKS


async def test_serve_starts_in_a_kubernetes_pod_and_names_a_reachable_endpoint(tmp_path: Path) -> None:
    """With the kubelet's service-link variables, serve --host 0.0.0.0 starts; its endpoint line names
    127.0.0.1 (not 0.0.0.0) and answers there; the log names the wildcard it listens on."""
    async with simulated(tmp_path, grace=0.5, enis=1, ips_per_eni=1, seed=1) as served:
        log = tmp_path / "serve.log"
        async with (
            serve_process(served, tmp_path / "j.db", log, args=["--host", "0.0.0.0"], env=SERVICE_LINKS) as (
                proc,
                endpoint,
            ),
            aiohttp.ClientSession() as http,
        ):
            assert endpoint.startswith("http://127.0.0.1:")
            async with http.get(f"{endpoint}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{endpoint}/v1/releases", headers=AUTH) as resp:
                assert resp.status == 200
            proc.terminate()
            assert await proc.wait() == 0
        logged = read(log)
        assert f"listening on 0.0.0.0:{endpoint.rsplit(':', 1)[1]}" in logged
        assert "unknown setting" not in logged


@pytest.mark.parametrize(
    "argv", [["config"], ["demo", "--enis", "3", "--ips-per-eni", "1", "--task-latency", "0"]]
)
def test_other_commands_start_with_kubernetes_service_links(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fast_config: Path
) -> None:
    """config and demo (like every command that reads settings) run with the service-link variables set
    (and a settings file of fast polls)."""
    for name, value in SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if argv == ["config"]:
        assert json.loads(out)["region"] == Settings().region


def test_serve_help_names_the_tokens_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --help says where callers' tokens come from, by the variable's name."""
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "ENI_ASYNC_SERVICE_TOKENS" in text
    assert "service_tokens_file" in text
    assert "--tls-cert" in text


def _tokens_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# callers\nfile-token-0123456789abcdef\n")
    path.chmod(mode)
    return path


def test_a_tokens_file_others_can_read_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tokens file readable by others stops serve with one line naming the setting and the mode, not a token."""
    path = _tokens_file(tmp_path, 0o644)
    config = tmp_path / "c.toml"
    config.write_text(f'service_tokens_file = "{path}"\n')
    code = main(["serve", "--config", str(config), "--port", "0", "--journal", str(tmp_path / "j.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "service_tokens_file" in err
    assert "readable by others (mode 644)" in err
    assert "file-token" not in err
    assert not (tmp_path / "j.db").exists()


def test_a_tokens_file_its_group_can_read_is_taken_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tokens file readable by its group (a Secret mounted for a pod's fsGroup) is read, with a warning."""
    path = _tokens_file(tmp_path, 0o640)
    with caplog.at_level(logging.WARNING, logger="eni_async.service"):
        assert load_tokens(Settings(service_tokens_file=str(path)), {}) == ["file-token-0123456789abcdef"]
    assert any("readable by its group (mode 640)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    _tokens_file(tmp_path, 0o400)
    with caplog.at_level(logging.WARNING, logger="eni_async.service"):
        assert load_metrics_tokens(Settings(service_metrics_tokens_file=str(path))) == [
            "file-token-0123456789abcdef"
        ]
    assert caplog.records == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority for this module's TLS tests."""
    return trustme.CA()


async def test_serve_speaks_tls_with_its_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    """serve --tls-cert --tls-key answers HTTPS at an https:// endpoint a client trusting the CA verifies."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(tmp_path / "cert.pem"), append=True)
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with simulated(tmp_path, grace=0.5, enis=1, ips_per_eni=1, seed=1) as served:
        log = tmp_path / "serve.log"
        tls = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
        async with (
            serve_process(served, tmp_path / "j.db", log, args=tls) as (proc, endpoint),
            aiohttp.ClientSession() as http,
        ):
            assert endpoint.startswith("https://127.0.0.1:")
            async with http.get(f"{endpoint}/v1/releases", headers=AUTH, ssl=client_context) as resp:
                assert resp.status == 200
            plain = endpoint.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"{plain}/healthz") as resp:
                    await resp.read()
            untrusting = ssl.create_default_context()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{endpoint}/healthz", ssl=untrusting)
            proc.terminate()
            assert await proc.wait() == 0
        assert "Traceback" not in read(log)
        assert TOKEN not in read(log)


@pytest.mark.parametrize(
    ("files", "args", "named"),
    [
        ({}, ["--tls-key", "key.pem"], "service_tls_key"),
        ({"cert.pem": "not a certificate"}, ["--tls-cert", "cert.pem"], "service_tls_cert"),
        ({}, ["--tls-cert", "missing.pem"], "service_tls_cert"),
    ],
)
def test_bad_tls_files_stop_serve_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    args: list[str],
    named: str,
) -> None:
    """A key without a certificate, a file that is not PEM, or a missing file: exit 2, one line naming it."""
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code = main(["serve", "--port", "0", "--journal", str(tmp_path / "j.db"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert named in err
    assert "Traceback" not in err


def _encrypted(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a pass phrase"),
    )


@pytest.mark.parametrize(
    ("case", "named", "says"),
    [
        ("encrypted key", "service_tls_key", "encrypted"),
        ("no key", "service_tls_cert", "no PEM private key"),
        ("another key", "service_tls_key", "does not match"),
        ("key as certificate", "service_tls_cert", "no PEM certificate"),
    ],
)
def test_each_unusable_certificate_or_key_is_one_line_saying_what_is_wrong(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], ca: trustme.CA, case: str, named: str, says: str
) -> None:
    """OpenSSL says "PEM lib" for most of these, and prompts on the terminal for an encrypted key's pass
    phrase: serve instead exits 2 at once with one line naming the file's setting and what is wrong."""
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    key = cert.private_key_pem.bytes()
    other = ca.issue_cert("127.0.0.1").private_key_pem.bytes()
    files = {
        "encrypted key": ["--tls-cert", "cert.pem", "--tls-key", "key.pem"],
        "no key": ["--tls-cert", "cert.pem"],
        "another key": ["--tls-cert", "cert.pem", "--tls-key", "other.pem"],
        "key as certificate": ["--tls-cert", "key.pem"],
    }
    (tmp_path / "key.pem").write_bytes(_encrypted(key) if case == "encrypted key" else key)
    (tmp_path / "other.pem").write_bytes(other)
    args = [str(tmp_path / a) if a.endswith(".pem") else a for a in files[case]]
    code = main(["serve", "--port", "0", "--journal", str(tmp_path / "j.db"), *args])
    out, err = capfd.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert named in err, err
    assert says in err, err
    assert "Enter PEM pass phrase" not in out + err


def test_an_address_serve_cannot_listen_on_is_one_line_naming_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A busy port: ``--port: cannot listen on 127.0.0.1: Address already in use (got P)``, the port once
    (socket.create_server's text adds "(while attempting to bind on address ('127.0.0.1', P))"); an address
    not of this machine names ``--host``."""
    import socket

    monkeypatch.setenv("ENI_ASYNC_SERVICE_TOKENS", TOKEN)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDnotusednotusednotusednotused12")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "not-used-not-used-not-used-12345")
    monkeypatch.setenv("ENI_ASYNC_ENDPOINT", "http://127.0.0.1:9")  # never called: listening fails first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--journal", str(tmp_path / "a.db")]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"eni-async: error: --port: cannot listen on 127.0.0.1: Address already in use (got {port})\n"
    )
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine: binding fails, nothing is sent.
    assert main(["serve", "--host", "192.0.2.1", "--port", "0", "--journal", str(tmp_path / "b.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eni-async: error: --host: cannot listen on it: "), err
    assert err.count("192.0.2.1") == 1, err
    assert len(err.strip().splitlines()) == 1


def test_a_metrics_port_without_a_token_is_refused_when_metrics_need_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With service_metrics_tokens_file set, --metrics-port (which serves /metrics without a token) exits 2."""
    path = _tokens_file(tmp_path, 0o600)
    config = tmp_path / "c.toml"
    config.write_text(f'service_metrics_tokens_file = "{path}"\n')
    argv = ["serve", "--config", str(config), "--port", "0", "--journal", str(tmp_path / "j.db")]
    assert main([*argv, "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--metrics-port" in err
    assert "without a token" in err
