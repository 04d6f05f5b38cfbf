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
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ciro import CiroError, Config, ConfigError, GatewayUnavailableError, InputError, KeyStore
from ciro.auth import sign_request
from ciro.errors import InsufficientEscrowError, error_from_payload
from ciro.identity import Identity
from ciro.local import free_port, process_alive, ray_env, ray_exe, read_json, terminate, write_json

from .hardware import Hardware
from .pool import PROVIDER_RESOURCE, provider_key_name

__all__ = ["add_stake", "fmt_ciro", "join", "leave", "parse_amount", "ray_address_of", "run_node", "status",
           "withdraw"]

log = logging.getLogger("ciro.provider")
ONE_CIRO = 10**18
#: Custom Ray resource: a provider node's GPU memory in GB, all GPUs together.
GPU_MEMORY_RESOURCE = "ciro_gpu_memory_gb"
_JOIN_WAIT_S = 180.0


def _state_path(cfg: Config) -> Path:
    return cfg.home / "run" / "provider.json"


def read_state(cfg: Config) -> dict[str, Any]:
    return read_json(_state_path(cfg))


def _write_state(cfg: Config, state: dict[str, Any]) -> None:
    write_json(_state_path(cfg), state)


def parse_amount(text: str) -> int:
    """CIRO as typed by a person ("1000", "0.5") in base units (18 decimals)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InputError(f"Stake {text!r} is not a number of CIRO. Pass e.g. --stake 1000.") from None
    if not value.is_finite() or value < 0:
        raise InputError(f"Stake {text!r} must be a non-negative number of CIRO.")
    return int(value * ONE_CIRO)


def fmt_ciro(amount: int) -> str:
    text = f"{Decimal(amount) / ONE_CIRO:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- talking to the gateway ---------------------------------------------------------------------
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
async def _stake(info: dict[str, Any], keys: list[Identity], wallet: Identity, amount: int) -> dict[str, Any]:
    """Deploy, register and stake ``amount`` for each worker key from ``wallet``; checks everything first, so a
    shortfall changes nothing."""
    from ciro.chain import CDCPool, ChainClient, CiroToken, account_address, account_exists, ensure_account

    rpc = str(info["rpc_url"])
    chain = await ChainClient.connect(rpc, address=account_address(wallet.public_key), identity=wallet)
    pool, token = CDCPool(chain, int(info["pool"], 16)), CiroToken(chain, int(info["token"], 16))
    if not await account_exists(chain, chain.address):
        raise ConfigError(
            f"The wallet key {wallet.name!r} ({wallet.public_hex}) has no account on {rpc}, so it cannot stake. On the "
            f"local devnet, run `ciro fund {wallet.public_hex}` on the head; elsewhere deploy its account "
            f"({chain.address:#x}) and send it CIRO.")
    need = amount * len(keys)
    balance = await token.balance_of(chain.address)
    if balance < need:
        raise InsufficientEscrowError(
            f"The wallet {wallet.name!r} holds {fmt_ciro(balance)} CIRO; staking {fmt_ciro(amount)} for each of "
            f"{len(keys)} worker(s) needs {fmt_ciro(need)}. Fund it (`ciro fund {wallet.public_hex}` on a local "
            "devnet's head) or lower --stake. Nothing was staked.")
    min_stake = int(await pool.view("min_stake"))
    out = []
    for ident in keys:
        address = await ensure_account(chain, ident)
        if int(await pool.view("worker_key", address)) == 0:
            worker = await ChainClient.connect(rpc, address=address, identity=ident)
            await worker.execute([pool.register_worker_call(ident.public_key)], what="CDCPool.register_worker")
        if amount:
            await chain.execute([token.approve_call(pool.address, amount), pool.stake_call(address, amount)],
                                what=f"Staking for worker {ident.name!r}")
        state = await pool.worker(address)
        out.append({"key": ident.name, "worker_key": ident.public_hex, "account": hex(address),
                    "stake": str(state.stake), "eligible": state.eligible})
    return {"min_stake": str(min_stake), "workers": out}


async def _chain_view(info: dict[str, Any], keys: list[Identity]) -> list[dict[str, Any]]:
    from ciro.chain import CDCPool, ChainClient, account_address

    chain = await ChainClient.connect(str(info["rpc_url"]), address=account_address(keys[0].public_key),
                                      identity=keys[0])
    pool = CDCPool(chain, int(info["pool"], 16))
    out = []
    for ident in keys:
        s = await pool.worker(account_address(ident.public_key))
        out.append({"worker_key": ident.public_hex, "registered": s.key != 0, "stake": str(s.stake),
                    "pending_unstake": str(s.pending), "unstake_ready_at": s.ready_at, "reputation": s.reputation,
                    "eligible": s.eligible, "banned_until": s.banned_until})
    return out


async def _unstake(info: dict[str, Any], keys: list[Identity]) -> list[dict[str, Any]]:
    """Each worker's account requests the unstake of its whole stake (withdrawable after the pool's cooldown)."""
    from ciro.chain import CDCPool, ChainClient, account_address

    out = []
    for ident in keys:
        address = account_address(ident.public_key)
        chain = await ChainClient.connect(str(info["rpc_url"]), address=address, identity=ident)
        pool = CDCPool(chain, int(info["pool"], 16))
        stake = int(await pool.view("stake_of", address))
        tx = None
        if stake:
            tx = (await chain.execute([pool.prepare("request_unstake", stake)], what="CDCPool.request_unstake")).tx_hex
        s = await pool.worker(address)
        out.append({"worker_key": ident.public_hex, "unstaked": str(stake), "tx": tx, "pending": str(s.pending),
                    "ready_at": s.ready_at})
    return out


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
    keystore = KeyStore(cfg.home / "keys")
    keys = [keystore.get_or_create(provider_key_name(i)) for i in range(slots)]
    info = _call(url, "GET", "/v1/chain")
    staking: dict[str, Any] = {}
    if info.get("enabled"):
        _say(progress, f"ciro: registering {slots} worker(s) on {info['rpc_url']} and staking {fmt_ciro(stake)} CIRO "
                       "for each ...")
        staking = asyncio.run(_stake(info, keys, keystore.get_or_create(wallet_key), stake))
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
    logs = cfg.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _say(progress, f"ciro: starting the Ray worker node ({hw.describe()}, {slots} worker slot(s)) -> {address} ...")
    with open(logs / "provider-node.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "CIRO_HOME": str(cfg.home)})
    state = {"supervisor_pid": proc.pid, "address": address, "gateway": url, "provider": name, "slots": slots,
             "keys": [k.name for k in keys], "worker_keys": [k.public_hex for k in keys],
             "hardware": hw.__dict__, "wallet_key": wallet_key, "staking": staking, "joined_at": time.time()}
    _write_state(cfg, state)
    if wait:
        state["workers"] = _wait_workers(url, {k.public_hex for k in keys}, proc, logs / "provider-node.log")
    return state


def _workers_of(url: str, keys: set[str]) -> list[dict[str, Any]]:
    return [w for w in _call(url, "GET", "/v1/workers", timeout=30.0) if w.get("worker_key") in keys]


def _wait_workers(url: str, keys: set[str], proc: subprocess.Popen[bytes], log_path: Path) -> list[dict[str, Any]]:
    """Until the gateway lists a worker for every key (it started them on the new node)."""
    deadline = time.monotonic() + _JOIN_WAIT_S
    while True:
        found = _workers_of(url, keys)
        if {w["worker_key"] for w in found} == keys:
            return found
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise CiroError(f"The provider node exited with code {proc.returncode}. Last lines of {log_path}:\n{tail}")
        if time.monotonic() > deadline:
            raise CiroError(f"The gateway at {url} started no worker on this node within {_JOIN_WAIT_S:.0f}s. See "
                            f"{log_path} and the gateway's log.")
        time.sleep(0.5)


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
    keystore = KeyStore(cfg.home / "keys")
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

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
    if ray_proc.poll() is None:
        terminate(ray_proc.pid, 40.0)
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
        keystore = KeyStore(cfg.home / "keys")
        out["chain"] = asyncio.run(_chain_view(info, [keystore.get(n) for n in state["keys"]]))
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
    keystore = KeyStore(cfg.home / "keys")
    return asyncio.run(_stake(info, [keystore.get(n) for n in state["keys"]],
                              keystore.get(wallet_key or state["wallet_key"]), amount))


def leave(cfg: Config, *, timeout_s: float = 300.0, progress: bool = False) -> dict[str, Any]:
    """Drain this node's workers, take them out of the gateway, request the unstake, and stop the node."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}; there is nothing to leave.")
    if state.get("left_at"):
        raise CiroError(f"This node already left ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(state['left_at']))})"
                        ". Run `ciro provider withdraw` once the unstake's cooldown has passed, or join again.")
    url, keystore = state["gateway"], KeyStore(cfg.home / "keys")
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
    unstaked = asyncio.run(_unstake(info, keys)) if info.get("enabled") else []
    _say(progress, "ciro: stopping the Ray worker node ...")
    terminate(state.get("supervisor_pid"), 60.0)
    _write_state(cfg, {**state, "left_at": time.time()})  # kept: `withdraw` needs the gateway and the keys
    return {"left": left, "unstake": unstaked}


