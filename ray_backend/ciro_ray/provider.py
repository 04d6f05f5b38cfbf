"""A compute provider's node: join a Ciro Ray cluster, register and stake its workers, send heartbeats, leave.

``join`` (``ciro provider join``) on the provider's machine:
  1. reads the hardware (CPUs; GPUs, model and memory through nvidia-smi, or as declared);
  2. gives each worker slot a key in this machine's key store (``provider-worker-N``), deploys its Starknet
     account, registers it in CDCPool and stakes for it from the provider's wallet account (the key
     ``wallet_key``, which must hold the CIRO);
  3. starts a supervisor process that runs ``ray start --block --address ...`` advertising the hardware (CPUs
     and GPUs as Ray resources, the slots as the ``ciro_worker`` resource, the GPU model and memory in the
     node's environment) and sends a heartbeat signed by each worker key every ``heartbeat_interval_s``.
The gateway starts one worker actor per slot on the node, and schedules jobs on it once its stake is
eligible. ``leave`` drains the workers (what they run finishes, they get nothing new), takes them out of
the gateway, requests the unstake on chain and stops the node. The run state is ``$CIRO_HOME/run/provider.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ciro import CiroError, Config, GatewayUnavailableError, InputError, KeyStore
from ciro.auth import sign_request
from ciro.errors import error_from_payload
from ciro.identity import Identity
from ciro.local import ray_env, ray_exe
from ciro.procs import free_port, process_alive, read_json, spawn, stop, terminate, wait_ready, write_json

from .hardware import Hardware
from .names import PROVIDER_RESOURCE, provider_key_name
from .provider_stake import chain_view, fmt_ciro, parse_amount, stake_workers, unstake, withdraw_stakes

__all__ = ["add_stake", "fmt_ciro", "join", "leave", "parse_amount", "ray_address_of", "run_node", "status",
           "withdraw"]

log = logging.getLogger("ciro.provider")
#: Custom Ray resource: a provider node's GPU memory in GB, all GPUs together.
GPU_MEMORY_RESOURCE = "ciro_gpu_memory_gb"
_JOIN_WAIT_S = 180.0


def _state_path(cfg: Config) -> Path:
    return cfg.paths.run_file("provider")


def read_state(cfg: Config) -> dict[str, Any]:
    return read_json(_state_path(cfg))


def _write_state(cfg: Config, state: dict[str, Any]) -> None:
    write_json(_state_path(cfg), state)


def _call(url: str, method: str, path: str, *, identity: Identity | None = None, timeout: float = 10.0) -> Any:
    headers = {"Accept": "application/json"}
    if identity is not None:
        headers.update(sign_request(identity, method=method, path=path))
    req = urllib.request.Request(url.rstrip("/") + path, method=method, headers=headers,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read())
        except ValueError:
            payload = None
        raise error_from_payload(payload, status=exc.code) from None
    except (OSError, ValueError) as exc:
        raise GatewayUnavailableError(f"No Ciro gateway answers at {url} ({exc}). Check --gateway, and that "
                                      "`ciro provider head` runs there.") from None


def ray_address_of(cfg: Config) -> str:
    """The Ray address of the cluster this home's gateway runs on."""
    from ciro.local import read_state as local_state

    return str(local_state(cfg).get("ray_address") or cfg.ray_address or "")


def _gateway_url(address: str, gateway: str | None, cfg: Config) -> str:
    if gateway:
        return gateway.rstrip("/")
    host = address.rpartition(":")[0] or "127.0.0.1"
    return f"http://{host}:{cfg.port}"


