"""The settlement contracts (CiroToken, CDCPool, JobManager) on the local devnet, through starknet-py.

One devnet subprocess serves the module; the network is deployed once (``deploy_network``) with predeployed account
0 as governance, and every test identity gets its own CiroAccount (``ensure_account``, paid by governance). Clients
are funded with CIRO minted by governance; workers register their own keys and governance stakes for them.
Everything goes through the ``ciro.chain`` bindings and ``ChainClient``: real transactions, real Cairo, exact
balances and revert messages. Setup is batched into multicalls (one transaction, many calls) and independent
accounts send concurrently; the devnet costs about 0.4 s a transaction plus 0.1-0.3 s a call (more with ECDSA).

Receipts are Merkle batches signed in Python (``ciro.receipts.sign_batch``: batches of 1, 3 and 5 jobs) that the
JobManager rebuilds in Cairo (``contracts/src/merkle.cairo``): every accepted finalization shows that both compute
the same leaf, tree and batch message, and every forged one that a changed field gives another leaf."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starknet_py.hash.selector import get_selector_from_name
from starknet_py.net.client_models import Call
from starknet_py.net.http_client import RpcHttpClient

from ciro import Identity, new_job_id
from ciro.chain import CDCPool, ChainClient, CiroToken, JobManager, Violation, deploy_network, ensure_account
from ciro.chain.client import TxResult
from ciro.errors import ContractRevertedError
from ciro.receipts import JobLeaf, batch_message, sign_batch
from ciro_devnet.launch import DevnetProcess

pytestmark = pytest.mark.timeout(900)

T = TypeVar("T")

SEED = 4242
CIRO = 10**18
SUPPLY = 10**9 * CIRO
MIN_STAKE = 100 * CIRO
COOLDOWN_S = 3600
FUNDING = 10_000 * CIRO  # minted to the clients and to "fresh"
STAKE = 1_000 * CIRO  # the regular workers' and validators' stake
SLASH_STAKE = 1_000 * CIRO + 37  # not a multiple of 100: the slashed amounts are floored
DAY = 86_400
BANNED_FOREVER = 2**64 - 1
REPUTATION_START = 500
FAR = 30 * DAY  # deadline of jobs that are not about deadlines

WORKERS = ["w1", "w2", "w3"]
SLASHED = ["s1", "s2", "s3", "s4"]
VALIDATORS = ["v1", "v2", "v3", "v4", "v5"]
CLIENTS = ["client1", "client2", "client3"]
# "fresh" registers during the staking test; "outsider" never holds a role.
NAMES = ["outsider", "fresh", *CLIENTS, *WORKERS, *SLASHED, *VALIDATORS]


def digest(label: str) -> str:
    """A SHA-256 hex digest (model hash, commitments)."""
    return hashlib.sha256(label.encode()).hexdigest()


def random_digest() -> str:
    return os.urandom(32).hex()


MODEL = digest("ciro-settlement-test-model")


@dataclass
class Actor:
    identity: Identity
    chain: ChainClient
    token: CiroToken
    pool: CDCPool
    jm: JobManager

    @property
    def address(self) -> int:
        return self.chain.address

    @property
    def key(self) -> int:
        return self.identity.public_key

    async def send(self, *calls: Any) -> TxResult:
        return await self.chain.execute(list(calls))


@dataclass
class Job:
    job_id: str
    client: Actor
    input_commitment: str
    level: str
    max_payment: int
    worker: Actor | None = None
    output_commitment: str | None = None
    price: int | None = None  # what the worker's receipt states it is owed (None: max_payment)

    def leaf(self, *, output: str | None = None, level: str | None = None, price: int | None = None) -> JobLeaf:
        out = output or self.output_commitment
        assert out is not None
        owed = price if price is not None else self.max_payment if self.price is None else self.price
        return JobLeaf(self.job_id, MODEL, self.input_commitment, out, level or self.level, owed,
                       hex(self.client.address))

    def receipt(self, signer: Actor | None = None, *, output: str | None = None, level: str | None = None,
                price: int | None = None, timestamp_ms: int = 1_700_000_000_000) -> dict[str, Any]:
        """This job's Merkle receipt in a batch of one, signed by ``signer`` (default: the assigned worker)."""
        signer = signer or self.worker
        assert signer is not None
        return sign_batch(signer.identity, [self.leaf(output=output, level=level, price=price)],
                          timestamp_ms=timestamp_ms)[0].to_dict()


def batch_receipts(signer: Actor, jobs: Sequence[Job], *, timestamp_ms: int = 1_700_000_000_000
                   ) -> list[dict[str, Any]]:
    """One signed Merkle batch over ``jobs``: each job's receipt, in order."""
    return [r.to_dict() for r in sign_batch(signer.identity, [j.leaf() for j in jobs], timestamp_ms=timestamp_ms)]


