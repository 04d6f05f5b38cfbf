"""Proofs: the raw EZKL pipeline against the same work through Ciro, and `ciro estimate` against both.

    python bench/proofs.py                  # under 10 minutes on 2 cores
    python bench/proofs.py --write-scaling  # also refit ciro/zk_scaling.json on this run
    python bench/proofs.py --wide           # adds MLP 784-512-10 (logrows 18, heavy calibration): ~+5 minutes
    python bench/proofs.py --concurrency    # adds proofs/hour with 1 vs 2 proofs at a time: ~+1 minute

1. Raw EZKL, each model in a fresh process (peak RSS is per process), calibrated on the gateway's calibration
   sample so that it builds Ciro's circuit: calibrate, compile, development SRS, keys, witness + prove, verify.
2. Through Ciro (embedded default, 2 workers): `deploy(zk=True)` timed end to end (the set-up a user waits for;
   a fresh CIRO_HOME, so the development SRS is generated the first time each circuit size is seen), then zk jobs
   one at a time: per-job prove overhead = (job latency - raw witness+prove) / raw witness+prove (target <= 5%).
3. With --concurrency: proofs/hour with 1 vs 2 proofs at a time (max_concurrent_proofs), on the logistic regression.
4. `ciro estimate` beside the measured Ciro set-up and zk job of each model, each model predicted from the
   other models' runs (leave-one-out): the line `ciro estimate: worst error set-up ... prove ...`.
5. One proof for many inferences (ciro.zk_batch): the logistic regression and the MLP 64-32-10 set up and proven
   as circuits over B = 16 rows, the logistic regression also over 64 (--batch64: the MLP too), by raw EZKL in the
   same child process, calibrated as Ciro's (model, B) set-up is; the per-inference time ((witness + prove) / B)
   beside one job's proof, `ciro estimate --batch B`, and the tech-stack page's +20-150 ms claim. The output ends
   with the line
   `batched zk B=16: per-inference ... s vs single ... s (ratio ...)` (the worse of the two models).
Every proof here uses a development SRS (public SRS files cannot be fetched on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import free_port, write_report

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.30
WIDE = "mlp-784-512-10"
#: The models and batch sizes of part 5, and the per-inference target (issue 15: <= 1/5 of a single proof at B=16).
BATCHED = {"logreg-10": (16, 64), "mlp-64-32-10": (16,)}  # --batch64: B = 64 for the MLP too (logrows 17)
BATCH_TARGET = 0.2
CLAIM_MS = (20, 150)  # the tech-stack page: "+20-50 ms" (scikit-learn) to "+50-150 ms" (ONNX) of proof time


def _save(nodes: list[Any], inits: list[Any], folder: Path, name: str, dims: tuple[int, int]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims[1]])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / f"{name}.onnx"))
    return folder / f"{name}.onnx"


def build_models(folder: Path, wide: bool = False) -> dict[str, Path]:
    from onnx import helper, numpy_helper

    from ciro.demo import build_tiny_mlp

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def arr(a: np.ndarray, name: str) -> Any:
        return numpy_helper.from_array(a.astype(np.float32), name)

    logreg = _save([helper.make_node("MatMul", ["x", "w"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
                    helper.make_node("Sigmoid", ["z"], ["y"])],
                   [arr(rng.standard_normal((10, 1)), "w"), arr(np.zeros(1), "b")], folder, "logreg", (10, 1))
    # small, but its sigmoid's lookup table spans a wide range: logrows 18 with 1.6k rows used
    sigmoid = _save([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
                     helper.make_node("MatMul", ["s", "w2"], ["y"])],
                    [arr(rng.standard_normal((32, 32)) * 0.3, "w1"), arr(rng.standard_normal((32, 4)), "w2")],
                    folder, "sigmoid-mlp", (32, 4))
    models = {"logreg-10": logreg,
              "mlp-64-32-10": build_tiny_mlp(folder / "mlp64.onnx", in_dim=64, hidden=32, out_dim=10),
              "mlp-784-128-10": build_tiny_mlp(folder / "mlp784.onnx", in_dim=784, hidden=128, out_dim=10),
              "sigmoid-mlp-32-32-4": sigmoid}
    if wide:
        models[WIDE] = build_tiny_mlp(folder / "mlp784w.onnx", in_dim=784, hidden=512, out_dim=10)
    return models


def raw_pipeline(model: Path, work: Path, batches: tuple[int, ...] = ()) -> dict[str, Any]:
    """One model through EZKL directly (run in a child process by main); then, for each of ``batches``, its circuit
    over that many rows (``ciro.zk_batch``)."""
    import ezkl
    import onnxruntime as ort

    from ciro.estimate import calibration_sample
    from ciro.zk import _input_json, _symbolic_dims
    from ciro.zk_batch import calibration_data

    data = model.read_bytes()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    shape = [1 if not isinstance(d, int) else d for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (work / "input.json").write_text(json.dumps(_input_json([x])))  # the job's input
    cal = work / "calibration.json"  # the gateway's calibration data, so both build the same circuit
    cal.write_text(json.dumps(_input_json(calibration_data(calibration_sample(data)))))
    ra: Any = ezkl.PyRunArgs()
    ra.input_visibility, ra.output_visibility, ra.param_visibility = "public", "public", "fixed"
    ra.variables = _symbolic_dims(data)
    t: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = fn(*args, **kw)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        t[name] = time.perf_counter() - t0
        cpu[name] = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        return out

    s, c, w = str(work / "settings.json"), str(work / "model.compiled"), str(work / "witness.json")
    timed("settings", ezkl.gen_settings, str(model), s, py_run_args=ra)
    timed("calibrate", ezkl.calibrate_settings, str(cal), str(model), s, "resources")
    timed("compile", ezkl.compile_circuit, str(model), c, s)
    settings = json.loads(Path(s).read_text())
    k = int(settings["run_args"]["logrows"])
    srs = str(work / "kzg.srs")
    timed("srs", ezkl.gen_srs, srs, k)
    timed("setup", ezkl.setup, c, str(work / "vk.key"), str(work / "pk.key"), srs)
    timed("witness", ezkl.gen_witness, str(work / "input.json"), c, w)
    timed("prove", ezkl.prove, w, c, str(work / "pk.key"), str(work / "proof.json"), srs)
    timed("verify", ezkl.verify, str(work / "proof.json"), s, str(work / "vk.key"), srs)
    batched = {str(b): _raw_batch(model, work, b, {k: srs}) for b in batches}
    return {"batched": batched, "logrows": k, "num_rows": int(settings.get("num_rows", 0)),
            "total_assignments": int(settings.get("total_assignments", 0)), "seconds": t, "cpu_seconds": cpu,
            "pk_bytes": (work / "pk.key").stat().st_size, "vk_bytes": (work / "vk.key").stat().st_size,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cores": os.cpu_count()}


def _raw_batch(model: Path, work: Path, batch: int, srs: dict[int, str]) -> dict[str, Any]:
    """The model's circuit over ``batch`` rows, as ``zk_setup(batch=B)`` builds it: set-up, then one proof of B rows."""
    from ciro.estimate import calibration_sample
    from ciro.zk import _ezkl, _input_json, _symbolic_dims
    from ciro.zk_batch import calibration_data

    ezkl = _ezkl()  # untyped: the bundled stubs and 23.0.5's Python signatures differ

    data = model.read_bytes()
    sample = calibration_sample(data)
    d = work / f"b{batch}"
    d.mkdir()
    (d / "cal.json").write_text(json.dumps(_input_json(calibration_data(sample, batch))))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, *sample[0].shape[1:])).astype(np.float32)
    (d / "input.json").write_text(json.dumps(_input_json([x])))
    ra: Any = ezkl.PyRunArgs()
    ra.input_visibility, ra.output_visibility, ra.param_visibility = "public", "public", "fixed"
    ra.variables = _symbolic_dims(data, batch)
    s, c, t = str(d / "settings.json"), str(d / "model.compiled"), {}
    t0 = time.perf_counter()
    ezkl.gen_settings(str(model), s, py_run_args=ra)
    ezkl.calibrate_settings(str(d / "cal.json"), str(model), s, "resources")
    ezkl.compile_circuit(str(model), c, s)
    settings = json.loads(Path(s).read_text())
    k = int(settings["run_args"]["logrows"])
    if k not in srs:
        srs[k] = str(work / f"kzg{k}.srs")
        ezkl.gen_srs(srs[k], k)
    ezkl.setup(c, str(d / "vk.key"), str(d / "pk.key"), srs[k])
    t["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ezkl.gen_witness(str(d / "input.json"), c, str(d / "witness.json"))
    ezkl.prove(str(d / "witness.json"), c, str(d / "pk.key"), str(d / "proof.json"), srs[k])
    t["prove"] = time.perf_counter() - t0
    shutil.rmtree(d)
    return {"batch": batch, "logrows": k, "num_rows": int(settings.get("num_rows", 0)), "seconds": t,
            "per_inference_s": t["prove"] / batch}


class Load:
    """The 1-minute load average seen during the run (this benchmark's own work counts for about 2 of it)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def sample(self) -> None:
        self.seen.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"min": min(self.seen), "median": float(np.median(self.seen)), "max": max(self.seen)}


def run_raw(models: dict[str, Path], load: Load, tmp: Path) -> dict[str, Any]:
    out = {}
    for name, path in models.items():
        load.sample()
        batches = ",".join(map(str, BATCHED.get(name, ())))
        with tempfile.TemporaryDirectory(prefix="ezkl-raw-", dir=tmp) as work:
            proc = subprocess.run([sys.executable, __file__, "--raw-one", str(path), work, batches],
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode:
                raise SystemExit(proc.stderr[-2000:])
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r, s = out[name], out[name]["seconds"]
        print(f"raw  {name:20s} k={r['logrows']} calibrate {s['calibrate']:.1f}s srs {s['srs']:.1f}s keys "
              f"{s['setup']:.1f}s prove {s['witness'] + s['prove']:.1f}s peak {r['peak_rss_bytes'] / 2**30:.2f} GiB",
              flush=True)
        for b in r["batched"].values():
            print(f"raw  {name:20s} B={b['batch']:<3d} k={b['logrows']} set-up {b['seconds']['setup']:.1f}s prove "
                  f"{b['seconds']['prove']:.1f}s: {b['per_inference_s']:.3f} s per inference", flush=True)
    load.sample()
    return out


def _proven(result: Any) -> None:
    if result.status.value != "done" or result.cached or not result.proof_hash:
        raise SystemExit(f"zk job {result.job_id} was not proven here: {result.status.value}, cached "
                         f"{result.cached}, error {result.error}")


def through_ciro(models: dict[str, Path], raw: dict[str, Any], jobs: int, load: Load, tmp: Path,
                 passes: tuple[int, ...]) -> dict[str, Any]:
    """Parts 2 and 3, with zk_batch_buckets "1": each zk job its own proof (batched proofs are part 5)."""
    from ciro import CiroClient, Config
    from ciro.estimate import srs_cached
    from ciro.local import ensure_running, stop

    out: dict[str, Any] = {"proofs_per_hour": {}}
    srs_made: Path | None = None
    for proofs_at_once in passes:
        cfg = Config.load(home=tmp / f"home-{proofs_at_once}", port=free_port(),
                          max_concurrent_proofs=proofs_at_once, zk_batch_buckets="1")
        if srs_made is not None:  # this pass measures proofs, not set-up: reuse the development SRS made above
            shutil.copytree(srs_made, cfg.home / "srs")
        srs_made = cfg.home / "srs"
        url = ensure_running(cfg, progress=True)
        try:
            with CiroClient(url, config=cfg) as client:
                for name, path in models.items():
                    if proofs_at_once == 2 and name != "logreg-10":
                        continue
                    load.sample()
                    cached = srs_cached(raw[name]["logrows"], cfg)
                    t0 = time.perf_counter()
                    info = client.deploy(path, zk=True)
                    setup_s = time.perf_counter() - t0
                    assert info.zk is not None
                    if info.zk["logrows"] != raw[name]["logrows"]:
                        print(f"WARNING {name}: Ciro's circuit has logrows {info.zk['logrows']}, the raw run's "
                              f"{raw[name]['logrows']}", flush=True)
                    shape = [1 if not isinstance(d, int) else d for d in info.inputs[0].shape]
                    xs = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(jobs)]
                    if proofs_at_once == 1:
                        lat = []
                        for x in xs:
                            t0 = time.perf_counter()
                            _proven(client.infer(info.hash, x, verification="zk", timeout=3600, fresh=True))
                            lat.append(time.perf_counter() - t0)
                        raw_prove = raw[name]["seconds"]["witness"] + raw[name]["seconds"]["prove"]
                        med = float(np.median(lat))
                        out[name] = {"setup_s": setup_s, "srs_cached": cached, "logrows": info.zk["logrows"],
                                     "job_latency_s": med, "raw_prove_s": raw_prove, "overhead": med / raw_prove - 1}
                        print(f"ciro {name:20s} set-up {setup_s:.1f}s ({'SRS cached' if cached else 'SRS generated'})"
                              f"; zk job {med:.2f}s vs raw prove {raw_prove:.2f}s: overhead "
                              f"{100 * (med / raw_prove - 1):+.1f}%", flush=True)
                        if name != "logreg-10" or len(passes) == 1:
                            continue  # proofs/hour: the 1 vs 2 at a time comparison, on the cheapest proof
                    t0 = time.perf_counter()
                    ids = [client.submit(info.hash, x, verification="zk", fresh=True) for x in xs]
                    for j in ids:
                        _proven(client.wait(j, timeout=3600))
                    rate = 3600 * jobs / (time.perf_counter() - t0)
                    out["proofs_per_hour"].setdefault(name, {})[str(proofs_at_once)] = rate
                    print(f"ciro {name:20s} {proofs_at_once} proof(s) at a time: {rate:,.0f} proofs/hour", flush=True)
        finally:
            stop(cfg)
    load.sample()
    return out


def scaling_runs_of(raw: dict[str, Any], ciro: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's measurements in the form `ciro estimate` fits (ciro/zk_scaling.json)."""
    runs = []
    for name, r in raw.items():
        s, c = r["seconds"], ciro[name]
        rest = c["setup_s"] - s["calibrate"] - (0.0 if c["srs_cached"] else s["srs"])
        runs.append({"model": name, "logrows": r["logrows"], "num_rows": r["num_rows"],
                     "total_assignments": r["total_assignments"], "cores": r["cores"], "calibrate_s": s["calibrate"],
                     "srs_s": s["srs"], "keys_s": s["setup"], "setup_s": c["setup_s"], "srs_cached": c["srs_cached"],
                     "rest_s": rest, "prove_s": s["witness"] + s["prove"], "job_s": c["job_latency_s"],
                     "pk_bytes": r["pk_bytes"], "vk_bytes": r["vk_bytes"], "peak_rss_bytes": r["peak_rss_bytes"]})
    return runs


def batched_runs_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's batched circuits beside their one-row circuits, in the form `ciro estimate --batch` fits."""
    return [{"model": name, "batch": b["batch"], "logrows": b["logrows"], "num_rows": b["num_rows"],
             "single_logrows": r["logrows"], "single_num_rows": r["num_rows"], "prove_s": b["seconds"]["prove"],
             "single_prove_s": r["seconds"]["witness"] + r["seconds"]["prove"]}
            for name, r in raw.items() for b in r["batched"].values()]


def estimate_accuracy(models: dict[str, Path], raw: dict[str, Any], ciro: dict[str, Any],
                      fit_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`ciro estimate` of each model (its calibration measured now, the rest fitted to the OTHER models' runs, so
    the error is not in-sample) beside the Ciro set-up and zk job measured above."""
    from ciro.estimate import available_memory, circuit, predict

    out: dict[str, Any] = {}
    cores, memory = os.cpu_count() or 1, available_memory()
    print(f"{'estimate':8s} {'model':20s} {'k':>2s} {'set-up est':>10s} {'measured':>8s} {'error':>6s}  "
          f"{'zk job est':>10s} {'measured':>8s} {'error':>6s}  {'prove error':>11s}", flush=True)
    for name, path in models.items():
        c = circuit(path.read_bytes())
        others = [r for r in fit_runs if r["model"] != name]
        srs = ciro[name]["srs_cached"]
        loo = predict(c, others, cores=cores, memory_bytes=memory, srs_is_cached=srs)
        full = predict(c, fit_runs, cores=cores, memory_bytes=memory, srs_is_cached=srs)
        measured = {"setup_s": ciro[name]["setup_s"], "job_s": ciro[name]["job_latency_s"],
                    "prove_s": ciro[name]["raw_prove_s"]}
        err = {k: loo[k] / v - 1 for k, v in measured.items()}
        out[name] = {"logrows": c["logrows"], "calibrate_s": c["calibrate_s"], "srs_cached": srs,
                     "measured": measured, "predicted": {k: loo[k] for k in measured},
                     "relative_error": err, "in_sample_error": {k: full[k] / v - 1 for k, v in measured.items()}}
        if c["logrows"] != raw[name]["logrows"]:
            print(f"WARNING {name}: the estimate's circuit has logrows {c['logrows']}, Ciro's {raw[name]['logrows']}")
        print(f"{'estimate':8s} {name:20s} {c['logrows']:2d} {loo['setup_s']:9.1f}s {measured['setup_s']:7.1f}s "
              f"{100 * err['setup_s']:+5.0f}%  {loo['job_s']:9.1f}s {measured['job_s']:7.1f}s "
              f"{100 * err['job_s']:+5.0f}%  {100 * err['prove_s']:+10.0f}%", flush=True)
    return out


def batched_summary(models: dict[str, Path], raw: dict[str, Any], fit_runs: list[dict[str, Any]],
                    fit_batched: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Part 5: per-inference proving time of each batched circuit beside one job's proof, `ciro estimate --batch B`
    and the tech-stack page's claim; the B = 16 figures of each model (for the last line). ``fit_batched`` None:
    each batched circuit's fill factor is fitted to this run's OTHER batched circuits (leave-one-out)."""
    from ciro.estimate import available_memory, circuit, fill_rows, predict

    out: dict[str, Any] = {}
    lo, hi = CLAIM_MS
    these = batched_runs_of(raw)
    for name in BATCHED:
        r = raw[name]
        single = r["seconds"]["witness"] + r["seconds"]["prove"]
        for b in r["batched"].values():
            c = circuit(models[name].read_bytes(), batch=b["batch"])
            est = predict(c, fit_runs, cores=os.cpu_count() or 1, memory_bytes=available_memory(), srs_is_cached=True)
            others = fit_batched if fit_batched is not None else [
                x for x in these if (x["model"], x["batch"]) != (name, b["batch"])]
            fill_rows(est, r["num_rows"], others)
            per, ratio = b["per_inference_s"], b["per_inference_s"] / single
            verdict = "met" if ratio <= BATCH_TARGET else "NOT met"
            met = "" if b["batch"] != 16 else f" (target <= {BATCH_TARGET:.2f}: {verdict})"
            err = est["prove_s"] / b["seconds"]["prove"] - 1
            print(f"batch {name:20s} B={b['batch']:<3d} per-inference {per:.3f} s vs single {single:.3f} s: ratio "
                  f"{ratio:.3f}{met}; tech-stack page +{lo}-{hi} ms: {1000 * per:.0f} ms is {1000 * per / hi:.1f}-"
                  f"{1000 * per / lo:.0f}x that; ciro estimate --batch {b['batch']}: prove {est['prove_s']:.1f} s "
                  f"vs measured {b['seconds']['prove']:.1f} s ({100 * err:+.0f}%, rows x{est['fill']:.2f})",
                  flush=True)
            b.update(single_s=single, ratio=ratio, estimate_prove_s=est["prove_s"], estimate_error=err)
            if b["batch"] == 16:
                out[name] = b
    return out


def worst(acc: dict[str, Any], keys: tuple[str, ...]) -> float:
    errs = [m["relative_error"][k] for m in acc.values() for k in keys]
    return max(errs, key=abs)


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                platform.processor() or platform.machine())
    vm = " (VM)" if " hypervisor" in info else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{name}{vm}, {os.cpu_count()} cores, {mem:.0f} GiB"


def write_scaling(runs: list[dict[str, Any]], acc: dict[str, Any], load: dict[str, float],
                  batched: list[dict[str, Any]], batched_error: float) -> None:
    import ezkl

    path = ROOT / "ciro" / "zk_scaling.json"
    errors = {"setup": abs(worst(acc, ("setup_s",))), "job": abs(worst(acc, ("job_s",))),
              "prove": abs(worst(acc, ("prove_s",)))}
    path.write_text(json.dumps({"source": "bench/proofs.py --write-scaling", "date": time.strftime("%Y-%m-%d"),
                                "ezkl": getattr(ezkl, "__version__", "?"), "machine": machine(), "load": load,
                                "leave_one_out_error": errors, "runs": runs, "batched": batched,
                                "batched_error": batched_error}, indent=1) + "\n")
    print(f"written {path}")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-one":
        batches = tuple(int(b) for b in sys.argv[4].split(",") if b)
        print(json.dumps(raw_pipeline(Path(sys.argv[2]), Path(sys.argv[3]), batches)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--write-scaling", action="store_true")
    ap.add_argument("--wide", action="store_true", help=f"also run {WIDE}")
    ap.add_argument("--concurrency", action="store_true", help="also measure proofs/hour, 1 vs 2 proofs at a time")
    ap.add_argument("--batch64", action="store_true", help="also prove the MLP 64-32-10 over 64 rows (~+2 minutes)")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "proofs.json")
    args = ap.parse_args()
    from ciro.estimate import scaling, scaling_runs

    if args.batch64:
        BATCHED["mlp-64-32-10"] = (16, 64)
    started, load = time.perf_counter(), Load()
    with tempfile.TemporaryDirectory(prefix="ciro-proofs-") as tmp:  # models, CIRO_HOMEs: keys of ~1 GB
        models = build_models(Path(tmp) / "models", wide=args.wide)
        raw = run_raw(models, load, Path(tmp))
        ciro = through_ciro(models, raw, args.jobs, load, Path(tmp), (1, 2) if args.concurrency else (1,))
        runs = scaling_runs_of(raw, ciro)
        acc = estimate_accuracy(models, raw, ciro, runs if args.write_scaling else scaling_runs())
        batched = batched_summary(models, raw, runs if args.write_scaling else scaling_runs(),
                                  None if args.write_scaling else scaling().get("batched") or [])
    batch_errs = [b["estimate_error"] for r in raw.values() for b in r["batched"].values()]
    if args.write_scaling:
        write_scaling(runs, acc, load.summary(), batched_runs_of(raw), max(map(abs, batch_errs)))
    wall = time.perf_counter() - started
    lo = load.summary()
    write_report(args.json, {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "load": lo, "raw": raw,
                             "ciro": ciro, "estimate": acc, "batched": batched, "wall_s": wall})
    print(f"machine {machine()}; 1-min load average {lo['min']:.1f}-{lo['max']:.1f} during the run (this benchmark "
          f"alone: about 2); {wall / 60:.1f} minutes")
    print(f"ciro estimate: worst error set-up {100 * worst(acc, ('setup_s',)):+.0f}% prove "
          f"{100 * worst(acc, ('job_s', 'prove_s')):+.0f}% (target {100 * TARGET:.0f}%)")
    print(f"ciro estimate --batch: worst error prove {100 * max(batch_errs, key=abs):+.0f}% "
          f"(target {100 * TARGET:.0f}%)")
    b = max(batched.values(), key=lambda m: m["ratio"])
    print(f"batched zk B=16: per-inference {b['per_inference_s']:.3f} s vs single {b['single_s']:.3f} s "
          f"(ratio {b['ratio']:.3f})")


if __name__ == "__main__":
    main()
