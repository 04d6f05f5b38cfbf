"""Paying for jobs from the SDK (docs/settlement.md): a JobManager escrow per job (``max_payment=``), or prepaid
jobs (settlement v2, CiroLedger): one deposit, then one signed spend cap per job. A cap is the client's cumulative
spend to date: the last cap the gateway accepted from this account plus the gateway's price for each new job,
signed with the account's key. The ledger never charges an account more than its highest signed cap, and the
gateway's settlement charges only the prices of jobs that finished."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    from ._async_client import AsyncCiroClient

__all__ = ["deposit", "escrow", "payer_chain", "spend_header"]

async def payer_chain(client: AsyncCiroClient, purpose: str) -> tuple[dict[str, Any], Any]:
    """The gateway's chain info and a ChainClient on the client's payer account."""
    from .chain import ChainClient, account_address

    info = await client.chain_info()
    if not info.get("enabled"):
        raise ConfigError(f"This gateway does not settle on chain, so there is nothing to {purpose} with. Run "
                          "unpaid, or use a gateway with a deployment (ciro devnet, then ciro up).")
    payer = client.payer()
    return info, await ChainClient.connect(info["rpc_url"], address=account_address(payer.public_key), identity=payer)


async def escrow(client: AsyncCiroClient, jobs: list[dict[str, Any]], max_payment: int) -> str:
    """Escrow ``max_payment`` for each job in ONE JobManager transaction from the payer's account, then tell the
    gateway that transaction."""
    from .chain import CiroToken, JobManager

    info, chain = await client._payer_chain("escrow")
    jm, token = JobManager(chain, int(info["job_manager"], 16)), CiroToken(chain, int(info["token"], 16))
    deadline = await chain.now() + int(2 * float(info["escrow_window_s"])) + 3600
    calls = [token.approve_call(jm.address, max_payment * len(jobs))] + [
        jm.submit_job_call(j["id"], j["model_hash"], j["input_commitment"], j["verification"], max_payment, deadline)
        for j in jobs]
    tx = await chain.execute(calls, what="Escrowing the jobs' payment")
    await client._request("POST", "/v1/jobs/escrow", json={"job_ids": [j["id"] for j in jobs], "tx_hash": tx.tx_hex})
    return str(tx.tx_hex)


async def _ledger(client: AsyncCiroClient) -> tuple[dict[str, Any], Any]:
    from .chain.ledger import CiroLedger

    info, chain = await client._payer_chain("pay for prepaid jobs")
    if not info.get("ledger"):
        raise ConfigError("This gateway's deployment has no CiroLedger, so it takes no prepaid jobs. Pay per job with "
                          "max_payment= instead.")
    return info, CiroLedger(chain, int(info["ledger"], 16))


async def deposit(client: AsyncCiroClient, amount: int) -> str:
    """Register the payer's key in the ledger if it is not, approve and deposit ``amount``: one transaction."""
    from .chain import CiroToken

    if amount <= 0 or amount >= 2**128:
        raise InputError(f"A deposit is a positive amount of CIRO base units below 2**128, got {amount}.")
    info, ledger = await _ledger(client)
    payer = client.payer()
    calls = []
    if int(await ledger.view("client_key", ledger.chain.address)) != payer.public_key:
        calls.append(ledger.register_client_key_call(payer.public_key))
    token = CiroToken(ledger.chain, int(info["token"], 16))
    calls += [token.approve_call(ledger.address, amount), ledger.deposit_call(amount)]
    tx = await ledger.chain.execute(calls, what="Depositing into CiroLedger")
    return str(tx.tx_hex)


async def spend_header(client: AsyncCiroClient, jobs: int) -> dict[str, str]:
    """The ``x-ciro-spend`` header for a request of ``jobs`` jobs: the next ``jobs`` caps, signed by the payer. The
    caller holds the client's spend lock until the gateway has answered, so that caps of one client do not race."""
    from .chain import account_address
    from .chain.ledger import SPEND_HEADER, encode_spend_header, sign_spend

    payer = client.payer()
    account = account_address(payer.public_key)
    standing = await client.ledger_account()
    if int(standing["registered_key"], 16) != payer.public_key:
        raise ConfigError(f"Account {account:#x} has no key registered in the ledger (or another one): deposit first "
                          "(client.deposit(amount) or `ciro deposit AMOUNT`), which registers it.")
    start, price = int(standing["authorized"]), int(standing["price_per_job"])
    chain_id, ledger = int(standing["chain_id"], 16), int(standing["ledger"], 16)
    caps = [sign_spend(payer, chain_id=chain_id, ledger=ledger, client=account, cumulative=start + price * i)
            for i in range(1, jobs + 1)]
    return {SPEND_HEADER: encode_spend_header(account, caps)}
