"""Helpers shared by the benchmark scripts (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciro.procs import free_port

if TYPE_CHECKING:
    from ciro.chain.client import ChainClient, TxResult

__all__ = ["LIMITS", "Sample", "free_port", "median_s", "process_cpu_s", "projected_max_k", "send_estimated",
           "simulate", "summarize", "timed", "write_report"]

#: Starknet's per-transaction limits a settlement transaction must fit (https://docs.starknet.io, "Current limits";
#: cairo-lang 0.14's versioned constants: invoke_tx_max_n_steps, max_n_emitted_events, max_calldata_length; the L2
#: gas cap as this devnet prices it). The devnet enforces only the steps limit (cairo-lang's VM stops there); the
#: others are checked against, or projected from, the measured transactions.
LIMITS = {"steps": 10_000_000, "events": 1_000, "calldata_felts": 5_000, "l2_gas": 10**9}


def median_s(fn: Callable[[], Any], rounds: int, *, warm_up: bool = False) -> float:
    """The median wall seconds of ``rounds`` calls of ``fn`` (after one call not counted, with ``warm_up``)."""
    if warm_up:
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"written {path}")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One measured transaction (bench/settlement.py, bench/settlement_life.py)."""

    k: int
    seconds: float  # client-observed: sign, send, executed by the devnet, receipt read
    devnet_cpu_s: float | None  # CPU time of the devnet process meanwhile (/proc; 10 ms ticks)
    l2_gas: int
    fee: int
    events: int
    l1_data_gas: int
    archival_l2_gas: int  # the part of l2_gas for calldata, signature and events (the rest is computation)
    steps: int | None = None  # None: not simulated


async def simulate(chain: ChainClient, calls: list[Any]) -> tuple[int, Any]:
    """Cairo steps of validation + execution of `calls` sent now from `chain`'s account (the contracts' VM steps,
    inner calls included; not the OS's per-syscall and per-transaction steps that the fee adds), and the
    simulation's fee estimate (validation included, as `starknet_estimateFee` gives it)."""
    nonce = await chain.account.get_nonce()
    tx = await chain.account.sign_invoke_v3(calls, nonce=nonce, resource_bounds=chain._bounds())
    (sim,) = await chain.node.simulate_transactions([tx], block_number="latest")
    trace: Any = sim.transaction_trace
    steps = 0
    for inv in (trace.validate_invocation, trace.execute_invocation):
        resources = getattr(inv, "execution_resources", None)
        if resources is None:  # reverted: execute_invocation is a RevertedFunctionInvocation
            raise RuntimeError(f"simulation reverted: {getattr(inv, 'revert_reason', inv)}")
        steps += int(resources.l2_gas) // 100
    return steps, sim.fee_estimation


async def send_estimated(chain: ChainClient, calls: list[Any], estimate: Any, what: str) -> TxResult:
    """Send `calls` from `chain`'s account with the bounds `ChainClient.execute` would use (`fee_bounds`: the
    margins over the estimate), from `estimate`: the fee estimate of a simulation of the same calls on the same
    state just before, so the node does not run the transaction a third time to estimate it again."""
    from ciro.chain.client import fee_bounds

    async def send(nonce: int) -> int:
        sent = await chain.account.execute_v3(list(calls), nonce=nonce, resource_bounds=fee_bounds(estimate))
        return int(sent.transaction_hash)

    return await chain.submit(send, what=what)


async def timed(chain: ChainClient, k: int, calls: list[Any], what: str, steps: bool, devnet_pid: int,
                estimate: Any = None) -> Sample:
    """Send `calls` as one transaction of `k` jobs and measure it. With `steps`, simulated first for its steps and
    sent with the simulation's fee estimate (`send_estimated`: its seconds then leave out a fee estimate); else with
    `estimate` when given (one from a simulation of the same code with at least as many calls); otherwise sent by
    `ChainClient.execute` (estimate, send, receipt)."""
    from ciro_devnet import fees

    n_steps = None
    if steps:
        n_steps, estimate = await simulate(chain, calls)
    cpu0 = process_cpu_s(devnet_pid)
    t = time.perf_counter()
    r = await (chain.execute(calls, what=what) if estimate is None else send_estimated(chain, calls, estimate, what))
    seconds = time.perf_counter() - t
    cpu1 = process_cpu_s(devnet_pid)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    # Outside the timed span: L1 data gas (not in TxResult) and the archival part of the L2 gas (the devnet charges
    # GAS_PER_DATA_FELT per felt of calldata and signature, and per event key (twice) and data felt).
    receipt = await chain.node.get_transaction_receipt(r.tx_hash)
    tx: Any = await chain.node.get_transaction(r.tx_hash)
    felts = len(tx.calldata) + len(tx.signature)
    felts += sum(fees.EVENT_KEY_FACTOR * len(keys) + len(data) for _, keys, data in r.events)
    return Sample(k, seconds, cpu, r.l2_gas, r.fee, len(r.events), int(receipt.execution_resources.l1_data_gas),
                  fees.GAS_PER_DATA_FELT * felts, n_steps)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    jobs = sum(s.k for s in samples)
    out: dict[str, Any] = {
        "transactions": len(samples),
        "jobs": jobs,
        "jobs_per_tx": jobs / len(samples),
        "s_per_job": sum(s.seconds for s in samples) / jobs,
        "s_per_tx_median": statistics.median(s.seconds for s in samples),
        "devnet_cpu_s_per_job": (sum(s.devnet_cpu_s or 0.0 for s in samples) / jobs
                                 if all(s.devnet_cpu_s is not None for s in samples) else None),
        "l2_gas_per_job": sum(s.l2_gas for s in samples) / jobs,
        "fee_per_job_fri": sum(s.fee for s in samples) / jobs,
        "archival_l2_gas_per_job": sum(s.archival_l2_gas for s in samples) / jobs,
        "l1_data_gas_per_job": sum(s.l1_data_gas for s in samples) / jobs,
        "events_per_tx": sum(s.events for s in samples) / len(samples),
    }
    simulated = [s for s in samples if s.steps is not None]
    if simulated:  # over the simulated transactions (every transaction of one size runs the same code)
        out["steps_per_job"] = sum(s.steps or 0 for s in simulated) / sum(s.k for s in simulated)
        out["steps_per_tx_max"] = max(s.steps or 0 for s in simulated)
        out["simulated_txs"] = len(simulated)
    return out


def projected_max_k(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The largest k each Starknet limit allows, extrapolated linearly from the two largest measured sizes."""
    batch = sorted(((r["jobs_per_tx"], r) for name, r in rows.items() if name.startswith("batch_")),
                   key=lambda pair: pair[0])
    if len(batch) < 2:
        return {}
    (k1, r1), (k2, r2) = batch[-2], batch[-1]
    if k2 == k1:
        return {}
    out: dict[str, Any] = {}
    for limit, key in (("steps", "steps_per_job"), ("l2_gas", "l2_gas_per_job"), ("events", None)):
        if key is None:
            per_tx = (r1["events_per_tx"], r2["events_per_tx"])
        elif key in r1 and key in r2:
            per_tx = (r1[key] * k1, r2[key] * k2)
        else:
            continue
        slope = (per_tx[1] - per_tx[0]) / (k2 - k1)
        fixed = per_tx[1] - slope * k2
        if slope > 0:
            out[limit] = {"limit": LIMITS[limit], "per_job": slope, "fixed": fixed,
                          "max_k": int((LIMITS[limit] - fixed) // slope)}
    return out