async def _withdraw(info: dict[str, Any], keys: list[Identity],
                    wallet: Identity | None) -> tuple[list[dict[str, Any]], int | None]:
    """(per worker: what was withdrawn, and the wallet's balance afterwards when the CIRO went there)."""
    from ciro.chain import CDCPool, ChainClient, CiroToken, account_address

    out = []
    token = None
    for ident in keys:
        address = account_address(ident.public_key)
        chain = await ChainClient.connect(str(info["rpc_url"]), address=address, identity=ident)
        pool, token = CDCPool(chain, int(info["pool"], 16)), CiroToken(chain, int(info["token"], 16))
        s = await pool.worker(address)
        row: dict[str, Any] = {"worker_key": ident.public_hex, "withdrawn": "0", "ready_at": s.ready_at, "tx": None}
        if s.pending and s.ready_at <= await chain.now():
            calls = [pool.prepare("withdraw")]
            if wallet is not None:  # the unstaked CIRO goes back where the stake came from, in the same transaction
                calls.append(token.transfer_call(account_address(wallet.public_key), s.pending))
            row.update(withdrawn=str(s.pending), tx=(await chain.execute(calls, what="CDCPool.withdraw")).tx_hex)
        elif s.pending:
            row["waiting"] = str(s.pending)
        out.append(row)
    balance = await token.balance_of(account_address(wallet.public_key)) if wallet and token else None
    return out, balance


