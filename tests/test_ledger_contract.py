"""CiroLedger (settlement v2) on the real local devnet: deposits and the withdrawal delay, per-batch settlement of
worker-signed roots against charges within client-signed cumulative caps, every refusal with the balances unchanged,
jobs provable by leaf + path, and disputes that slash through CDCPool (and ones that fail).

One devnet serves the module (as tests/test_settlement_contracts.py); real Stark signatures from ``ciro.identity``,
real Cairo. Tests run in file order: the disputes move the devnet's clock last."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starknet_py.net.http_client import RpcHttpClient

from ciro import Identity
from ciro.chain import CDCPool, ChainClient, CiroToken, deploy_network, ensure_account
from ciro.chain.client import TxResult
from ciro.chain.ledger import (
    Charge,
    CiroLedger,
    Leaf,
    SignedBatch,
    SpendAuthorization,
    deploy_ledger,
    sign_batch,
    sign_spend,
    spend_message,
)
from ciro.errors import ContractRevertedError, InputError
from ciro.merkle import merkle_path, root_from_path
from ciro.receipts import short_string
from ciro_devnet.launch import DevnetProcess

pytestmark = pytest.mark.timeout(900)

T = TypeVar("T")
CIRO = 10**18
MIN_STAKE = 100 * CIRO
STAKE = 1_000 * CIRO
DELAY_S = 3_600
WINDOW_S = 86_400
FUNDING = 1_000 * CIRO
CLIENTS = ["c1", "c2", "c3"]
WORKERS = ["w1", "w2", "cheat", "liar"]
VALIDATORS = ["v1", "v2", "v3", "v4"]
NAMES = ["outsider", *CLIENTS, *WORKERS, *VALIDATORS]
MODEL = int.from_bytes(os.urandom(32), "big")
RECEIPT, QUORUM = short_string("receipt"), short_string("quorum")


@dataclass(eq=False)
class Actor:
    identity: Identity
    chain: ChainClient

    @property
    def address(self) -> int:
        return self.chain.address

    @property
    def key(self) -> int:
        return self.identity.public_key

    async def send(self, *calls: Any) -> TxResult:
        return await self.chain.execute(list(calls))


@dataclass
class World:
    devnet: DevnetProcess
    loop: asyncio.AbstractEventLoop
    gov: Actor
    token: CiroToken
    pool: CDCPool
    ledger: CiroLedger
    chain_id: int
    actors: dict[str, Actor] = field(default_factory=dict)
    next_batch: int = 1

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def __getitem__(self, name: str) -> Actor:
        return self.actors[name]

    def batch_id(self) -> int:
        self.next_batch += 1
        return self.next_batch

    def spend(self, client: Actor, cumulative: int) -> SpendAuthorization:
        return sign_spend(client.identity, chain_id=self.chain_id, ledger=self.ledger.address, client=client.address,
                          cumulative=cumulative)

    def charge(self, client: Actor, cumulative: int, amount: int) -> Charge:
        """The client signs the cap ``cumulative``; the operator charges ``amount`` under it."""
        return Charge(self.spend(client, cumulative), amount)

    async def state(self) -> list[int]:
        """Every token balance, every ledger balance and charge: what a refused call must leave as it was."""
        accounts = [a.address for a in self.actors.values()] + [self.ledger.address, self.gov.address]
        clients = [self[name].address for name in CLIENTS]
        return list(await asyncio.gather(*(self.token.balance_of(a) for a in accounts),
                                         *(self.ledger.balance_of(a) for a in clients),
                                         *(self.ledger.charged_of(a) for a in clients)))

    async def advance(self, seconds: int) -> None:
        rpc = RpcHttpClient(url=self.devnet.url, method_prefix="devnet")
        await rpc.call("increaseTime", {"time": seconds, "generate_block": True})


def leaf(worker: Actor, *, price: int, client: Actor | None, job_id: int | None = None, output: int | None = None,
         level: int = RECEIPT, input_commitment: int = 7) -> Leaf:
    return Leaf(job_id=job_id if job_id is not None else int.from_bytes(os.urandom(16), "big"), model_hash=MODEL,
                input_commitment=input_commitment,
                output_commitment=output if output is not None else int.from_bytes(os.urandom(32), "big"),
                worker_key=worker.key, level=level, timestamp_ms=1_700_000_000_000, price=price,
                client=client.address if client else 0)


def batch_of(worker: Actor, leaves: list[Leaf]) -> SignedBatch:
    return sign_batch(worker.identity, worker.address, leaves)


async def reverts(action: Awaitable[Any], message: str) -> None:
    with pytest.raises(ContractRevertedError) as info:
        await action
    assert info.value.reason == message


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state_dir: Path = tmp_path_factory.mktemp("ledger-devnet")
    devnet = DevnetProcess(seed=515, state_dir=state_dir, accounts=1, log_path=state_dir.parent / "devnet.log")
    loop = asyncio.new_event_loop()
    try:
        acc = devnet.accounts[0]
        gov_id = Identity("governance", acc.private_key, acc.public_key, 0.0)

        async def setup() -> World:
            chain = await ChainClient.connect(devnet.url, address=acc.address, identity=gov_id)
            net = await deploy_network(chain, rpc_url=devnet.url, supply=10**9 * CIRO, min_stake=MIN_STAKE,
                                       unstake_cooldown_s=3_600)
            ledger_address = await deploy_ledger(chain, token=net.token, pool=net.pool, withdrawal_delay_s=DELAY_S,
                                                 dispute_window_s=WINDOW_S)
            gov = Actor(gov_id, chain)
            ledger = CiroLedger(chain, ledger_address)
            w = World(devnet, loop, gov, net.token_on(chain), net.pool_on(chain), ledger, await ledger.chain_id())
            ids = {n: Identity.generate(n) for n in NAMES}
            addresses = await asyncio.gather(*(ensure_account(chain, ids[n]) for n in NAMES))
            for n, a in zip(NAMES, addresses, strict=True):
                w.actors[n] = Actor(ids[n], await ChainClient.connect(devnet.url, address=a, identity=ids[n]))
            staked = WORKERS + VALIDATORS
            await gov.send(*(w.token.mint_call(w[n].address, FUNDING) for n in CLIENTS),
                           w.token.approve_call(net.pool, STAKE * len(staked)))
            await asyncio.gather(*(w[n].send(w.pool.register_worker_call(w[n].key)) for n in staked))
            await gov.send(*(w.pool.stake_call(w[n].address, STAKE) for n in staked),
                           *(w.pool.add_validator_call(w[n].address) for n in VALIDATORS))
            return w

        yield loop.run_until_complete(setup())
    finally:
        loop.close()
        devnet.stop()


def test_deposit_and_withdrawal_delay(world: World) -> None:
    c1, w1, ledger, token = world["c1"], world["w1"], world.ledger, world.token

    async def body() -> None:
        assert int(await ledger.view("pool")) == world.pool.address
        assert int(await world.pool.view("ledger")) == ledger.address
        # A deposit pulls exactly the amount (approve first); an unapproved one is refused by the token.
        before = await token.balance_of(c1.address)
        await reverts(c1.send(ledger.deposit_call(5 * CIRO)), "ERC20: insufficient allowance")
        await c1.send(ledger.register_client_key_call(c1.key), token.approve_call(ledger.address, 100 * CIRO),
                      ledger.deposit_call(100 * CIRO))
        assert int(await ledger.view("client_key", c1.address)) == c1.key
        assert await token.balance_of(c1.address) == before - 100 * CIRO
        assert await ledger.balance_of(c1.address) == 100 * CIRO
        assert await token.balance_of(ledger.address) == 100 * CIRO

        await reverts(c1.send(ledger.request_withdrawal_call(101 * CIRO)), "LEDGER: insufficient deposit")
        await reverts(c1.send(ledger.withdraw_call()), "LEDGER: nothing to withdraw")
        requested = await c1.send(ledger.request_withdrawal_call(60 * CIRO))
        block = await world.gov.chain.node.get_block(block_number=requested.block_number)
        assert await ledger.pending_withdrawal(c1.address) == (60 * CIRO, block.timestamp + DELAY_S)
        await reverts(c1.send(ledger.withdraw_call()), "LEDGER: withdrawal delay")

        # During the delay the operator still settles work the client authorized before it asked to leave.
        job = leaf(w1, price=50 * CIRO, client=c1)
        await world.gov.send(ledger.settle_batch_call(world.batch_id(), [batch_of(w1, [job])],
                                                      [world.charge(c1, 50 * CIRO, 50 * CIRO)]))
        assert await ledger.balance_of(c1.address) == 50 * CIRO
        await world.advance(DELAY_S + 1)
        # Only what is left is paid out (50 of the 60 requested).
        await c1.send(ledger.withdraw_call())
        assert await token.balance_of(c1.address) == before - 100 * CIRO + 50 * CIRO
        assert await ledger.balance_of(c1.address) == 0
        assert await ledger.pending_withdrawal(c1.address) == (0, 0)
        assert await token.balance_of(ledger.address) == 0

    world.run(body())


def test_settlement_pays_exactly_and_jobs_stay_provable(world: World) -> None:
    c2, c3, w1, w2, ledger, token = world["c2"], world["c3"], world["w1"], world["w2"], world.ledger, world.token

    async def body() -> None:
        for c in (c2, c3):
            await c.send(ledger.register_client_key_call(c.key), token.approve_call(ledger.address, 200 * CIRO),
                         ledger.deposit_call(200 * CIRO))
        # The Python twin of the spend message is the contract's.
        assert int(await ledger.view("spend_message", c2.address, 123)) == spend_message(
            chain_id=world.chain_id, ledger=ledger.address, client=c2.address, cumulative=123)
        prices = [3 * CIRO, 5 * CIRO + 1, 7 * CIRO, 11]
        b1 = batch_of(w1, [leaf(w1, price=prices[0], client=c2), leaf(w1, price=prices[1], client=c3),
                           leaf(w1, price=prices[2], client=c2)])
        b2 = batch_of(w2, [leaf(w2, price=prices[3], client=c3)])
        owed = {c2: prices[0] + prices[2], c3: prices[1] + prices[3]}
        w_before = [await token.balance_of(w.address) for w in (w1, w2)]
        batch_id = world.batch_id()
        result = await world.gov.send(ledger.settle_batch_call(batch_id, [b1, b2],
                                                               [world.charge(c, owed[c], owed[c]) for c in (c2, c3)]))
        assert [await token.balance_of(w.address) for w in (w1, w2)] == [w_before[0] + b1.total,
                                                                          w_before[1] + b2.total]
        for c in (c2, c3):
            assert await ledger.balance_of(c.address) == 200 * CIRO - owed[c]
            assert await ledger.charged_of(c.address) == owed[c]
        # One ledger event for the batch (the rest are the token's transfers, one per worker).
        ledger_events = [e for e in result.events if e[0] == ledger.address]
        assert len(ledger_events) == 1
        assert ledger_events[0][2][:4] == [2, 2, 4, sum(prices)]  # workers, clients, jobs, amount.low
        record = await ledger.batch(batch_id, w1.address)
        block = await world.gov.chain.node.get_block(block_number=result.block_number)
        assert (record.root, record.count, record.total, record.settled_at) == (b1.root, 3, b1.total, block.timestamp)
        # Any job is provable by its leaf and path; a changed leaf, another index or another worker is not.
        for i, lf in enumerate(b1.leaves):
            path = merkle_path(b1.levels, i)
            assert root_from_path(lf.hash(), i, path) == b1.root
            assert await ledger.job_in_batch(batch_id, w1.address, lf.hash(), i, path)
        path0 = merkle_path(b1.levels, 0)
        assert not await ledger.job_in_batch(batch_id, w1.address, b1.leaves[0].hash() + 1, 0, path0)
        assert not await ledger.job_in_batch(batch_id, w1.address, b1.leaves[0].hash(), 1, path0)
        assert not await ledger.job_in_batch(batch_id, w2.address, b1.leaves[0].hash(), 0, path0)
        assert not await ledger.job_in_batch(batch_id, w1.address, b1.leaves[0].hash(), 3, path0)
        # A later, larger authorization is charged the amount the operator names (here all of its headroom).
        b3 = batch_of(w2, [leaf(w2, price=CIRO, client=c2)])
        await world.gov.send(ledger.settle_batch_call(world.batch_id(), [b3],
                                                      [world.charge(c2, owed[c2] + CIRO, CIRO)]))
        assert await ledger.charged_of(c2.address) == owed[c2] + CIRO
        assert await ledger.balance_of(c2.address) == 200 * CIRO - owed[c2] - CIRO

    world.run(body())


def test_attacks_revert_and_change_nothing(world: World) -> None:
    c2, c3, w1, w2, outsider = world["c2"], world["c3"], world["w1"], world["w2"], world["outsider"]
    ledger, gov = world.ledger, world.gov

    async def body() -> None:
        charged = await ledger.charged_of(c2.address)
        job = leaf(w1, price=4 * CIRO, client=c2)
        good = batch_of(w1, [job])
        auth = world.charge(c2, charged + 4 * CIRO, 4 * CIRO)
        start = await world.state()

        async def refused(sender: Actor, call: Any, message: str) -> None:
            await reverts(sender.send(call), message)
            assert await world.state() == start

        bid = world.batch_id()
        # An outsider, a client or a worker cannot settle, even with valid signatures.
        for who in (outsider, c2, w1):
            await refused(who, ledger.settle_batch_call(bid, [good], [auth]), "LEDGER: not operator")
        # The client signs less than the leaves' prices: the price does not fit its cap, and a charge that fits
        # does not cover the workers' totals.
        short = world.spend(c2, charged + 4 * CIRO - 1)
        await refused(gov, ledger.settle_batch_call(bid, [good], [Charge(short, 4 * CIRO)]),
                      "LEDGER: over authorization")
        await refused(gov, ledger.settle_batch_call(bid, [good], [Charge(short, 4 * CIRO - 1)]),
                      "LEDGER: charges != payments")
        # A replayed (old) authorization has no headroom left.
        await refused(gov, ledger.settle_batch_call(bid, [good], [world.charge(c2, charged, 4 * CIRO)]),
                      "LEDGER: over authorization")
        # An authorization signed by someone else, or for another client.
        forged = sign_spend(c3.identity, chain_id=world.chain_id, ledger=ledger.address, client=c2.address,
                            cumulative=charged + 4 * CIRO)
        await refused(gov, ledger.settle_batch_call(bid, [good], [Charge(forged, 4 * CIRO)]),
                      "LEDGER: bad spend signature")
        # The amount is not signed, but the signature is still checked for the cap the charge claims.
        raised = auth.as_cairo() | {"cumulative": charged + 9 * CIRO}
        await refused(gov, ledger.settle_batch_call(bid, [good], [raised]), "LEDGER: bad spend signature")
        # The worker (or operator) claims more than the leaves: a total the client did not authorize ...
        greedy = sign_batch(w1.identity, w1.address, [job], total=5 * CIRO)
        await refused(gov, ledger.settle_batch_call(bid, [greedy], [auth]), "LEDGER: charges != payments")
        # ... or a total other than the one the worker signed.
        await refused(gov, ledger.settle_batch_call(bid, [good.as_cairo() | {"total": 5 * CIRO}],
                                                    [world.charge(c2, charged + 5 * CIRO, 5 * CIRO)]),
                      "LEDGER: bad batch signature")
        # A second worker's signature for the first worker's root: under w1's name, or under its own (the
        # message covers the key, so a signature over w1's key does not verify as w2's).
        stolen = sign_batch(w2.identity, w1.address, [job])
        await refused(gov, ledger.settle_batch_call(bid, [stolen], [auth]), "LEDGER: bad batch signature")
        await refused(gov, ledger.settle_batch_call(bid, [good.as_cairo() | {"worker": w2.address}], [auth]),
                      "LEDGER: bad batch signature")
        # More than the deposit.
        big = batch_of(w1, [leaf(w1, price=1_000 * CIRO, client=c2)])
        await refused(gov, ledger.settle_batch_call(bid, [big], [world.charge(c2, charged + 1_000 * CIRO,
                                                                               1_000 * CIRO)]),
                      "LEDGER: insufficient deposit")
        # A worker that is not staked (the outsider) cannot be paid.
        await refused(gov, ledger.settle_batch_call(bid, [batch_of(outsider, [job])], [auth]),
                      "LEDGER: worker not eligible")

        # The honest settlement goes through once; the same signed batch is never paid twice.
        await gov.send(ledger.settle_batch_call(bid, [good], [auth]))
        after = await world.state()
        await reverts(gov.send(ledger.settle_batch_call(bid, [good], [world.charge(c2, charged + 8 * CIRO, 4 * CIRO)])),
                      "LEDGER: batch exists")
        await reverts(gov.send(ledger.settle_batch_call(world.batch_id(), [good],
                                                        [world.charge(c2, charged + 8 * CIRO, 4 * CIRO)])),
                      "LEDGER: batch already paid")
        assert await world.state() == after
        assert await ledger.charged_of(c2.address) == charged + 4 * CIRO

    world.run(body())


def test_authorizations_are_caps(world: World) -> None:
    """The client signs a cumulative cap; the operator names each charge; the chain keeps every client's total
    charged within the cap of the authorization each charge is made under (never above the largest it signed),
    whatever the operator names."""
    c3, w1, w2, ledger, gov = world["c3"], world["w1"], world["w2"], world.ledger, world.gov

    async def refused(call: Any, message: str) -> None:
        start = await world.state()
        await reverts(gov.send(call), message)
        assert await world.state() == start

    async def settled(call: Any, amount: int) -> None:
        """The settlement goes through and charges c3 exactly ``amount``."""
        charged, balance = await ledger.charged_of(c3.address), await ledger.balance_of(c3.address)
        await gov.send(call)
        assert await ledger.charged_of(c3.address) == charged + amount
        assert await ledger.balance_of(c3.address) == balance - amount

    def one_job(worker: Actor, price: int) -> SignedBatch:
        return batch_of(worker, [leaf(worker, price=price, client=c3)])

    async def body() -> None:
        base = await ledger.charged_of(c3.address)
        # Amounts the contract's u128 cannot hold, or a zero charge, are refused before anything is sent ...
        for amount in (0, -1, 2**128):
            with pytest.raises(InputError, match="positive and fit 128 bits"):
                Charge(world.spend(c3, base + CIRO), amount)
        # ... and on chain, a zero charge reverts (here with no worker to pay, so that the sums agree).
        free = batch_of(w1, [leaf(w1, price=0, client=None)])
        await refused(ledger.settle_batch_call(world.batch_id(), [free],
                                               [asdict(world.spend(c3, base + CIRO)) | {"amount": 0}]),
                      "LEDGER: zero charge")

        # The operator charges above the client's cap: the worker signed 5, the client capped at 4 more.
        cap4 = world.spend(c3, base + 4 * CIRO)
        await refused(ledger.settle_batch_call(world.batch_id(), [one_job(w1, 5 * CIRO)], [Charge(cap4, 5 * CIRO)]),
                      "LEDGER: over authorization")

        # One authorization serves two settlements while it has headroom: 4, then the remaining 6 of a cap of 10.
        cap10 = world.spend(c3, base + 10 * CIRO)
        await settled(ledger.settle_batch_call(world.batch_id(), [one_job(w1, 4 * CIRO)], [Charge(cap10, 4 * CIRO)]),
                      4 * CIRO)
        await refused(ledger.settle_batch_call(world.batch_id(), [one_job(w2, 7 * CIRO)], [Charge(cap10, 7 * CIRO)]),
                      "LEDGER: over authorization")
        await settled(ledger.settle_batch_call(world.batch_id(), [one_job(w2, 6 * CIRO)], [Charge(cap10, 6 * CIRO)]),
                      6 * CIRO)
        assert await ledger.charged_of(c3.address) == base + 10 * CIRO
        # Neither that authorization nor an older, smaller one (cap4, never used) leaves any headroom now.
        for old in (cap10, cap4):
            await refused(ledger.settle_batch_call(world.batch_id(), [one_job(w1, 1)], [Charge(old, 1)]),
                          "LEDGER: over authorization")

        # Pipelined requests: the client signs c1 = p, c2 = 2p, c3 = 3p (over what it was charged so far) before
        # its jobs end; job 2 fails, so no worker leaf covers it. The operator settles jobs 1 and 3 under the c3
        # authorization with amount 2p: the client pays exactly the two prices.
        p = 2 * CIRO
        start = base + 10 * CIRO
        auths = [world.spend(c3, start + i * p) for i in (1, 2, 3)]
        jobs = batch_of(w1, [leaf(w1, price=p, client=c3), leaf(w1, price=p, client=c3)])
        w1_before = await world.token.balance_of(w1.address)
        await settled(ledger.settle_batch_call(world.batch_id(), [jobs], [Charge(auths[2], 2 * p)]), 2 * p)
        assert await world.token.balance_of(w1.address) == w1_before + 2 * p
        # It can never be charged more than 3p in total under those authorizations: p + 1 more does not fit.
        for auth in auths:
            await refused(ledger.settle_batch_call(world.batch_id(), [one_job(w2, p + 1)], [Charge(auth, p + 1)]),
                          "LEDGER: over authorization")

    world.run(body())


def test_disputes_slash_or_fail(world: World) -> None:
    cheat, liar, w1, ledger, gov, pool = world["cheat"], world["liar"], world["w1"], world.ledger, world.gov, world.pool
    validators = [world[n] for n in VALIDATORS]

    async def body() -> None:
        # Equivocation: the same job with two outputs in two batches that "cheat" signed (unpaid leaves).
        job_id = int.from_bytes(os.urandom(16), "big")
        a = batch_of(cheat, [leaf(cheat, price=0, client=None), leaf(cheat, price=0, client=None, job_id=job_id)])
        b = batch_of(cheat, [leaf(cheat, price=0, client=None, job_id=job_id)])
        ida, idb = world.batch_id(), world.batch_id()
        await gov.send(ledger.settle_batch_call(ida, [a], []))
        await gov.send(ledger.settle_batch_call(idb, [b], []))
        first, second = a.proof(ida, 1), b.proof(idb, 0)
        stake = await pool.view("stake_of", cheat.address)
        start = await world.state()
        # Failing disputes revert and change nothing.
        await reverts(w1.send(ledger.dispute_equivocation_call(first, a.proof(ida, 1))), "LEDGER: same output")
        bad_path = a.proof(ida, 1)
        bad_path = type(bad_path)(bad_path.batch_id, bad_path.worker, second.leaf, 1, bad_path.path)
        await reverts(w1.send(ledger.dispute_equivocation_call(first, bad_path)), "LEDGER: leaf not in batch")
        # Two jobs, or two workers, cannot even be put in one call (it names the worker and the job once).
        with pytest.raises(InputError):
            ledger.dispute_equivocation_call(first, a.proof(ida, 0))
        with pytest.raises(InputError):
            ledger.dispute_equivocation_call(first, type(second)(idb, w1.address, second.leaf, 0, second.path))
        # The same leaf under w1's name (w1 never signed that root), or the job's other leaf at the wrong index.
        await reverts(w1.send(ledger.dispute_equivocation_call(
            type(first)(ida, w1.address, first.leaf, 1, first.path),
            type(second)(idb, w1.address, second.leaf, 0, second.path))), "LEDGER: unknown batch")
        await reverts(w1.send(ledger.dispute_equivocation_call(
            type(first)(ida, cheat.address, first.leaf, 0, first.path), second)), "LEDGER: leaf not in batch")
        # A true leaf shown under another settled batch of the same worker (another root), or under a batch id
        # that was never settled.
        await reverts(w1.send(ledger.dispute_equivocation_call(
            first, type(second)(ida, cheat.address, second.leaf, 0, second.path))), "LEDGER: leaf not in batch")
        await reverts(w1.send(ledger.dispute_equivocation_call(
            first, type(second)(10**9, cheat.address, second.leaf, 0, second.path))), "LEDGER: unknown batch")
        assert await world.state() == start
        assert await pool.view("stake_of", cheat.address) == stake
        # The real one slashes 30% (double signing), which the pool keeps for governance, and is accepted once.
        held = int(await pool.view("slashed_balance"))
        await w1.send(ledger.dispute_equivocation_call(first, second))
        assert await pool.view("stake_of", cheat.address) == stake - stake * 30 // 100
        assert await pool.view("slashed_balance") == held + stake * 30 // 100
        assert await world.state() == start  # no token moved
        assert await ledger.disputed(job_id, cheat.address)
        await reverts(w1.send(ledger.dispute_equivocation_call(second, first)), "LEDGER: already disputed")

        # Quorum: "liar" returns another output than three of the four validators (f = 1) for a quorum job.
        qid, good, wrong = int.from_bytes(os.urandom(16), "big"), 1111, 2222
        mine = batch_of(liar, [leaf(liar, price=0, client=None, job_id=qid, output=wrong, level=QUORUM)])
        theirs = [batch_of(v, [leaf(v, price=0, client=None, job_id=qid, output=good, level=QUORUM)])
                  for v in validators[:3]]
        odd = batch_of(validators[3], [leaf(validators[3], price=0, client=None, job_id=qid, output=3333,
                                            level=QUORUM)])
        bid = world.batch_id()
        await gov.send(ledger.settle_batch_call(bid, [mine, *theirs, odd], []))
        accused, votes = mine.proof(bid, 0), [t.proof(bid, 0) for t in theirs]
        stake = await pool.view("stake_of", liar.address)
        await reverts(w1.send(ledger.dispute_quorum_call(accused, 1, votes[:2])), "LEDGER: no quorum")
        await reverts(w1.send(ledger.dispute_quorum_call(accused, 2, votes)), "LEDGER: too few validators")
        await reverts(w1.send(ledger.dispute_quorum_call(accused, 1, [*votes[:2], odd.proof(bid, 0)])),
                      "LEDGER: validators disagree")
        await reverts(w1.send(ledger.dispute_quorum_call(accused, 1, [votes[0], votes[0], votes[1]])),
                      "LEDGER: duplicate validator")
        await reverts(w1.send(ledger.dispute_quorum_call(votes[0], 1, [*votes[1:], odd.proof(bid, 0)])),
                      "LEDGER: same output")
        assert await pool.view("stake_of", liar.address) == stake
        await w1.send(ledger.dispute_quorum_call(accused, 1, votes))
        assert await pool.view("stake_of", liar.address) == stake - stake * 50 // 100  # invalid compute

        # After the window, even true evidence is refused.
        late = batch_of(w1, [leaf(w1, price=0, client=None, job_id=qid, output=wrong, level=QUORUM)])
        lid = world.batch_id()
        await gov.send(ledger.settle_batch_call(lid, [late], []))
        await world.advance(WINDOW_S + 1)
        stake = await pool.view("stake_of", w1.address)
        await reverts(validators[3].send(ledger.dispute_quorum_call(late.proof(lid, 0), 1, votes)),
                      "LEDGER: dispute window over")
        assert await pool.view("stake_of", w1.address) == stake

    world.run(body())
