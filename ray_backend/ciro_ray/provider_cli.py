"""``ciro provider``: run a Ciro cluster's head, or join it with your own hardware (registered as the
``provider`` command through the ``ciro.cli`` entry point)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ciro import Config
from ciro.cli import handle_errors
from ciro.local import ensure_running

from . import provider as node
from .hardware import Hardware

__all__ = ["provider"]


def _cfg(ctx: click.Context, **overrides: Any) -> Config:
    base: Config = ctx.find_root().obj
    return Config.load(home=base.home, port=base.port, gateway_url=base.gateway_url, **overrides)


@click.group()
def provider() -> None:
    """Supply compute: a Ray head with the gateway, or a worker node with your CPUs/GPUs, staked on Starknet."""


@provider.command()
@click.option("--node-ip", help="The address other machines reach this one at (default 127.0.0.1).")
@click.option("--host", help="Interface the gateway listens on (0.0.0.0 for other machines).")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Worker actors on the head itself (0: only providers' nodes run jobs).")
@click.pass_context
@handle_errors
def head(ctx: click.Context, node_ip: str | None, host: str | None, workers: int) -> None:
    """Start a Ray head, the gateway and (unless a chain.json names another network) the local devnet."""
    cfg = _cfg(ctx, node_ip=node_ip, host=host)
    url = ensure_running(cfg, progress=True, num_workers=workers)
    ray_address = node.ray_address_of(cfg)
    click.echo(f"gateway: {url}   ray: {ray_address}")
    click.echo("providers join with:")
    click.echo(f"  ciro provider join --address {ray_address} --gateway {url} --stake 1000")
    click.echo("(other machines also need this machine's Ray token: copy ~/.ray/auth_token, or set RAY_AUTH_TOKEN)")


@provider.command()
@click.option("--address", required=True, help="The head's Ray address, HOST:PORT.")
@click.option("--gateway", help="The gateway's URL (default: http://HOST:<port>).")
@click.option("--stake", default="0", show_default=True, help="CIRO to stake for each worker, from the wallet key.")
@click.option("--wallet-key", default="provider", show_default=True,
              help="Key (in $CIRO_HOME/keys) whose Starknet account pays the stake.")
@click.option("--name", "provider_name", help="Provider name shown to clients (default: host:home).")
@click.option("--num-cpus", type=float, help="CPUs to offer (default: all).")
@click.option("--num-gpus", type=float, help="GPUs to offer (default: those nvidia-smi sees).")
@click.option("--gpu-model", help="The GPU's model, when nvidia-smi cannot tell (declared, not checked).")
@click.option("--gpu-memory-gb", type=float, help="Memory per GPU in GB, when nvidia-smi cannot tell.")
@click.option("--workers", type=int, help="Worker slots (default: one per GPU share, else 1).")
@click.option("--workers-per-gpu", type=int, default=1, show_default=True,
              help="Workers sharing each GPU (fractional GPUs for small models).")
@click.option("--node-ip", default="127.0.0.1", show_default=True, help="The address the head reaches this node at.")
@click.option("--json", "as_json", is_flag=True, help="Print the run state as JSON.")
@click.pass_context
@handle_errors
def join(ctx: click.Context, address: str, gateway: str | None, stake: str, wallet_key: str,
         provider_name: str | None, num_cpus: float | None, num_gpus: float | None, gpu_model: str | None,
         gpu_memory_gb: float | None, workers: int | None, workers_per_gpu: int, node_ip: str, as_json: bool) -> None:
    """Join a Ciro cluster with this machine: register and stake its workers, start its Ray node, send heartbeats."""
    cfg = _cfg(ctx)
    hw = Hardware.detect(cpus=num_cpus, gpus=num_gpus, gpu_model=gpu_model, gpu_memory_gb=gpu_memory_gb)
    state = node.join(cfg, address=address, gateway=gateway, stake=node.parse_amount(stake), provider=provider_name,
                      hardware=hw, workers=workers, workers_per_gpu=workers_per_gpu, node_ip=node_ip,
                      wallet_key=wallet_key, progress=not as_json)
    if as_json:
        click.echo(json.dumps(state, indent=1))
        return
    click.echo(f"joined {address} as provider {state['provider']!r} ({hw.describe()}), gateway {state['gateway']}")
    for w in state.get("workers", []):
        click.echo(f"  worker {w['id']:<5} key {w['worker_key'][:18]}…  cpus={w.get('num_cpus')} "
                   f"gpus={w.get('num_gpus')} admitted={'yes' if w.get('admitted') else 'not yet (stake is checked)'}")
    click.echo("`ciro provider status` shows it; `ciro provider leave` drains it and requests the unstake.")


@provider.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """This machine's provider node: running, its workers on the gateway, heartbeats, stake and reputation."""
    s = node.status(_cfg(ctx))
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    node_state = "left" if s.get("left_at") else "running" if s["running"] else "STOPPED"
    click.echo(f"provider {s['provider']!r}: node {node_state}, joined to "
               f"{s['address']}, gateway {s['gateway']}")
    if "gateway_error" in s:
        click.echo(f"gateway: {s['gateway_error']}")
    beats = {h["worker_key"]: h for h in s.get("heartbeats", [])}
    chain = {c["worker_key"]: c for c in s.get("chain", [])}
    workers = {w["worker_key"]: w for w in s.get("workers", [])}
    for key in s["worker_keys"]:
        w, h, c = workers.get(key, {}), beats.get(key, {}), chain.get(key, {})
        seen = f"{time.time() - h['last_seen']:.0f}s ago" if h.get("last_seen") else "never"
        line = (f"  {key[:18]}…  {'admitted' if w.get('admitted') else 'not admitted'}"
                f"{' draining' if w.get('draining') else ''}{' DOWN' if h.get('down') else ''}  "
                f"jobs={w.get('jobs_done', 0)} heartbeat {seen}")
        if c:
            line += f"  stake={node.fmt_ciro(int(c['stake']))} CIRO reputation={c['reputation']} " \
                    f"eligible={'yes' if c['eligible'] else 'no'}"
            if int(c["pending_unstake"]):
                line += f" unstaking={node.fmt_ciro(int(c['pending_unstake']))} CIRO"
        click.echo(line)


