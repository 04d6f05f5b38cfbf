"""`ciro devnet`, `ciro fund`, `ciro deposit` and `ciro keys`: the local chain, prepaid deposits and this home's key
pairs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from . import local
from ._cli_base import _cfg, _client, cli, handle_errors
from .config import Config
from .errors import InputError


@cli.command("devnet")
@click.option("--port", type=int, help="JSON-RPC port (default: devnet_port, 5050).")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="Chain state folder, reloaded at start (default: $CIRO_HOME/devnet).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the predeployed accounts' keys.")
@click.option("--accounts", type=int, default=10, show_default=True, help="Predeployed accounts.")
@click.pass_context
@handle_errors
def devnet_cmd(ctx: click.Context, port: int | None, state: Path | None, seed: int, accounts: int) -> None:
    """Run the local Starknet devnet with the Ciro contracts deployed (foreground; Ctrl-C stops it).

    It executes the compiled Cairo contracts on StarkWare's Cairo VM behind a Starknet JSON-RPC endpoint,
    records the contracts' addresses in $CIRO_HOME/chain.json and funds your key 'client' with CIRO and STRK.
    Fees are charged in STRK, as on Starknet (each predeployed account holds 1,000,000 STRK). While it runs,
    `ciro up` on this home uses it (and `ciro down` leaves it running)."""
    local.require_devnet()
    from ciro_devnet.__main__ import main as devnet_main
    from ciro_devnet.launch import check_devnet_port, recorded_devnet

    cfg = _cfg(ctx)
    port = port or cfg.devnet_port
    state = state or cfg.paths.devnet
    check_devnet_port(cfg.home, port)
    with recorded_devnet(cfg.home, port=port, state_dir=state):
        devnet_main(["--port", str(port), "--state", str(state), "--seed", str(seed), "--accounts", str(accounts),
                     "--home", str(cfg.home)])


@cli.command("fund")
@click.argument("public_key")
@click.option("--amount", default="10000", show_default=True, help="CIRO to send.")
@click.option("--strk", default="100", show_default=True,
              help="STRK to send for transaction fees (a new account also gets 10 STRK with its deployment).")
@click.pass_context
@handle_errors
def fund(ctx: click.Context, public_key: str, amount: str, strk: str) -> None:
    """Give PUBLIC_KEY (0x-hex, or a key name in this key store) a Starknet account holding CIRO and STRK (its
    fees), paid by this home's governance key: the local devnet's faucet (a provider's wallet before `ciro provider
    join --stake`, which gives each worker account 10 STRK of it)."""
    from decimal import Decimal, InvalidOperation

    cfg = _cfg(ctx)
    try:
        key = int(public_key, 16) if public_key.startswith("0x") else _keystore(ctx).get(public_key).public_key
        units = int(Decimal(amount) * 10**18)
        fee_units = int(Decimal(strk) * 10**18)
    except (ValueError, InvalidOperation):
        raise InputError(f"{public_key!r} / {amount!r} / {strk!r}: give a 0x-hex public key or a key name, and "
                         "amounts of CIRO and STRK.") from None
    address, balance, fee_balance = asyncio.run(_fund(cfg, key, units, fee_units))
    click.echo(f"account {address:#x} of key {key:#066x}: {Decimal(balance) / 10**18:f} CIRO, "
               f"{Decimal(fee_balance) / 10**18:f} STRK")


async def _fund(cfg: Config, key: int, units: int, fee_units: int) -> tuple[int, int, int]:
    from .chain import ChainClient, Network, ensure_account
    from .identity import KeyStore

    net = Network.load(cfg.home)
    gov = await ChainClient.connect(net.rpc_url, address=net.governance,
                                    identity=KeyStore(cfg.paths.keys).get(cfg.operator_key))
    address = await ensure_account(gov, key)
    token, fee_token = net.token_on(gov), net.fee_token_on(gov)
    calls = ([token.transfer_call(address, units)] if units else []) + (
        [fee_token.transfer_call(address, fee_units)] if fee_units else [])
    if calls:
        await gov.execute(calls, what="Funding an account")
    return address, await token.balance_of(address), await fee_token.balance_of(address)


@cli.group()
def keys() -> None:
    """Stark-curve key pairs in $CIRO_HOME/keys (clients, workers, validators)."""


def _keystore(ctx: click.Context) -> Any:
    from .identity import KeyStore

    return KeyStore(_cfg(ctx).paths.keys)


@keys.command("new")
@click.argument("name")
@click.pass_context
@handle_errors
def keys_new(ctx: click.Context, name: str) -> None:
    """Create a key pair NAME (the private key never leaves the file, mode 0600)."""
    ident = _keystore(ctx).new(name)
    click.echo(f"{ident.name}: {ident.public_hex}")


@keys.command("show")
@click.argument("name")
@click.pass_context
@handle_errors
def keys_show(ctx: click.Context, name: str) -> None:
    """Print the public key of NAME."""
    ident = _keystore(ctx).get(name)
    click.echo(f"{ident.name}: {ident.public_hex}")


@keys.command("list")
@click.pass_context
@handle_errors
def keys_list(ctx: click.Context) -> None:
    """List key pairs (names and public keys)."""
    for ident in _keystore(ctx).list():
        click.echo(f"{ident.name:<24} {ident.public_hex}")


@cli.command("deposit")
@click.argument("amount")
@click.pass_context
@handle_errors
def deposit(ctx: click.Context, amount: str) -> None:
    """Deposit AMOUNT CIRO into the gateway's CiroLedger for prepaid jobs (`ciro infer --prepaid`, or
    `prepaid=True` in the SDK), from your payer key's account; registers the key the first time. Shows the
    ledger's standing afterwards."""
    from decimal import Decimal, InvalidOperation

    try:
        units = int(Decimal(amount) * 10**18)
    except InvalidOperation:
        raise InputError(f"{amount!r} is not an amount of CIRO (e.g. 25 or 0.5).") from None
    if units <= 0:
        raise InputError(f"Deposit a positive amount of CIRO, not {amount}.")
    with _client(ctx) as client:
        tx = client.deposit(units)
        s = client.ledger_account()
    click.echo(f"deposited {Decimal(units) / 10**18:f} CIRO in {tx}; ledger {s['ledger']} account {s['client']}: "
               f"balance {Decimal(int(s['balance'])) / 10**18:f} CIRO, charged {Decimal(int(s['charged'])) / 10**18:f},"
               f" last cap {Decimal(int(s['authorized'])) / 10**18:f}, price per job "
               f"{Decimal(int(s['price_per_job'])) / 10**18:f}")
