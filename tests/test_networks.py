"""Network profiles: `CiroClient(network=...)` / CIRO_NETWORK select a gateway and the contracts it must settle on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ciro import CiroClient, Config, ConfigError
from ciro.chain.network import Network, settle_on
from ciro.local import ensure_running, read_state
from ciro.networks import STRK, check_gateway, profile
from ciro.procs import free_port

TOKEN, POOL, JM = "0x111", "0x222", "0x333"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIRO_HOME", str(tmp_path))
    monkeypatch.delenv("CIRO_CONFIG", raising=False)
    monkeypatch.delenv("CIRO_NETWORK", raising=False)
    monkeypatch.delenv("CIRO_GATEWAY_URL", raising=False)
    return tmp_path


@pytest.fixture
def gateway() -> Iterator[str]:
    """A real HTTP server answering /v1/chain as a gateway settling on TOKEN/POOL/JM does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"enabled": True, "token": TOKEN, "pool": POOL, "job_manager": JM,
                               "rpc_url": "http://127.0.0.1:1/rpc"} if self.path == "/v1/chain"
                              else {"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def node() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server answering Starknet's starknet_chainId with the short string in box[0]."""
    box = ["SN_SEPOLIA"]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            assert request["method"] == "starknet_chainId"
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"],
                               "result": hex(int.from_bytes(box[0].encode(), "big"))}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rpc", box
    server.shutdown()


def _config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def test_builtin_public_networks_name_their_chain_and_fee_token(home: Path) -> None:
    cfg = Config.load()
    sepolia, mainnet, local = profile("sepolia", cfg), profile("mainnet", cfg), profile("local", cfg)
    assert (sepolia.chain_id, sepolia.fee_token) == ("SN_SEPOLIA", STRK)
    assert (mainnet.chain_id, mainnet.fee_token) == ("SN_MAIN", STRK)
    assert local.embedded and local.fee_token == STRK  # the local devnet charges fees in STRK too
    with pytest.raises(ConfigError, match=r"Unknown network 'sepolai'\. Use one of devnet, local, mainnet, sepolia"):
        profile("sepolai", cfg)


def test_a_public_network_without_a_configured_gateway_says_how_to_configure_it(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"(?s)Network 'sepolia' has no gateway configured.*\[networks\.sepolia\]"
                                          r".*gateway_url"):
        CiroClient(network="sepolia")
    with pytest.raises(ConfigError, match="either a gateway URL or network="):
        CiroClient("http://127.0.0.1:9", network="local")


def test_a_configured_profile_selects_its_gateway_and_checks_its_contracts(home: Path, gateway: str) -> None:
    _config(home, f'[networks.sepolia]\ngateway_url = "{gateway}"\ntoken = "{TOKEN}"\npool = "0x0222"\n'
                  f'job_manager = "{JM}"\n')
    client = CiroClient(network="sepolia")
    try:
        assert client.url == gateway and client.network is not None
        assert client.network.chain_id == "SN_SEPOLIA"  # the built-in facts stay under the table's
    finally:
        client.close()
    _config(home, f'[networks.sepolia]\ngateway_url = "{gateway}"\ntoken = "{TOKEN}"\npool = "0x999"\n')
    with pytest.raises(ConfigError, match=r"settles on other contracts than network 'sepolia' names \(pool 0x222 "
                                          r"instead of 0x999\)"):
        CiroClient(network="sepolia")


