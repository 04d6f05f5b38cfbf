"""The embedded default: a local Ray head and a gateway process under ``$CIRO_HOME``.

``ciro up`` / :func:`ensure_running` start what is missing and record it in
``$CIRO_HOME/run/local.json``; ``ciro down`` / :func:`stop` end what they started. A Ray head
is started with ``ray start --head --block`` so that signalling that one process ends the whole
local cluster. With ``ray_address`` set, no head is started: the gateway joins that cluster. Unless
``settlement`` is off or ``chain.json`` names another network, the local Starknet devnet (the embedded
default's chain) is started too, with its state under ``$CIRO_HOME/devnet``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .config import Config
from .errors import CiroError, GatewayUnavailableError
from .sealing import store_sealer
from .tls import CA_HINT, local_ssl_context, server_tls_files

__all__ = ["ensure_running", "free_port", "process_alive", "ray_env", "ray_exe", "read_json", "read_state",
           "running_url", "stop", "terminate", "write_json"]

_GATEWAY_START_S = 180.0
_RAY_START_S = 120.0
_DEVNET_START_S = 120.0


def _state_path(cfg: Config) -> Path:
    return cfg.home / "run" / "local.json"


def read_json(path: Path) -> dict[str, Any]:
    """A run-state file (``$CIRO_HOME/run/*.json``); {} when it is missing or unreadable."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def write_json(path: Path, state: dict[str, Any]) -> None:
    """Replace a run-state file atomically (a reader sees the old state or the new one, never half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def read_state(cfg: Config) -> dict[str, Any]:
    return read_json(_state_path(cfg))


def _write_state(cfg: Config, state: dict[str, Any]) -> None:
    write_json(_state_path(cfg), state)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _healthy(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> bool:
    """Whether a Ciro gateway answers at ``url``; an https certificate that fails verification is an error."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout, context=context) as r:
            return r.status == 200 and json.loads(r.read()).get("status") == "ok"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise GatewayUnavailableError(
                f"The gateway at {url} presented a certificate that does not verify ({exc.reason.verify_message}). "
                f"Its certificate must name the host in the URL. {CA_HINT}") from exc
        return False
    except (OSError, ValueError):
        return False


def _check_context(cfg: Config, url: str, state: dict[str, Any]) -> ssl.SSLContext | None:
    """Trust for checking the local gateway at ``url``: its own certificate (as recorded when it started)."""
    if not url.startswith("https://"):
        return None
    return local_ssl_context(cfg, state.get("tls_cert") or cfg.tls_cert)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_url(cfg: Config) -> str | None:
    """URL of a healthy gateway for this config, or None."""
    state = read_state(cfg)
    url = state.get("gateway_url") or cfg.local_url
    return url if _healthy(url, context=_check_context(cfg, url, state)) else None


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def ray_exe() -> str:
    cand = Path(sys.executable).with_name("ray")
    found = str(cand) if cand.exists() else shutil.which("ray")
    if not found:
        raise CiroError("The `ray` command is not installed next to this Python. Reinstall ciro-network.")
    return found


def ray_env(base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """Environment for Ray processes we start and for the gateway that joins them.

    Ray 2.60 turns token authentication on for `ray start` whenever ~/.ray/auth_token exists, but a
    driver joining with `ray.init(address=...)` does not follow that rule by itself; naming the mode
    explicitly on both sides keeps them consistent. `ray start` does not create a missing token, so
    this makes one (owner-only) the first time, as `ray get-auth-token --generate` would.
    """
    env = dict(base)
    env.setdefault("RAY_AUTH_MODE", "token")
    if env["RAY_AUTH_MODE"] == "token" and not env.get("RAY_AUTH_TOKEN") and not env.get("RAY_AUTH_TOKEN_PATH"):
        token = Path.home() / ".ray" / "auth_token"
        if not token.exists():
            token.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return env


def _start_ray_head(cfg: Config, progress: bool) -> dict[str, Any]:
    port = free_port()
    logs = cfg.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [
        ray_exe(), "start", "--head", "--block", f"--port={port}", f"--node-ip-address={cfg.node_ip}",
        "--include-dashboard=false", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    _say(progress, f"ciro: starting a local Ray head on {cfg.node_ip}:{port} ...")
    with open(logs / "ray-head.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=ray_env(os.environ))
    deadline = time.monotonic() + _RAY_START_S
    while not _port_open(cfg.node_ip, port):
        if proc.poll() is not None:
            raise CiroError(f"`ray start` exited with code {proc.returncode}. See {logs / 'ray-head.log'}.")
        if time.monotonic() > deadline:
            proc.terminate()
            raise CiroError(f"The Ray head did not come up in {_RAY_START_S:.0f}s. See {logs / 'ray-head.log'}.")
        time.sleep(0.2)
    return {"ray_address": f"{cfg.node_ip}:{port}", "ray_pid": proc.pid, "ray_started": True}


def _devnet_url(cfg: Config) -> str:
    return f"http://127.0.0.1:{cfg.devnet_port}/rpc"


def _ensure_devnet(cfg: Config, state: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The embedded default's chain: start `python -m ciro.devnet` (state under $CIRO_HOME/devnet, the Ciro
    contracts deployed or found again) unless settlement is off or chain.json names another network."""
    chain_file = cfg.home / "chain.json"
    if cfg.settlement == "off":
        return {}
    if chain_file.exists():
        try:
            if json.loads(chain_file.read_text()).get("rpc_url") != _devnet_url(cfg):
                return {}  # a deployment elsewhere (another devnet, Sepolia, mainnet)
        except (OSError, ValueError):
            pass
    if process_alive(state.get("devnet_pid")) and _port_open("127.0.0.1", cfg.devnet_port):
        return {"devnet_pid": state["devnet_pid"]}
    if _port_open("127.0.0.1", cfg.devnet_port):
        raise CiroError(f"Port {cfg.devnet_port} is taken, but not by a devnet that `ciro up` started. Stop it, "
                        "choose another devnet_port (CIRO_DEVNET_PORT), or set settlement=off.")
    logs = cfg.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "devnet.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    cmd = [sys.executable, "-m", "ciro.devnet", "--port", str(cfg.devnet_port), "--state", str(cfg.home / "devnet"),
           "--seed", "0", "--home", str(cfg.home)]
    _say(progress, f"ciro: starting the local Starknet devnet on {_devnet_url(cfg)} ...")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **cfg.as_env()}, start_new_session=True)
    deadline = time.monotonic() + _DEVNET_START_S
    while True:
        with open(log_path, "rb") as f:
            f.seek(offset)
            if b"Ready in" in f.read():
                return {"devnet_pid": proc.pid}
        if proc.poll() is not None:
            raise CiroError(f"The devnet exited with code {proc.returncode} while starting. See {log_path}.")
        if time.monotonic() > deadline:
            proc.terminate()
            raise CiroError(f"The devnet did not come up in {_DEVNET_START_S:.0f}s. See {log_path}.")
        time.sleep(0.2)


def ensure_running(cfg: Config, *, progress: bool = False, num_workers: int | None = None) -> str:
    """Start whatever of (Ray head, gateway) is not running; return the gateway URL."""
    tls = server_tls_files(cfg)  # refuse bad certificate files or store key before starting anything
    store_sealer(cfg)
    url = running_url(cfg)
    if url:
        return url
    state = read_state(cfg)
    cfg.home.mkdir(parents=True, exist_ok=True)
    if process_alive(state.get("gateway_pid")):  # a gateway that is still starting, or stuck
        _wait_gateway(cfg, state["gateway_url"], state["gateway_pid"], progress, state.get("tls_cert"))
        return str(state["gateway_url"])
    if _port_open(cfg.host, cfg.port):
        raise GatewayUnavailableError(
            f"Port {cfg.port} on {cfg.host} is taken by something that is not a healthy Ciro gateway. "
            "Stop it, or choose another port (ciro up --port P / CIRO_PORT).")
    if cfg.ray_address:
        ray_state: dict[str, Any] = {"ray_address": cfg.ray_address, "ray_started": False}
    elif state.get("ray_started") and process_alive(state.get("ray_pid")):
        ray_state = {k: state[k] for k in ("ray_address", "ray_pid", "ray_started")}
        if "devnet_pid" in state:
            ray_state["devnet_pid"] = state["devnet_pid"]
    else:
        ray_state = _start_ray_head(cfg, progress)
    ray_state.update(_ensure_devnet(cfg, state, progress))
    url = cfg.local_url
    if tls:
        ray_state["tls_cert"] = tls[0]
    _write_state(cfg, {**ray_state, "gateway_url": url})
    logs = cfg.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**ray_env(os.environ), **cfg.as_env(), "CIRO_RAY_ADDRESS": ray_state["ray_address"]}
    env.pop("CIRO_GATEWAY_URL", None)
    if tls:
        env["CIRO_TLS_CERT"], env["CIRO_TLS_KEY"] = tls
    cmd = [sys.executable, "-m", "ciro_ray", "serve", "--host", cfg.host, "--port", str(cfg.port)]
    if num_workers is not None:
        cmd += ["--workers", str(num_workers)]
    _say(progress, f"ciro: starting the gateway on {url} (Ray at {ray_state['ray_address']}) ...")
    with open(logs / "gateway.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    _write_state(cfg, {**ray_state, "gateway_url": url, "gateway_pid": proc.pid})
    _wait_gateway(cfg, url, proc.pid, progress, tls[0] if tls else None)
    _say(progress, f"ciro: gateway ready at {url}")
    return url


def _wait_gateway(cfg: Config, url: str, pid: int, progress: bool, tls_cert: str | None) -> None:
    deadline = time.monotonic() + _GATEWAY_START_S
    log = cfg.home / "logs" / "gateway.log"
    context = _check_context(cfg, url, {"tls_cert": tls_cert})
    while not _healthy(url, timeout=1.0, context=context):
        if not process_alive(pid):
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise GatewayUnavailableError(f"The gateway exited while starting. Last lines of {log}:\n{tail}")
        if time.monotonic() > deadline:
            raise GatewayUnavailableError(
                f"The gateway did not become healthy in {_GATEWAY_START_S:.0f}s. See {log}.")
        time.sleep(0.1)


def terminate(pid: int | None, grace_s: float) -> bool:
    if not process_alive(pid):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid):
            raise CiroError(f"Process {pid} survived SIGKILL. Check it with `ps -p {pid}`.")
    return True


def stop(cfg: Config, *, keep_ray: bool = False) -> list[str]:
    """Stop the gateway and the Ray head that ``ciro up`` started. Returns what was stopped."""
    state = read_state(cfg)
    stopped = []
    if terminate(state.get("gateway_pid"), 20.0):
        stopped.append("gateway")
    if not keep_ray and state.get("ray_started") and terminate(state.get("ray_pid"), 40.0):
        stopped.append("ray head")
    if not keep_ray and terminate(state.get("devnet_pid"), 20.0):
        stopped.append("devnet")
    if keep_ray and state.get("ray_started"):
        _write_state(cfg, {k: state[k] for k in ("ray_address", "ray_pid", "ray_started", "devnet_pid")
                           if k in state})
    else:
        _state_path(cfg).unlink(missing_ok=True)
    return stopped
