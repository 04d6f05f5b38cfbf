"""The local Starknet devnet (`python -m ciro_devnet`), driven only through starknet-py 0.30.

One devnet subprocess (a free port, a state folder) serves the whole module; the last test stops it and starts a
new one on the same folder. Contracts: CiroAccount and the UDC (predeployed) and tests/cairo/counter, compiled by
`python -m ciro_devnet.build --crate tests/cairo/counter --contract ciro_test_counter::Counter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starknet_py.contract import Contract
from starknet_py.hash.selector import get_selector_from_name
from starknet_py.net.account.account import Account
from starknet_py.net.client_errors import ClientError
from starknet_py.net.client_models import (
    Call,
    ResourceBounds,
    ResourceBoundsMapping,
    TransactionExecutionStatus,
)
from starknet_py.net.full_node_client import FullNodeClient
from starknet_py.net.http_client import RpcHttpClient
from starknet_py.net.signer.key_pair import KeyPair
from starknet_py.transaction_errors import TransactionRevertedError

from ciro_devnet.launch import DevnetProcess

COUNTER = Path(__file__).parent / "cairo" / "counter" / "compiled"
POLL = 0.05  # wait_for_acceptance's check interval: transactions are in a block when add* answers
# Explicit bounds, for transactions that must reach the node without a fee estimate (which would fail first).
BOUNDS = ResourceBoundsMapping(
    l1_gas=ResourceBounds(max_amount=0, max_price_per_unit=10**13),
    l1_data_gas=ResourceBounds(max_amount=10**5, max_price_per_unit=10**10),
    l2_gas=ResourceBounds(max_amount=10**8, max_price_per_unit=10**10),
)
SEED = 1234
STRK = 0x04718F5A0FC34CC1AF16A1CDEE98FFB20C31F5CD61D6AB07201858F4287C938D  # the fee token, as on Starknet


@dataclass
class Env:
    devnet: DevnetProcess
    state_dir: Path
    shared: dict[str, Any]

    def client(self) -> FullNodeClient:
        return FullNodeClient(self.devnet.url)

    async def account(self, index: int = 0, private_key: int | None = None) -> Account:
        client = self.client()
        keys = self.devnet.accounts[index]
        key_pair = (
            KeyPair.from_private_key(private_key)
            if private_key is not None
            else KeyPair(keys.private_key, keys.public_key)
        )
        return Account(address=keys.address, client=client, key_pair=key_pair, chain=await client.get_chain_id())

    async def devnet_rpc(self, method: str, params: dict[str, Any]) -> Any:
        """The devnet_* methods (time travel), through starknet-py's own JSON-RPC client."""
        return await RpcHttpClient(url=self.devnet.url, method_prefix="devnet").call(method, params)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state_dir = tmp_path_factory.mktemp("devnet-state")
    devnet = DevnetProcess(state_dir=state_dir, accounts=3, seed=SEED, log_path=state_dir.parent / "devnet.log")
    box = Env(devnet, state_dir, {})
    yield box
    box.devnet.stop()


@pytest.fixture(scope="module")
def counter(env: Env) -> Contract:
    """Counter declared and deployed (initial 5) by account 0 with estimated fees."""

    async def deploy() -> Contract:
        account = await env.account()
        declared = await Contract.declare_v3(
            account,
            compiled_contract=(COUNTER / "Counter.sierra.json").read_text(),
            compiled_contract_casm=(COUNTER / "Counter.casm.json").read_text(),
            auto_estimate=True,
        )
        await declared.wait_for_acceptance(check_interval=POLL)
        deployed = await declared.deploy_v3(
            constructor_args={"initial": 5, "owner": account.address}, auto_estimate=True
        )
        await deployed.wait_for_acceptance(check_interval=POLL)
        return deployed.deployed_contract

    return asyncio.run(deploy())


