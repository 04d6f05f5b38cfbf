"""ResNet-50 and BERT-base through Ciro against the raw framework on the same device.

The models have the standard architectures (transformers' ResNetConfig() is ResNet-50, BertConfig() is BERT-base)
with random weights, so nothing is downloaded; speed does not depend on the weights. Each is exported to ONNX with
torch.onnx.export and measured, in one process, as:
  - raw torch: the eager model (torch.inference_mode) on the device;
  - raw onnxruntime: an InferenceSession with the execution provider Ciro's worker uses on that device (CUDA where
    onnxruntime-gpu is installed and a GPU is visible, else CPU) and the same threads;
  - Ciro: one worker on a local cluster (`ciro up` with one worker holding the device: every CPU, or one GPU),
    `infer_batch` with receipts, JOBS jobs of BATCH rows each (rows_per_job=BATCH), so both sides run the same rows.
Throughput is rows per second over the same rows; the ratio is Ciro / raw. The target is >= 90 % of raw on a GPU.

    python bench/large_models.py [--batch 8] [--jobs 6] [--json bench/results/large_models.json]

On a CPU-only machine the figures are CPU figures and say so: Ciro's worker then shares the cores with the gateway
and the client, which a GPU run does not (the GPU does the work there).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from common import free_port, write_report

from ciro import CiroClient, Config
from ciro.local import ensure_running, stop

SEQ = 128


def _cuda() -> bool:
    return torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()


def build(name: str, work: Path, batch: int) -> tuple[torch.nn.Module, Path, dict[str, np.ndarray], str]:
    """(eager model, ONNX path, one batch of inputs, output name)."""
    from transformers import BertConfig, BertForSequenceClassification, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "resnet50":
        model: torch.nn.Module = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()
        inputs = {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    else:
        model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
        inputs = {"input_ids": rng.integers(1000, 30000, (batch, SEQ)).astype(np.int64),
                  "attention_mask": np.ones((batch, SEQ), np.int64)}

    class Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(*args).logits

    wrapped = Logits(model).eval()
    path = work / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, tuple(torch.from_numpy(v) for v in inputs.values()), path,
                          input_names=list(inputs), output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={**{k: {0: "batch"} for k in inputs}, "logits": {0: "batch"}})
    return wrapped, path, inputs, "logits"


def rows_per_s(fn: Any, rows: int, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return rows * repeats / (time.perf_counter() - t)


def measure(name: str, work: Path, client: CiroClient, batch: int, jobs: int) -> dict[str, Any]:
    model, path, inputs, out = build(name, work, batch)
    device = "cuda" if _cuda() else "cpu"
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = model.to(device)
    tensors = [torch.from_numpy(v).to(device) for v in inputs.values()]

    def eager() -> None:
        with torch.inference_mode():
            model(*tensors)
        if device == "cuda":
            torch.cuda.synchronize()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    raw_torch = rows_per_s(eager, batch, jobs)
    raw_ort = rows_per_s(lambda: sess.run([out], inputs), batch, jobs)
    deployed = client.deploy(path)
    stacked = {k: np.concatenate([v] * jobs) for k, v in inputs.items()}
    client.infer_batch(deployed.hash, {k: v[:batch] for k, v in inputs.items()}, rows_per_job=batch)  # warm-up
    t = time.perf_counter()
    results = client.infer_batch(deployed.hash, stacked, rows_per_job=batch, timeout=3600)
    ciro = batch * jobs / (time.perf_counter() - t)
    assert len(results) == jobs and all(r.receipt for r in results)
    np.testing.assert_allclose(results[0].outputs[out], sess.run([out], inputs)[0], rtol=1e-3, atol=1e-3)
    return {"device": device, "model_mb": round(path.stat().st_size / 2**20, 1), "batch": batch, "jobs": jobs,
            "raw_torch_rows_per_s": raw_torch, "raw_onnxruntime_rows_per_s": raw_ort, "ciro_rows_per_s": ciro,
            "ciro_vs_onnxruntime": ciro / raw_ort, "ciro_vs_torch": ciro / raw_torch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--models", default="resnet50,bert-base")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "large_models.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ciro-bench-large-"))
    port = free_port()
    gpu = _cuda()
    cfg = Config.load(home=work / "home", port=port, settlement="off", num_workers=1,
                      worker_num_cpus=float(os.cpu_count() or 1), worker_num_gpus=1.0 if gpu else 0.0,
                      max_batch_size=1)  # one job (BATCH rows) per session call, as the raw baselines run
    ensure_running(cfg, progress=True, num_workers=1)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} "
                              f"cores" + (f", {torch.cuda.get_device_name(0)}" if gpu else ", no GPU"),
                              "models": {}}
    try:
        with CiroClient(cfg.local_url, config=cfg) as client:
            for name in args.models.split(","):
                r = measure(name, work, client, args.batch, args.jobs)
                report["models"][name] = r
                print(f"{name} on {r['device']} (batch {r['batch']}, {r['jobs']} jobs): torch "
                      f"{r['raw_torch_rows_per_s']:.1f} rows/s, onnxruntime {r['raw_onnxruntime_rows_per_s']:.1f}, "
                      f"Ciro {r['ciro_rows_per_s']:.1f} ({r['ciro_vs_onnxruntime']:.0%} of onnxruntime, "
                      f"{r['ciro_vs_torch']:.0%} of torch)", flush=True)
    finally:
        stop(cfg)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
