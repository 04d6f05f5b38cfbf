"""Throughput of the demo model with one vs two provider worker nodes (scaling).

Each configuration starts its own cluster the way providers do: `ciro provider head` (a Ray head and the gateway,
no workers of its own, no chain: settlement off) and one or two `ciro provider join --num-cpus 1 --stake 0` nodes,
each a separate `ray start` process on loopback with one Ciro worker. It measures the digits classifier (the
`make demo` model):
  - batched: 2,000 one-row jobs in one `infer_batch` request;
  - concurrent: 1,000 single-job requests, 32 in flight (AsyncCiroClient).
The client, the gateway and the nodes share the machine: on a 2-core VM the second node adds a core that the
gateway and client also need, so the scaling shown is a floor; on separate machines the workers do not compete.

    python bench/scaling.py [--json bench/results/scaling.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import free_port, write_report

from ciro import AsyncCiroClient, CiroClient, Config
from ciro.demo import build_digits_model, digits_inputs
from ciro.local import ray_env

CIRO = str(Path(sys.executable).parent / "ciro")


def measure(nodes: int, work: Path, model_path: Path) -> dict[str, float]:
    root = work / f"cluster-{nodes}"
    port = free_port()
    env = {**{k: v for k, v in ray_env(os.environ).items() if not k.startswith("CIRO_")}, "CIRO_PORT": str(port),
           "CIRO_SETTLEMENT": "off"}

    def ciro(home: str, *args: str) -> str:
        return subprocess.run([CIRO, "--home", str(root / home), *args], env=env, check=True, capture_output=True,
                              text=True, timeout=300).stdout

    address = ciro("head", "provider", "head").split("ray: ")[1].split()[0]
    joined = []
    try:
        for i in range(nodes):
            state = json.loads(ciro(f"node{i}", "provider", "join", "--address", address, "--gateway",
                                    f"http://127.0.0.1:{port}", "--stake", "0", "--num-cpus", "1", "--json"))
            joined.append(state["supervisor_pid"])
        cfg = Config.load(home=root / "client", port=port, settlement="off")
        x = digits_inputs()
        with CiroClient(f"http://127.0.0.1:{port}", config=cfg) as client:
            model = client.deploy(model_path)
            client.infer_batch(model.hash, x[:200])  # warm-up: sessions loaded on every worker
            rows = np.concatenate([x] * (2000 // len(x) + 1))[:2000]
            t = time.perf_counter()
            client.infer_batch(model.hash, rows)
            batched = 2000 / (time.perf_counter() - t)
            workers = {w["id"]: w.get("node_id") for w in client.workers()}

        async def concurrent() -> float:
            c = AsyncCiroClient(f"http://127.0.0.1:{port}", config=cfg)
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with sem:
                    await c.infer(model.hash, x[i % len(x)][None])

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(1000)))
            await c.aclose()
            return 1000 / (time.perf_counter() - t0)

        conc = asyncio.run(concurrent())
        return {"nodes": nodes, "distinct_worker_nodes": len(set(workers.values())), "batched_jobs_per_s": batched,
                "concurrent32_jobs_per_s": conc}
    finally:
        for pid in joined:
            os.killpg(pid, signal.SIGTERM)
        subprocess.run([CIRO, "--home", str(root / "head"), "down"], env=env, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "scaling.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ciro-bench-scaling-"))
    model_path = build_digits_model(work / "digits.onnx")
    results = [measure(n, work, model_path) for n in (1, 2)]
    for r in results:
        print(f"{r['nodes']} node(s), workers on {r['distinct_worker_nodes']} node(s): batched "
              f"{r['batched_jobs_per_s']:.0f} jobs/s, concurrency 32 {r['concurrent32_jobs_per_s']:.0f} jobs/s")
    one, two = results
    print(f"scaling 1 -> 2 nodes: batched {two['batched_jobs_per_s'] / one['batched_jobs_per_s']:.2f}x, "
          f"concurrent {two['concurrent32_jobs_per_s'] / one['concurrent32_jobs_per_s']:.2f}x")
    write_report(args.json, {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} "
                             "cores", "results": results})


if __name__ == "__main__":
    main()