def test_chain_basics(env: Env) -> None:
    async def run() -> None:
        client = env.client()
        assert await client.get_chain_id() == hex(int.from_bytes(b"SN_CIRO_DEV", "big"))
        assert await client.spec_version() == "0.10.2"
        block = await client.get_block(block_number="latest")
        assert block.block_number == 0 and block.transactions == []
        pending = await client.get_block()  # pre_confirmed, as starknet-py asks by default
        assert pending.starknet_version == "0.14.0"
        account = env.devnet.accounts[0]
        public_key = await client.call_contract(Call(account.address, get_selector_from_name("get_public_key"), []))
        assert public_key == [account.public_key]
        assert await client.get_contract_nonce(account.address) == 0

    asyncio.run(run())


def test_declare_deploy_invoke_and_events(env: Env, counter: Contract) -> None:
    async def run() -> None:
        client = env.client()
        account = await env.account()
        contract = await Contract.from_address(counter.address, provider=account)
        assert (await contract.functions["get"].call())[0] == 5
        assert (await contract.functions["owner"].call())[0] == account.address

        invoke = await contract.functions["increase"].invoke_v3(3, auto_estimate=True)
        receipt = await invoke.wait_for_acceptance(check_interval=POLL)
        assert (await contract.functions["get"].call())[0] == 8

        receipt = await client.get_transaction_receipt(invoke.hash)
        assert receipt.execution_status == TransactionExecutionStatus.SUCCEEDED
        assert receipt.execution_resources.l2_gas > 0 and receipt.actual_fee.amount > 0
        increased = get_selector_from_name("Increased")
        (event,) = [e for e in receipt.events if e.from_address == counter.address]
        assert event.keys == [increased, account.address] and event.data == [3, 8]

        invoke = await contract.functions["increase"].invoke_v3(2, auto_estimate=True)
        await invoke.wait_for_acceptance(check_interval=POLL)
        chunk = await client.get_events(address=counter.address, keys=[[increased]], chunk_size=1)
        assert len(chunk.events) == 1 and chunk.continuation_token is not None
        everything = await client.get_events(
            address=counter.address, keys=[[increased]], chunk_size=1, follow_continuation_token=True
        )
        assert [e.data for e in everything.events] == [[3, 8], [2, 10]]
        assert everything.events[1].transaction_hash == invoke.hash
        env.shared["value"] = 10

    asyncio.run(run())


def test_simulate_changes_nothing(env: Env, counter: Contract) -> None:
    async def run() -> None:
        client = env.client()
        account = await env.account()
        nonce = await account.get_nonce()
        ok, failing = [
            await account.sign_invoke_v3(
                Call(counter.address, get_selector_from_name("increase"), [amount]), nonce=nonce, resource_bounds=BOUNDS
            )
            for amount in (1, 0)
        ]
        (simulated,) = await client.simulate_transactions([ok])
        (inner,) = simulated.transaction_trace.execute_invocation.calls
        assert inner.contract_address == counter.address and inner.events[0].data == [1, env.shared["value"] + 1]
        assert simulated.transaction_trace.validate_invocation.result == [int.from_bytes(b"VALID", "big")]
        (reverted,) = await client.simulate_transactions([failing])
        assert "Counter: amount is zero" in reverted.transaction_trace.execute_invocation.revert_reason
        assert await account.get_nonce() == nonce
        assert (await client.call_contract(Call(counter.address, get_selector_from_name("get"), [])))[0] == env.shared[
            "value"
        ]

    asyncio.run(run())


