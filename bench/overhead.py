"""Overhead of Ciro against its baselines, measured in one process on one machine.

For two models (a tiny MLP and the demo digits classifier) it measures
  (a) onnxruntime in-process, (b) a plain Ray actor holding the same session, (c) Ciro via the SDK:
single-job latency p50/p99, throughput at concurrency 1, 16 and 256, and batched throughput
(one call / one batch request of 1,000 one-row jobs). A third, compute-bound MLP shows how the ratio
to raw onnxruntime grows once a row costs more than Ciro's fixed per-job work. Raw onnxruntime
uses one thread for single jobs and every core for the batched figure; Ciro's two workers use one
thread each.

The gateway runs with its result cache on (``result_cache_size``). Every Ciro job of the figures above asks
``fresh=true``, so it runs on a worker (the rows repeat); the cache's own figures then compare, row by row, a
job that runs (``fresh``) with the same job answered from the cache (a hit), one at a time and as a batch of
1,000.

    python bench/overhead.py [--jobs 2000] [--json bench/results/overhead.json]

It starts its own embedded default (Ray head + gateway, settlement off: nothing here is paid) under a temporary
CIRO_HOME and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from common import free_port, write_report

from ciro import AsyncCiroClient, CiroClient, Config
from ciro.demo import build_digits_model, build_tiny_mlp, digits_inputs
from ciro.local import ensure_running, ray_env, read_state, stop

BATCH_JOBS = 1000
CONCURRENCY = (1, 16, 256)
#: Entries the bench's gateway keeps: more than the distinct rows of any model here.
CACHE_SIZE = 10_000
#: Rows timed one at a time for the cache's figures (each as a fresh run, then as a hit).
CACHE_ROWS = 300


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_ort(path: Path, name: str, x: np.ndarray, jobs: int) -> dict[str, Any]:
    sess = session(path)
    rows = [x[i % len(x)][None] for i in range(jobs)]
    for r in rows[:200]:
        sess.run(None, {name: r})
    lat = []
    for r in rows:
        t = time.perf_counter()
        sess.run(None, {name: r})
        lat.append(time.perf_counter() - t)
    out: dict[str, Any] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "c1": jobs / sum(lat)}
    for c in CONCURRENCY[1:]:
        with ThreadPoolExecutor(c) as pool:
            t = time.perf_counter()
            list(pool.map(lambda r: sess.run(None, {name: r}), rows))
            out[f"c{c}"] = jobs / (time.perf_counter() - t)
    big = np.concatenate([rows[i % len(rows)] for i in range(BATCH_JOBS)])
    sess = session(path, threads=os.cpu_count() or 1)  # batched baseline: every core of the machine
    sess.run(None, {name: big})
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        sess.run(None, {name: big})
    out["batched"] = reps * BATCH_JOBS / (time.perf_counter() - t)
    return out


def bench_ray(path: Path, name: str, x: np.ndarray, jobs: int) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=0)
    class Plain:
        def __init__(self, data: bytes) -> None:
            self.sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

        def run(self, feed: np.ndarray) -> list[np.ndarray]:
            return list(self.sess.run(None, {name: feed}))

    actor = Plain.remote(path.read_bytes())
    rows = [x[i % len(x)][None] for i in range(jobs)]
    ray.get([actor.run.remote(r) for r in rows[:200]])
    lat = []
    for r in rows:
        t = time.perf_counter()
        ray.get(actor.run.remote(r))
        lat.append(time.perf_counter() - t)
    out: dict[str, Any] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "c1": jobs / sum(lat)}
    for c in CONCURRENCY[1:]:
        t = time.perf_counter()
        pending: list[Any] = []
        for r in rows:
            pending.append(actor.run.remote(r))
            if len(pending) >= c:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)
        ray.get(pending)
        out[f"c{c}"] = jobs / (time.perf_counter() - t)
    big = np.concatenate([rows[i % len(rows)] for i in range(BATCH_JOBS)])
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        ray.get(actor.run.remote(big))
    out["batched"] = reps * BATCH_JOBS / (time.perf_counter() - t)
    ray.kill(actor)
    return out


def bench_ciro(url: str, cfg: Config, path: Path, x: np.ndarray, jobs: int) -> dict[str, Any]:
    rows = [x[i % len(x)][None] for i in range(jobs)]
    with CiroClient(url, config=cfg) as client:
        model = client.deploy(path).hash
        for r in rows[:200]:
            client.infer(model, r, fresh=True)
        lat = []
        for r in rows:
            t = time.perf_counter()
            client.infer(model, r, fresh=True)
            lat.append(time.perf_counter() - t)
    out: dict[str, Any] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "c1": jobs / sum(lat)}

    async def concurrent(c: int) -> float:
        client = AsyncCiroClient(url, config=cfg)
        sem = asyncio.Semaphore(c)

        async def one(r: np.ndarray) -> None:
            async with sem:
                await client.infer(model, r, fresh=True)

        try:
            await asyncio.gather(*(one(r) for r in rows[:100]))
            t = time.perf_counter()
            await asyncio.gather(*(one(r) for r in rows))
            return jobs / (time.perf_counter() - t)
        finally:
            await client.aclose()

    async def batched() -> float:
        client = AsyncCiroClient(url, config=cfg)
        big = np.concatenate([rows[i % len(rows)] for i in range(BATCH_JOBS)])
        try:
            await client.infer_batch(model, big, fresh=True)
            reps, t = 5, time.perf_counter()
            for _ in range(reps):
                results = await client.infer_batch(model, big, fresh=True)
                assert len(results) == BATCH_JOBS
            return reps * BATCH_JOBS / (time.perf_counter() - t)
        finally:
            await client.aclose()

    for c in CONCURRENCY[1:]:
        out[f"c{c}"] = asyncio.run(concurrent(c))
    out["batched"] = asyncio.run(batched())
    return out


def bench_cache(url: str, cfg: Config, path: Path, x: np.ndarray) -> dict[str, Any]:
    """Per row: a job that runs (fresh), then the same job again, answered from the cache; then 1,000 one-row
    jobs in one request, run, then answered from the cache."""
    rows = [x[i % len(x)][None] for i in range(CACHE_ROWS)]
    fresh, hit = [], []
    with CiroClient(url, config=cfg) as client:
        model = client.deploy(path).hash
        for r in rows[:50]:
            client.infer(model, r, fresh=True)
        for r in rows:
            t = time.perf_counter()
            ran = client.infer(model, r, fresh=True)
            fresh.append(time.perf_counter() - t)
            t = time.perf_counter()
            again = client.infer(model, r)
            hit.append(time.perf_counter() - t)
            assert not ran.cached and again.cached_from == ran.job_id
        big = np.concatenate([x[i % len(x)][None] for i in range(BATCH_JOBS)])
        reps, batched = 3, dict[str, float]()
        for label, opts in (("fresh", {"fresh": True}), ("hit", {})):
            t = time.perf_counter()
            for _ in range(reps):
                results = client.infer_batch(model, big, **opts)
                assert all(r.cached is (label == "hit") for r in results)
            batched[label] = reps * BATCH_JOBS / (time.perf_counter() - t)
    return {"fresh_p50_ms": pct(fresh, 50), "fresh_p99_ms": pct(fresh, 99), "hit_p50_ms": pct(hit, 50),
            "hit_p99_ms": pct(hit, 99), "fresh_batched": batched["fresh"], "hit_batched": batched["hit"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000, help="jobs per latency/concurrency measurement")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ciro-bench-"))
    mlp = build_tiny_mlp(work / "mlp.onnx")
    digits = build_digits_model(work / "digits.onnx")
    models = {
        "tiny MLP 16-32-4": (mlp, "x", np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)),
        "digits logreg (demo)": (digits, "X", digits_inputs()),
        "MLP 256-2048-10 (compute-bound)": (
            build_tiny_mlp(work / "mlp-medium.onnx", in_dim=256, hidden=2048, out_dim=10), "x",
            np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)),
    }
    port = free_port()
    cfg = Config.load(home=work / "home", port=port, settlement="off", result_cache_size=CACHE_SIZE)
    url = ensure_running(cfg, progress=True)
    os.environ.update(ray_env(os.environ))  # same token authentication as the head; before Ray reads it
    import ray

    ray.init(address=read_state(cfg)["ray_address"], logging_level="ERROR", log_to_driver=False)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} "
                              f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                              "jobs": args.jobs, "models": {}}
    try:
        for label, (path, name, x) in models.items():
            print(f"== {label}")
            res = {"onnxruntime": bench_ort(path, name, x, args.jobs),
                   "ray actor": bench_ray(path, name, x, args.jobs),
                   "ciro sdk": bench_ciro(url, cfg, path, x, args.jobs)}
            print_table(res)
            cache = bench_cache(url, cfg, path, x)
            report["models"][label] = {**res, "result cache": cache}
            print_cache(cache)
    finally:
        ray.shutdown()
        stop(cfg)
    write_report(args.json, report)


def print_table(res: dict[str, dict[str, float]]) -> None:
    cols = ["p50_ms", "p99_ms", "c1", "c16", "c256", "batched"]
    print(f"| path | {' | '.join(cols)} |")
    print("|---" * (len(cols) + 1) + "|")
    for path, r in res.items():
        print(f"| {path} | " + " | ".join(f"{r[c]:.3f}" if c.endswith("ms") else f"{r[c]:,.0f}" for c in cols) + " |")
    raw, ciro = res["onnxruntime"], res["ciro sdk"]
    print(f"ciro p50 - raw p50 = {ciro['p50_ms'] - raw['p50_ms']:.2f} ms; "
          f"ciro batched / raw batched = {ciro['batched'] / raw['batched']:.4%}; "
          f"ciro batched / ray actor batched = {ciro['batched'] / res['ray actor']['batched']:.2%}")


def print_cache(c: dict[str, float]) -> None:
    print(f"cache: hit p50 {c['hit_p50_ms']:.2f} ms (p99 {c['hit_p99_ms']:.2f}) against a fresh job's "
          f"p50 {c['fresh_p50_ms']:.2f} ms (p99 {c['fresh_p99_ms']:.2f}); batched: {c['hit_batched']:,.0f} hits/s "
          f"against {c['fresh_batched']:,.0f} fresh jobs/s")


if __name__ == "__main__":
    main()
