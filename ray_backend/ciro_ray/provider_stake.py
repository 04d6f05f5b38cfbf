"""A provider's stake on chain: its workers' accounts registered and staked from the wallet, their state read,
the unstake requested and withdrawn (CDCPool through ``ciro.chain``); amounts in CIRO base units."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from ciro import ConfigError, InputError
from ciro.errors import InsufficientEscrowError
from ciro.identity import Identity

__all__ = ["ONE_CIRO", "chain_view", "fmt_ciro", "parse_amount", "stake_workers", "unstake", "withdraw_stakes"]

ONE_CIRO = 10**18


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
async def stake_workers(info: dict[str, Any], keys: list[Identity], wallet: Identity, amount: int) -> dict[str, Any]:
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


async def chain_view(info: dict[str, Any], keys: list[Identity]) -> list[dict[str, Any]]:
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


async def unstake(info: dict[str, Any], keys: list[Identity]) -> list[dict[str, Any]]:
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


async def withdraw_stakes(info: dict[str, Any], keys: list[Identity],
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
