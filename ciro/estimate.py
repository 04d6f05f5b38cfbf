"""`ciro estimate`: what deploying a model with zk and proving one job will cost here, before doing either.

It predicts what a user waits for, not EZKL's key generation alone:

- set-up = the whole ``deploy(zk=True)``: calibration on 33 samples, circuit compilation, a development SRS the
  first time this circuit size is used on this machine (or hashing the pinned one), proving and verifying keys,
  the sample witness, the subprocess and the HTTP round trip;
- proof = a zk job: EZKL's witness + proof (``prove_s``), and the job's wall time through the gateway (``job_s``).

The estimate runs the same EZKL settings + calibration as the set-up (the gateway's calibration sample, the
"resources" target, the same run arguments), so it knows the circuit size (logrows) exactly and measures how long
calibration takes here instead of predicting it. Every other part is fitted to measured runs of
``bench/proofs.py --write-scaling`` (``ciro/zk_scaling.json``) as ``a + b * 2**logrows``: on the bench models,
set-up, key generation and proving time track ``2**logrows`` whatever the layers (a 1.6k-row sigmoid MLP and a
224k-row MLP at logrows 18 used the same CPU time). Fitted times are scaled by the ratio of CPU cores (EZKL
proving scales close to linearly with cores). The output names the runs' machine and date and the
leave-one-out error measured on the bench models. With ``batch`` B (``ciro estimate --batch B``) the circuit is the
one over B rows that proves B jobs at once (``ciro.zk_batch``), and ``per_inference_s`` is its proof time / B. At
a fixed logrows a proof still takes longer as the circuit fills its rows (the MLP 64-32-10 over 16 rows: 26,688 of
2^15 rows used against 2,852 for one row, 1.9x the proof time), which ``2**logrows`` alone misses: a batched
estimate multiplies the proof by ``1 + c * (rows_B - rows_1) / 2**logrows``, ``c`` fitted to the batched runs of
bench/proofs.py (``batched`` in ``ciro/zk_scaling.json``).
The fit has no term for machine load: on a busy machine, times come out longer (the output says when it is busy).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import InputError, InvalidModelError
from .modelstore import _spec, read_model_file

__all__ = ["available_memory", "calibration_sample", "circuit", "estimate", "fill_factor", "fill_rows", "fit",
           "predict", "scaling", "scaling_runs"]

_SCALING = Path(__file__).with_name("zk_scaling.json")
#: Fitted per run of bench/proofs.py: development SRS generation, the rest of a Ciro set-up once calibration and
#: the SRS are paid (compile, keys, sample witness, subprocess, HTTP), EZKL witness + prove, a zk job's wall time.
TIMES = ("srs_s", "rest_s", "prove_s", "job_s")
SIZES = ("pk_bytes", "vk_bytes", "peak_rss_bytes")


def scaling() -> dict[str, Any]:
    """``ciro/zk_scaling.json``: the measured runs and where, when and how well they were measured."""
    data: dict[str, Any] = json.loads(_SCALING.read_text())
    return data


def scaling_runs() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = scaling()["runs"]
    return runs


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def fit(runs: Sequence[dict[str, Any]], metric: str, logrows: int, cores: int) -> float:
    """Predict ``metric`` at ``logrows`` on ``cores`` cores from the measured runs that have it: ``a + b * 2**logrows``
    fitted to minimise the relative (not absolute) error, so the small circuits count as much as the large;
    through the origin when the runs do not support a positive ``a`` and ``b``."""
    # a time or size that is not positive is a measurement the load spoiled (e.g. rest_s = Ciro set-up - raw
    # calibration - raw SRS < 0 when the raw parts met heavier load than the set-up): it says nothing, so it is left out
    runs = [r for r in runs if r.get(metric) is not None and r[metric] > 0]
    if not runs:
        raise InputError(f"No measured run has {metric!r}. Refresh ciro/zk_scaling.json with "
                         "python bench/proofs.py --write-scaling.")
    size = np.array([2.0 ** r["logrows"] for r in runs])
    scale = np.array([r["cores"] / cores if metric.endswith("_s") else 1.0 for r in runs])
    y = np.array([r[metric] for r in runs], dtype=float) * scale
    w = 1.0 / y
    if len(set(size)) >= 2:
        a, b = np.linalg.lstsq(np.stack([w, size * w], axis=1), np.ones_like(y), rcond=None)[0]
        if a >= 0 and b > 0:
            return float(a + b * 2.0**logrows)
    b = float(np.sum(size * w) / np.sum((size * w) ** 2))  # through the origin, relative error
    return b * 2.0**logrows


def fill_factor(batched: Sequence[dict[str, Any]]) -> float:
    """``c`` of a batched proof's ``1 + c * (rows_B - rows_1) / 2**logrows``: how much longer a proof at one logrows
    takes as its circuit fills more rows, fitted through the origin (least squares on the measured ratios) to the
    batched runs ``{logrows, num_rows, single_num_rows, prove_s, single_prove_s}`` of one machine. Runs whose
    batched circuit grew to another logrows say nothing about a fixed logrows and are left out; 0 without data."""
    pts = [((r["num_rows"] - r["single_num_rows"]) / 2.0 ** r["logrows"], r["prove_s"] / r["single_prove_s"] - 1)
           for r in batched if r["logrows"] == r["single_logrows"] and r["prove_s"] > 0 and r["single_prove_s"] > 0]
    den = sum(du * du for du, _ in pts)
    return max(0.0, sum(du * dr for du, dr in pts) / den) if den > 0 else 0.0


def fill_rows(out: dict[str, Any], single_num_rows: int, batched: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scale a batched prediction (``out`` from :func:`predict` for a B-row circuit) for the rows it fills beyond the
    one-row circuit's ``single_num_rows``: proof and job time grow by ``prove_s * c * extra rows / 2**logrows``."""
    fill = 1 + fill_factor(batched) * max(0, out["num_rows"] - single_num_rows) / 2.0 ** out["logrows"]
    extra = out["prove_s"] * (fill - 1)
    out.update(prove_s=out["prove_s"] + extra, job_s=out["job_s"] + extra, fill=fill)
    batch = int(out.get("batch", 1))
    out["per_inference_s"], out["job_per_inference_s"] = out["prove_s"] / batch, out["job_s"] / batch
    return out