def test_cironetwork_selects_a_profile_and_a_url_argument_still_wins(home: Path, gateway: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _config(home, f'[networks.staging]\ngateway_url = "{gateway}/"\n')
    monkeypatch.setenv("CIRO_NETWORK", "staging")
    client = CiroClient()
    try:
        assert client.url == gateway and client.network is not None and client.network.name == "staging"
    finally:
        client.close()
    other = CiroClient("http://127.0.0.1:9")
    try:
        assert other.url == "http://127.0.0.1:9" and other.network is None
    finally:
        other.close()


def test_bad_profile_tables_are_refused_with_the_fix(home: Path) -> None:
    _config(home, '[networks.staging]\ngateway = "http://x"\n')
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['gateway'\] in \[networks\.staging\].*gateway_url"):
        CiroClient(network="staging")
    _config(home, '[networks.staging]\ngateway_url = "http://x"\ntoken = "zz"\n')
    with pytest.raises(ConfigError, match=r"staging\.token = 'zz' is not a hex address"):
        check_gateway(profile("staging", Config.load()), {"enabled": True}, "http://x")
    assert Config.load().network == "local"  # the networks table is not a setting


def test_a_gateway_that_settles_nowhere_is_refused_when_contracts_are_pinned(home: Path) -> None:
    _config(home, '[networks.staging]\ngateway_url = "http://x"\ntoken = "0x1"\n')
    with pytest.raises(ConfigError, match="does not settle on any chain"):
        check_gateway(profile("staging", Config.load()), {"enabled": False}, "http://x")


SETTLE = f'token = "{TOKEN}"\npool = "{POOL}"\njob_manager = "{JM}"\ngovernance = "0x444"\n'


def test_a_gateway_refuses_a_public_network_without_its_rpc_url_and_contracts(home: Path) -> None:
    cfg = Config.load(network="sepolia", port=free_port())
    with pytest.raises(ConfigError, match=r"(?s)cannot settle on network 'sepolia': its profile has no rpc_url, "
                                          r"token, pool, job_manager, governance.*\[networks\.sepolia\]"):
        settle_on(cfg)
    with pytest.raises(ConfigError, match="cannot settle on network 'sepolia'"):
        ensure_running(cfg)  # refused before anything starts
    assert read_state(cfg) == {} and not (home / "chain.json").exists()
    _config(home, '[networks.mainnet]\nrpc_url = "http://127.0.0.1:9/rpc"\ntoken = "0x1"\n')
    with pytest.raises(ConfigError, match=r"no pool, job_manager, governance"):
        settle_on(Config.load(network="mainnet"))


def test_a_gateway_settles_on_the_profile_its_network_selects(home: Path,
                                                              node: tuple[str, list[str]]) -> None:
    url, chain = node
    _config(home, f'[networks.sepolia]\nrpc_url = "{url}"\n{SETTLE}')
    net = settle_on(Config.load(network="sepolia"))
    assert net is not None and Network.load(home) == net  # chain.json: what the gateway's settlement reads
    assert (net.rpc_url, net.network, net.chain_id, net.fee_token) == (url, "sepolia", "SN_SEPOLIA", int(STRK, 16))
    assert (net.token, net.pool, net.job_manager, net.governance) == (0x111, 0x222, 0x333, 0x444)

    chain[0] = "SN_MAIN"  # the node is on another chain than the profile
    (home / "chain.json").unlink()
    with pytest.raises(ConfigError, match=r"is on chain 'SN_MAIN', not 'SN_SEPOLIA'"):
        settle_on(Config.load(network="sepolia"))
    assert not (home / "chain.json").exists()

    chain[0] = "SN_SEPOLIA"
    settle_on(Config.load(network="sepolia"))
    assert settle_on(Config.load(network="local")) is None  # back to the devnet: its bootstrap records its own
    assert not (home / "chain.json").exists()


def test_the_gateway_process_and_ciro_up_take_the_network(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from ciro.cli import cli
    from ciro_ray.__main__ import main

    assert main(["serve", "--network", "sepolia", "--home", str(home), "--port", str(free_port())]) == 2
    assert "cannot settle on network 'sepolia'" in capsys.readouterr().err
    monkeypatch.setenv("CIRO_PORT", str(free_port()))
    result = CliRunner().invoke(cli, ["up", "--network", "sepolia"])
    assert result.exit_code != 0 and "cannot settle on network 'sepolia'" in result.output
    monkeypatch.setenv("CIRO_NETWORK", "sepolia")
    result = CliRunner().invoke(cli, ["up"])
    assert result.exit_code != 0 and "cannot settle on network 'sepolia'" in result.output
    assert read_state(Config.load()) == {}
