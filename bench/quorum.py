"""Throughput and latency of the verification levels on the demo model: none vs receipt vs quorum (k = 4).

    python bench/quorum.py [--jobs 1000] [--single 200]

Starts its own embedded default with 4 workers of 0.5 CPU each (a quorum of f = 1 needs k = 4
distinct workers) under a temporary CIRO_HOME, measures each level in the same process, and stops.
Per level: one `infer_batch` of --jobs one-row jobs (batched), --jobs / 2 single-job requests at
concurrency 16, and --single single-job requests one after another (p50 latency). Workers sign one
Merkle root per batch (`receipt`, `quorum`); before the last line, the workers' signing cost a job with one
signature a job against one Merkle root a batch (no Ray: in this process, interleaved). The last line compares
`receipt` with `none`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import free_port

from ciro import AsyncCiroClient, Config
from ciro.demo import build_digits_model, digits_inputs
from ciro.local import ensure_running, stop

LEVELS = ("none", "receipt", "quorum")


async def measure(url: str, cfg: Config, model_path: Path, jobs: int, single: int) -> dict[str, dict[str, float]]:
    client = AsyncCiroClient(url, config=cfg)
    x = digits_inputs()
    rows = np.concatenate([x] * (jobs // len(x) + 1))[:jobs]
    out: dict[str, dict[str, float]] = {}
    try:
        model = (await client.deploy(model_path)).hash
        for level in LEVELS:
            await client.infer_batch(model, rows[:64], verification=level)  # warm-up
            t = time.perf_counter()
            results = await client.infer_batch(model, rows, verification=level)
            batched = jobs / (time.perf_counter() - t)
            assert len(results) == jobs
            sem = asyncio.Semaphore(16)

            async def one(i: int, level: str = level, sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    await client.infer(model, rows[i:i + 1], verification=level)

            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(jobs // 2)))
            c16 = (jobs // 2) / (time.perf_counter() - t)
            latencies = []
            for i in range(single):
                t = time.perf_counter()
                await client.infer(model, rows[i:i + 1], verification=level)
                latencies.append(time.perf_counter() - t)
            p50 = float(np.median(latencies)) * 1000
            out[level] = {"batched": batched, "c16": c16, "p50_ms": p50}
            print(f"{level:8s} batched {batched:8,.0f} jobs/s   concurrency 16 {c16:8,.0f} jobs/s   "
                  f"single-job p50 {p50:6.2f} ms", flush=True)
    finally:
        await client.aclose()
    return out


def signing_cost(rounds: int = 7) -> dict[int, tuple[float, float]]:
    """The worker's signing cost, µs a job, for batches of 1 and 64: one signature a job (``sign_receipt``, the
    scheme before batches) against one Merkle root a batch (``sign_batch``), interleaved, median of ``rounds``."""
    from ciro import Identity
    from ciro.receipts import JobLeaf, sign_batch, sign_receipt

    ident = Identity.generate("bench-worker")
    out = {}
    for n in (1, 64):
        jobs = [JobLeaf(f"{i:032x}", "ab" * 32, "cd" * 32, "ef" * 32, "receipt", 10**15, "0x1234") for i in range(n)]
        reps = max(1, 640 // n)
        single, batched = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(reps):
                [sign_receipt(ident, job_id=j.job_id, model_hash=j.model_hash, input_commitment=j.input_commitment,
                              output_commitment=j.output_commitment, level=j.level).to_dict() for j in jobs]
            single.append((time.perf_counter() - t) / (reps * n) * 1e6)
            t = time.perf_counter()
            for _ in range(reps):
                [r.to_dict() for r in sign_batch(ident, jobs)]
            batched.append((time.perf_counter() - t) / (reps * n) * 1e6)
        out[n] = (float(np.median(single)), float(np.median(batched)))
        print(f"worker signing, batch of {n:2d}: one signature a job {out[n][0]:7.1f} us/job, one Merkle root "
              f"{out[n][1]:7.1f} us/job ({out[n][1] / out[n][0]:.2f}x)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="single jobs one after another, for the p50 latency")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "quorum.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ciro-quorum-"))
    port = free_port()
    cfg = Config.load(home=work / "home", port=port, devnet_port=free_port(), num_workers=4, worker_num_cpus=0.5)
    url = ensure_running(cfg, progress=True, num_workers=4)
    try:
        res = asyncio.run(measure(url, cfg, build_digits_model(work / "digits.onnx"), args.jobs, args.single))
    finally:
        stop(cfg)
    ratios: dict[str, Any] = {f"{lvl}/none": {k: res[lvl][k] / res["none"][k] for k in res[lvl]}
                              for lvl in LEVELS}
    for name, r in ratios.items():
        print(f"{name:16s} batched {r['batched']:.2f}x   concurrency 16 {r['c16']:.2f}x   p50 {r['p50_ms']:.2f}x")
    signing = signing_cost()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "jobs": args.jobs, "single": args.single,
                                     "results": res, "ratios": ratios, "signing_us_per_job": signing}, indent=1))
    rec, none = res["receipt"], res["none"]
    print(f"receipt vs none: batched {rec['batched']:,.0f} vs {none['batched']:,.0f} jobs/s (ratio "
          f"{rec['batched'] / none['batched']:.2f}); single-job p50 {rec['p50_ms']:.2f} vs {none['p50_ms']:.2f} ms")


if __name__ == "__main__":
    main()