# -- chain ------------------------------------------------------------------------------------------
# -- join -------------------------------------------------------------------------------------------
def join(cfg: Config, *, address: str, stake: int, gateway: str | None = None, provider: str | None = None,
         hardware: Hardware | None = None, workers: int | None = None, workers_per_gpu: int = 1,
         node_ip: str = "127.0.0.1", wallet_key: str = "provider", wait: bool = True,
         progress: bool = False) -> dict[str, Any]:
    """Join the cluster at ``address`` (see the module's docstring); returns the run state."""
    state = read_state(cfg)
    if process_alive(state.get("supervisor_pid")):
        raise CiroError(f"This CIRO_HOME ({cfg.home}) already runs a provider node (pid {state['supervisor_pid']}, "
                        f"joined to {state.get('address')}). Run `ciro provider leave` first, or use another --home.")
    hw = hardware or Hardware.detect()
    if workers_per_gpu < 1:
        raise InputError("--workers-per-gpu must be at least 1.")
    slots = workers if workers is not None else (int(hw.gpus * workers_per_gpu) if hw.gpus else 1)
    if slots < 1:
        raise InputError("A provider node needs at least one worker slot (--workers N).")
    if hw.cpus < slots * 0.1:
        raise InputError(f"{hw.cpus:g} CPU(s) cannot carry {slots} workers. Lower --workers or give more --num-cpus.")
    url = _gateway_url(address, gateway, cfg)
    health = _call(url, "GET", "/healthz")
    if not isinstance(health, dict) or health.get("status") != "ok":
        raise GatewayUnavailableError(f"The gateway at {url} is not healthy ({health}). Retry once it is up.")
    keystore = KeyStore(cfg.paths.keys)
    keys = [keystore.get_or_create(provider_key_name(i)) for i in range(slots)]
    info = _call(url, "GET", "/v1/chain")
    staking: dict[str, Any] = {}
    if info.get("enabled"):
        _say(progress, f"ciro: registering {slots} worker(s) on {info['rpc_url']} and staking {fmt_ciro(stake)} CIRO "
                       "for each ...")
        staking = asyncio.run(stake_workers(info, keys, keystore.get_or_create(wallet_key), stake))
        low = [w for w in staking["workers"] if not w["eligible"]]
        if low:
            _say(progress, f"ciro: warning: {len(low)} worker(s) below the minimum stake of "
                           f"{fmt_ciro(int(staking['min_stake']))} CIRO: they get no jobs until staked.")
    elif stake:
        raise InputError(f"The gateway at {url} does not settle on chain, so there is nothing to stake on. Join "
                         "with --stake 0, or join a gateway with a Starknet deployment.")
    name = provider or cfg.provider or f"{os.uname().nodename}:{cfg.home.name}"
    argv = [sys.executable, "-m", "ciro_ray", "provider-node", "--address", address, "--gateway", url,
            "--slots", str(slots), "--num-cpus", f"{hw.cpus:g}", "--num-gpus", f"{hw.gpus:g}",
            "--node-ip", node_ip, "--provider", name]
    if hw.gpus:
        argv += ["--gpu-model", hw.gpu_model or "", "--gpu-memory-gb", f"{hw.gpu_memory_gb:g}"]
        if hw.gpu_source == "declared":
            argv.append("--gpu-declared")
    log_path = cfg.paths.log_file("provider-node")
    _say(progress, f"ciro: starting the Ray worker node ({hw.describe()}, {slots} worker slot(s)) -> {address} ...")
    proc = spawn(argv, log=log_path, env={**os.environ, "CIRO_HOME": str(cfg.home)})
    state = {"supervisor_pid": proc.pid, "address": address, "gateway": url, "provider": name, "slots": slots,
             "keys": [k.name for k in keys], "worker_keys": [k.public_hex for k in keys],
             "hardware": hw.__dict__, "wallet_key": wallet_key, "staking": staking, "joined_at": time.time()}
    _write_state(cfg, state)
    if wait:
        state["workers"] = _wait_workers(url, {k.public_hex for k in keys}, proc, log_path)
    return state


def _workers_of(url: str, keys: set[str]) -> list[dict[str, Any]]:
    return [w for w in _call(url, "GET", "/v1/workers", timeout=30.0) if w.get("worker_key") in keys]


