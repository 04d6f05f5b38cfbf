"""The Ray worker actor: cached onnxruntime sessions, batched execution, output commitments.

The class is plain Python; :func:`ciro_ray.pool.WorkerPool` wraps it with ``ray.remote`` and
the placement options (``num_cpus``/``num_gpus``) it needs, so it is testable without Ray.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ciro import Config, KeyStore, VerificationLevel, WorkerError, commitment
from ciro.receipts import JobLeaf, sign_batch

__all__ = ["RECEIPT_LEVELS", "JobMeta", "OnnxWorker"]

#: Levels whose results carry a worker-signed receipt.
RECEIPT_LEVELS = frozenset(level for level in VerificationLevel if level.signs_receipt)

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class JobMeta:
    """What a worker needs to sign a receipt for one job: for a paid job also the price it is owed (the gateway's
    price, which the client's escrow covers) and the client's account on chain."""

    job_id: str
    level: str
    input_commitment: str
    price: int = 0
    client: str = "0x0"


class OnnxWorker:
    def __init__(self, worker_id: str, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 home: str | None = None, key_name: str | None = None) -> None:
        import onnxruntime as ort

        self.worker_id = worker_id
        # The worker's identity lives in the key store of the node it runs on.
        node_cfg = Config.load()  # this node's settings (the environment `ray start` ran in)
        keys = KeyStore(Path(home or node_cfg.home) / "keys")
        self.provider = node_cfg.provider
        self.identity = keys.get_or_create(key_name or f"worker-{worker_id}")
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self._ort = ort
        available = ort.get_available_providers()
        self.execution_providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if num_gpus > 0 and "CUDAExecutionProvider" in available
            else ["CPUExecutionProvider"]
        )
        hardware = _gpu_hardware(node_cfg) if num_gpus > 0 else (None, 0.0, None)
        self.gpu_model, self.gpu_memory_gb, self.gpu_source = hardware
        self._sessions: dict[str, Any] = {}
        self._batchable: dict[str, bool] = {}
        self.started_at = time.time()
        self.jobs_done = 0

    # -- introspection -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        node_id = None
        try:
            import ray

            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        except ImportError:  # running without Ray (unit tests)
            pass
        return {
            "id": self.worker_id,
            "worker_key": self.identity.public_hex,
            "node_id": node_id,
            "provider": self.provider or f"node:{node_id}",
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "platform": platform.platform(terse=True),
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "gpu_model": self.gpu_model,
            "gpu_memory_gb": self.gpu_memory_gb,
            "gpu_source": self.gpu_source,
            "execution_providers": self.execution_providers,
            "onnxruntime": self._ort.__version__,
            "models_loaded": sorted(self._sessions),
            "jobs_done": self.jobs_done,
            "started_at": self.started_at,
        }

    def ping(self) -> str:
        return self.worker_id

    # -- execution -----------------------------------------------------------------------
    def _session(self, model_hash: str, model_box: list[Any]) -> Any:
        sess = self._sessions.get(model_hash)
        if sess is not None:
            return sess
        data = model_box[0]
        if not isinstance(data, bytes | bytearray | memoryview):
            import ray  # an ObjectRef to the model bytes in the object store

            data = ray.get(data)
        data = bytes(data)
        if hashlib.sha256(data).hexdigest() != model_hash:
            raise WorkerError(
                f"Model bytes received for {model_hash[:12]} do not hash to it; refusing to run them. "
                "Redeploy the model."
            )
        opts = self._ort.SessionOptions()
        threads = max(1, int(self.num_cpus))
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if threads == 1:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = self._ort.InferenceSession(data, opts, providers=self.execution_providers)
        self._sessions[model_hash] = sess
        # A batch can be concatenated along axis 0 only when every input's first dim is free.
        self._batchable[model_hash] = all(
            a.shape and not isinstance(a.shape[0], int) for a in sess.get_inputs()
        )
        return sess

    def _infer(self, model_hash: str, model_box: list[Any], batch: list[Tensors]) -> list[Tensors]:
        """The outputs of each job of the batch (one onnxruntime call when the batch stacks)."""
        sess = self._session(model_hash, model_box)
        names = [o.name for o in sess.get_outputs()]
        results: list[Tensors] | None = None
        if len(batch) > 1 and self._batchable[model_hash]:
            results = _run_concatenated(sess, names, batch)
        if results is None:
            results = [dict(zip(names, sess.run(names, job), strict=True)) for job in batch]
        return results

    def run(self, model_hash: str, model_box: list[Any], batch: list[Tensors],
            metas: list[JobMeta] | None = None) -> list[tuple[Tensors, str, dict[str, Any] | None]]:
        """Run a batch of jobs; returns (outputs, output commitment, receipt or None) per job, in order.

        The jobs whose level asks for a receipt get one Merkle receipt each under ONE signature over the batch's
        root (``ciro.receipts.sign_batch``), over the input commitments this worker computed itself from the
        inputs it received (it never signs a claim it did not check).
        """
        results = self._infer(model_hash, model_box, batch)
        self.jobs_done += len(batch)
        commits = [commitment(res) for res in results]
        signed = [(i, m) for i, m in enumerate(metas or []) if m.level in RECEIPT_LEVELS]
        leaves = [JobLeaf(m.job_id, model_hash, commitment(batch[i]), commits[i], m.level, m.price, m.client)
                  for i, m in signed]
        receipts = {i: r.to_dict() for (i, _), r in zip(signed, sign_batch(self.identity, leaves), strict=True)}
        return [(res, oc, receipts.get(i)) for i, (res, oc) in enumerate(zip(results, commits, strict=True))]

def _gpu_hardware(node_cfg: Config) -> tuple[str | None, float, str | None]:
    """(model, memory in GB, "detected" | "declared") of this node's GPU: nvidia-smi, else the provider's
    declaration (gpu_model / gpu_memory_gb in the node's configuration, which `ciro provider join` sets)."""
    from .hardware import nvidia_gpus

    if node_cfg.gpu_model or node_cfg.gpu_memory_gb:
        return node_cfg.gpu_model, node_cfg.gpu_memory_gb, "declared"
    found = nvidia_gpus()
    if found:
        return found[0][0], found[0][1], "detected"
    return None, 0.0, None


def _run_concatenated(sess: Any, names: list[str], batch: list[Tensors]) -> list[Tensors] | None:
    """One session call for the whole batch, split back per job; None if the batch does not stack."""
    keys = batch[0].keys()
    if any(job.keys() != keys for job in batch):
        return None
    rows = [next(iter(job.values())).shape[0] for job in batch]
    for name in keys:
        first = batch[0][name]
        if any(job[name].shape[1:] != first.shape[1:] or job[name].dtype != first.dtype for job in batch):
            return None
        if any(job[name].shape[0] != r for job, r in zip(batch, rows, strict=True)):
            return None
    stacked = {name: np.concatenate([job[name] for job in batch], axis=0) for name in keys}
    outs = sess.run(names, stacked)
    total = sum(rows)
    if any(o.ndim == 0 or o.shape[0] != total for o in outs):
        return None  # an output that is not per-row: the model must run job by job
    bounds = np.cumsum([0, *rows])
    return [
        {n: np.ascontiguousarray(o[bounds[i]:bounds[i + 1]]) for n, o in zip(names, outs, strict=True)}
        for i in range(len(batch))
    ]
