"""The embedded default: a local Ray head and a gateway process under ``$CIRO_HOME``.

``ciro up`` / :func:`ensure_running` start what is missing and record each process (pid and command line)
in ``$CIRO_HOME/run/local.json`` as soon as it is spawned; a start that fails stops what it had started.
``ciro down`` / :func:`stop` end what the record names, signalling a pid only while it still runs the
recorded command. A Ray head is started with ``ray start --head --block`` so that signalling that one
process ends the whole local cluster. With ``ray_address`` set, no head is started: the gateway joins that
cluster. Unless ``settlement`` is off or ``chain.json`` names another network, the local Starknet devnet
(the embedded default's chain) is started too, with its state under ``$CIRO_HOME/devnet``; a devnet of this
home already running (``ciro devnet``, which records itself in ``run/devnet.json``) is used instead, and
``ciro down`` leaves it running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import CiroError, ConfigError, GatewayUnavailableError
from .procs import (
    cmdline,
    devnet_record,
    free_port,
    owned,
    process_alive,
    read_json,
    spawn,
    terminate,
    wait_ready,
    write_json,
)
from .sealing import store_sealer
from .tls import CA_HINT, local_ssl_context, server_tls_files

if TYPE_CHECKING:
    from ciro_devnet.launch import DevnetProcess

__all__ = ["devnet_record", "ensure_running", "free_port", "owned", "process_alive", "ray_env", "ray_exe",
           "read_json", "read_state", "require_devnet", "running_devnet", "running_url", "stop", "terminate",
           "write_json"]

_GATEWAY_START_S = 180.0
_RAY_START_S = 120.0
_DEVNET_START_S = 120.0
#: The processes a run-state records (``<part>_pid``, ``<part>_cmd``): what ``ciro down`` calls each, its SIGTERM
#: grace, and what its command line holds when a record from before command lines were kept names it (such a
#: devnet predates its own package, hence its old module name).
_PARTS = {"gateway": ("gateway", 20.0, "-m ciro_ray serve"), "ray": ("ray head", 40.0, " start --head --block"),
          "devnet": ("devnet", 20.0, "-m ciro.devnet")}
_RAY_KEYS = ("ray_address", "ray_pid", "ray_started", "ray_cmd")
_DEVNET_KEYS = ("devnet_pid", "devnet_started", "devnet_cmd")


def _state_path(cfg: Config) -> Path:
    return cfg.paths.run_file("local")


def read_state(cfg: Config) -> dict[str, Any]:
    return read_json(_state_path(cfg))


def _write_state(cfg: Config, state: dict[str, Any]) -> None:
    write_json(_state_path(cfg), state)


def _part_owned(state: dict[str, Any], part: str) -> bool:
    pid, cmd = state.get(f"{part}_pid"), state.get(f"{part}_cmd")
    if cmd:
        return owned(pid, cmd)
    line = cmdline(pid) if pid and process_alive(pid) else None  # a record from before commands were kept
    return line is not None and _PARTS[part][2] in line


def _stop_part(state: dict[str, Any], part: str) -> bool:
    return _part_owned(state, part) and terminate(state[f"{part}_pid"], _PARTS[part][1])


def running_devnet(cfg: Config) -> dict[str, Any] | None:
    """The record of the ``ciro devnet`` that serves this home, while its process still runs; else None."""
    record = read_json(devnet_record(cfg.home))
    return record if owned(record.get("pid"), record.get("cmd")) else None


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


def _start_ray_head(cfg: Config, progress: bool, starting: _Starting) -> None:
    port = free_port()
    log = cfg.paths.log_file("ray-head")
    cmd = [
        ray_exe(), "start", "--head", "--block", f"--port={port}", f"--node-ip-address={cfg.node_ip}",
        "--include-dashboard=false", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    proc = spawn(cmd, log=log, env=ray_env(os.environ))
    starting.add("ray", proc.pid, cmd, ray_address=f"{cfg.node_ip}:{port}", ray_started=True)
    _say(progress, f"ciro: starting a local Ray head on {cfg.node_ip}:{port} ...")
    wait_ready(proc, lambda: _port_open(cfg.node_ip, port), what="The Ray head (`ray start`)", log=log,
               timeout_s=_RAY_START_S, retry="run `ciro up` again")


def _devnet_url(cfg: Config) -> str:
    return f"http://127.0.0.1:{cfg.devnet_port}/rpc"


def _chain_rpc(cfg: Config) -> str | None:
    """The rpc_url chain.json records (None: no chain.json, or one that cannot be read)."""
    try:
        url = json.loads((cfg.paths.chain_file).read_text()).get("rpc_url")
    except (OSError, ValueError, AttributeError):
        return None
    return str(url) if url else None


def _settle_on(cfg: Config, progress: bool) -> None:
    """The network profile ``cfg.network`` selects, recorded in chain.json for the gateway (``ciro.chain.settle_on``):
    the embedded one settles on the local devnet; another is checked (complete, its node on its chain) first."""
    from .chain.network import settle_on

    net = settle_on(cfg)
    if net is not None:
        _say(progress, f"ciro: the gateway settles on network {net.network!r} ({net.chain_id or 'chain id unchecked'}) "
             f"at {net.rpc_url}, contracts from [networks.{net.network}]")


def _plan_devnet(cfg: Config, state: dict[str, Any], progress: bool) -> dict[str, Any] | None:
    """Before anything starts: the run-state's devnet entries to keep ({}: no devnet, as settlement is off or
    chain.json names another network), or None when a devnet must be started. This home's devnet already running
    (`ciro devnet`) is used and recorded as not started here; a port held by anything else is refused."""
    rpc_url = _chain_rpc(cfg)
    if cfg.settlement == "off" or rpc_url not in (None, _devnet_url(cfg)):
        return {}  # a deployment elsewhere (another devnet, Sepolia, mainnet)
    require_devnet()
    if not _port_open("127.0.0.1", cfg.devnet_port):
        return None
    if _part_owned(state, "devnet"):
        return {k: state[k] for k in _DEVNET_KEYS if k in state}
    from ciro_devnet.launch import devnet_config, devnet_ready, home_devnet

    found = home_devnet(cfg.home, cfg.devnet_port)
    if found is None:
        config = devnet_config(_devnet_url(cfg))
        what = (f"a Ciro devnet of another home (state in {config.get('state_dir') or 'memory'})" if config
                else "something that is not a Ciro devnet")
        raise CiroError(f"Port {cfg.devnet_port} is taken by {what}. Stop it, or give this home's devnet another "
                        "port: `ciro up --devnet-port P` (or CIRO_DEVNET_PORT=P, which `ciro devnet` reads too), "
                        "or set settlement=off.")
    pid = found.get("pid")
    _say(progress, f"ciro: using this home's devnet already running on {_devnet_url(cfg)}"
         + (f" (`ciro devnet`, pid {pid})" if pid else "") + "; `ciro down` leaves it running")
    deadline = time.monotonic() + _DEVNET_START_S
    # `ciro devnet` answers before it has deployed and recorded the contracts: it says when it is ready
    while not (devnet_ready(_devnet_url(cfg)) and _chain_rpc(cfg) == _devnet_url(cfg)):
        if time.monotonic() > deadline or not _port_open("127.0.0.1", cfg.devnet_port):
            raise CiroError(f"The devnet on {_devnet_url(cfg)} has not recorded the Ciro contracts in "
                            f"{cfg.home / 'chain.json'}. Start it with `ciro devnet` (it records them), wait for "
                            "its 'Ready in' line, then run `ciro up` again.")
        time.sleep(0.2)
    return {"devnet_pid": pid, "devnet_started": False, "devnet_cmd": found.get("cmd")}


def _launch_devnet(cfg: Config, progress: bool, starting: _Starting) -> DevnetProcess:
    """The embedded default's chain: `python -m ciro_devnet` (state under $CIRO_HOME/devnet, the Ciro contracts
    deployed or found again), detached; its `wait_ready` waits for it while the Ray head starts."""
    from ciro_devnet.launch import DevnetProcess

    devnet = DevnetProcess(port=cfg.devnet_port, state_dir=cfg.paths.devnet, seed=0, home=cfg.home,
                           log_path=cfg.paths.log_file("devnet"), env={**os.environ, **cfg.as_env()},
                           detach=True, wait=False)
    starting.add("devnet", devnet.process.pid, devnet.command, devnet_started=True)
    _say(progress, f"ciro: starting the local Starknet devnet on {_devnet_url(cfg)} ...")
    return devnet


def require_devnet() -> None:
    """Raise unless the local Starknet devnet can run here: it needs the `chain` extra (cairo-lang, starknet-py)."""
    missing = [dist for module, dist in (("starkware", "cairo-lang"), ("starknet_py", "starknet-py"),
                                         ("ciro_devnet", "ciro-network's ciro_devnet"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"The local Starknet devnet needs {' and '.join(missing)}, which this Python lacks. Install "
                          "the `chain` extra: pip install 'ciro-network[chain]'. Without a chain, `ciro up` runs "
                          "with settlement=off (CIRO_SETTLEMENT=off).")


class _Starting:
    """The run-state one start builds: the entries it keeps, then each process it spawns, recorded at once (a
    `ciro up` killed half-way leaves a record `ciro down` acts on); :meth:`undo` stops what it spawned."""

    def __init__(self, cfg: Config, kept: dict[str, Any]) -> None:
        self.cfg, self.kept, self.state = cfg, kept, dict(kept)
        self.started: list[str] = []

    def add(self, part: str, pid: int, cmd: list[str], **entries: Any) -> None:
        self.started.append(part)
        self.state.update({f"{part}_pid": pid, f"{part}_cmd": cmd, **entries})
        _write_state(self.cfg, self.state)

    def undo(self) -> list[str]:
        """Stop what this start spawned, newest first; the run-state then names only what it kept."""
        stopped = [_PARTS[part][0] for part in reversed(self.started) if _stop_part(self.state, part)]
        if self.kept.get("ray_started") or self.kept.get("devnet_started"):
            _write_state(self.cfg, self.kept)
        else:
            _state_path(self.cfg).unlink(missing_ok=True)
        return stopped


def ensure_running(cfg: Config, *, progress: bool = False, num_workers: int | None = None) -> str:
    """Start whatever of (Ray head, devnet, gateway) is not running; return the gateway URL.

    If a step fails, what this call started is stopped again (and the run-state no longer names it) before the
    error is raised."""
    tls = server_tls_files(cfg)  # refuse bad certificate files or store key before starting anything
    store_sealer(cfg)
    url = running_url(cfg)
    if url:
        return url
    state = read_state(cfg)
    cfg.home.mkdir(parents=True, exist_ok=True)
    if _part_owned(state, "gateway"):  # a gateway that is still starting, or stuck
        _wait_gateway(cfg, state["gateway_url"], state["gateway_pid"], state.get("tls_cert"))
        return str(state["gateway_url"])
    if _port_open(cfg.host, cfg.port):
        raise GatewayUnavailableError(
            f"Port {cfg.port} on {cfg.host} is taken by something that is not a healthy Ciro gateway. "
            "Stop it, or choose another port (ciro up --port P / CIRO_PORT).")
    if cfg.settlement != "off":
        _settle_on(cfg, progress)
    devnet = _plan_devnet(cfg, state, progress)
    kept = dict(devnet or {})
    if cfg.ray_address:
        kept.update(ray_address=cfg.ray_address, ray_started=False)
    elif state.get("ray_started") and _part_owned(state, "ray"):
        kept.update({k: state[k] for k in _RAY_KEYS if k in state})
    starting = _Starting(cfg, kept)
    try:
        launched = _launch_devnet(cfg, progress, starting) if devnet is None else None
        if "ray_address" not in kept:
            _start_ray_head(cfg, progress, starting)
        if launched is not None:
            launched.wait_ready(_DEVNET_START_S, retry="run `ciro up` again (or set settlement=off)")
        url = _start_gateway(cfg, progress, starting, num_workers, tls)
    except BaseException:
        stopped = starting.undo()
        if stopped:
            _say(progress, f"ciro: the start failed; stopped what this start had begun: {', '.join(stopped)}")
        raise
    _say(progress, f"ciro: gateway ready at {url}")
    return url


def _start_gateway(cfg: Config, progress: bool, starting: _Starting, num_workers: int | None,
                   tls: tuple[str, str] | None) -> str:
    url = cfg.local_url
    ray_address = starting.state["ray_address"]
    env = {**ray_env(os.environ), **cfg.as_env(), "CIRO_RAY_ADDRESS": ray_address}
    env.pop("CIRO_GATEWAY_URL", None)
    if tls:
        env["CIRO_TLS_CERT"], env["CIRO_TLS_KEY"] = tls
    cmd = [sys.executable, "-m", "ciro_ray", "serve", "--host", cfg.host, "--port", str(cfg.port)]
    if num_workers is not None:
        cmd += ["--workers", str(num_workers)]
    proc = spawn(cmd, log=cfg.paths.log_file("gateway"), env=env)
    starting.add("gateway", proc.pid, cmd, gateway_url=url, **({"tls_cert": tls[0]} if tls else {}))
    _say(progress, f"ciro: starting the gateway on {url} (Ray at {ray_address}) ...")
    _wait_gateway(cfg, url, proc, tls[0] if tls else None)
    return url


def _wait_gateway(cfg: Config, url: str, proc: subprocess.Popen[bytes] | int, tls_cert: str | None) -> None:
    """Until the gateway ``proc`` (started here, or by an earlier `ciro up`: its pid) answers healthy at ``url``."""
    context = _check_context(cfg, url, {"tls_cert": tls_cert})
    wait_ready(proc, lambda: _healthy(url, timeout=1.0, context=context), what="The gateway",
               log=cfg.paths.log_file("gateway"), timeout_s=_GATEWAY_START_S, retry="run `ciro up` again",
               error=GatewayUnavailableError, poll_s=0.1)


def stop(cfg: Config, *, keep_ray: bool = False) -> list[str]:
    """Stop what ``ciro up`` started for this home, as its run-state records it (also a record a killed or failed
    ``ciro up`` left): each pid is signalled only while it still runs the command recorded for it. A devnet ``ciro up``
    did not start (``ciro devnet``) is left running. Returns what was stopped."""
    state = read_state(cfg)
    parts = ["gateway"]
    if not keep_ray:
        parts += ["ray"] if state.get("ray_started") else []
        parts += ["devnet"] if state.get("devnet_started", True) else []  # older records: started here
    stopped = [_PARTS[part][0] for part in parts if _stop_part(state, part)]
    kept = {k: state[k] for k in (*_RAY_KEYS, *_DEVNET_KEYS) if k in state}
    if keep_ray and (state.get("ray_started") or state.get("devnet_started", "devnet_pid" in state)):
        _write_state(cfg, kept)
    else:
        _state_path(cfg).unlink(missing_ok=True)
    return stopped