def withdraw(cfg: Config, *, to_wallet: bool = True) -> dict[str, Any]:
    """After the pool's cooldown, withdraw each worker's unstaked CIRO (to the wallet, unless ``to_wallet`` is
    False: then it stays in the worker's account)."""
    state = read_state(cfg)
    if not state:
        raise CiroError(f"No provider node was joined from {cfg.home}; there is nothing to withdraw.")
    info = _call(state["gateway"], "GET", "/v1/chain")
    if not info.get("enabled"):
        raise InputError(f"The gateway at {state['gateway']} does not settle on chain; nothing was staked.")
    keystore = KeyStore(cfg.home / "keys")
    wallet = keystore.get(state["wallet_key"]) if to_wallet else None
    rows, balance = asyncio.run(_withdraw(info, [keystore.get(n) for n in state["keys"]], wallet))
    waiting = [r for r in rows if r.get("waiting")]
    if waiting and not any(r["tx"] for r in rows):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(r["ready_at"] for r in waiting)))
        raise InputError(f"The unstaked CIRO is still in the pool's cooldown: withdrawable from {when}. Run "
                         "`ciro provider withdraw` again then.", detail={"workers": rows})
    return {"workers": rows, "to": state["wallet_key"] if to_wallet else "worker accounts",
            "wallet_balance": str(balance) if balance is not None else None}