def test_accounts_through_udc_and_deploy_account(env: Env) -> None:
    async def run() -> None:
        client = env.client()
        account = await env.account()
        account_class = await client.get_class_hash_at(account.address)

        # A second CiroAccount through the Universal Deployer (the address starknet-py computes).
        key = KeyPair.from_private_key(0xC1A0)
        deployed = await Contract.deploy_contract_v3(
            account, class_hash=account_class, constructor_args=[key.public_key], auto_estimate=True
        )
        await deployed.wait_for_acceptance(check_interval=POLL)
        assert (await deployed.deployed_contract.functions["get_public_key"].call())[0] == key.public_key

        # A third one deploying itself (DEPLOY_ACCOUNT), then sending a transaction of its own: as on Starknet, its
        # address must hold the fee token first.
        key = KeyPair.from_private_key(0xBEEF)
        address = _account_address(account_class, key.public_key)
        minted = await env.devnet_rpc("mint", {"address": hex(address), "amount": 10**18, "unit": "FRI"})
        assert minted["new_balance"] == str(10**18) and minted["unit"] == "FRI"
        result = await Account.deploy_account_v3(
            address=address,
            class_hash=account_class,
            salt=key.public_key,
            key_pair=key,
            client=client,
            constructor_calldata=[key.public_key],
            auto_estimate=True,
        )
        await result.wait_for_acceptance(check_interval=POLL)
        new_account = result.account
        assert await client.get_contract_nonce(new_account.address) == 1
        invoke = await new_account.execute_v3(
            Call(deployed.deployed_contract.address, get_selector_from_name("get_public_key"), []), auto_estimate=True
        )
        await new_account.client.wait_for_tx(invoke.transaction_hash, check_interval=POLL)
        assert await client.get_contract_nonce(new_account.address) == 2

    asyncio.run(run())


def test_wrong_signature_and_wrong_nonce_are_rejected(env: Env, counter: Contract) -> None:
    async def run() -> None:
        client = env.client()
        impostor = await env.account(0, private_key=0xBAD)
        nonce = await impostor.get_nonce()
        call = Call(counter.address, get_selector_from_name("increase"), [1])
        with pytest.raises(ClientError) as rejected:
            await impostor.execute_v3(call, resource_bounds=BOUNDS)
        assert rejected.value.code == 55 and "invalid signature" in str(rejected.value.data)
        with pytest.raises(ClientError) as estimate:  # the estimate runs __validate__ too
            await impostor.execute_v3(call, auto_estimate=True)
        assert estimate.value.code == 41

        account = await env.account()
        with pytest.raises(ClientError) as again:
            await Contract.declare_v3(
                account,
                compiled_contract=(COUNTER / "Counter.sierra.json").read_text(),
                compiled_contract_casm=(COUNTER / "Counter.casm.json").read_text(),
                resource_bounds=BOUNDS,
            )
        assert again.value.code == 51
        with pytest.raises(ClientError) as stale:
            await account.execute_v3(call, nonce=nonce + 5, resource_bounds=BOUNDS)
        assert stale.value.code == 52
        assert await client.get_contract_nonce(account.address) == nonce  # nothing was included
        contract = await Contract.from_address(counter.address, provider=client)
        assert (await contract.functions["get"].call())[0] == env.shared["value"]

    asyncio.run(run())


def test_revert_keeps_storage_and_bumps_nonce(env: Env, counter: Contract) -> None:
    async def run() -> None:
        client = env.client()
        account = await env.account()
        contract = await Contract.from_address(counter.address, provider=account)
        nonce = await account.get_nonce()
        with pytest.raises(ClientError) as estimate:  # a reverting call cannot be estimated
            await contract.functions["increase"].invoke_v3(0, auto_estimate=True)
        assert estimate.value.code == 41 and "Counter: amount is zero" in str(estimate.value.data)

        invoke = await contract.functions["increase"].invoke_v3(0, resource_bounds=BOUNDS)
        with pytest.raises(TransactionRevertedError, match="Counter: amount is zero"):
            await invoke.wait_for_acceptance(check_interval=POLL)
        receipt = await client.get_transaction_receipt(invoke.hash)
        assert receipt.execution_status == TransactionExecutionStatus.REVERTED
        assert "Counter: amount is zero" in (receipt.revert_reason or "") and receipt.events == []
        # increase() wrote the new value before it panicked: the revert undid the write, kept the nonce.
        assert (await contract.functions["get"].call())[0] == env.shared["value"]
        assert await account.get_nonce() == nonce + 1
        assert receipt.actual_fee.amount > 0  # a reverted transaction pays for what it used

    asyncio.run(run())


async def _strk(client: FullNodeClient, address: int) -> int:
    low, high = await client.call_contract(Call(STRK, get_selector_from_name("balance_of"), [address]))
    return low + (high << 128)


