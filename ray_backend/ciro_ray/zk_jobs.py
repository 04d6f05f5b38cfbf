"""zk jobs after their worker answered: proven on the gateway's node, completed with the proof, or failed with the
proof kept as evidence of the worker's invalid compute."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ciro import Config, InvalidComputeError, JobStatus, ModelStore, WorkerError, encode_json

from .batching import Pending
from .outcomes import Finisher, Outcome
from .proving import Prover

__all__ = ["ZkJobs"]

log = logging.getLogger("ciro.scheduler")
Tensors = dict[str, np.ndarray]


class ZkJobs:
    """Proves zk jobs, at most ``cfg.max_concurrent_proofs`` at a time, with one proving actor started on first
    use on this (the model store's) node."""

    def __init__(self, cfg: Config, models: ModelStore, finisher: Finisher) -> None:
        self.cfg = cfg
        self.models = models
        self.finisher = finisher
        self._slots = asyncio.Semaphore(cfg.max_concurrent_proofs)
        self._prover: Any = None

    def prover(self) -> Any:
        """The proving actor, started on first use on this node."""
        if self._prover is None:
            self._prover = ray.remote(Prover).options(
                num_cpus=0, max_concurrency=max(1, self.cfg.max_concurrent_proofs),
                scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                   soft=False)).remote()
        return self._prover

    async def stop(self) -> None:
        if self._prover is not None:
            try:
                await asyncio.wait_for(self._prover.stop.remote(), timeout=10)
            except Exception as exc:  # the actor is gone already
                log.debug("prover stop: %s", exc)

    async def prove(self, p: Pending, out: Tensors, blob: bytes, commit: str, receipt: dict[str, Any] | None,
                    worker_id: str, started: float) -> None:
        """Prove one zk job; complete it with the artifact when the proof's outputs are the worker's, else fail it
        and record the proof as evidence of the worker's invalid compute."""
        info = self.models.get(p.model_hash)
        async with self._slots:
            try:
                proved = await self.prover().prove.remote(
                    str(self.models.zk_dir(p.model_hash)), self.cfg.srs_dir, str(self.cfg.home),
                    [p.inputs[s.name] for s in info.inputs], p.model_hash, p.input_commitment, commit,
                    [out[s.name] for s in info.outputs], self.cfg.proof_timeout_s)
            except Exception as exc:  # a failed proof fails the job; it never passes as proven
                cause = getattr(exc, "cause", None) or exc
                self.finisher.fail([p], WorkerError(
                    f"Proving failed: {str(cause).splitlines()[0][:300]}. Resubmit; if it fails again, check the "
                    "model's zk set-up (GET /v1/models/REF)."))
                return
        artifact, gap, tol = proved["artifact"], float(proved["output_gap"]), float(proved["tolerance"])
        if not gap <= tol:
            self._reject(p, out, commit, receipt, worker_id, artifact, gap, tol)
            return
        evidence = {"receipt": receipt, "zk": artifact}
        self.finisher.complete([(p, (p.id, p.attempt, commit, blob, worker_id, json.dumps(evidence)),
                                 Outcome(JobStatus.DONE, out, commit, worker_id, p.attempt, started, time.time(),
                                         evidence=evidence))])

    def _reject(self, p: Pending, out: Tensors, commit: str, receipt: dict[str, Any] | None, worker_id: str,
                artifact: dict[str, Any], gap: float, tol: float) -> None:
        """The proof shows the model's outputs on the job's inputs differ from what the worker returned (and
        signed): the job fails, and the proof, the worker's outputs and its receipt become a fault record, which
        the settler files on chain as invalid compute."""
        worker_key = str((receipt or {}).get("worker_key") or "")
        self.finisher.store.record_faults([(p.id, worker_key, worker_id, "invalid_compute", {
            "reason": "zk_output_mismatch", "output_commitment": commit, "outputs": encode_json(out),
            "receipt": receipt, "output_gap": gap, "tolerance": tol, "zk": artifact})])
        self.finisher.metrics.invalid_compute.inc()
        self.finisher.fail([p], InvalidComputeError(
            f"Worker {worker_id} returned outputs {gap:.3g} away from what the model computes on these inputs "
            f"(the zk proof's outputs; tolerance {tol:.2g}). Its result was rejected and the worker reported for "
            "invalid compute (GET /v1/faults). Resubmit the job.",
            detail={"worker": worker_id, "worker_key": worker_key, "output_gap": gap, "tolerance": tol}))
