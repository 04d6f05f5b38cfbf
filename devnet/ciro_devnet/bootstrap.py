"""The embedded default's chain: a devnet with the Ciro contracts deployed and Ciro's keys funded (CIRO to pay
jobs with, STRK to pay transaction fees with).

Governance is the devnet's first predeployed account (its key goes into the key store as
``devnet-governance``). The deployment is recorded in ``$CIRO_HOME/chain.json``; with a persistent
state folder a restart finds the contracts already there and reuses them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ciro import KeyStore
from ciro.chain import ChainClient, Network, deploy_network, ensure_account
from ciro.chain.ledger import deploy_ledger
from ciro.home import HomePaths

from .accounts import PredeployedAccount

__all__ = ["CIRO", "bootstrap"]

#: One CIRO in base units (18 decimals).
CIRO = 10**18
SUPPLY = 10**9 * CIRO
MIN_STAKE = 1_000 * CIRO
UNSTAKE_COOLDOWN_S = 7 * 24 * 3600
FAUCET = 10_000 * CIRO
#: STRK (fri) a funded key's account gets for fees: with its ACCOUNT_FEE_FUNDS, enough for a provider wallet to
#: give many worker accounts theirs.
FEE_FAUCET = 1_000 * 10**18
#: CiroLedger's constructor values on the devnet: a client's withdrawal waits an hour (the operator can still settle
#: work it authorized before), and a settled batch can be disputed for a day.
WITHDRAWAL_DELAY_S = 3600
DISPUTE_WINDOW_S = 24 * 3600


async def bootstrap(url: str, governance: PredeployedAccount, home: Path, *,
                    fund: tuple[str, ...] = ("client",)) -> Network:
    """Deploy (or find) the Ciro contracts on the devnet at ``url`` and record them in ``home``; give each named
    key of ``home`` an account holding CIRO (once) and STRK for its fees (topped up to FEE_FAUCET)."""
    keys = KeyStore(HomePaths(home).keys)
    gov_id = keys.import_key("devnet-governance", governance.private_key, replace=True)
    gov = await ChainClient.connect(url, address=governance.address, identity=gov_id)
    net = await deploy_network(gov, rpc_url=url, supply=SUPPLY, min_stake=MIN_STAKE,
                               unstake_cooldown_s=UNSTAKE_COOLDOWN_S)
    net = replace(net, ledger=await deploy_ledger(gov, token=net.token, pool=net.pool,
                                                  withdrawal_delay_s=WITHDRAWAL_DELAY_S,
                                                  dispute_window_s=DISPUTE_WINDOW_S))
    token, fee_token = net.token_on(gov), net.fee_token_on(gov)
    for name in fund:
        address = await ensure_account(gov, keys.get_or_create(name))
        calls = [token.transfer_call(address, FAUCET)] if await token.balance_of(address) == 0 else []
        held = await fee_token.balance_of(address)
        if held < FEE_FAUCET:
            calls.append(fee_token.transfer_call(address, FEE_FAUCET - held))
        if calls:
            await gov.execute(calls, what=f"Funding key {name!r}")
    net.save(home)
    return net