@provider.command()
@click.argument("amount")
@click.option("--wallet-key", help="Key whose account pays (default: the one join used).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def stake(ctx: click.Context, amount: str, wallet_key: str | None, as_json: bool) -> None:
    """Stake AMOUNT more CIRO for each of this node's workers (a worker below the minimum gets no jobs)."""
    out = node.add_stake(_cfg(ctx), node.parse_amount(amount), wallet_key=wallet_key)
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    minimum = node.fmt_ciro(int(out["min_stake"]))
    for w in out["workers"]:
        click.echo(f"  {w['worker_key'][:18]}…  stake={node.fmt_ciro(int(w['stake']))} CIRO "
                   f"eligible={'yes' if w['eligible'] else f'no (minimum {minimum})'}")


@provider.command()
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for the drain.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def leave(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Drain this node's workers, leave the cluster, request the unstake and stop the node."""
    out = node.leave(_cfg(ctx), timeout_s=timeout, progress=not as_json)
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"left: {len(out['left'])} worker(s) drained and removed from the gateway")
    for u in out["unstake"]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(u["ready_at"])) if u["ready_at"] else "-"
        click.echo(f"  {u['worker_key'][:18]}…  unstake requested: {node.fmt_ciro(int(u['pending']))} CIRO, "
                   f"withdrawable from {when} (tx {u['tx'] or '-'})")


@provider.command()
@click.option("--keep-in-workers", is_flag=True, help="Leave the CIRO in the worker accounts (default: to the wallet).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def withdraw(ctx: click.Context, keep_in_workers: bool, as_json: bool) -> None:
    """After `leave` and the pool's cooldown, withdraw the unstaked CIRO (back to the wallet)."""
    out = node.withdraw(_cfg(ctx), to_wallet=not keep_in_workers)
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    for w in out["workers"]:
        click.echo(f"  {w['worker_key'][:18]}…  withdrew {node.fmt_ciro(int(w['withdrawn']))} CIRO to {out['to']}"
                   + (f" (tx {w['tx']})" if w["tx"] else ""))
    if out["wallet_balance"] is not None:
        click.echo(f"wallet {out['to']!r} now holds {node.fmt_ciro(int(out['wallet_balance']))} CIRO")
