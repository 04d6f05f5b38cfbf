"""Shared fixtures. One real Ray cluster per test session: a head and a second worker node started
with `ray start` on loopback, and a gateway joined to it with `ciro up --ray-address`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ciro import CiroClient, Config
from ciro.demo import build_digits_model, build_tiny_mlp
from ciro.local import ray_env
from ciro.procs import free_port

VENV_BIN = Path(sys.executable).parent
CIRO = str(VENV_BIN / "ciro")
RAY = str(VENV_BIN / "ray")

# Small limits so the over-limit paths can be exercised with small files.
#: Debian's Chromium (`make browser` installs it); Playwright drives it and never downloads a browser itself.
CHROMIUM = os.environ.get("CIRO_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def browser_page() -> Iterator[Any]:
    """A page in a fresh headless Chromium; a missing Chromium fails the test (it is not skipped)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"No Chromium at {CHROMIUM}: `make browser` installs Debian's chromium package.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


MAX_MODEL_BYTES = 2_000_000
MAX_PAYLOAD_BYTES = 1_000_000


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


@dataclass
class Cluster:
    home: Path
    port: int
    ray_address: str
    url: str
    env: dict[str, str]

    def ciro(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([CIRO, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ciro {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    @property
    def config(self) -> Config:
        return Config.load(home=self.home, port=self.port, gateway_url=self.url)


TESTS = Path(__file__).resolve().parent


def with_tests_on_path(env: dict[str, str]) -> dict[str, str]:
    """Ray worker processes and gateways import the Byzantine worker fixtures from tests/."""
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)}


def _ray_node(args: list[str], log: Path, provider: str) -> subprocess.Popen[bytes]:
    """One `ray start` node; its workers report ``provider`` (read from the node's environment)."""
    with open(log, "ab") as out:
        return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=with_tests_on_path({**ray_env(os.environ), "CIRO_PROVIDER": provider}))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("ciro-home")
    gcs = free_port()
    head = _ray_node(["--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=false",
                      f"--dashboard-agent-listen-port={free_port()}"], home / "ray-head.log", "provider-a")
    procs = [head]
    try:
        wait_port(gcs)
        procs.append(_ray_node([f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                                f"--dashboard-agent-listen-port={free_port()}"], home / "ray-node2.log", "provider-b"))
        port = free_port()
        env = {**ray_env(os.environ), "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_SETTLEMENT": "off",
               "CIRO_MAX_MODEL_BYTES": str(MAX_MODEL_BYTES), "CIRO_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES)}
        env.pop("CIRO_GATEWAY_URL", None)
        c = Cluster(home, port, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{port}", env)
        _wait_nodes(c.ray_address, 2)
        c.ciro("up", "--ray-address", c.ray_address, "--workers", "2")
        yield c
        c.ciro("down", check=False)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _wait_nodes(address: str, n: int, timeout: float = 60.0) -> None:
    code = ("import ray,sys,time\n"
            f"ray.init(address='{address}', logging_level='ERROR')\n"
            f"d=time.time()+{timeout}\n"
            f"while sum(x['Alive'] for x in ray.nodes())<{n} and time.time()<d: time.sleep(0.2)\n"
            f"sys.exit(0 if sum(x['Alive'] for x in ray.nodes())>={n} else 1)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout + 30, env=ray_env(os.environ))


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[CiroClient]:
    with CiroClient(cluster.url, config=cluster.config) as c:
        yield c


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_path(models_dir: Path) -> Path:
    return build_digits_model(models_dir / "digits.onnx")


@pytest.fixture(scope="session")
def mlp_path(models_dir: Path) -> Path:
    return build_tiny_mlp(models_dir / "mlp.onnx")


@pytest.fixture(scope="session")
def mlp(client: CiroClient, mlp_path: Path):  # type: ignore[no-untyped-def]
    return client.deploy(mlp_path)


@pytest.fixture(scope="session")
def digits(client: CiroClient, digits_path: Path):  # type: ignore[no-untyped-def]
    return client.deploy(digits_path, name="digits")


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIRO_HOME", str(tmp_path / "home"))
    for var in [v for v in os.environ if v.startswith("CIRO_") and v != "CIRO_HOME"]:
        monkeypatch.delenv(var)
    return tmp_path / "home"


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may reach the Hub (test modules use it with ``pytestmark``)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small test models, built once per test module that uses them."""
    from hf_models import build_models

    return build_models(tmp_path_factory.mktemp("hf_models"))