def calibration_sample(model: bytes) -> list[np.ndarray]:
    """The sample input the gateway calibrates a zk set-up around (``GatewayState.zk_setup``): standard normal
    draws (seed 0) for float inputs, zeros for the others, symbolic dims at 1. Kept identical so that the
    estimate, the bench's raw runs and the real set-up build the same circuit."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = []
    for spec in (_spec(i) for i in sess.get_inputs()):
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        out.append(rng.standard_normal(shape).astype(spec.dtype) if spec.dtype.startswith("float")
                   else np.zeros(shape, dtype=spec.dtype))
    return out


def circuit(model: bytes, *, inputs: str = "public", outputs: str = "public", batch: int = 1) -> dict[str, Any]:
    """EZKL settings + calibration exactly as ``ciro.zk.zk_setup`` runs them (``batch``: for a circuit over that
    many rows, ``ciro.zk_batch``): the circuit's size and the wall seconds calibration took here (``calibrate_s``)."""
    from .zk import VISIBILITIES, _ezkl, _input_json, _quiet, _symbolic_dims
    from .zk_batch import calibration_data

    for v in (inputs, outputs):
        if v not in VISIBILITIES:
            raise InputError(f"Visibility {v!r} is not supported; use one of {', '.join(VISIBILITIES)}.")
    ezkl = _ezkl()
    with tempfile.TemporaryDirectory(prefix="ciro-estimate-") as tmp:
        t = Path(tmp)
        (t / "model.onnx").write_bytes(model)
        (t / "input.json").write_text(json.dumps(_input_json(calibration_data(calibration_sample(model), batch))))
        ra = ezkl.PyRunArgs()
        ra.input_visibility, ra.output_visibility = VISIBILITIES[inputs], VISIBILITIES[outputs]
        ra.param_visibility = "fixed"
        ra.variables = _symbolic_dims(model, batch)
        try:
            with _quiet():
                ezkl.gen_settings(str(t / "model.onnx"), str(t / "settings.json"), py_run_args=ra)
                t0 = time.perf_counter()
                ezkl.calibrate_settings(str(t / "input.json"), str(t / "model.onnx"), str(t / "settings.json"),
                                        "resources")
                calibrate_s = time.perf_counter() - t0
        except RuntimeError as exc:
            raise InvalidModelError(
                f"EZKL cannot build a circuit for this model: {str(exc).splitlines()[0][:300]}. It can still serve "
                "receipt and quorum jobs.") from exc
        settings = json.loads((t / "settings.json").read_text())
    return {"logrows": int(settings["run_args"]["logrows"]), "num_rows": int(settings.get("num_rows", 0)),
            "total_assignments": int(settings.get("total_assignments", 0)),
            "lookups": len(settings.get("required_lookups") or []), "calibrate_s": calibrate_s,
            "input_visibility": inputs, "output_visibility": outputs, "batch": batch}


def srs_cached(logrows: int, config: Config) -> bool:
    """Whether a set-up at ``logrows`` on this gateway's machine finds its SRS ready (pinned, or a development
    SRS made by an earlier set-up of that size) instead of generating one."""
    if config.srs_dir is not None:
        return (Path(config.srs_dir) / f"kzg{logrows}.srs").is_file()
    return (config.home / "srs" / f"dev-kzg{logrows}.srs").is_file()


