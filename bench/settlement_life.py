"""A paid job's whole on-chain life, for bench/settlement.py: every step one transaction per job (the baseline),
today's JobManager flow (chunked escrow, governance assign_job and worker submit_result multicalls,
finalize_batch with Merkle-batched receipts), and CiroLedger's batched flow
(settlement v2) at k jobs a batch.

The ledger flow's on-chain life of a job is its share of a client deposit (register key + approve + deposit, one
transaction per client; `jobs_per_client` jobs a deposit), nothing per result (the worker signs its batch off
chain), and its share of one `settle_batch` transaction (the batch's jobs spread over the workers in worker batches
of at most 64 leaves, as the gateway's prepaid batches are; a worker's n-th batch in the n-th `settle_batch` call
of that one transaction, each call with one charge per client: its signed cumulative cap and the amount charged).
A dispute (`dispute_equivocation`) is measured on its own, once per k (a leaf of that batch, its path as deep as that
worker's tree, against a one-leaf batch): it is only paid when used.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common import LIMITS, Sample, send_estimated, simulate, timed
from settlement import PAYMENT, Rig

from ciro import Identity, new_job_ids
from ciro.chain.client import ChainClient
from ciro.chain.contracts import CiroToken, JobManager
from ciro.chain.deploy import UDC_ADDRESS, declare
from ciro.chain.ledger import Charge, CiroLedger, Leaf, SignedBatch, deploy_ledger, sign_batch, sign_spend
from ciro.chain.network import ACCOUNT_FEE_FUNDS, account_address, fee_transfer_call
from ciro.receipts import JobLeaf, short_string
from ciro.receipts import sign_batch as sign_receipts

RECEIPT = short_string("receipt")

#: Leaves in one worker batch at most: the gateway's cap for prepaid batches (ciro_ray.batching.PREPAID_MAX_LEAVES).
LEAVES_PER_BATCH = 64


@dataclass
class Cost:
    """Per job: L2 gas, L1 data gas, fee (fri), Cairo steps."""

    l2_gas: float = 0.0
    l1_data_gas: float = 0.0
    fee: float = 0.0
    steps: float = 0.0

    def add(self, s: Sample, share: float) -> None:
        self.l2_gas += s.l2_gas * share
        self.l1_data_gas += s.l1_data_gas * share
        self.fee += s.fee * share
        self.steps += (s.steps or 0) * share

    def plus(self, other: Cost) -> Cost:
        return Cost(self.l2_gas + other.l2_gas, self.l1_data_gas + other.l1_data_gas, self.fee + other.fee,
                    self.steps + other.steps)


async def _accounts(rig: Rig, url: str, n: int, label: str) -> list[tuple[Identity, ChainClient]]:
    """`n` fresh CiroAccounts, deployed by governance through the UDC in multicalls of 25, each given
    ACCOUNT_FEE_FUNDS of the fee token (the devnet charges fees). Each multicall is sent with the fee estimate of a
    simulation of the first (the same code, at least as many calls), so the devnet runs it once."""
    from starknet_py.net.udc_deployer.deployer import Deployer

    cls = await declare(rig.gov, "CiroAccount")
    ids = [Identity.generate(f"{label}-{i}") for i in range(n)]
    deployer = Deployer(deployer_address=UDC_ADDRESS)
    estimate: Any = None
    for i in range(0, n, 25):
        calls = [call for ident in ids[i:i + 25] for call in (
            deployer.create_contract_deployment_raw(class_hash=cls, salt=ident.public_key,
                                                    raw_calldata=[ident.public_key]).call,
            fee_transfer_call(account_address(ident.public_key), ACCOUNT_FEE_FUNDS))]
        if estimate is None:
            _, estimate = await simulate(rig.gov, calls)
        await send_estimated(rig.gov, calls, estimate, "Deploying client accounts")
    return [(ident, await ChainClient.connect(url, address=account_address(ident.public_key), identity=ident,
                                              poll_s=0.01)) for ident in ids]


async def baseline(rig: Rig, n_jobs: int) -> dict[str, Any]:
    """Every step its own transaction: escrow (approve + submit_job), assign_job (operator), submit_result
    (worker), finalize_receipt (operator). All simulated for steps."""
    jm_gov = JobManager(rig.gov, rig.net.job_manager)
    jm_client = JobManager(rig.client, rig.net.job_manager)
    token_client = CiroToken(rig.client, rig.net.token)
    await rig.gov.execute([CiroToken(rig.gov, rig.net.token).mint_call(rig.client.address, n_jobs * 10**18)],
                          what="Funding the baseline")
    steps: dict[str, list[Sample]] = {"escrow": [], "assign": [], "result": [], "finalize": []}
    deadline = (await rig.gov.now()) + 7 * 86400
    for n, job_id in enumerate(new_job_ids(n_jobs)):
        ident, wchain = rig.workers[n % len(rig.workers)]
        inp, out = os.urandom(32).hex(), os.urandom(32).hex()
        steps["escrow"].append(await timed(rig.client, 1, [
            token_client.approve_call(rig.net.job_manager, 10**18),
            jm_client.submit_job_call(job_id, rig.model_hash, inp, "receipt", 10**18, deadline)],
            "escrow", True, rig.devnet_pid))
        steps["assign"].append(await timed(rig.gov, 1, [jm_gov.assign_call(job_id, wchain.address)], "assign",
                                           True, rig.devnet_pid))
        jm_worker = JobManager(wchain, rig.net.job_manager)
        steps["result"].append(await timed(wchain, 1, [jm_worker.submit_result_call(job_id, out, 0)], "result",
                                           True, rig.devnet_pid))
        (receipt,) = sign_receipts(ident, [JobLeaf(job_id, rig.model_hash, inp, out, "receipt", PAYMENT,
                                                   hex(rig.client.address))])
        steps["finalize"].append(await timed(rig.gov, 1, [jm_gov.finalize_receipt_call(
            job_id, wchain.address, receipt.to_dict())], "finalize", True, rig.devnet_pid))
    per_step = {name: _mean(samples) for name, samples in steps.items()}
    total = Cost()
    for c in per_step.values():
        total = total.plus(c)
    return {"steps": {k: vars(v) for k, v in per_step.items()}, "total": total}


def _mean(samples: Sequence[Sample]) -> Cost:
    c = Cost()
    for s in samples:
        c.add(s, 1 / len(samples))
    return c


async def ledger_flow(rig: Rig, url: str, sizes: Sequence[int], jobs_per_client: int) -> dict[str, Any]:
    """One settlement transaction per size k (3 workers' batches of at most 64 leaves, ceil(k / jobs_per_client)
    clients), then one dispute per k."""
    gov = rig.gov
    t = time.perf_counter()
    address = await deploy_ledger(gov, token=rig.net.token, pool=rig.net.pool, withdrawal_delay_s=3600,
                                  dispute_window_s=86400)
    ledger = CiroLedger(gov, address)
    chain_id = await ledger.chain_id()
    n_clients = {k: -(-k // jobs_per_client) for k in sizes}
    t = rig.lap("ledger deploy", t)
    clients = await _accounts(rig, url, sum(n_clients.values()), "ledger-client")
    token = CiroToken(gov, rig.net.token)
    for i in range(0, len(clients), 50):
        await gov.execute([token.mint_call(c.address, jobs_per_client * PAYMENT) for _, c in clients[i:i + 50]],
                          what="Funding ledger clients")
    t = rig.lap("ledger clients' accounts", t)
    out: dict[str, Any] = {}
    kept: dict[int, tuple[int, SignedBatch]] = {}
    for batch_id, k in enumerate(sizes, start=1):
        mine, clients = clients[:n_clients[k]], clients[n_clients[k]:]
        # Governance's bindings prepare every client's calls (a prepared call does not depend on the sending
        # account), so no client builds bindings of its own.
        def deposit_calls(ident: Identity, c: ChainClient) -> list[Any]:
            return [ledger.register_client_key_call(ident.public_key),
                    token.approve_call(address, jobs_per_client * PAYMENT),
                    ledger.deposit_call(jobs_per_client * PAYMENT)]

        # The first client's deposit is measured in full (simulated for steps, then sent with the simulation's fee
        # estimate); the others, the same code on a fresh account, are sent concurrently with that estimate (the
        # devnet runs each once) and counted by their receipts' L2 gas and fee.
        n_steps, estimate = await simulate(mine[0][1], deposit_calls(*mine[0]))
        first = await timed(mine[0][1], 1, deposit_calls(*mine[0]), "deposit", False, rig.devnet_pid, estimate)
        first.steps = n_steps
        rest = await asyncio.gather(*(send_estimated(c, deposit_calls(i, c), estimate, "deposit")
                                      for i, c in mine[1:]))
        deposit = Cost(l2_gas=(first.l2_gas + sum(r.l2_gas for r in rest)) / len(mine),
                       l1_data_gas=first.l1_data_gas, fee=(first.fee + sum(r.fee for r in rest)) / len(mine),
                       steps=first.steps or 0.0)
        t = rig.lap(f"deposits k={k}", t)
        leaves: list[list[Leaf]] = [[] for _ in rig.workers]
        owed = [0] * len(mine)
        client_of = {c.address: i for i, (_, c) in enumerate(mine)}
        for n, job_id in enumerate(new_job_ids(k)):
            w = n % len(rig.workers)
            ident = rig.workers[w][0]
            ci = n // jobs_per_client
            owed[ci] += PAYMENT
            leaves[w].append(Leaf(int(job_id, 16), int(rig.model_hash, 16), int.from_bytes(os.urandom(32), "big"),
                                  int.from_bytes(os.urandom(32), "big"), ident.public_key, RECEIPT,
                                  1_700_000_000_000, PAYMENT, mine[ci][1].address))
        # A worker batch holds at most LEAVES_PER_BATCH leaves, as the gateway's prepaid batches do (a dispute's
        # path of at most 6). The ledger keeps one batch per worker under a batch id, so a worker's r-th batch goes
        # into the r-th settle_batch call of the one transaction; each call charges its own jobs under the
        # clients' caps (each client signs its total once).
        rounds: list[list[SignedBatch]] = []
        owed_in: list[list[int]] = []
        for (ident, chain), lv in zip(rig.workers, leaves, strict=True):
            for r, i in enumerate(range(0, len(lv), LEAVES_PER_BATCH)):
                if r == len(rounds):
                    rounds.append([])
                    owed_in.append([0] * len(mine))
                chunk = lv[i:i + LEAVES_PER_BATCH]
                rounds[r].append(sign_batch(ident, chain.address, chunk))
                for leaf_ in chunk:
                    owed_in[r][client_of[leaf_.client]] += leaf_.price
        caps = [sign_spend(ident, chain_id=chain_id, ledger=address, client=c.address, cumulative=owed[i])
                for i, (ident, c) in enumerate(mine)]
        ids = [batch_id * 1000 + r for r in range(len(rounds))]
        calls = [ledger.settle_batch_call(ids[r], rounds[r], [Charge(caps[i], amount) for i, amount in
                                                               enumerate(owed_in[r]) if amount])
                 for r in range(len(rounds))]
        batches = [b for rb in rounds for b in rb]
        t = rig.lap(f"signing k={k}", t)
        settle = await timed(gov, k, calls, f"settle_batch({k})", True, rig.devnet_pid)
        calldata = sum(len(c.calldata) for c in calls)
        # Spot check: the last job of the first worker's first batch is provable by its leaf and path.
        b = rounds[0][0]
        last = b.count - 1
        assert await ledger.job_in_batch(ids[0], b.worker, b.leaves[last].hash(), last, b.proof(ids[0], last).path)
        assert await ledger.balance_of(mine[0][1].address) == jobs_per_client * PAYMENT - owed[0]
        per_job = Cost()
        per_job.add(settle, 1 / k)
        funding = Cost()
        funding.add(Sample(1, 0, None, int(deposit.l2_gas), int(deposit.fee), 0, int(deposit.l1_data_gas), 0,
                           int(deposit.steps)), len(mine) / k)
        out[f"ledger_{k}"] = {
            "k": k, "workers": len(batches), "calls": len(calls), "clients": len(mine),
            "funding": vars(funding), "settle": vars(per_job),
            "total": funding.plus(per_job),
            "settle_tx": {"l2_gas": settle.l2_gas, "steps": settle.steps, "events": settle.events,
                          "calldata_felts": calldata, "l1_data_gas": settle.l1_data_gas, "fee": settle.fee},
        }
        kept[k] = (ids[0], rounds[0][len(kept) % len(rounds[0])])
        t = rig.lap(f"settle_batch k={k}", t)
    # Disputes: for each k, one worker (another for each k: a slashed worker is banned, so every equivocating batch
    # is settled first) signs another output for a job of that batch; anyone shows both leaves.
    twins: dict[int, tuple[int, SignedBatch]] = {}
    for k, (_, signed) in kept.items():
        leaf0 = signed.leaves[0]
        twin = Leaf(leaf0.job_id, leaf0.model_hash, leaf0.input_commitment, leaf0.output_commitment + 1,
                    leaf0.worker_key, leaf0.level, leaf0.timestamp_ms, 0, 0)
        ident = next(i for i, c in rig.workers if c.address == signed.worker)
        other = sign_batch(ident, signed.worker, [twin])
        twin_id = 10**6 + len(twins)
        await gov.execute([ledger.settle_batch_call(twin_id, [other], [])], what="the equivocating batch")
        twins[k] = (twin_id, other)
    disputes = []
    for k, (batch_id, signed) in kept.items():
        twin_id, other = twins[k]
        dispute = await timed(rig.client, 1, [ledger.dispute_equivocation_call(
            signed.proof(batch_id, 0), other.proof(twin_id, 0))], "dispute_equivocation", True, rig.devnet_pid)
        assert await ledger.disputed(signed.leaves[0].job_id, signed.worker)
        disputes.append({"k": k, "leaves": signed.count, "l2_gas": dispute.l2_gas, "l1_data_gas": dispute.l1_data_gas,
                         "fee": dispute.fee, "steps": dispute.steps, "path_len": len(signed.proof(batch_id, 0).path)})
    rig.lap("disputes", t)
    out["disputes"] = disputes
    out["dispute"] = disputes[-1]  # the largest k: the deepest path
    return out


def today(rig: Rig) -> dict[str, Cost]:
    """Today's JobManager steps before finalization, per job, from the set-up's first chunk (bench/settlement.py
    `build`, simulated for steps): one escrow multicall of `--chunk` jobs (approve + submit_job each), governance's
    assign_job multicall of the same jobs, and the workers' submit_result multicalls of them (one per worker, the
    jobs alternating over the workers). Finalization comes from the finalize_batch rows."""
    out = {}
    for name, phase in (("escrow", "escrow"), ("assign", "assign"), ("result", "results")):
        samples = rig.first_chunk[phase]
        jobs = sum(s.k for s in samples)
        c = Cost()
        for s in samples:
            c.add(s, 1 / jobs)
        out[name] = c
    return out


def whole_life(rows: dict[str, dict[str, Any]], base: dict[str, Any], now: dict[str, Cost],
               ledger: dict[str, Any]) -> dict[str, Any]:
    """Print the whole-life table and return it; the caller prints the final line."""
    table: dict[str, Cost] = {"one tx per step (baseline)": base["total"]}
    finals = sorted((int(n[6:]), r) for n, r in rows.items() if n.startswith("batch_"))
    if finals:
        k, r = finals[-1]
        fin = Cost(r["l2_gas_per_job"], r["l1_data_gas_per_job"], r["fee_per_job_fri"], r.get("steps_per_job", 0.0))
        table[f"today: escrow + assign + submit multicalls + finalize_batch k={k}"] = \
            now["escrow"].plus(now["assign"]).plus(now["result"]).plus(fin)
    for name, r in ledger.items():
        if name.startswith("ledger_"):
            table[f"ledger, batched k={r['k']} ({r['workers']} worker batches, {r['clients']} clients)"] = r["total"]
    ref = base["total"].l2_gas
    print("\n| a paid job's whole on-chain life | L2 gas/job | L1 data gas/job | fee/job (STRK) | Cairo steps/job "
          "| vs baseline (L2 gas) |")
    print("|---|---|---|---|---|---|")
    for label, c in table.items():
        print(f"| {label} | {c.l2_gas:,.0f} | {c.l1_data_gas:,.1f} | {c.fee / 1e18:.6f} | {c.steps:,.0f} | "
              f"{c.l2_gas / ref:.4f} |")
    steps = base["steps"]
    print("baseline per step (L2 gas): " + ", ".join(f"{k} {v['l2_gas']:,.0f}" for k, v in steps.items()))
    print("today per step (L2 gas/job): " + ", ".join(f"{k} {v.l2_gas:,.0f}" for k, v in now.items()))
    for name, r in ledger.items():
        if name.startswith("ledger_"):
            tx = r["settle_tx"]
            print(f"settle_batch k={r['k']} ({r['calls']} call(s), {r['workers']} worker batches): "
                  f"{tx['l2_gas']:,} L2 gas, {tx['steps']:,} steps "
                  f"(limit {LIMITS['steps']:,}), {tx['events']} events (limit {LIMITS['events']:,}), "
                  f"{tx['calldata_felts']} calldata felts (limit {LIMITS['calldata_felts']:,}); "
                  f"funding share {r['funding']['l2_gas']:,.0f} + settlement {r['settle']['l2_gas']:,.0f} L2 gas/job")
    single = rows.get("single")
    for d in ledger["disputes"]:
        verdict = ""
        if single:
            ok = d["l2_gas"] <= single["l2_gas_per_job"]
            verdict = (f" vs finalize_receipt {single['l2_gas_per_job']:,.0f}: "
                       f"{'MET' if ok else 'NOT MET'} (target: no more)")
        print(f"dispute of one job (dispute_equivocation, a leaf of the k={d['k']} batch: {d['leaves']} leaves, "
              f"path of {d['path_len']}): {d['l2_gas']:,} L2 gas, {d['steps']:,} steps{verdict}")
    largest = max((r for n, r in ledger.items() if n.startswith("ledger_")), key=lambda r: r["k"])
    tx = largest["settle_tx"]
    fits = (tx["steps"] <= LIMITS["steps"] and tx["events"] <= LIMITS["events"]
            and tx["calldata_felts"] <= LIMITS["calldata_felts"] and tx["l2_gas"] <= LIMITS["l2_gas"])
    print(f"largest ledger batch k={largest['k']} within Starknet's step, event, calldata and L2 gas limits: "
          f"{'yes' if fits else 'NO'}")
    return {"table": {k: vars(v) for k, v in table.items()}, "baseline_steps": steps,
            "ledger": {n: ({**r, "total": vars(r["total"])} if n.startswith("ledger_") else r)
                       for n, r in ledger.items()},
            "largest_within_limits": fits}


def final_line(life: dict[str, Any], k: int = 100) -> str:
    base = life["table"]["one tx per step (baseline)"]["l2_gas"]
    key = next((n for n in life["table"] if n.startswith(f"ledger, batched k={k} ")), None)
    if key is None:
        return f"whole life per paid job: batched k={k} not measured (add {k} to --life-sizes)"
    gas = life["table"][key]["l2_gas"]
    return (f"whole life per paid job: batched k={k} {gas:,.0f} L2 gas vs one tx per step {base:,.0f} "
            f"(ratio {gas / base:.4f})")
