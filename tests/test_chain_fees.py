"""The shared client's fees on the local devnet (which charges them in STRK as Starknet does): bounds from the fee
estimate with the documented margins, new accounts funded with the fee token, and the error an account that
cannot pay gets."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest

from ciro.chain import ChainClient, CiroToken, ensure_account
from ciro.chain.client import AMOUNT_MARGIN, PRICE_MARGIN, InsufficientFeeError
from ciro.chain.network import ACCOUNT_FEE_FUNDS
from ciro.identity import Identity
from ciro.networks import STRK
from ciro_devnet.launch import DevnetThread, start_devnet_thread


@pytest.fixture(scope="module")
def devnet() -> Iterator[DevnetThread]:
    node = start_devnet_thread(accounts=1, seed=77)
    yield node
    node.stop()


async def _gov(devnet: DevnetThread) -> ChainClient:
    acc = devnet.devnet.accounts[0]
    return await ChainClient.connect(devnet.url, address=acc.address,
                                     identity=Identity("gov", acc.private_key, acc.public_key, 0.0))


def test_bounds_are_the_estimate_with_margins_and_the_fee_is_paid(devnet: DevnetThread) -> None:
    async def run() -> None:
        gov = await _gov(devnet)
        ident = Identity.generate("payer")
        address = await ensure_account(gov, ident)
        assert await gov.fee_balance(address) == ACCOUNT_FEE_FUNDS  # funded with its deployment

        payer = await ChainClient.connect(devnet.url, address=address, identity=ident)
        strk = CiroToken(payer, int(STRK, 16))
        result = await payer.execute([strk.transfer_call(gov.address, 1)], what="A STRK transfer")
        assert result.fee > 0
        assert await payer.fee_balance() == ACCOUNT_FEE_FUNDS - 1 - result.fee

        tx: Any = await payer.node.get_transaction(result.tx_hash)
        block: Any = await payer.node.get_block(block_number=result.block_number)
        l2 = tx.resource_bounds.l2_gas
        # The estimate ran on the same state, so it used what the estimate said: bounds = margins x the estimate.
        assert l2.max_amount == math.ceil(result.l2_gas * AMOUNT_MARGIN)
        assert l2.max_price_per_unit == PRICE_MARGIN * block.l2_gas_price.price_in_fri
        max_fee = sum(b.max_amount * b.max_price_per_unit
                      for b in (tx.resource_bounds.l1_gas, tx.resource_bounds.l1_data_gas, l2))
        assert max_fee == 3 * result.fee  # 1.5x the amounts at 2x the prices of an estimate that was exact
        assert max_fee < 10**18  # well under one STRK; the fixed limits asked ~10,000 STRK

    asyncio.run(run())


def test_an_account_that_cannot_pay_is_told_how_to_fund_it(devnet: DevnetThread) -> None:
    async def run() -> None:
        gov = await _gov(devnet)
        ident = Identity.generate("poor")
        address = await ensure_account(gov, ident, fee_funds=0)
        poor = await ChainClient.connect(devnet.url, address=address, identity=ident)
        assert await poor.fee_balance() == 0
        with pytest.raises(InsufficientFeeError) as caught:
            await poor.execute([CiroToken(poor, int(STRK, 16)).transfer_call(gov.address, 0)], what="A transfer")
        err = caught.value
        assert hex(address) in err.message and "holds 0 fri" in err.message and "ciro fund" in err.message
        assert err.detail["account"] == hex(address) and err.detail["balance"] == "0"
        assert int(err.detail["max_fee"]) > 0 and err.detail["fee_token"] == STRK
        assert int(await poor.account.get_nonce()) == 0  # nothing was included

        # Funded, the same account sends it.
        await gov.execute([CiroToken(gov, int(STRK, 16)).transfer_call(address, 10**17)], what="Funding")
        await poor.execute([CiroToken(poor, int(STRK, 16)).transfer_call(gov.address, 0)], what="A transfer")
        assert int(await poor.account.get_nonce()) == 1

    asyncio.run(run())