def _wait_workers(url: str, keys: set[str], proc: subprocess.Popen[bytes], log_path: Path) -> list[dict[str, Any]]:
    """Until the gateway lists a worker for every key (it started them on the new node)."""
    found: list[dict[str, Any]] = []

    def all_there() -> bool:
        found[:] = _workers_of(url, keys)
        return {w["worker_key"] for w in found} == keys

    wait_ready(proc, all_there, what="The provider node", log=log_path, timeout_s=_JOIN_WAIT_S,
               retry="run `ciro provider join` again", poll_s=0.5,
               late=f"The gateway at {url} started no worker on this node within {_JOIN_WAIT_S:.0f}s. See "
                    f"{log_path} and the gateway's log.")
    return found


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


# -- the node's supervisor ----------------------------------------------------------------------------
def _is_model_word(word: str) -> bool:
    return word.upper() not in {"NVIDIA", "TESLA", "GEFORCE", "RTX", "QUADRO"}


def accelerator_type(model: str) -> str:
    """Ray's short GPU type of a model name: "NVIDIA H100 80GB HBM3" -> "H100"."""
    words = [w for w in model.replace("-", " ").split() if _is_model_word(w)]
    return words[0].upper() if words else "GPU"


def run_node(*, address: str, gateway: str, slots: int, num_cpus: float, num_gpus: float, node_ip: str,
             provider: str, gpu_model: str | None = None, gpu_memory_gb: float | None = None,
             gpu_declared: bool = False) -> int:
    """Run ``ray start --block`` for this node and send heartbeats until it ends (or SIGTERM stops both)."""
    cfg = Config.load()
    keystore = KeyStore(cfg.paths.keys)
    keys = [keystore.get(provider_key_name(i)) for i in range(slots)]
    env = {**ray_env(os.environ), "CIRO_HOME": str(cfg.home), "CIRO_PROVIDER": provider}
    if gpu_declared:  # the workers report these as declared; detected ones they read from nvidia-smi themselves
        env.update({"CIRO_GPU_MODEL": gpu_model or "", "CIRO_GPU_MEMORY_GB": str(gpu_memory_gb or 0)})
    resources: dict[str, float] = {PROVIDER_RESOURCE: slots}
    if num_gpus and gpu_memory_gb:  # the node's GPU memory, as a resource other Ray jobs can see too
        resources[GPU_MEMORY_RESOURCE] = round(num_gpus * gpu_memory_gb, 3)
    if gpu_model and num_gpus and gpu_declared:  # Ray's own name for a GPU type (it sets it for GPUs it detects)
        resources[f"accelerator_type:{accelerator_type(gpu_model)}"] = 1
    cmd = [ray_exe(), "start", "--block", f"--address={address}", f"--node-ip-address={node_ip}",
           f"--num-cpus={num_cpus:g}", f"--num-gpus={num_gpus:g}",
           f"--resources={json.dumps(resources)}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={free_port()}"]
    ray_proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("node started (ray pid %d); heartbeats every %.1fs to %s", ray_proc.pid, cfg.heartbeat_interval_s,
             gateway)
    next_beat = 0.0
    while not stopping and ray_proc.poll() is None:
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + cfg.heartbeat_interval_s
            for ident in keys:
                try:
                    _call(gateway, "POST", "/v1/workers/heartbeat", identity=ident, timeout=5.0)
                except CiroError as exc:  # not known yet (its worker is starting), or the gateway is restarting
                    log.info("heartbeat of %s not taken: %s", ident.name, exc)
        time.sleep(0.2)
    stop(ray_proc, 40.0)
    return 0 if stopping else (ray_proc.returncode or 1)


