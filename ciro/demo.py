"""``ciro demo``: a real model through the whole loop, checked against onnxruntime run directly.

The model is a logistic-regression classifier trained on scikit-learn's bundled 8x8 digits data
(no download) and converted with skl2onnx. Each job is one image; every output is compared with
what onnxruntime computes in this process.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .client import AsyncCiroClient
from .errors import CiroError

__all__ = ["DemoReport", "build_digits_model", "build_tiny_mlp", "digits_inputs", "run_demo"]

#: Outputs of the demo model must match onnxruntime exactly for labels and to this tolerance for
#: probabilities (the gateway may run an image inside a larger batch, which can move the last bits).
RTOL, ATOL = 1e-5, 1e-6
WARMUP_JOBS = 32


def build_digits_model(path: Path) -> Path:
    """Train the demo classifier and write it as ONNX (kept, and reused, once written)."""
    try:
        from skl2onnx import to_onnx
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise CiroError("The demo needs scikit-learn and skl2onnx: pip install 'ciro-network[demo]'.") from exc
    if path.exists():
        return path
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x[:1400], y[:1400])
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(onx.SerializeToString())
    tmp.replace(path)
    return path


def build_tiny_mlp(path: Path, *, in_dim: int = 16, hidden: int = 32, out_dim: int = 4, seed: int = 0) -> Path:
    """A small random-weight MLP (x[N, in_dim] -> relu -> y[N, out_dim]) built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((in_dim, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((hidden, out_dim)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(out_dim).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["y0"]),
        helper.make_node("Add", ["y0", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ciro-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def digits_inputs() -> np.ndarray:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32)


@dataclass
class DemoReport:
    jobs: int
    matched: int
    seconds: float
    latencies_ms: list[float]
    model_hash: str
    workers: set[str]

    @property
    def throughput(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        return float(np.percentile(self.latencies_ms, q))

    def table(self) -> str:
        rows = [
            ("model", self.model_hash[:16]),
            ("jobs", f"{self.jobs}"),
            ("workers used", f"{len(self.workers)}"),
            ("wall time", f"{self.seconds:.2f} s (after {WARMUP_JOBS} untimed warm-up jobs)"),
            ("throughput", f"{self.throughput:,.0f} jobs/s"),
            ("latency p50", f"{self.percentile(50):.2f} ms"),
            ("latency p99", f"{self.percentile(99):.2f} ms"),
            ("mean latency", f"{statistics.fmean(self.latencies_ms) if self.latencies_ms else 0:.2f} ms"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _reference(model_path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return list(sess.run(None, {sess.get_inputs()[0].name: x}))


def _matches(outputs: dict[str, np.ndarray], expected: list[np.ndarray], names: list[str], row: int) -> bool:
    for name, ref in zip(names, expected, strict=True):
        got, want = outputs[name], ref[row:row + 1]
        if got.shape != want.shape or got.dtype != want.dtype:
            return False
        if want.dtype.kind == "f":
            if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
                return False
        elif not np.array_equal(got, want):
            return False
    return True


async def run_demo(client: AsyncCiroClient, model_path: Path, *, jobs: int = 1000, concurrency: int = 32,
                   on_done: Any = None) -> DemoReport:
    info = await client.deploy(model_path, name="digits-demo")
    x = digits_inputs()
    expected = _reference(model_path, x)
    names = [o.name for o in info.outputs]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    matched = 0
    workers: set[str] = set()

    async def one(i: int) -> None:
        nonlocal matched
        row = i % len(x)
        async with sem:
            t0 = time.perf_counter()
            result = await client.infer(info.hash, x[row:row + 1])
            latencies.append((time.perf_counter() - t0) * 1000)
        assert result.outputs is not None
        matched += _matches(result.outputs, expected, names, row)
        if result.worker:
            workers.add(result.worker)
        if on_done:
            on_done()

    # Warm-up (not timed, not counted): every worker loads the model before the clock starts.
    await asyncio.gather(*(client.infer(info.hash, x[i:i + 1]) for i in range(WARMUP_JOBS)))
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    return DemoReport(jobs, matched, time.perf_counter() - t0, latencies, info.hash, workers)


@dataclass
class PaidReport:
    jobs: int
    paid: int
    price: int
    #: (who, before, after) in CIRO base units.
    balances: list[tuple[str, int, int]]
    settlement_txs: list[str]
    #: How they were paid: "prepaid" (a CiroLedger deposit, settled per worker batch) or "escrowed" (JobManager).
    how: str = "escrowed"

    def table(self) -> str:
        lines = [f"  paid jobs: {self.paid}/{self.jobs} settled on chain at {self.price / 1e18:g} CIRO each "
                 f"({len(self.settlement_txs)} settlement transaction(s))"]
        for who, before, after in self.balances:
            change = (after - before) / 1e18
            lines.append(f"  {who:<22} {before / 1e18:>14,.4f} -> {after / 1e18:>14,.4f} CIRO ({change:+.4f})")
        return "\n".join(lines)


async def run_paid_demo(client: AsyncCiroClient, model_path: Path, *, jobs: int = 10,
                        timeout_s: float = 120.0) -> PaidReport | None:
    """Pay, run and settle a few jobs on the gateway's chain; None when it has none. With a CiroLedger in the
    deployment they are prepaid (one deposit, settled per worker batch), else escrowed one by one (JobManager)."""
    info = await client.chain_info()
    if not info.get("enabled"):
        return None
    from .chain import ChainClient, CiroToken, account_address

    price = int(info["price_per_job"])
    model = await client.deploy(model_path, name="digits-demo")
    workers = [w for w in await client.workers() if w.get("admitted") and w.get("worker_key")]
    payer = client.payer()
    prepaid = bool(info.get("ledger"))
    holder = ("CiroLedger (deposits)", info["ledger"]) if prepaid else ("JobManager (escrow)", info["job_manager"])
    who = {"client (you)": account_address(payer.public_key), holder[0]: int(holder[1], 16),
           **{f"worker {w['id']}": account_address(int(w["worker_key"], 16)) for w in workers}}
    chain = await ChainClient.connect(info["rpc_url"], address=account_address(payer.public_key), identity=payer)
    token = CiroToken(chain, int(info["token"], 16))
    before = {k: await token.balance_of(a) for k, a in who.items()}
    x = digits_inputs()[:jobs]
    if prepaid:
        await client.deposit(jobs * price)
        results = await client.infer_batch(model.hash, x, prepaid=True)
    else:
        results = await client.infer_batch(model.hash, x, max_payment=2 * price)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [await client.status(r.job_id) for r in results]
        if all(r.settlement in ("paid", "error") for r in rows) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    after = {k: await token.balance_of(a) for k, a in who.items()}
    return PaidReport(jobs=len(rows), paid=sum(r.settlement == "paid" for r in rows), price=price,
                      balances=[(k, before[k], after[k]) for k in who],
                      settlement_txs=sorted({r.settlement_tx for r in rows if r.settlement_tx}),
                      how="prepaid" if prepaid else "escrowed")
