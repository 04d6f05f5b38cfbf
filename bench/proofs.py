"""Proofs: the raw EZKL pipeline against the same work through Ciro, and the data behind `ciro estimate`.

    python bench/proofs.py                  # ~10 minutes on 2 cores
    python bench/proofs.py --write-scaling  # also refresh ciro/zk_scaling.json from the raw runs

1. Raw EZKL, each model in a fresh process (peak RSS is per process): calibrate, compile, SRS, set-up,
   witness + prove, verify; wall seconds and peak memory. These runs calibrate `ciro estimate`.
2. Through Ciro (embedded default, 2 workers): deploy with zk (set-up paid once), then zk jobs one at a
   time: per-job prove overhead = (job latency - raw witness+prove) / raw witness+prove (target <= 5%).
3. Proofs/hour with 1 vs 2 proofs at a time (max_concurrent_proofs), on the logistic regression.
4. `ciro estimate` predictions against the measured runs.
Every proof here uses a development SRS (public SRS files cannot be fetched on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import free_port, write_report

ROOT = Path(__file__).resolve().parents[1]


def build_models(folder: Path) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ciro.demo import build_tiny_mlp

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((10, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(1, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["y"])], "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "logreg.onnx"))
    return {"logreg-10": folder / "logreg.onnx",
            "mlp-64-32-10": build_tiny_mlp(folder / "mlp64.onnx", in_dim=64, hidden=32, out_dim=10),
            "mlp-784-128-10": build_tiny_mlp(folder / "mlp784.onnx", in_dim=784, hidden=128, out_dim=10),
            "mlp-784-512-10": build_tiny_mlp(folder / "mlp784w.onnx", in_dim=784, hidden=512, out_dim=10)}


def raw_pipeline(model: Path, work: Path) -> dict[str, Any]:
    """One model through EZKL directly (run in a child process by main)."""
    import ezkl
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    shape = [1 if not isinstance(d, int) else d for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    from ciro.zk import calibration_batch

    data = work / "input.json"  # the job's input
    data.write_text(json.dumps({"input_data": [x.reshape(-1).tolist()]}))
    cal = work / "calibration.json"  # calibrated as Ciro's set-up does, so both build the same circuit
    cal.write_text(json.dumps({"input_data": [a.reshape(-1).tolist() for a in calibration_batch([x])]}))
    ra = ezkl.PyRunArgs()
    ra.input_visibility, ra.output_visibility, ra.param_visibility = "public", "public", "fixed"
    ra.variables = [("batch", 1)]
    t: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        t[name] = time.perf_counter() - t0
        return out

    s, c = str(work / "settings.json"), str(work / "model.compiled")
    timed("settings", ezkl.gen_settings, str(model), s, py_run_args=ra)
    timed("calibrate", ezkl.calibrate_settings, str(cal), str(model), s, "resources")
    timed("compile", ezkl.compile_circuit, str(model), c, s)
    settings = json.loads(Path(s).read_text())
    k = int(settings["run_args"]["logrows"])
    srs = str(work / "kzg.srs")
    timed("srs", ezkl.gen_srs, srs, k)
    timed("setup", ezkl.setup, c, str(work / "vk.key"), str(work / "pk.key"), srs)
    timed("witness", ezkl.gen_witness, str(data), c, str(work / "witness.json"))
    timed("prove", ezkl.prove, str(work / "witness.json"), c, str(work / "pk.key"), str(work / "proof.json"), srs)
    timed("verify", ezkl.verify, str(work / "proof.json"), s, str(work / "vk.key"), srs)
    return {"logrows": k, "num_rows": int(settings.get("num_rows", 0)), "seconds": t,
            "pk_bytes": (work / "pk.key").stat().st_size, "vk_bytes": (work / "vk.key").stat().st_size,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cores": os.cpu_count()}


def run_raw(models: dict[str, Path]) -> dict[str, Any]:
    out = {}
    for name, path in models.items():
        with tempfile.TemporaryDirectory(prefix="ezkl-raw-") as work:
            proc = subprocess.run([sys.executable, __file__, "--raw-one", str(path), work], capture_output=True,
                                  text=True, timeout=3600)
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = out[name]
        print(f"raw {name:16s} k={r['logrows']} setup {r['seconds']['setup']:.1f}s prove "
              f"{r['seconds']['witness'] + r['seconds']['prove']:.1f}s peak {r['peak_rss_bytes'] / 2**30:.2f} GiB",
              flush=True)
    return out


def through_ciro(models: dict[str, Path], raw: dict[str, Any], jobs: int) -> dict[str, Any]:
    from ciro import CiroClient, Config
    from ciro.local import ensure_running, stop

    out: dict[str, Any] = {}
    for proofs_at_once in (1, 2):
        port = free_port()
        cfg = Config.load(home=Path(tempfile.mkdtemp(prefix="ciro-proofs-")) / "home", port=port,
                          max_concurrent_proofs=proofs_at_once)
        url = ensure_running(cfg, progress=True)
        try:
            with CiroClient(url, config=cfg) as client:
                for name, path in models.items():
                    if (proofs_at_once == 2 and name != "logreg-10") or name == "mlp-784-512-10":
                        continue  # the widest model calibrates `ciro estimate`; skip it here to save time
                    t0 = time.perf_counter()
                    info = client.deploy(path, zk=True)
                    setup_s = time.perf_counter() - t0
                    shape = [1 if not isinstance(d, int) else d for d in info.inputs[0].shape]
                    xs = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(jobs)]
                    if proofs_at_once == 1:
                        lat = []
                        for x in xs:
                            t0 = time.perf_counter()
                            client.infer(info.hash, x, verification="zk", timeout=3600)
                            lat.append(time.perf_counter() - t0)
                        raw_prove = raw[name]["seconds"]["witness"] + raw[name]["seconds"]["prove"]
                        med = float(np.median(lat))
                        out[name] = {"setup_s": setup_s, "job_latency_s": med, "raw_prove_s": raw_prove,
                                     "overhead": med / raw_prove - 1}
                        print(f"ciro {name:16s} set-up {setup_s:.1f}s once; zk job {med:.2f}s vs raw prove "
                              f"{raw_prove:.2f}s: overhead {100 * (med / raw_prove - 1):+.1f}%", flush=True)
                    t0 = time.perf_counter()
                    ids = [client.submit(info.hash, x, verification="zk") for x in xs]
                    for j in ids:
                        client.wait(j, timeout=3600)
                    rate = 3600 * jobs / (time.perf_counter() - t0)
                    out.setdefault("proofs_per_hour", {}).setdefault(name, {})[str(proofs_at_once)] = rate
                    print(f"ciro {name:16s} {proofs_at_once} proof(s) at a time: {rate:,.0f} proofs/hour", flush=True)
        finally:
            stop(cfg)
    return out


def estimate_accuracy(models: dict[str, Path], raw: dict[str, Any]) -> dict[str, Any]:
    from ciro.estimate import estimate, scaling_runs

    out = {}
    for name, path in models.items():
        # leave-one-out: predict each model from the runs of the others, so the error is not in-sample
        est = estimate(path, runs=[r for r in scaling_runs() if r["model"] != name])
        r = raw[name]
        measured = {"setup_s": r["seconds"]["setup"], "prove_s": r["seconds"]["witness"] + r["seconds"]["prove"],
                    "peak_rss_bytes": r["peak_rss_bytes"]}
        err = {k: est[k] / measured[k] - 1 for k in measured}
        out[name] = {"predicted": {k: est[k] for k in measured}, "measured": measured, "relative_error": err}
        print(f"estimate {name:16s} " + "  ".join(f"{k} {100 * v:+.0f}%" for k, v in err.items()), flush=True)
    return out


def write_scaling(raw: dict[str, Any]) -> None:
    runs = [{"model": n, "logrows": r["logrows"], "num_rows": r["num_rows"], "cores": r["cores"],
             "setup_s": r["seconds"]["setup"], "prove_s": r["seconds"]["witness"] + r["seconds"]["prove"],
             "calibrate_s": r["seconds"]["calibrate"], "pk_bytes": r["pk_bytes"], "vk_bytes": r["vk_bytes"],
             "peak_rss_bytes": r["peak_rss_bytes"]} for n, r in raw.items()]
    path = ROOT / "ciro" / "zk_scaling.json"
    path.write_text(json.dumps({"source": "bench/proofs.py", "date": time.strftime("%Y-%m-%d"),
                                "ezkl": "23.0.5", "runs": runs}, indent=1) + "\n")
    print(f"written {path}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--raw-one":
        print(json.dumps(raw_pipeline(Path(sys.argv[2]), Path(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--write-scaling", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "proofs.json")
    args = ap.parse_args()
    models = build_models(Path(tempfile.mkdtemp(prefix="ciro-proof-models-")))
    raw = run_raw(models)
    if args.write_scaling:
        write_scaling(raw)
    report = {"date": time.strftime("%Y-%m-%d"), "raw": raw, "ciro": through_ciro(models, raw, args.jobs),
              "estimate": estimate_accuracy(models, raw)}
    write_report(args.json, report)


if __name__ == "__main__":
    main()
