"""Settlement on Starknet (local devnet): JobManager.finalize_batch of k jobs per transaction against one
finalize_receipt transaction per job.

    python bench/settlement.py [--jobs 50] [--singles 3] [--sizes 50] [--workers 3] [--json OUT]
    python bench/settlement.py --jobs 100 --sizes 100          # today's flow finalized at k = 100 (+2 min)
    python bench/settlement.py --jobs 200 --singles 20 --sizes 1,10,50,100 --simulate 3   # the finalize_batch sweep

The default run measures what issue 14 asks for (one finalize_receipt per job, finalize_batch at k = 50 for
today's flow, the whole-life comparison with CiroLedger k = 10, 100, 1,000 and a dispute for each) within 10
minutes on a 2-core VM: 56 JobManager jobs (50 batched, 3 single, 3 warm-up), as today's flow reports per-job cost
(on 2026-12-07 a k = 50 batch cost 732,725 L2 gas a job to finalize against 749,317 at k = 100: shorter Merkle
paths outweigh the fixed cost shared by fewer jobs). A larger batch, the sweep over smaller finalize_batch sizes and
more single transactions are behind the options above.

Starts a fresh devnet (`python -m ciro_devnet`, StarkWare's Python Cairo VM), deploys CiroToken, CDCPool and
JobManager, creates a client account and `--workers` worker accounts (registered, staked to min_stake), registers
a model, escrows every job (client multicalls of approve + submit_job x chunk), has governance assign them
(assign_job x chunk a multicall) and the workers submit results (one multicall per worker per chunk), and then
finalizes them from the governance account with the workers' Merkle-batched receipts (each worker signs one batch
message, with each job's price, per finalizing transaction; the contract pays the signed price, the rest of the
escrow goes back to the client):

- one `finalize_receipt` transaction per job (`--singles` jobs, each a signed batch of one; the baseline),
- `finalize_batch` with k jobs per transaction for each k in `--sizes` (`--jobs` jobs shared out so that every
  size gets at least one full batch; one signed batch per worker in each transaction).

Per size: client-observed seconds per settled job (sign + send + receipt; the devnet runs one transaction per
block, synchronously) and the devnet process's CPU seconds meanwhile (less sensitive to a shared CPU), L2 gas (and
its archival part: calldata, signature, events), L1 data gas and fee per job (the receipt's `execution_resources`
and `actual_fee`, which the devnet computes from the Cairo resources used) and Cairo steps per job (from
`starknet_simulateTransactions` run on the same transaction just before it is sent, for the first `--simulate` of
each size: `validate_invocation` + `execute_invocation` l2_gas / 100, as the devnet's traces count 100 L2 gas per VM
step, inner calls included; no RPC extension needed); a simulated transaction is then sent with the simulation's
fee estimate instead of a second one (`common.send_estimated`). Simulation and signing are outside the timed span.
The set-up's escrow, assign_job and submit_result multicalls are reported per job too, for context; those of its
first chunk are simulated for steps and make today's flow below, and each later chunk of a sender is sent with its
first chunk's estimate (the same code, no more calls), so the devnet runs every set-up multicall once beside the
first chunk's simulation. The run prints the wall seconds of each phase after the set-up (`phases:`). Results go to
`--json` (default bench/results/settlement.json).

Then a paid job's whole on-chain life (bench/settlement_life.py): `--baseline` jobs with every step its own
transaction (escrow, assign_job, submit_result, finalize_receipt), today's flow (the set-up's first chunk: one escrow
multicall, one governance assign_job multicall and the workers' submit_result multicalls of `--chunk` jobs, plus
the largest finalize_batch above), and CiroLedger's batched flow at each k of `--life-sizes` (a deposit per
`--jobs-per-client` jobs, one transaction of settle_batch calls over 3 workers' batches of at most 64 leaves and
the clients' charges), and one dispute_equivocation per k (a leaf of that batch: a path of at most 6).
The last line compares k = 100 with one transaction per step.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import Sample, projected_max_k, send_estimated, simulate, summarize, timed

from ciro import Identity, new_job_ids
from ciro.chain.client import ChainClient, TxResult
from ciro.chain.contracts import CDCPool, CiroToken, JobManager
from ciro.chain.network import Network, deploy_network, ensure_account
from ciro.receipts import JobLeaf, sign_batch
from ciro_devnet.launch import DevnetProcess

TOKEN = 10**18
MAX_PAYMENT = TOKEN  # escrowed per job
PAYMENT = 3 * TOKEN // 4  # the price the worker signs and is paid; the rest is refunded to the client
MIN_STAKE = 100 * TOKEN


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Job:
    job_id: str
    worker: int  # index into the workers
    input_commitment: str
    output_commitment: str
    receipt: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rig:
    net: Network
    gov: ChainClient
    client: ChainClient
    workers: list[tuple[Identity, ChainClient]]
    model_hash: str
    jobs: list[Job]
    setup_s: dict[str, float]
    #: Per job, for the escrow (approve + submit_job), governance's assign_job and the workers' submit_result
    #: multicalls.
    setup_cost: dict[str, dict[str, float]]
    devnet_pid: int
    #: The first chunk's escrow, assign and results transactions, simulated for steps: today's flow before
    #: finalization (bench/settlement_life.py `today`).
    first_chunk: dict[str, list[Sample]] = field(default_factory=dict)
    #: Wall seconds of the phases after the set-up (finalization, whole life), in order: where a run's time goes.
    phase_s: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str, since: float) -> float:
        """Add the seconds since `since` to phase `name`; returns now (the next phase's start)."""
        now = time.perf_counter()
        self.phase_s[name] = self.phase_s.get(name, 0.0) + now - since
        return now


def plan(jobs: int, sizes: Sequence[int]) -> dict[int, int]:
    """Batches per size: the largest sizes first, each at least one full batch, the jobs left shared evenly. Fewer
    jobs than sum(sizes) are raised to that (one batch of each size)."""
    ordered = sorted(set(sizes), reverse=True)
    left, out = max(jobs, sum(ordered)), {}
    for i, k in enumerate(ordered):
        out[k] = max(1, left // (len(ordered) - i) // k)
        left -= out[k] * k
    return dict(sorted(out.items()))


async def _connect(url: str, identity: Identity, address: int) -> ChainClient:
    return await ChainClient.connect(url, address=address, identity=identity, poll_s=0.01)


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


async def build(dev: DevnetProcess, *, n_jobs: int, n_workers: int, chunk: int) -> Rig:
    times: dict[str, float] = {}
    t = time.perf_counter()
    acc = dev.accounts[0]
    gov = await _connect(dev.url, Identity("gov", acc.private_key, acc.public_key, 0), acc.address)
    net = await deploy_network(gov, rpc_url=dev.url, supply=10**9 * TOKEN, min_stake=MIN_STAKE,
                               unstake_cooldown_s=3600)
    times["deploy"] = time.perf_counter() - t

    t = time.perf_counter()
    client_id = Identity.generate("bench-client")
    worker_ids = [Identity.generate(f"bench-worker-{i}") for i in range(n_workers)]
    addresses = [await ensure_account(gov, ident) for ident in (client_id, *worker_ids)]
    token = net.token_on(gov)
    await gov.execute([token.mint_call(addresses[0], n_jobs * MAX_PAYMENT),
                       *(token.mint_call(a, MIN_STAKE) for a in addresses[1:])], what="Funding")
    client = await _connect(dev.url, client_id, addresses[0])
    workers = [(ident, await _connect(dev.url, ident, a)) for ident, a in zip(worker_ids, addresses[1:], strict=True)]

    async def enrol(ident: Identity, chain: ChainClient) -> TxResult:
        pool = CDCPool(chain, net.pool)
        return await chain.execute([pool.register_worker_call(ident.public_key),
                                    CiroToken(chain, net.token).approve_call(net.pool, MIN_STAKE),
                                    pool.stake_call(chain.address, MIN_STAKE)], what="Worker registration")

    await asyncio.gather(*(enrol(i, c) for i, c in workers))
    assert all([await net.pool_on(gov).is_eligible(c.address) for _, c in workers])
    model_hash = _digest("bench-settlement-model")
    jm_client = JobManager(client, net.job_manager)
    await client.execute([jm_client.register_model_call(model_hash, None, ["receipt"])], what="register_model")
    times["accounts"] = time.perf_counter() - t

    t = time.perf_counter()
    ids = new_job_ids(n_jobs)
    jobs = [Job(job_id, i % n_workers, _digest("in", job_id), _digest("out", job_id)) for i, job_id in enumerate(ids)]
    deadline = int(time.time()) + 7 * 86400
    tok_client = CiroToken(client, net.token)
    cost: dict[str, dict[str, float]] = {p: {"txs": 0, "jobs": 0, "l2_gas": 0, "fee": 0}
                                         for p in ("escrow", "assign", "results")}

    first: dict[str, list[Sample]] = {"escrow": [], "assign": [], "results": []}
    # Per (phase, sender): the fee estimate of its first chunk's simulation and that chunk's number of calls.
    estimates: dict[tuple[str, int], tuple[int, Any]] = {}

    async def send(phase: str, chain: ChainClient, jobs_in_tx: int, calls: list[Any], what: str, n: int) -> None:
        """Send one set-up transaction, run once by the devnet: the first chunk's (n == 0) simulated for steps, kept
        and sent with the simulation's fee estimate; a later chunk of the same sender and phase (the same code, no
        more calls) sent with that estimate (its bounds cover it), any other after a fee estimate of its own."""
        if n == 0:
            n_steps, estimate = await simulate(chain, calls)
            sample = await timed(chain, jobs_in_tx, calls, what, False, dev.process.pid, estimate=estimate)
            sample.steps = n_steps
            estimates[phase, chain.address] = (len(calls), estimate)
            first[phase].append(sample)
            count(phase, jobs_in_tx, sample)
            return
        size, estimate = estimates.get((phase, chain.address), (0, None))
        if len(calls) <= size:
            count(phase, jobs_in_tx, await send_estimated(chain, calls, estimate, what))
        else:
            count(phase, jobs_in_tx, await chain.execute(calls, what=what))

    def count(phase: str, jobs_in_tx: int, r: TxResult | Sample) -> None:
        c = cost[phase]
        c["txs"] += 1
        c["jobs"] += jobs_in_tx
        c["l2_gas"] += r.l2_gas
        c["fee"] += r.fee

    for n, part in enumerate(_chunks(jobs, chunk)):
        await send("escrow", client, len(part), [
            tok_client.approve_call(net.job_manager, len(part) * MAX_PAYMENT),
            *(jm_client.submit_job_call(j.job_id, model_hash, j.input_commitment, "receipt", MAX_PAYMENT, deadline)
              for j in part)], "Escrow", n)
    times["escrow"] = time.perf_counter() - t

    t = time.perf_counter()
    jm_gov = JobManager(gov, net.job_manager)
    for n, part in enumerate(_chunks(jobs, chunk)):
        await send("assign", gov, len(part), [jm_gov.assign_call(j.job_id, workers[j.worker][1].address)
                                              for j in part], "Assign jobs", n)
    times["assign"] = time.perf_counter() - t

    t = time.perf_counter()

    async def work(w: int, part: Sequence[Job], n: int) -> None:
        chain = workers[w][1]
        mine = [j for j in part if j.worker == w]
        if not mine:
            return
        jm = JobManager(chain, net.job_manager)
        calls = [jm.submit_result_call(j.job_id, j.output_commitment, 0) for j in mine]
        await send("results", chain, len(mine), calls, "Submit results", n)

    for n, part in enumerate(_chunks(jobs, chunk)):
        await asyncio.gather(*(work(w, part, n) for w in range(n_workers)))
    times["results"] = time.perf_counter() - t
    setup_cost = {phase: {"txs": c["txs"], "jobs_per_tx": c["jobs"] / c["txs"], "s_per_job": times[phase] / c["jobs"],
                          "l2_gas_per_job": c["l2_gas"] / c["jobs"], "fee_per_job_fri": c["fee"] / c["jobs"]}
                  for phase, c in cost.items()}
    return Rig(net, gov, client, workers, model_hash, jobs, times, setup_cost, dev.process.pid, first)


def sign(rig: Rig, part: Sequence[Job]) -> list[tuple[str, int, dict[str, Any]]]:
    """Each worker signs one Merkle batch over its jobs of `part` (price PAYMENT, paid by the client); returns the
    (job id, worker address, receipt) items of finalize_batch, in `part`'s order."""
    mine: dict[int, list[Job]] = defaultdict(list)
    for j in part:
        mine[j.worker].append(j)
    client = hex(rig.client.address)
    for w, jobs in mine.items():
        leaves = [JobLeaf(j.job_id, rig.model_hash, j.input_commitment, j.output_commitment, "receipt", PAYMENT, client)
                  for j in jobs]
        for j, receipt in zip(jobs, sign_batch(rig.workers[w][0], leaves), strict=True):
            j.receipt = receipt.to_dict()
    return [(j.job_id, rig.workers[j.worker][1].address, j.receipt) for j in part]


async def measure(rig: Rig, batches: dict[int, int], singles: int, simulate_n: int) -> dict[str, Any]:
    jm = JobManager(rig.gov, rig.net.job_manager)
    todo = list(rig.jobs)
    t = time.perf_counter()
    # Warm-up (not measured): one finalize_receipt per worker, so every worker's cached key point has its final
    # sign (the first signature check of a worker may flip it: one more storage write).
    for w in range(len(rig.workers)):
        j = next(j for j in todo if j.worker == w)
        todo.remove(j)
        await rig.gov.execute([jm.finalize_receipt_call(*sign(rig, [j])[0])], what="warm-up")
    t = rig.lap("warm-up", t)

    samples: dict[str, list[Sample]] = {"single": []}
    failures: dict[str, str] = {}
    settled: list[Job] = []
    for i, j in enumerate(todo[:singles]):
        samples["single"].append(await timed(rig.gov, 1, [jm.finalize_receipt_call(*sign(rig, [j])[0])],
                                             "finalize_receipt", i < simulate_n, rig.devnet_pid))
        settled.append(j)
    todo = todo[singles:]
    t = rig.lap("finalize_receipt", t)
    print(f"  one finalize_receipt per job: {singles} transactions", flush=True)
    for k, n in batches.items():
        name = f"batch_{k}"
        samples[name] = []
        for i in range(n):
            part, todo = todo[:k], todo[k:]
            call = jm.finalize_batch_call(sign(rig, part))
            try:
                samples[name].append(await timed(rig.gov, k, [call], f"finalize_batch({k})", i < simulate_n,
                                                   rig.devnet_pid))
                settled += part
            except Exception as exc:  # a size over the limits: record why and go on with the others
                failures[name] = f"{type(exc).__name__}: {exc}"[:500]
                print(f"  finalize_batch k={k}: FAILED ({failures[name][:200]})", flush=True)
                break
        t = rig.lap(f"finalize_batch k={k}", t)
        print(f"  finalize_batch k={k}: {len(samples[name])} transactions", flush=True)
    # Spot check: the first and the last job settled are finalized on chain, paid the signed price.
    for j in (settled[0], settled[-1]):
        state = await jm.job(j.job_id)
        assert (state.status, state.payment) == ("finalized", PAYMENT), (j.job_id, state)
    return {"samples": samples, "failures": failures}


def fmt_fee(fri: float) -> str:
    return f"{fri / 1e18:.6f}"


def report(rows: dict[str, dict[str, Any]], failures: dict[str, str]) -> dict[str, Any]:
    has_steps = all("steps_per_job" in r for r in rows.values())
    head = ("| settlement | txs | jobs/tx | s/job | devnet CPU s/job | s/tx (median) | L2 gas/job (archival) "
            "| L1 data gas/job | fee/job (STRK) |")
    head += " steps/job |" if has_steps else ""
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in rows.items():
        label = "finalize_receipt, 1 per tx" if name == "single" else f"finalize_batch, k = {name[6:]}"
        cpu = "-" if r["devnet_cpu_s_per_job"] is None else f"{r['devnet_cpu_s_per_job']:.3f}"
        line = (f"| {label} | {r['transactions']} | {r['jobs_per_tx']:.0f} | {r['s_per_job']:.3f} | {cpu} | "
                f"{r['s_per_tx_median']:.3f} | {r['l2_gas_per_job']:,.0f} ({r['archival_l2_gas_per_job']:,.0f}) | "
                f"{r['l1_data_gas_per_job']:,.0f} | "
                f"{fmt_fee(r['fee_per_job_fri'])} |")
        if has_steps:
            line += f" {r['steps_per_job']:,.0f} |"
        print(line)
    base = rows["single"]
    ratios: dict[str, dict[str, float]] = {}
    for name, r in rows.items():
        if name == "single":
            continue
        ratios[name] = {"s_per_job": r["s_per_job"] / base["s_per_job"],
                        **({"devnet_cpu_s_per_job": r["devnet_cpu_s_per_job"] / base["devnet_cpu_s_per_job"]}
                           if r["devnet_cpu_s_per_job"] and base["devnet_cpu_s_per_job"] else {}),
                        "l2_gas_per_job": r["l2_gas_per_job"] / base["l2_gas_per_job"],
                        "fee_per_job": r["fee_per_job_fri"] / base["fee_per_job_fri"]}
        if has_steps:
            ratios[name]["steps_per_job"] = r["steps_per_job"] / base["steps_per_job"]
    print()
    for name, q in ratios.items():
        extra = f", steps/job {q['steps_per_job']:.2f}x" if "steps_per_job" in q else ""
        cpu = f", devnet CPU/job {q['devnet_cpu_s_per_job']:.2f}x" if "devnet_cpu_s_per_job" in q else ""
        print(f"{name} vs one per job: s/job {q['s_per_job']:.2f}x{cpu}, L2 gas/job {q['l2_gas_per_job']:.2f}x, "
              f"fee/job {q['fee_per_job']:.2f}x{extra}")
    ok = sorted(int(n[6:]) for n, r in rows.items() if n.startswith("batch_") and r["transactions"])
    largest = ok[-1] if ok else 0
    tried = max((int(n[6:]) for n in (*rows, *failures) if n.startswith("batch_")), default=0)
    target: bool | None = largest >= 50 if tried >= 50 else None
    verdict = {True: "MET", False: "NOT MET", None: "not tested (no size >= 50)"}[target]
    print(f"\nlargest batch that went through: k = {largest}; target >= 50 jobs per transaction: {verdict}")
    for name, why in failures.items():
        print(f"  {name} failed: {why}")
    projection = projected_max_k(rows)
    for limit, p in projection.items():
        print(f"  projected max k under the {limit} limit ({p['limit']:,}): {p['max_k']:,} "
              f"({p['per_job']:,.0f} a job + {p['fixed']:,.0f} a transaction)")
    return {"ratios": ratios, "largest_k": largest, "target_50_met": target, "projected_max_k": projection}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    batches = plan(args.jobs, sizes)
    n_jobs = sum(k * n for k, n in batches.items()) + args.singles + args.workers
    print(f"plan: {args.singles} singles, batches {batches} (k: count), {args.workers} warm-up; "
          f"{n_jobs} jobs in all", flush=True)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    with DevnetProcess(seed=args.seed) as dev:
        print(f"devnet up at {dev.url} in {time.perf_counter() - t0:.1f} s", flush=True)
        rig = await build(dev, n_jobs=n_jobs, n_workers=args.workers, chunk=args.chunk)
        print("set-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in rig.setup_s.items()), flush=True)
        for phase, c in rig.setup_cost.items():
            print(f"  {phase}: {c['txs']:.0f} transactions, {c['jobs_per_tx']:.1f} jobs/tx, "
                  f"{c['s_per_job']:.3f} s/job, {c['l2_gas_per_job']:,.0f} L2 gas/job, "
                  f"{fmt_fee(c['fee_per_job_fri'])} STRK/job", flush=True)
        measured = await measure(rig, batches, args.singles, args.simulate)
        life_sizes = [int(s) for s in args.life_sizes.split(",") if s.strip()]
        if life_sizes:
            import settlement_life as life

            t = time.perf_counter()
            base = await life.baseline(rig, args.baseline)
            rig.lap("baseline", t)
            now = life.today(rig)
            ledger = await life.ledger_flow(rig, dev.url, life_sizes, args.jobs_per_client)
            print(f"whole-life measurements: {time.perf_counter() - t:.0f} s", flush=True)
        print("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in rig.phase_s.items()), flush=True)
    rows = {name: summarize(ss) for name, ss in measured["samples"].items() if ss}
    verdict = report(rows, measured["failures"])
    whole = life.whole_life(rows, base, now, ledger) if life_sizes else None
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s")
    return {
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "jobs": n_jobs, "singles": args.singles, "batches": batches, "workers": args.workers,
        "payment": PAYMENT, "max_payment": MAX_PAYMENT, "setup_s": rig.setup_s, "setup_cost": rig.setup_cost,
        "total_s": total, "phase_s": rig.phase_s,
        "results": rows, **verdict, "failures": measured["failures"], "whole_life": whole,
        "jobs_per_client": args.jobs_per_client,
        "samples": {name: [asdict(s) for s in ss] for name, ss in measured["samples"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50, help="jobs finalized by finalize_batch, shared out over the sizes")
    ap.add_argument("--singles", type=int, default=3, help="jobs finalized one finalize_receipt transaction each")
    ap.add_argument("--sizes", default="50",
                    help="jobs per finalize_batch transaction (the sweep: 1,10,50,100 with --jobs 200 --singles 20)")
    ap.add_argument("--workers", type=int, default=3, help="worker accounts (2-4 is typical)")
    ap.add_argument("--chunk", type=int, default=50, help="jobs per escrow / assign / submit-result multicall")
    ap.add_argument("--seed", type=int, default=7, help="devnet seed")
    ap.add_argument("--simulate", type=int, default=1,
                    help="transactions per size also simulated first, for Cairo steps (0: no step counts; every "
                         "transaction of a size runs the same code)")
    ap.add_argument("--life-sizes", default="10,100,1000",
                    help="jobs per CiroLedger settle_batch for the whole-life comparison ('' to skip it)")
    ap.add_argument("--baseline", type=int, default=1,
                    help="jobs settled with one transaction per step (the same code each time)")
    ap.add_argument("--jobs-per-client", type=int, default=10,
                    help="ledger flow: jobs a client deposit funds (one client per this many jobs of a batch)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "settlement.json")
    args = ap.parse_args()
    if args.workers < 1 or args.singles < 1 or args.chunk < 1 or args.baseline < 1 or args.jobs_per_client < 1:
        sys.exit("--workers, --singles, --chunk, --baseline and --jobs-per-client must be >= 1")
    if not all(s.strip().isdigit() and int(s) >= 1 for s in args.sizes.split(",")):
        sys.exit(f"--sizes takes positive integers separated by commas, not {args.sizes!r}")
    out = asyncio.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=vars))
    print(f"wrote {args.json}")
    if out["whole_life"] is not None:
        import settlement_life as life

        print(life.final_line(out["whole_life"]))


if __name__ == "__main__":
    main()
