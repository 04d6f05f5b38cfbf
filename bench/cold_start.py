"""Cold start: `CiroClient.local()` to the first result, in a fresh Python process each time.

    python bench/cold_start.py [--runs 3]

Scenarios (each run uses a new temporary CIRO_HOME):
  nothing running   -> local() starts a Ray head and the gateway, deploys, infers
  already running   -> local() attaches to the gateway started by the previous scenario
  Ray running only  -> the gateway was stopped (`ciro down --keep-ray`); local() starts only the gateway
Timings are measured inside the child from before `import ciro` to the first result, plus
the child's whole wall time (interpreter start included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ciro.procs import free_port

CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
from ciro import CiroClient
t_import = time.perf_counter() - t0
client = CiroClient.local()
t_local = time.perf_counter() - t0
model = client.deploy(MODEL)
r = client.infer(model.hash, np.zeros((1, 16), np.float32))
assert r.outputs is not None
print(f"{t_import:.4f} {t_local:.4f} {time.perf_counter() - t0:.4f}")
"""


def child(env: dict[str, str], model: Path) -> dict[str, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.replace("MODEL", repr(str(model)))], env=env,
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(out.stderr)
    imp, loc, first = map(float, out.stdout.split())
    return {"import_s": imp, "local_s": loc, "first_result_s": first, "process_wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "cold_start.json")
    args = ap.parse_args()
    from ciro.demo import build_tiny_mlp

    ciro = str(Path(sys.executable).with_name("ciro"))
    results: dict[str, list[dict[str, float]]] = {"nothing running": [], "already running": [],
                                                  "Ray running only": []}
    for _ in range(args.runs):
        home = Path(tempfile.mkdtemp(prefix="ciro-cold-"))
        model = build_tiny_mlp(home / "mlp.onnx")
        env = {**os.environ, "CIRO_HOME": str(home / "home"), "CIRO_PORT": str(free_port())}
        env.pop("CIRO_GATEWAY_URL", None)
        try:
            results["nothing running"].append(child(env, model))
            results["already running"].append(child(env, model))
            subprocess.run([ciro, "down", "--keep-ray"], env=env, check=True, capture_output=True)
            results["Ray running only"].append(child(env, model))
        finally:
            subprocess.run([ciro, "down"], env=env, capture_output=True)
    print("| scenario | import ciro | local() ready | first result | process wall |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[name] = med
        print(f"| {name} | {med['import_s']:.2f} s | {med['local_s']:.2f} s | {med['first_result_s']:.2f} s "
              f"| {med['process_wall_s']:.2f} s |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "runs": args.runs, "median": summary,
                                     "all": results}, indent=1))


if __name__ == "__main__":
    main()
