"""`ciro estimate`: what a zk set-up and proof of a model will cost, before doing either.

The circuit's size comes from EZKL itself (settings + calibration on a sample input: seconds). Time,
memory and key sizes come from a model fitted to real runs measured on this project's machines by
``bench/proofs.py`` (``ciro/zk_scaling.json``): each quantity is fitted as ``a + b * 2**logrows`` over
the measured runs, and times are scaled by the ratio of CPU cores (EZKL proving scales close to
linearly with cores). ``bench/README.md`` reports the leave-one-out prediction error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidModelError
from .modelstore import read_model_file

__all__ = ["available_memory", "estimate", "fit", "scaling_runs"]

_SCALING = Path(__file__).with_name("zk_scaling.json")
METRICS = ("setup_s", "prove_s", "pk_bytes", "vk_bytes", "peak_rss_bytes")


def scaling_runs() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(_SCALING.read_text())["runs"]
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
    """Predict ``metric`` at ``logrows`` on ``cores`` cores from measured runs."""
    size = np.array([2.0 ** r["logrows"] for r in runs])
    scale = np.array([r["cores"] / cores if metric.endswith("_s") else 1.0 for r in runs])
    y = np.array([r[metric] for r in runs], dtype=float) * scale
    if len(set(size)) >= 2:
        b, a = np.polyfit(size, y, 1)
        if a >= 0 and b > 0:
            return float(a + b * 2.0**logrows)
    b = float(np.sum(size * y) / np.sum(size * size))  # through the origin
    return b * 2.0**logrows


def estimate(model: str | os.PathLike[str] | bytes, *, runs: Sequence[dict[str, Any]] | None = None,
             cores: int | None = None, memory_bytes: int | None = None) -> dict[str, Any]:
    """Circuit size from EZKL, and predicted set-up/prove time, memory and key sizes on this machine."""
    from .zk import _ezkl, _input_json, _quiet, _symbolic_dims, calibration_batch

    ezkl = _ezkl()
    data = bytes(model) if isinstance(model, bytes | bytearray) else read_model_file(model, max_bytes=1 << 62)
    runs = list(runs if runs is not None else scaling_runs())
    cores = cores or os.cpu_count() or 1
    memory = memory_bytes or available_memory()
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)  # the same calibration data as the real set-up (ciro.zk.zk_setup)
    sample = calibration_batch([rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
                                .astype(np.float32) for i in sess.get_inputs()])
    with tempfile.TemporaryDirectory(prefix="ciro-estimate-") as tmp:
        t = Path(tmp)
        (t / "model.onnx").write_bytes(data)
        (t / "input.json").write_text(json.dumps(_input_json(sample)))
        ra = ezkl.PyRunArgs()
        ra.input_visibility, ra.output_visibility, ra.param_visibility = "public", "public", "fixed"
        ra.variables = _symbolic_dims(data)
        try:
            with _quiet():
                ezkl.gen_settings(str(t / "model.onnx"), str(t / "settings.json"), py_run_args=ra)
                ezkl.calibrate_settings(str(t / "input.json"), str(t / "model.onnx"), str(t / "settings.json"),
                                        "resources")
        except RuntimeError as exc:
            raise InvalidModelError(
                f"EZKL cannot build a circuit for this model: {str(exc).splitlines()[0][:300]}. It can still serve "
                "receipt and quorum jobs.") from exc
        settings = json.loads((t / "settings.json").read_text())
    logrows = int(settings["run_args"]["logrows"])
    out: dict[str, Any] = {"logrows": logrows, "num_rows": int(settings.get("num_rows", 0)), "cores": cores,
                           "memory_available_bytes": memory, "basis": f"{len(runs)} measured runs (bench/proofs.py)"}
    for metric in METRICS:
        out[metric] = fit(runs, metric, logrows, cores)
    out["fits"] = out["peak_rss_bytes"] <= memory
    gib = memory / 2**30
    out["message"] = (f"fits: predicted peak {out['peak_rss_bytes'] / 2**30:.1f} GiB of {gib:.1f} GiB available"
                      if out["fits"] else f"will not fit in {gib:.1f} GiB: predicted peak "
                      f"{out['peak_rss_bytes'] / 2**30:.1f} GiB")
    return out