def forged(receipt: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A signed receipt with fields changed after signing."""
    return {**receipt, **changes}


@dataclass
class World:
    devnet: DevnetProcess
    loop: asyncio.AbstractEventLoop
    gov: Actor
    actors: dict[str, Actor] = field(default_factory=dict)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def __getitem__(self, name: str) -> Actor:
        return self.actors[name]

    @property
    def jm_address(self) -> int:
        return self.gov.jm.address

    @property
    def pool_address(self) -> int:
        return self.gov.pool.address

    async def balances(self, *addresses: int) -> list[int]:
        return list(await asyncio.gather(*(self.gov.token.balance_of(a) for a in addresses)))

    async def block_time(self, result: TxResult | None = None) -> int:
        """The timestamp of the block that holds ``result`` (default: the latest block)."""
        if result is None:
            block = await self.gov.chain.node.get_block(block_number="latest")
        else:
            block = await self.gov.chain.node.get_block(block_number=result.block_number)
        return int(block.timestamp)

    async def advance(self, seconds: int) -> None:
        """Move the devnet's clock forward (devnet_increaseTime) and mine a block at the new time."""
        rpc = RpcHttpClient(url=self.devnet.url, method_prefix="devnet")
        await rpc.call("increaseTime", {"time": seconds, "generate_block": True})

    async def open_job(self, client: Actor, *, max_payment: int, level: str = "receipt", worker: Actor | None = None,
                       output: str | None = None, deadline: int | None = None) -> Job:
        """Submit a job (the client approves and submits in one transaction); with ``worker``, governance assigns it
        to that worker, which, given ``output``, submits that result."""
        job = Job(new_job_id(), client, random_digest(), level, max_payment)
        if deadline is None:
            deadline = await self.block_time() + FAR
        await client.send(client.token.approve_call(self.jm_address, max_payment),
                          client.jm.submit_job_call(job.job_id, MODEL, job.input_commitment, level, max_payment,
                                                    deadline))
        if worker is not None:
            await self.gov.send(self.gov.jm.assign_call(job.job_id, worker.address))
            if output is not None:
                await worker.send(worker.jm.submit_result_call(job.job_id, output, 0x5EED))
            job.worker, job.output_commitment = worker, output
        return job


async def reverts(action: Awaitable[Any], message: str) -> ContractRevertedError:
    """Awaits ``action`` and checks that the contract refused it with exactly ``message``."""
    with pytest.raises(ContractRevertedError) as info:
        await action
    assert info.value.reason == message
    return info.value


async def _connect(world: World, address: int, identity: Identity) -> Actor:
    """An actor on its own account. The bindings are governance's: a prepared call does not depend on the account
    that sends it, and each binding parses its contract's ABI once (about a second each)."""
    chain = await ChainClient.connect(world.devnet.url, address=address, identity=identity)
    return Actor(identity, chain, world.gov.token, world.gov.pool, world.gov.jm)


async def _build_world(world: World) -> None:
    gov = world.gov
    identities = {name: Identity.generate(name) for name in NAMES}
    addresses = await asyncio.gather(*(ensure_account(gov.chain, identities[n]) for n in NAMES))
    actors = await asyncio.gather(*(_connect(world, a, identities[n]) for n, a in zip(NAMES, addresses, strict=True)))
    world.actors = dict(zip(NAMES, actors, strict=True))

    # CIRO for those who pay (the clients' escrows; "fresh" stakes for itself). Workers register their keys
    # themselves, then governance stakes for them (stake_for_worker is open to anyone) and makes the validators.
    await gov.send(*(gov.token.mint_call(world[n].address, FUNDING) for n in [*CLIENTS, "fresh"]),
                   gov.jm.register_model_call(MODEL, None, ["receipt", "quorum"]))
    stakes = {n: STAKE for n in WORKERS + VALIDATORS} | {n: SLASH_STAKE for n in SLASHED}
    await asyncio.gather(*(world[n].send(world[n].pool.register_worker_call(world[n].key)) for n in stakes))
    await gov.send(gov.token.approve_call(world.pool_address, sum(stakes.values())),
                   *(gov.pool.stake_call(world[n].address, amount) for n, amount in stakes.items()),
                   *(gov.pool.add_validator_call(world[n].address) for n in VALIDATORS))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state_dir: Path = tmp_path_factory.mktemp("settlement-devnet")
    devnet = DevnetProcess(seed=SEED, state_dir=state_dir, accounts=2, log_path=state_dir.parent / "devnet.log")
    loop = asyncio.new_event_loop()
    try:
        account = devnet.accounts[0]
        gov_identity = Identity("governance", account.private_key, account.public_key, 0.0)

        async def setup() -> World:
            chain = await ChainClient.connect(devnet.url, address=account.address, identity=gov_identity)
            net = await deploy_network(chain, rpc_url=devnet.url, supply=SUPPLY, min_stake=MIN_STAKE,
                                       unstake_cooldown_s=COOLDOWN_S)
            gov = Actor(gov_identity, chain, net.token_on(chain), net.pool_on(chain), net.job_manager_on(chain))
            built = World(devnet, loop, gov)
            await _build_world(built)
            return built

        yield loop.run_until_complete(setup())
    finally:
        loop.close()
        devnet.stop()


# ----------------------------------------------------------------------------------------------------------------
# 1. Access control
# ----------------------------------------------------------------------------------------------------------------
def test_access_control(world: World) -> None:
    gov, outsider, client, w1, w2 = world.gov, world["outsider"], world["client1"], world["w1"], world["w2"]

    async def body() -> None:
        token = gov.token
        supply = int(await token.view("total_supply"))
        assert await token.view("owner") == gov.address
        # Only the owner mints and burns.
        await asyncio.gather(reverts(outsider.send(outsider.token.mint_call(outsider.address, CIRO)),
                                     "ERC20: not owner"),
                             reverts(w1.send(w1.token.prepare("burn", client.address, CIRO)), "ERC20: not owner"))
        await reverts(client.send(client.token.prepare("transfer_ownership", client.address)), "ERC20: not owner")
        assert int(await token.view("total_supply")) == supply
        assert await token.view("owner") == gov.address
        [before] = await world.balances(outsider.address)
        await gov.send(token.mint_call(outsider.address, 5 * CIRO), token.prepare("burn", outsider.address, 2 * CIRO))
        assert await world.balances(outsider.address) == [before + 3 * CIRO]
        assert int(await token.view("total_supply")) == supply + 3 * CIRO

        # Only the JobManager or governance slash (governance's and the JobManager's slashes: tests 7).
        stake = int(await gov.pool.view("stake_of", w1.address))
        await asyncio.gather(reverts(outsider.send(outsider.pool.slash_call(w1.address, Violation.COORDINATED_ATTACK,
                                                                            1)), "POOL: not authorized"),
                             reverts(client.send(client.pool.prepare("set_uptime", w1.address, 0)),
                                     "POOL: not authorized"))
        assert int(await gov.pool.view("stake_of", w1.address)) == stake
        assert int(await gov.pool.view("reputation_of", w1.address)) == REPUTATION_START
        assert int(await gov.pool.view("uptime_of", w1.address)) == 10_000

        # Only governance sets the job manager and manages the validator set.
        await asyncio.gather(reverts(outsider.send(outsider.pool.prepare("set_job_manager", outsider.address)),
                                     "POOL: not governance"),
                             reverts(w1.send(w1.pool.add_validator_call(w1.address)), "POOL: not governance"))
        assert await gov.pool.view("job_manager") == world.jm_address
        assert not await gov.pool.view("is_validator", w1.address)
        assert await gov.pool.view("is_validator", world["v1"].address)
        assert int(await gov.pool.view("validator_count")) == len(VALIDATORS)
        await gov.send(gov.pool.prepare("set_job_manager", world.jm_address))  # governance may (same address)
        assert await gov.pool.view("job_manager") == world.jm_address

        # Only governance assigns; only the assigned worker submits the result.
        job = await world.open_job(client, max_payment=3 * CIRO)
        await reverts(w2.send(w2.jm.assign_call(job.job_id, w2.address)), "JM: not governance")
        assert (await gov.jm.job(job.job_id)).status == "submitted"
        await gov.send(gov.jm.assign_call(job.job_id, w1.address))
        assert (await gov.jm.job(job.job_id)).worker == w1.address
        output = random_digest()
        await reverts(w2.send(w2.jm.submit_result_call(job.job_id, output, 1)), "JM: not assigned worker")
        assert (await gov.jm.job(job.job_id)).status == "assigned"
        await w1.send(w1.jm.submit_result_call(job.job_id, output, 7))
        state = await gov.jm.job(job.job_id)
        assert (state.status, state.output_commitment, state.evidence_hash) == ("result_submitted", int(output, 16), 7)

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 2. Escrow
# ----------------------------------------------------------------------------------------------------------------
def test_escrow_pulls_and_pays_exactly(world: World) -> None:
    gov, client, w1, outsider = world.gov, world["client1"], world["w1"], world["outsider"]
    max_payment, payment = 7 * CIRO + 123, 4 * CIRO + 45

    async def body() -> None:
        jm = world.jm_address
        job_id, inp = new_job_id(), random_digest()
        deadline = await world.block_time() + FAR
        submit = client.jm.submit_job_call(job_id, MODEL, inp, "receipt", max_payment, deadline)
        start = await world.balances(client.address, jm)

        # Refused before anything is pulled: unknown model, level the model does not allow, deadline passed.
        await client.send(client.token.approve_call(jm, max_payment))
        for bad, message in [
            (client.jm.submit_job_call(job_id, digest("no such model"), inp, "receipt", max_payment, deadline),
             "JM: unknown model"),
            (client.jm.submit_job_call(job_id, MODEL, inp, "zk", max_payment, deadline), "JM: level not allowed"),
            (client.jm.submit_job_call(job_id, MODEL, inp, "receipt", max_payment, deadline - FAR - 3600),
             "JM: deadline passed"),
        ]:
            await reverts(client.send(bad), message)
        assert await gov.token.allowance(client.address, jm) == max_payment

        # Without approval (or with too little) the escrow cannot be pulled and nothing happens.
        await reverts(client.send(client.token.approve_call(jm, 0), submit), "ERC20: insufficient allowance")
        await reverts(client.send(client.token.approve_call(jm, max_payment - 1), submit),
                      "ERC20: insufficient allowance")
        assert (await gov.jm.job(job_id)).status == "none"
        assert await world.balances(client.address, jm) == start

        # With it, exactly max_payment moves from the client to the JobManager.
        await client.send(client.token.approve_call(jm, max_payment), submit)
        assert await world.balances(client.address, jm) == [start[0] - max_payment, start[1] + max_payment]
        assert await gov.token.allowance(client.address, jm) == 0
        state = await gov.jm.job(job_id)
        assert (state.status, state.client, state.max_payment, state.deadline, state.level) == (
            "submitted", client.address, max_payment, deadline, "receipt")
        assert (state.model_hash, state.input_commitment) == (int(MODEL, 16), int(inp, 16))
        await reverts(client.send(client.token.approve_call(jm, max_payment), submit), "JM: job exists")

        output = random_digest()
        await gov.send(gov.jm.assign_call(job_id, w1.address))
        await w1.send(w1.jm.submit_result_call(job_id, output, 0xE1))
        job = Job(job_id, client, inp, "receipt", max_payment, w1, output, price=payment)
        receipt = job.receipt()

        # A worker that signs a price above the escrow is refused.
        middle = await world.balances(client.address, w1.address, jm, outsider.address)
        await reverts(outsider.send(outsider.jm.finalize_receipt_call(job_id, w1.address,
                                                                      job.receipt(price=max_payment + 1))),
                      "JM: price above escrow")
        assert (await gov.jm.job(job_id)).status == "result_submitted"
        assert await world.balances(client.address, w1.address, jm, outsider.address) == middle

        # Anyone finalizes: the worker gets the price it signed, the client the rest, the JobManager keeps nothing.
        await outsider.send(outsider.jm.finalize_receipt_call(job_id, w1.address, receipt))
        assert await world.balances(client.address, w1.address, jm, outsider.address) == [
            middle[0] + (max_payment - payment), middle[1] + payment, middle[2] - max_payment, middle[3]]
        state = await gov.jm.job(job_id)
        assert (state.status, state.payment, state.worker) == ("finalized", payment, w1.address)
        # Over the whole life of the job: the client paid exactly `payment`.
        assert (await world.balances(client.address))[0] == start[0] - payment

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 3. Finalization guards
# ----------------------------------------------------------------------------------------------------------------
def test_finalize_guards(world: World) -> None:
    gov, client, w1, w2, outsider = world.gov, world["client1"], world["w1"], world["w2"], world["outsider"]
    max_payment, payment = 2 * CIRO, CIRO + 5

    async def body() -> None:
        jm = world.jm_address
        job = await world.open_job(client, max_payment=max_payment, worker=w1)
        job.price = payment
        output = random_digest()
        good = Job(job.job_id, client, job.input_commitment, "receipt", max_payment, w1, output, payment).receipt()

        def finalize(receipt: dict[str, Any], worker: Actor = w1, sender: Actor = outsider) -> Awaitable[TxResult]:
            return sender.send(sender.jm.finalize_receipt_call(job.job_id, worker.address, receipt))

        # No result yet: nothing to finalize.
        await reverts(finalize(good), "JM: no result to finalize")
        # Only the assigned worker submits (another eligible worker cannot), and no one claims a job any more.
        await reverts(w2.send(w2.jm.submit_result_call(job.job_id, output, 0)), "JM: not assigned worker")
        claim = Call(to_addr=jm, selector=get_selector_from_name("claim_job"), calldata=[int(job.job_id, 16)])
        with pytest.raises(ContractRevertedError):
            await w2.chain.execute([claim])
        await w1.send(w1.jm.submit_result_call(job.job_id, output, 0))
        job.output_commitment = output
        before = await world.balances(client.address, w1.address, w2.address, jm)

        # Every attempt to change who is paid or how much reverts, and nothing moves.
        w2_batch = job.receipt(w2)
        attempts = {
            "a price lowered after signing (the client's wish)": (forged(good, price=str(payment - 1)), w1,
                                                                  "JM: leaf not in batch"),
            "a price raised after signing (the worker's wish)": (forged(good, price=str(payment + 1)), w1,
                                                                 "JM: leaf not in batch"),
            "a receipt over another output": (job.receipt(output=random_digest()), w1, "JM: leaf not in batch"),
            "a receipt for another level": (job.receipt(level="quorum"), w1, "JM: leaf not in batch"),
            "a price above the escrow, signed": (job.receipt(price=max_payment + 1), w1, "JM: price above escrow"),
            "another worker's receipt passed off as w1's": (w2_batch, w1, "JM: bad batch signature"),
            "another eligible worker's own receipt": (w2_batch, w2, "JM: not assigned worker"),
            "a leaf index outside its batch": (forged(good, leaf_index=1), w1, "JM: leaf index outside batch"),
            "a root the worker did not sign": (forged(good, root=hex(int(good["root"], 16) + 1)), w1,
                                               "JM: bad batch signature"),
        }
        for why, (receipt, worker, message) in attempts.items():
            for sender in (outsider, client):
                assert await reverts(finalize(receipt, worker, sender), message), why
        assert (await gov.jm.job(job.job_id)).status == "result_submitted"
        assert await world.balances(client.address, w1.address, w2.address, jm) == before

        # The client finalizes with the worker's receipt: exactly the signed price is paid.
        await finalize(good, sender=client)
        after = [before[0] + max_payment - payment, before[1] + payment, before[2], before[3] - max_payment]
        assert await world.balances(client.address, w1.address, w2.address, jm) == after
        # No double finalize.
        await reverts(finalize(good, sender=w1), "JM: no result to finalize")
        assert await world.balances(client.address, w1.address, w2.address, jm) == after
        assert (await gov.jm.job(job.job_id)).payment == payment

        # A quorum job cannot be settled by its worker's receipt alone, alone or in a batch.
        quorum = await world.open_job(client, max_payment=max_payment, level="quorum", worker=w1,
                                      output=random_digest())
        await reverts(outsider.send(outsider.jm.finalize_receipt_call(quorum.job_id, w1.address, quorum.receipt())),
                      "JM: quorum job")
        await reverts(outsider.send(outsider.jm.finalize_batch_call([(quorum.job_id, w1.address,
                                                                      quorum.receipt())])), "JM: quorum job")
        assert (await gov.jm.job(quorum.job_id)).status == "result_submitted"

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 4. Refunds
# ----------------------------------------------------------------------------------------------------------------
def test_refund_only_after_deadline(world: World) -> None:
    gov, client, w1, outsider = world.gov, world["client1"], world["w1"], world["outsider"]
    max_payment = 3 * CIRO + 9

    async def body() -> None:
        jm = world.jm_address
        deadline = await world.block_time() + 120
        # One job left open, one with a result, one finalized; all with the same deadline.
        open_job = await world.open_job(client, max_payment=max_payment, deadline=deadline)
        stuck = await world.open_job(client, max_payment=max_payment, worker=w1, output=random_digest(),
                                     deadline=deadline)
        done = await world.open_job(client, max_payment=max_payment, worker=w1, output=random_digest(),
                                    deadline=deadline)
        await outsider.send(outsider.jm.finalize_receipt_call(done.job_id, w1.address, done.receipt()))
        assert await world.block_time() <= deadline

        before = await world.balances(client.address, jm)
        for job in (open_job, stuck):
            await reverts(outsider.send(outsider.jm.refund_call(job.job_id)), "JM: deadline not passed")
        assert await world.balances(client.address, jm) == before

        await world.advance(180)
        assert await world.block_time() > deadline
        # Anyone triggers it; the client gets max_payment back, once.
        await outsider.send(outsider.jm.refund_call(open_job.job_id))
        await client.send(client.jm.refund_call(stuck.job_id))
        assert await world.balances(client.address, jm) == [before[0] + 2 * max_payment, before[1] - 2 * max_payment]
        assert [(await gov.jm.job(j.job_id)).status for j in (open_job, stuck)] == ["refunded"] * 2
        await reverts(outsider.send(outsider.jm.refund_call(stuck.job_id)), "JM: not refundable")
        # Not after finalize; and a refunded job cannot be finalized.
        await reverts(client.send(client.jm.refund_call(done.job_id)), "JM: not refundable")
        await reverts(outsider.send(outsider.jm.finalize_receipt_call(stuck.job_id, w1.address, stuck.receipt())),
                      "JM: no result to finalize")
        assert await world.balances(client.address, jm) == [before[0] + 2 * max_payment, before[1] - 2 * max_payment]
        assert (await gov.jm.job(done.job_id)).status == "finalized"

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 5. Staking
# ----------------------------------------------------------------------------------------------------------------
def test_staking_eligibility_and_unstake_cooldown(world: World) -> None:
    gov, fresh, client = world.gov, world["fresh"], world["client1"]
    pool_addr = world.pool_address

    async def body() -> None:
        assert int(await gov.pool.view("min_stake")) == MIN_STAKE
        assert not await gov.pool.is_eligible(fresh.address)
        await reverts(client.send(client.token.approve_call(pool_addr, CIRO), client.pool.stake_call(fresh.address,
                                                                                                     CIRO)),
                      "POOL: not registered")
        await fresh.send(fresh.pool.register_worker_call(fresh.key))
        await reverts(fresh.send(fresh.pool.register_worker_call(fresh.key + 1)), "POOL: already registered")
        state = await gov.pool.worker(fresh.address)
        assert (state.key, state.stake, state.reputation, state.banned_until, state.eligible) == (
            fresh.key, 0, REPUTATION_START, 0, False)

        # Anyone stakes for a worker, paying from its own balance; below the minimum it is not eligible.
        before = await world.balances(client.address, fresh.address, pool_addr)
        await client.send(client.token.approve_call(pool_addr, MIN_STAKE - 1),
                          client.pool.stake_call(fresh.address, MIN_STAKE - 1))
        assert await world.balances(client.address, fresh.address, pool_addr) == [
            before[0] - (MIN_STAKE - 1), before[1], before[2] + MIN_STAKE - 1]
        assert int(await gov.pool.view("stake_of", fresh.address)) == MIN_STAKE - 1
        assert not await gov.pool.is_eligible(fresh.address)

        # Not eligible: it cannot be assigned a job.
        job = await world.open_job(client, max_payment=CIRO)
        await reverts(gov.send(gov.jm.assign_call(job.job_id, fresh.address)), "JM: worker not eligible")
        assert (await gov.jm.job(job.job_id)).status == "submitted"

        # One more wei: exactly the minimum, eligible; governance assigns it the job.
        await fresh.send(fresh.token.approve_call(pool_addr, 1), fresh.pool.stake_call(fresh.address, 1))
        assert int(await gov.pool.view("stake_of", fresh.address)) == MIN_STAKE
        assert await gov.pool.is_eligible(fresh.address)
        await gov.send(gov.jm.assign_call(job.job_id, fresh.address))
        state = await gov.jm.job(job.job_id)
        assert (state.status, state.worker) == ("assigned", fresh.address)

        # Unstaking: the stake moves to pending at once (no longer eligible), withdrawable after the cooldown.
        part = 40 * CIRO + 3
        await reverts(fresh.send(fresh.pool.prepare("request_unstake", MIN_STAKE + 1)), "POOL: insufficient stake")
        requested = await fresh.send(fresh.pool.prepare("request_unstake", part))
        ready_at = await world.block_time(requested) + COOLDOWN_S
        state = await gov.pool.worker(fresh.address)
        assert (state.stake, state.pending, state.ready_at, state.eligible) == (MIN_STAKE - part, part, ready_at,
                                                                                 False)
        later = await world.open_job(client, max_payment=CIRO)
        await reverts(gov.send(gov.jm.assign_call(later.job_id, fresh.address)), "JM: worker not eligible")

        mid = await world.balances(fresh.address, pool_addr)
        await world.advance(COOLDOWN_S // 2)
        await reverts(fresh.send(fresh.pool.prepare("withdraw")), "POOL: cooldown")
        assert await world.balances(fresh.address, pool_addr) == mid

        await world.advance(COOLDOWN_S // 2 + 60)
        assert await world.block_time() >= ready_at
        await fresh.send(fresh.pool.prepare("withdraw"))
        assert await world.balances(fresh.address, pool_addr) == [mid[0] + part, mid[1] - part]
        state = await gov.pool.worker(fresh.address)
        assert (state.stake, state.pending, state.ready_at) == (MIN_STAKE - part, 0, 0)
        await reverts(fresh.send(fresh.pool.prepare("withdraw")), "POOL: nothing to withdraw")

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 6. Quorum
# ----------------------------------------------------------------------------------------------------------------
def test_quorum_finalization(world: World) -> None:
    gov, client, w1, w2, outsider = world.gov, world["client1"], world["w1"], world["w2"], world["outsider"]
    v1, v2, v3, v4 = (world[n] for n in VALIDATORS[:4])
    max_payment, payment = 9 * CIRO, 6 * CIRO + 1

    async def body() -> None:
        jm = world.jm_address
        assert int(await gov.pool.view("validator_count")) == 5
        job = await world.open_job(client, max_payment=max_payment, level="quorum", worker=w1,
                                   output=random_digest())
        job.price = payment

        def att(v: Actor, ts: int = 1_700_000_000_000, **kw: Any) -> tuple[int, dict[str, Any]]:
            return v.address, job.receipt(v, timestamp_ms=ts, **kw)

        def finalize(f: int, attestations: Sequence[tuple[int, dict[str, Any]]]) -> Awaitable[TxResult]:
            return outsider.send(outsider.jm.finalize_quorum_call(job.job_id, f, attestations))

        valid = [att(v1, 11), att(v2, 22), att(v3, 33), att(v4, 44)]
        mine = att(w1, 5)  # the assigned worker's own receipt: the price it is paid
        before = await world.balances(client.address, w1.address, jm)
        # f = 2 needs 7 validators; the pool has 5.
        await reverts(finalize(2, [mine, *valid]), "JM: too few validators")
        # f = 1 needs 3 distinct validators' valid receipts.
        failing = {
            "2f valid": [mine, *valid[:2]],
            "duplicates of one validator": [mine, valid[0], att(v1, 99), valid[0], valid[1]],
            "a non-validator's receipt": [mine, valid[0], valid[1], att(w2, 55)],
            "a receipt over another output": [mine, valid[0], valid[1], att(v3, 33, output=random_digest())],
            "v4's receipt passed off as v3's": [mine, valid[0], valid[1], (v3.address, valid[3][1])],
        }
        for why, attestations in failing.items():
            error = await reverts(finalize(1, attestations), "JM: no quorum")
            assert error, why
        # The worker's receipt is needed (it states the price), unforged, and within the escrow.
        priced = {
            "no receipt of the worker": ([*valid[:3]], "JM: no receipt of the worker"),
            "the worker's price raised after signing": ([(w1.address, forged(mine[1], price=str(payment + 1))),
                                                         *valid[:3]], "JM: no receipt of the worker"),
            "a price above the escrow, signed": ([att(w1, 6, price=max_payment + 1), *valid[:3]],
                                                 "JM: price above escrow"),
        }
        for why, (attestations, message) in priced.items():
            assert await reverts(finalize(1, attestations), message), why
        assert (await gov.jm.job(job.job_id)).status == "result_submitted"
        assert await world.balances(client.address, w1.address, jm) == before

        # 2f + 1 valid distinct validators (the first two, then the fourth) and the worker's price.
        await finalize(1, [valid[0], valid[1], valid[3], mine])
        assert await world.balances(client.address, w1.address, jm) == [
            before[0] + max_payment - payment, before[1] + payment, before[2] - max_payment]
        state = await gov.jm.job(job.job_id)
        assert (state.status, state.payment) == ("finalized", payment)
        await reverts(finalize(1, [mine, *valid]), "JM: no result to finalize")

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 7. Slashing
# ----------------------------------------------------------------------------------------------------------------
PENALTY = {  # violation: (percent of stake, reputation after from 500, ban in days or None for forever)
    Violation.DOUBLE_SIGNING: (30, 450, 90),
    Violation.DOWNTIME: (5, 490, 30),
    Violation.INVALID_COMPUTE: (50, 425, 180),
    Violation.COORDINATED_ATTACK: (100, 0, None),
}


def test_slashing_matrix(world: World) -> None:
    gov, outsider = world.gov, world["outsider"]
    workers = [world[n] for n in SLASHED]
    pool_addr = world.pool_address

    async def body() -> None:
        # The double signer has part of its stake pending withdrawal: the cut applies to both.
        pending = 300 * CIRO + 11
        await workers[0].send(workers[0].pool.prepare("request_unstake", pending))
        stakes = {Violation.DOUBLE_SIGNING: (SLASH_STAKE - pending, pending)}
        before = await world.balances(gov.address, pool_addr)
        held = await gov.pool.slashed_balance()
        result = await gov.send(*(gov.pool.slash_call(w.address, violation, 1000 + violation)
                                  for violation, w in zip(PENALTY, workers, strict=True)))
        now = await world.block_time(result)

        taken = 0
        for (violation, (pct, reputation, ban_days)), w in zip(PENALTY.items(), workers, strict=True):
            stake, pend = stakes.get(violation, (SLASH_STAKE, 0))
            cut, pend_cut = stake * pct // 100, pend * pct // 100
            taken += cut + pend_cut
            state = await gov.pool.worker(w.address)
            banned = BANNED_FOREVER if ban_days is None else now + ban_days * DAY
            assert (state.stake, state.pending, state.reputation, state.banned_until, state.eligible) == (
                stake - cut, pend - pend_cut, reputation, banned, False), violation
        # Floors: 30 % of 700e18 + 26 wei is 210e18 + 7 (7.8 floored); 5 % of 1000e18 + 37 is 50e18 + 1.
        assert taken == (210 * CIRO + 7) + (90 * CIRO + 3) + (50 * CIRO + 1) + (500 * CIRO + 18) + SLASH_STAKE
        # A slash moves no token: the pool keeps what it took, counted for governance.
        assert await world.balances(gov.address, pool_addr) == before
        assert await gov.pool.slashed_balance() == held + taken
        events = [e for e in result.events if e[0] == pool_addr and e[1][0] == get_selector_from_name("Slashed")]
        assert [e[1][1] for e in events] == [w.address for w in workers]

        # A second, milder violation: 5 % more, -10 reputation, but the 90-day ban is not shortened to 30 days.
        s1 = await gov.pool.worker(workers[0].address)
        again = await gov.send(gov.pool.slash_call(workers[0].address, Violation.DOWNTIME, 7))
        later = await world.block_time(again)
        assert later + 30 * DAY < s1.banned_until
        after = await gov.pool.worker(workers[0].address)
        assert (after.stake, after.pending, after.reputation, after.banned_until) == (
            s1.stake - s1.stake * 5 // 100, s1.pending - s1.pending * 5 // 100, 440, s1.banned_until)
        # Nothing left to take from the attacker; its ban stays forever and reputation at 0.
        held = await gov.pool.slashed_balance()
        await gov.send(gov.pool.slash_call(workers[3].address, Violation.DOWNTIME, 8))
        after = await gov.pool.worker(workers[3].address)
        assert (after.stake, after.reputation, after.banned_until) == (0, 0, BANNED_FOREVER)
        assert await gov.pool.slashed_balance() == held

        # Only governance moves the slashed tokens out, all at once, to the recipient it names; a slashed worker
        # or an outsider cannot, and the stakes are untouched.
        balances = await world.balances(gov.address, pool_addr, outsider.address)
        stakes = [await gov.pool.view("stake_of", w.address) for w in workers]
        for who in (outsider, workers[0]):
            await reverts(who.send(who.pool.withdraw_slashed_call(who.address)), "POOL: not governance")
        assert await world.balances(gov.address, pool_addr, outsider.address) == balances
        await gov.send(gov.pool.withdraw_slashed_call(outsider.address))
        assert await world.balances(gov.address, pool_addr, outsider.address) == [
            balances[0], balances[1] - held, balances[2] + held]
        assert await gov.pool.slashed_balance() == 0
        assert [await gov.pool.view("stake_of", w.address) for w in workers] == stakes
        await reverts(gov.send(gov.pool.withdraw_slashed_call(outsider.address)), "POOL: nothing slashed")

        await reverts(gov.send(gov.pool.slash_call(workers[1].address, 5, 0)), "POOL: unknown violation")
        await reverts(gov.send(gov.pool.slash_call(outsider.address, Violation.DOWNTIME, 0)), "POOL: not registered")

        # Bans end, except the one for ever: 90 days and a minute on, the double signer (490 CIRO staked) and the
        # one that was down are eligible again; the invalid computer (180 days) and the attacker are not.
        await world.advance(s1.banned_until - await world.block_time() + 60)
        assert [await gov.pool.is_eligible(w.address) for w in workers] == [True, True, False, False]

    world.run(body())


def test_report_invalid_compute_and_security(world: World) -> None:
    gov, client, w1, outsider = world.gov, world["client1"], world["w1"], world["outsider"]
    v1, v2, v3, v4, dissenter = (world[n] for n in VALIDATORS)
    pool_addr = world.pool_address
    max_payment = 5 * CIRO

    async def body() -> None:
        output, wrong = random_digest(), random_digest()
        job = await world.open_job(client, max_payment=max_payment, level="quorum", worker=w1, output=output)
        # The dissenter signed its wrong output as the second job of a batch of three.
        others = [Job(new_job_id(), client, random_digest(), "quorum", 0, None, random_digest()) for _ in range(2)]
        report = batch_receipts(dissenter, [others[0], replace(job, output_commitment=wrong), others[1]],
                                timestamp_ms=77)[1]
        assert (report["leaf_index"], report["batch_size"], len(report["path"])) == (1, 3, 2)

        def send_report(receipt: dict[str, Any], worker: Actor = dissenter) -> Awaitable[TxResult]:
            return outsider.send(outsider.jm.report_invalid_compute_call(job.job_id, worker.address, receipt))

        await reverts(send_report(report), "JM: job not finalized")
        await outsider.send(outsider.jm.finalize_quorum_call(
            job.job_id, 1, [(v.address, job.receipt(v, timestamp_ms=i)) for i, v in enumerate((v1, v2, v3, w1))]))
        assert (await gov.jm.job(job.job_id)).status == "finalized"

        # Not evidence: the finalized output itself, a receipt signed by someone else, an unregistered worker.
        await reverts(send_report(job.receipt(dissenter, timestamp_ms=77)), "JM: output matches")
        await reverts(send_report(job.receipt(v4, output=wrong, timestamp_ms=77)), "JM: bad report signature")
        await reverts(send_report(job.receipt(outsider, output=wrong), outsider), "JM: worker not registered")
        await reverts(send_report(forged(report, leaf_index=2)), "JM: bad report signature")
        stake_before = int(await gov.pool.view("stake_of", dissenter.address))
        assert stake_before == STAKE

        before = await world.balances(gov.address, pool_addr, outsider.address)
        held = await gov.pool.slashed_balance()
        result = await send_report(report)
        now = await world.block_time(result)
        cut = STAKE // 2
        # The pool keeps the cut for governance (no token moves in a slash).
        assert await world.balances(gov.address, pool_addr, outsider.address) == before
        assert await gov.pool.slashed_balance() == held + cut
        state = await gov.pool.worker(dissenter.address)
        assert (state.stake, state.reputation, state.banned_until, state.eligible, state.validator) == (
            STAKE - cut, REPUTATION_START - 75, now + 180 * DAY, False, True)
        jm_events = [e for e in result.events if e[0] == world.jm_address]
        assert [e[1][:3] for e in jm_events] == [
            [get_selector_from_name("InvalidComputeReported"), int(job.job_id, 16), dissenter.address]]
        # Reported once per (job, worker), even with another signed receipt.
        await reverts(send_report(job.receipt(dissenter, output=random_digest(), timestamp_ms=3)),
                      "JM: already reported")
        assert int(await gov.pool.view("stake_of", dissenter.address)) == STAKE - cut

        # security() = sum over the validators of stake x reputation x uptime_bps.
        await gov.send(gov.pool.prepare("set_uptime", v2.address, 9_000))
        assert int(await gov.pool.view("uptime_of", v2.address)) == 9_000
        expected = (3 * STAKE * 500 * 10_000 + STAKE * 500 * 9_000 + (STAKE - cut) * 425 * 10_000)
        assert int(await gov.pool.view("security")) == expected
        # Leaving the set removes a validator's share.
        await gov.send(gov.pool.prepare("remove_validator", v2.address))
        try:
            assert int(await gov.pool.view("validator_count")) == 4
            assert int(await gov.pool.view("security")) == expected - STAKE * 500 * 9_000
        finally:
            await gov.send(gov.pool.add_validator_call(v2.address), gov.pool.prepare("set_uptime", v2.address,
                                                                                     10_000))
        assert int(await gov.pool.view("security")) == expected + STAKE * 500 * 1_000

    world.run(body())


# ----------------------------------------------------------------------------------------------------------------
# 8. Batch finalization
# ----------------------------------------------------------------------------------------------------------------
def test_finalize_batch_of_25(world: World) -> None:
    gov, outsider = world.gov, world["outsider"]
    clients = [world[n] for n in CLIENTS]
    workers = [world[n] for n in WORKERS]
    jm = world.jm_address
    n_jobs = 25  # 5 runs of 5 over 3 workers: two workers sign two batches each

    def worker_of(job: Job) -> Actor:
        assert job.worker is not None
        return job.worker

    async def body() -> None:
        deadline = await world.block_time() + FAR
        jobs: list[Job] = []
        payments: list[int] = []
        for i in range(n_jobs):
            # Clients alternate item by item; workers in runs of 5 (so both batching paths are taken).
            max_payment = 10 * CIRO + 1001 * i
            payment = 0 if i == 7 else max_payment - 997 * i
            job = Job(new_job_id(), clients[i % 3], random_digest(), "receipt", max_payment, workers[(i // 5) % 3],
                      random_digest(), payment)
            jobs.append(job)
            payments.append(payment)

        async def submit(c: Actor) -> None:
            mine = [j for j in jobs if j.client is c]
            await c.send(c.token.approve_call(jm, sum(j.max_payment for j in mine)),
                         *(c.jm.submit_job_call(j.job_id, MODEL, j.input_commitment, "receipt", j.max_payment,
                                                deadline) for j in mine))

        async def results(w: Actor) -> None:
            await w.send(*(w.jm.submit_result_call(j.job_id, j.output_commitment or "", i) for i, j in
                           enumerate(jobs) if j.worker is w))

        await asyncio.gather(*(submit(c) for c in clients))
        await gov.send(*(gov.jm.assign_call(j.job_id, worker_of(j).address) for j in jobs))
        await asyncio.gather(*(results(w) for w in workers))
        # Each run of 5 jobs is one batch its worker signs once (5 signatures for 25 jobs).
        receipts = [rc for k in range(0, n_jobs, 5)
                    for rc in batch_receipts(worker_of(jobs[k]), jobs[k:k + 5], timestamp_ms=1_700_000_000_000 + k)]
        items = [(j.job_id, worker_of(j).address, rc) for j, rc in zip(jobs, receipts, strict=True)]
        parties = [c.address for c in clients] + [w.address for w in workers] + [jm]

        sample = [jobs[0], jobs[7], jobs[20], jobs[-1]]  # a view costs a Cairo call: a sample; events cover all 25

        async def statuses() -> list[str]:
            return [s.status for s in await asyncio.gather(*(gov.jm.job(j.job_id) for j in sample))]

        # A worker that signs a total below its batch's prices cannot be paid more than that total.
        first = receipts[:5]
        short = int(first[0]["batch_total"]) - 1
        r, s = worker_of(jobs[0]).identity.sign(batch_message(root=int(first[0]["root"], 16),
                                                              worker_key=worker_of(jobs[0]).key, count=5,
                                                              total=short))
        undersigned = [(j.job_id, worker_of(j).address, forged(rc, batch_total=str(short), signature=[hex(r), hex(s)]))
                       for j, rc in zip(jobs[:5], first, strict=True)]
        await reverts(outsider.send(outsider.jm.finalize_batch_call(undersigned)), "JM: above batch total")
        # One bad item (a leaf whose price was raised after signing, after 21 good ones) and nothing at all
        # happens: the 21 jobs settled before it in the same transaction are rolled back.
        before = await world.balances(*parties)
        bad = list(items)
        bad[21] = (jobs[21].job_id, workers[1].address, forged(receipts[21], price=str(payments[21] + 1)))
        await reverts(outsider.send(outsider.jm.finalize_batch_call(bad)), "JM: leaf not in batch")
        # ... nor when one job comes twice (its first settlement is rolled back with the rest).
        await reverts(outsider.send(outsider.jm.finalize_batch_call([*items[:3], items[0]])),
                      "JM: no result to finalize")
        assert await world.balances(*parties) == before
        assert await statuses() == ["result_submitted"] * len(sample)

        # All 25 in one transaction.
        result = await outsider.send(outsider.jm.finalize_batch_call(items))
        expected = list(before)
        for job, payment in zip(jobs, payments, strict=True):
            expected[parties.index(job.client.address)] += job.max_payment - payment
            expected[parties.index(worker_of(job).address)] += payment
            expected[-1] -= job.max_payment
        assert await world.balances(*parties) == expected
        assert expected[-1] == before[-1] - sum(j.max_payment for j in jobs)
        # JobFinalized(job_id; worker, payment, refund) for every job, in order.
        finalized = [(e[1][1], e[2]) for e in result.events
                     if e[0] == jm and e[1][0] == get_selector_from_name("JobFinalized")]
        assert finalized == [(int(j.job_id, 16), [worker_of(j).address, p, 0, j.max_payment - p, 0])
                             for j, p in zip(jobs, payments, strict=True)]
        states = await asyncio.gather(*(gov.jm.job(j.job_id) for j in sample))
        assert [(s.status, s.payment) for s in states] == [("finalized", payments[jobs.index(j)]) for j in sample]
        # One token transfer per recipient (3 workers, 3 clients), all from the JobManager.
        transfer = get_selector_from_name("Transfer")
        transfers = [e for e in result.events if e[0] == gov.token.address and e[1][0] == transfer]
        assert sorted(e[1][2] for e in transfers) == sorted(parties[:-1])
        assert all(e[1][1] == jm for e in transfers)
        await reverts(outsider.send(outsider.jm.finalize_batch_call(items[-1:])), "JM: no result to finalize")

    world.run(body())
