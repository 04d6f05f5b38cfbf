"""Throughput of the demo model with one vs two Ray worker nodes (scaling).

Each configuration starts its own Ray cluster as separate `ray start` processes on loopback (a head, plus a second
node for the two-node case), each node with one CPU and one Ciro worker (CIRO_WORKER_NUM_CPUS=1), a gateway on
the head (`ciro up --ray-address`), and measures the digits classifier (the `make demo` model):
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ciro import AsyncCiroClient, CiroClient, Config
from ciro.demo import build_digits_model, digits_inputs
from ciro.local import ray_env

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
               "--num-cpus=1", f"--dashboard-agent-listen-port={free_port()}", *args]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=ray_env(os.environ))


def wait_nodes(address: str, n: int) -> None:
    code = (f"import ray,time\nray.init(address='{address}', logging_level='ERROR')\nd=time.time()+90\n"
            f"while sum(x['Alive'] for x in ray.nodes())<{n} and time.time()<d: time.sleep(0.2)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=150, env=ray_env(os.environ))


def measure(nodes: int, work: Path, model_path: Path) -> dict[str, float]:
    home = work / f"home-{nodes}"
    gcs, port = free_port(), free_port()
    procs = [ray_node(["--head", f"--port={gcs}", "--include-dashboard=false"], work / f"head-{nodes}.log")]
    env = {**ray_env(os.environ), "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_SETTLEMENT": "off",
           "CIRO_WORKER_NUM_CPUS": "1"}
    try:
        time.sleep(3)
        if nodes == 2:
            procs.append(ray_node([f"--address=127.0.0.1:{gcs}"], work / f"node2-{nodes}.log"))
        wait_nodes(f"127.0.0.1:{gcs}", nodes)
        subprocess.run([str(BIN / "ciro"), "up", "--ray-address", f"127.0.0.1:{gcs}", "--workers", str(nodes)],
                       env=env, check=True, capture_output=True, timeout=300)
        cfg = Config.load(home=home, port=port, settlement="off")
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
        subprocess.run([str(BIN / "ciro"), "down"], env=env, capture_output=True, timeout=120)
        return {"nodes": nodes, "distinct_worker_nodes": len(set(workers.values())), "batched_jobs_per_s": batched,
                "concurrent32_jobs_per_s": conc}
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


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
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} cores",
              "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