def test_fees_are_charged_in_strk_as_estimated(env: Env, counter: Contract) -> None:
    """The fee moves from the sender to the sequencer in STRK, and is exactly the estimate of the same state."""

    async def run() -> None:
        client = env.client()
        config = await env.devnet_rpc("getConfig", {})
        assert config["fees_charged"] is True and int(config["fee_token"], 16) == STRK
        block = await client.get_block(block_number="latest")
        assert block.l2_gas_price.price_in_fri > 0 and block.l1_data_gas_price.price_in_fri > 0
        assert block.l1_gas_price.price_in_fri > 0
        account = await env.account(1)
        sequencer = int(block.sequencer_address)
        assert await _strk(client, account.address) == 10**24  # each predeployed account's genesis funds
        before, sequencer_before = await _strk(client, account.address), await _strk(client, sequencer)

        call = Call(counter.address, get_selector_from_name("increase"), [7])
        nonce = await account.get_nonce()
        draft = await account.sign_invoke_v3(call, nonce=nonce, resource_bounds=BOUNDS)
        estimate = await account.estimate_fee(draft)
        assert estimate.overall_fee > 0 and estimate.unit.value == "FRI"
        sent = await account.execute_v3(call, nonce=nonce, resource_bounds=estimate.to_resource_bounds(1.5, 2))
        receipt = await client.wait_for_tx(sent.transaction_hash, check_interval=POLL)
        assert receipt.actual_fee.amount == estimate.overall_fee
        assert receipt.execution_resources.l2_gas == estimate.l2_gas_consumed
        assert await _strk(client, account.address) == before - estimate.overall_fee
        assert await _strk(client, sequencer) == sequencer_before + estimate.overall_fee
        env.shared["value"] += 7

    asyncio.run(run())


