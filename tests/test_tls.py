"""TLS: the tls_cert/tls_key/ca_bundle settings, and a real gateway started with `ciro up --tls-cert --tls-key`
that the SDK reaches over https only when it trusts the CA that signed the gateway's certificate."""

from __future__ import annotations

import contextlib
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import trustme
from conftest import CIRO, Cluster, free_port

from ciro import CiroClient, Config, ConfigError, GatewayUnavailableError, verify
from ciro.local import read_state
from ciro.sealing import store_key_path
from ciro.tls import client_ssl_context, local_ssl_context, server_tls_files


def _ca_files(tmp: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, server key) for 127.0.0.1 and localhost, from a throwaway CA."""
    tmp.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(c.bytes() for c in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


def _verifies(client: ssl.SSLContext, cert: trustme.LeafCert, host: str = "127.0.0.1") -> bool:
    """Whether a TLS handshake (in memory) with a server presenting ``cert`` passes the client's checks."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=host)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(5):
        try:
            c.do_handshake()
            return True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError:
            return False
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            s.do_handshake()
        c_in.write(s_out.read())
    raise AssertionError("the handshake did not finish")


def test_tls_settings(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cert, key = _ca_files(tmp_home.parent / "pki")
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Config.load(tls_cert=str(cert))
    monkeypatch.setenv("CIRO_TLS_KEY", str(key))
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Config.load()
    cfg = Config.load(tls_cert=str(cert), port=9443)
    assert cfg.local_url == "https://127.0.0.1:9443" and cfg.url == cfg.local_url
    assert server_tls_files(cfg) == (str(cert.resolve()), str(key.resolve()))
    monkeypatch.delenv("CIRO_TLS_KEY")
    assert Config.load().local_url.startswith("http://") and server_tls_files(Config.load()) is None
    other_key = tmp_home.parent / "other.key"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    with pytest.raises(ConfigError, match="its unencrypted PEM private key"):
        server_tls_files(Config.load(tls_cert=str(cert), tls_key=str(other_key)))
    with pytest.raises(ConfigError, match=r"tls_key is .* not a file"):
        server_tls_files(Config.load(tls_cert=str(cert), tls_key=str(tmp_home / "missing.key")))
    with pytest.raises(ConfigError, match=r"ca_bundle is .* not a file"):
        client_ssl_context(Config.load(ca_bundle=str(tmp_home / "missing.pem")))
    with pytest.raises(ConfigError, match="PEM certificates"):
        client_ssl_context(Config.load(ca_bundle=str(key)))


def test_client_trust_is_the_system_store_plus_ca_bundle(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public, private = trustme.CA(), trustme.CA()
    public.cert_pem.write_to_path(str(tmp_home.parent / "system.pem"))
    private.cert_pem.write_to_path(str(tmp_home.parent / "private.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_home.parent / "system.pem"))  # stands in for the system store
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_home.parent / "no-such-dir"))
    public_cert, private_cert = public.issue_cert("127.0.0.1"), private.issue_cert("127.0.0.1")
    plain = client_ssl_context(Config.load())
    assert _verifies(plain, public_cert) and not _verifies(plain, private_cert)
    both = client_ssl_context(Config.load(ca_bundle=str(tmp_home.parent / "private.pem")))
    assert _verifies(both, public_cert) and _verifies(both, private_cert)  # added to the system store
    assert not _verifies(both, private_cert, host="gateway.example")  # host names are still checked
    # `ciro up`'s readiness check: the gateway's own certificate (a leaf, no CA) is the trust anchor
    leaf = tmp_home.parent / "leaf.pem"
    leaf.write_bytes(private_cert.cert_chain_pems[0].bytes())
    local = local_ssl_context(Config.load(), str(leaf))
    assert _verifies(local, private_cert) and not _verifies(local, private.issue_cert("127.0.0.1"))


@dataclass
class TlsGateway:
    home: Path
    port: int
    ca: Path
    cert: Path
    key: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def config(self, **settings: str) -> Config:
        return Config.load(home=self.home, port=self.port, **settings)


@pytest.fixture(scope="module")
def tls_gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    home = tmp_path_factory.mktemp("tls-home")
    ca, cert, key = _ca_files(home / "pki")
    port = free_port()
    # no CIRO_CA_BUNDLE: `ciro up` checks readiness with the gateway's own certificate as trust anchor
    env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.5",
           "CIRO_ENCRYPT_AT_REST": "true"}
    gw = TlsGateway(home, port, ca, cert, key, env)
    up = subprocess.run([CIRO, "up", "--ray-address", cluster.ray_address, "--workers", "1", "--tls-cert",
                         str(cert), "--tls-key", str(key)], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert f"gateway: {gw.url}" in up.stdout and "put tls_cert and tls_key" in up.stderr
        assert read_state(gw.config())["gateway_url"] == gw.url
        again = subprocess.run([CIRO, "up"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and f"gateway: {gw.url}" in again.stdout, again.stderr  # found over https
        yield gw
    finally:
        down = subprocess.run([CIRO, "down"], env=env, capture_output=True, text=True, timeout=120)
        assert "gateway" in down.stdout, down.stdout + down.stderr


@pytest.mark.cluster
def test_sdk_runs_a_job_over_https_with_the_ca_bundle(tls_gateway: TlsGateway, mlp_path: Path) -> None:
    x = np.frombuffer(b"\x11\x22\x33\x3f" * 16, dtype=np.float32).reshape(1, 16)  # a pattern to look for
    with CiroClient(tls_gateway.url, config=tls_gateway.config(ca_bundle=str(tls_gateway.ca))) as client:
        assert client.health()["status"] == "ok"
        model = client.deploy(mlp_path)
        result = client.infer(model.hash, {"x": x})
        assert result.outputs and verify(result).valid
        again = client.wait(result.job_id)  # read back from the (sealed) job store
    outputs = next(iter(result.outputs.values()))
    assert again.outputs is not None and np.array_equal(next(iter(again.outputs.values())), outputs)
    # this gateway runs with encrypt_at_rest: the job store's files hold neither the inputs nor the outputs
    db = tls_gateway.home / "jobs.db"
    raw = b"".join(p.read_bytes() for p in (db, db.with_name("jobs.db-wal")) if p.exists())
    assert x.tobytes() not in raw and outputs.tobytes() not in raw
    assert stat.S_IMODE(store_key_path(tls_gateway.home).stat().st_mode) == 0o600
    # with the TLS settings in the configuration, the default URL is the https one
    cfg = tls_gateway.config(tls_cert=str(tls_gateway.cert), tls_key=str(tls_gateway.key),
                             ca_bundle=str(tls_gateway.ca))
    with CiroClient(config=cfg) as local:
        assert local.url == tls_gateway.url and local.health()["status"] == "ok"


@pytest.mark.cluster
def test_sdk_without_the_ca_refuses_and_plain_http_fails(tls_gateway: TlsGateway) -> None:
    with CiroClient(tls_gateway.url, config=tls_gateway.config()) as client, \
            pytest.raises(GatewayUnavailableError, match=r"certificate this client does not trust.*ca_bundle"):
        client.health()
    proc = subprocess.run([CIRO, "--url", tls_gateway.url, "status"], env=tls_gateway.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3 and "CIRO_CA_BUNDLE" in proc.stderr, proc.stderr
    ok = subprocess.run([CIRO, "--url", tls_gateway.url, "status"], capture_output=True, text=True, timeout=60,
                        env={**tls_gateway.env, "CIRO_CA_BUNDLE": str(tls_gateway.ca)})
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr
    plain = f"http://127.0.0.1:{tls_gateway.port}"
    with CiroClient(plain, config=tls_gateway.config()) as client, pytest.raises(GatewayUnavailableError):
        client.health()
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/healthz", timeout=5)