# -- status and leave ---------------------------------------------------------------------------------
def status(cfg: Config) -> dict[str, Any]:
    """This machine's provider node: running or not, its workers as the gateway sees them, their chain state."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}. Run `ciro provider join --address HOST:PORT "
                        "--stake AMOUNT`.")
    out: dict[str, Any] = {**state, "running": process_alive(state.get("supervisor_pid"))}
    keys = set(state["worker_keys"])
    try:
        out["workers"] = _workers_of(state["gateway"], keys)
        watched = {p["worker_key"]: p for p in _call(state["gateway"], "GET", "/v1/providers")}
        out["heartbeats"] = [watched[k] for k in state["worker_keys"] if k in watched]
        info = _call(state["gateway"], "GET", "/v1/chain")
    except GatewayUnavailableError as exc:
        out["gateway_error"] = exc.message
        return out
    if info.get("enabled"):
        keystore = KeyStore(cfg.paths.keys)
        out["chain"] = asyncio.run(chain_view(info, [keystore.get(n) for n in state["keys"]]))
    return out


def add_stake(cfg: Config, amount: int, *, wallet_key: str | None = None) -> dict[str, Any]:
    """Stake ``amount`` more for each of this node's workers (from the wallet); the gateway admits a worker whose
    stake reaches the minimum within ten seconds."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}. Run `ciro provider join` first.")
    if amount <= 0:
        raise InputError("Give a positive amount of CIRO to stake.")
    info = _call(state["gateway"], "GET", "/v1/chain")
    if not info.get("enabled"):
        raise InputError(f"The gateway at {state['gateway']} does not settle on chain; there is nothing to stake on.")
    keystore = KeyStore(cfg.paths.keys)
    return asyncio.run(stake_workers(info, [keystore.get(n) for n in state["keys"]],
                              keystore.get(wallet_key or state["wallet_key"]), amount))


def leave(cfg: Config, *, timeout_s: float = 300.0, progress: bool = False) -> dict[str, Any]:
    """Drain this node's workers, take them out of the gateway, request the unstake, and stop the node."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}; there is nothing to leave.")
    if state.get("left_at"):
        raise CiroError(f"This node already left ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(state['left_at']))})"
                        ". Run `ciro provider withdraw` once the unstake's cooldown has passed, or join again.")
    url, keystore = state["gateway"], KeyStore(cfg.paths.keys)
    keys = [keystore.get(n) for n in state["keys"]]
    _say(progress, f"ciro: draining {len(keys)} worker(s) ...")
    for ident in keys:
        _call(url, "POST", "/v1/workers/drain", identity=ident)
    deadline = time.monotonic() + timeout_s
    left: list[dict[str, Any]] = []
    for ident in keys:
        while True:
            try:
                left.append(_call(url, "POST", "/v1/workers/leave", identity=ident))
                break
            except CiroError as exc:
                if getattr(exc, "code", "") != "worker_busy":
                    raise
                if time.monotonic() > deadline:
                    raise CiroError(f"Worker {ident.name} still runs batches after {timeout_s:.0f}s; it keeps "
                                    "draining. Run `ciro provider leave` again later.") from exc
                time.sleep(0.2)
    info = _call(url, "GET", "/v1/chain")
    unstaked = asyncio.run(unstake(info, keys)) if info.get("enabled") else []
    _say(progress, "ciro: stopping the Ray worker node ...")
    terminate(state.get("supervisor_pid"), 60.0)
    _write_state(cfg, {**state, "left_at": time.time()})  # kept: `withdraw` needs the gateway and the keys
    return {"left": left, "unstake": unstaked}


def withdraw(cfg: Config, *, to_wallet: bool = True) -> dict[str, Any]:
    """After the pool's cooldown, withdraw each worker's unstaked CIRO (to the wallet, unless ``to_wallet`` is
    False: then it stays in the worker's account)."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}; there is nothing to withdraw.")
    info = _call(state["gateway"], "GET", "/v1/chain")
    if not info.get("enabled"):
        raise InputError(f"The gateway at {state['gateway']} does not settle on chain; nothing was staked.")
    keystore = KeyStore(cfg.paths.keys)
    wallet = keystore.get(state["wallet_key"]) if to_wallet else None
    rows, balance = asyncio.run(withdraw_stakes(info, [keystore.get(n) for n in state["keys"]], wallet))
    waiting = [r for r in rows if r.get("waiting")]
    if waiting and not any(r["tx"] for r in rows):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(r["ready_at"] for r in waiting)))
        raise InputError(f"The unstaked CIRO is still in the pool's cooldown: withdrawable from {when}. Run "
                         "`ciro provider withdraw` again then.", detail={"workers": rows})
    return {"workers": rows, "to": state["wallet_key"] if to_wallet else "worker accounts",
            "wallet_balance": str(balance) if balance is not None else None}