def test_max_fee_above_balance_is_refused(env: Env, counter: Contract) -> None:
    """INSUFFICIENT_ACCOUNT_BALANCE (54) at submission: nothing is included, the nonce and balances stay."""

    async def run() -> None:
        client = env.client()
        account = await env.account(2)
        balance = await _strk(client, account.address)
        height, nonce = await client.get_block_number(), await account.get_nonce()
        price = 10**10
        greedy = ResourceBoundsMapping(  # a max fee (max amount x max price) just above the balance
            l1_gas=ResourceBounds(max_amount=0, max_price_per_unit=10**13),
            l1_data_gas=ResourceBounds(max_amount=0, max_price_per_unit=10**10),
            l2_gas=ResourceBounds(max_amount=balance // price + 1, max_price_per_unit=price),
        )
        call = Call(counter.address, get_selector_from_name("increase"), [1])
        with pytest.raises(ClientError) as refused:
            await account.execute_v3(call, resource_bounds=greedy)
        assert refused.value.code == 54 and str(balance) in str(refused.value.data)
        assert await client.get_block_number() == height and await account.get_nonce() == nonce
        assert await _strk(client, account.address) == balance

    asyncio.run(run())


def test_a_transaction_that_spends_the_fee_it_owes_reverts_and_still_pays(env: Env) -> None:
    """Sending away all but 1 fri of STRK leaves less than the fee: the transfer is undone and the fee paid."""

    async def run() -> None:
        client = env.client()
        account = await env.account(2)
        before, nonce = await _strk(client, account.address), await account.get_nonce()
        sink = env.devnet.accounts[0].address
        sink_before = await _strk(client, sink)
        amount = before - 1
        call = Call(STRK, get_selector_from_name("transfer"), [sink, amount & (2**128 - 1), amount >> 128])
        sent = await account.execute_v3(call, resource_bounds=BOUNDS)  # max fee ~10^18 fri: the balance covers it
        with pytest.raises(TransactionRevertedError, match="Insufficient fee token balance after execution"):
            await client.wait_for_tx(sent.transaction_hash, check_interval=POLL)
        receipt = await client.get_transaction_receipt(sent.transaction_hash)
        assert receipt.actual_fee.amount > 1
        assert await _strk(client, account.address) == before - receipt.actual_fee.amount
        assert await _strk(client, sink) == sink_before
        assert await account.get_nonce() == nonce + 1

    asyncio.run(run())


def test_bounds_below_the_cost_revert_and_pay_the_bound(env: Env, counter: Contract) -> None:
    """Too little L2 gas: the transaction is included, reverted, its effects undone, and pays its whole L2 bound."""

    async def run() -> None:
        client = env.client()
        account = await env.account(1)
        contract = await Contract.from_address(counter.address, provider=account)
        before, nonce = await _strk(client, account.address), await account.get_nonce()
        tight = ResourceBoundsMapping(
            l1_gas=ResourceBounds(max_amount=0, max_price_per_unit=10**13),
            l1_data_gas=ResourceBounds(max_amount=10**5, max_price_per_unit=10**10),
            l2_gas=ResourceBounds(max_amount=10_000, max_price_per_unit=10**10),
        )
        invoke = await contract.functions["increase"].invoke_v3(1, resource_bounds=tight)
        with pytest.raises(TransactionRevertedError, match="Insufficient max L2Gas"):
            await invoke.wait_for_acceptance(check_interval=POLL)
        receipt = await client.get_transaction_receipt(invoke.hash)
        block = await client.get_block(block_number=receipt.block_number)
        l2_part = 10_000 * block.l2_gas_price.price_in_fri
        data_part = receipt.execution_resources.l1_data_gas * block.l1_data_gas_price.price_in_fri
        assert receipt.actual_fee.amount == l2_part + data_part  # charged at the block's price, not the max price
        assert await _strk(client, account.address) == before - receipt.actual_fee.amount
        assert await account.get_nonce() == nonce + 1
        assert (await contract.functions["get"].call())[0] == env.shared["value"]

    asyncio.run(run())

    asyncio.run(run())


def test_block_time_moves_with_devnet_time(env: Env, counter: Contract) -> None:
    async def run() -> None:
        account = await env.account()
        contract = await Contract.from_address(counter.address, provider=account)
        now = (await contract.functions["now"].call())[0]
        deadline = now + 3600
        early = await contract.functions["increase_not_before"].invoke_v3(1, deadline, resource_bounds=BOUNDS)
        with pytest.raises(TransactionRevertedError, match="Counter: too early"):
            await early.wait_for_acceptance(check_interval=POLL)

        await env.devnet_rpc("increaseTime", {"time": 7200})
        assert (await contract.functions["now"].call())[0] >= deadline
        late = await contract.functions["increase_not_before"].invoke_v3(1, deadline, auto_estimate=True)
        await late.wait_for_acceptance(check_interval=POLL)
        block = await env.client().get_block(block_number="latest")
        assert block.timestamp >= deadline
        env.shared["value"] += 1
        assert (await contract.functions["get"].call())[0] == env.shared["value"]

    asyncio.run(run())


def test_restart_keeps_the_chain(env: Env, counter: Contract) -> None:
    async def snapshot() -> tuple[int, int, int, int]:
        client = env.client()
        account = env.devnet.accounts[0]
        value = (await client.call_contract(Call(counter.address, get_selector_from_name("get"), [])))[0]
        return (
            value,
            await client.get_contract_nonce(account.address),
            await client.get_block_number(),
            await client.get_class_hash_at(counter.address),
        )

    before = asyncio.run(snapshot())
    assert before[0] == env.shared["value"]
    env.devnet.stop()
    env.devnet = DevnetProcess(state_dir=env.state_dir, log_path=env.state_dir.parent / "devnet.log")
    assert env.devnet.accounts[0].address != 0
    assert asyncio.run(snapshot()) == before

    async def one_more() -> None:
        account = await env.account()
        contract = await Contract.from_address(counter.address, provider=account)
        invoke = await contract.functions["increase"].invoke_v3(4, auto_estimate=True)
        await invoke.wait_for_acceptance(check_interval=POLL)
        assert (await contract.functions["get"].call())[0] == before[0] + 4

    asyncio.run(one_more())


def _account_address(class_hash: int, public_key: int) -> int:
    from starknet_py.hash.address import compute_address

    return compute_address(salt=public_key, class_hash=class_hash, constructor_calldata=[public_key])