def predict(c: dict[str, Any], runs: Sequence[dict[str, Any]], *, cores: int, memory_bytes: int,
            srs_is_cached: bool) -> dict[str, Any]:
    """Times, sizes and memory for circuit ``c`` (from :func:`circuit`), fitted to ``runs``."""
    k = int(c["logrows"])
    out: dict[str, Any] = {**c, "cores": cores, "memory_available_bytes": memory_bytes, "srs_cached": srs_is_cached}
    for metric in TIMES + SIZES:
        out[metric] = fit(runs, metric, k, cores)
    out["setup_cached_s"] = c["calibrate_s"] + out["rest_s"]
    out["setup_first_s"] = out["setup_cached_s"] + out["srs_s"]
    out["setup_s"] = out["setup_cached_s"] if srs_is_cached else out["setup_first_s"]
    batch = int(c.get("batch", 1))  # one proof proves this many jobs (ciro.zk_batch)
    out["per_inference_s"] = out["prove_s"] / batch
    out["job_per_inference_s"] = out["job_s"] / batch
    measured = sorted({int(r["logrows"]) for r in runs})
    out["extrapolated"] = not measured or not measured[0] <= k <= measured[-1]
    out["fits"] = out["peak_rss_bytes"] <= memory_bytes
    gib = memory_bytes / 2**30
    out["message"] = (f"fits: predicted peak {out['peak_rss_bytes'] / 2**30:.1f} GiB of {gib:.1f} GiB available"
                      if out["fits"] else f"will not fit in {gib:.1f} GiB: predicted peak "
                      f"{out['peak_rss_bytes'] / 2**30:.1f} GiB")
    if out["extrapolated"] and measured:
        out["message"] += (f"; logrows {k} is outside the measured {measured[0]}-{measured[-1]}: times are "
                           "extrapolated")
    return out


def _basis(runs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    ks = sorted({int(r["logrows"]) for r in runs})
    text = (f"{len(runs)} measured runs (bench/proofs.py, logrows {ks[0]}-{ks[-1]}) on {meta.get('machine', '?')}, "
            f"{meta.get('date', '?')}, EZKL {meta.get('ezkl', '?')}")
    err = meta.get("leave_one_out_error")
    if err:
        text += (f"; on the bench models the estimate was within {100 * err['setup']:.0f}% (set-up) and "
                 f"{100 * err['job']:.0f}% (zk job) of measured, each predicted from the others' runs")
    return text


def estimate(model: str | os.PathLike[str] | bytes, *, runs: Sequence[dict[str, Any]] | None = None,
             cores: int | None = None, memory_bytes: int | None = None, config: Config | None = None,
             srs_is_cached: bool | None = None, inputs: str = "public", outputs: str = "public",
             batch: int = 1) -> dict[str, Any]:
    """Circuit size from EZKL, and the predicted zk set-up (``setup_s``: the whole ``deploy(zk=True)``, with the
    SRS generated or not as it will be on ``config``'s machine; ``setup_first_s``/``setup_cached_s`` both
    ways), proof (``prove_s``) and zk job (``job_s``) times, memory and key sizes on this machine. ``batch`` B:
    the circuit over B rows that proves B jobs at once (``per_inference_s`` = ``prove_s`` / B)."""
    from .zk import zk_precheck
    from .zk_batch import batch_dim

    data = bytes(model) if isinstance(model, bytes | bytearray) else read_model_file(model, max_bytes=1 << 62)
    zk_precheck(data, count_rows=False)  # operators EZKL cannot prove: refused with the reason, before EZKL runs
    if batch < 1 or (batch > 1 and batch_dim(data) is None):
        raise InputError(f"--batch {batch}: " + ("a batch size is at least 1." if batch < 1 else "this model has no "
                         "single symbolic batch dimension leading its inputs and outputs, so its jobs are proven one "
                         "at a time; estimate without --batch."))
    meta = scaling()
    runs = list(runs if runs is not None else meta["runs"])
    c = circuit(data, inputs=inputs, outputs=outputs, batch=batch)
    if srs_is_cached is None:
        srs_is_cached = srs_cached(c["logrows"], config or Config.load())
    out = predict(c, runs, cores=cores or os.cpu_count() or 1, memory_bytes=memory_bytes or available_memory(),
                  srs_is_cached=srs_is_cached)
    out["basis"] = _basis(runs, meta)
    if batch > 1:  # the rows the B-row circuit fills beyond one row's (see the module's docstring)
        one = circuit(data, inputs=inputs, outputs=outputs, batch=1)
        fill_rows(out, one["num_rows"], meta.get("batched") or [])
        err = meta.get("batched_error")
        out["basis"] += (f"; a batched proof x{out['fill']:.2f} for the rows it fills ({c['num_rows']:,} against "
                         f"{one['num_rows']:,} for one row)" + (
                             f", within {100 * err:.0f}% of measured on the bench's batched circuits" if err else ""))
    out["load"] = os.getloadavg()[0]
    if out["load"] > out["cores"] / 2:  # the fitted times are an idle machine's
        out["message"] += (f"; this machine is busy now (1-minute load {out['load']:.1f} on {out['cores']} cores): "
                           "expect longer than predicted while it stays busy")
    if "hashed" in (inputs, outputs):
        out["basis"] += "; the runs used public inputs and outputs: Poseidon hashing adds time not modelled"
    return out
