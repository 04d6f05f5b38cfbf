"""zk jobs after their worker answered: proven on the gateway's node, completed with the proof, or failed with the
proof kept as evidence of the worker's invalid compute.

Jobs of one model that wait for a proof together are proven together (``ciro.zk_batch``): a model's answered zk jobs
queue here; when a proving slot is free, the largest bucket (``zk_batch_buckets``) is full, or the oldest has waited
``zk_batch_wait_ms``, up to the largest bucket of them leave as one proof over the smallest bucket B that holds them
(``batching.zk_bucket``), with the (model, B) set-up made on first use. A bucket of one is proven as before with the
model's own set-up; so is every job of a model without a batch dim or with hashed inputs or outputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ciro import Config, InvalidComputeError, JobStatus, ModelStore, WorkerError, encode_json
from ciro.zk_batch import batch_dim, batch_dir

from .batching import Pending, smallest_bucket, zk_bucket, zk_buckets
from .outcomes import Finisher, Outcome
from .proving import Prover, run_setup

__all__ = ["ZkJobs"]

log = logging.getLogger("ciro.scheduler")
Tensors = dict[str, np.ndarray]


@dataclass
class _Answered:
    """A zk job its worker answered, waiting for its proof."""

    p: Pending
    out: Tensors
    blob: bytes
    commit: str
    receipt: dict[str, Any] | None
    worker_id: str
    started: float
    arrived: float = field(default_factory=time.monotonic)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ZkJobs:
    """Proves zk jobs, at most ``cfg.max_concurrent_proofs`` proofs at a time, with one proving actor started on
    first use on this (the model store's) node; a model's jobs that wait together share one proof."""

    def __init__(self, cfg: Config, models: ModelStore, finisher: Finisher) -> None:
        self.cfg = cfg
        self.models = models
        self.finisher = finisher
        self.buckets = zk_buckets(cfg.zk_batch_buckets)
        self._slots = asyncio.Semaphore(cfg.max_concurrent_proofs)
        self._prover: Any = None
        self._queues: dict[str, list[_Answered]] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._batchable: dict[str, bool] = {}
        self._setups: dict[tuple[str, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
        """Prove one zk job (alone or in a batch of its model's); complete it with the artifact when the proof's
        outputs are the worker's, else fail it and record the proof as evidence of the worker's invalid compute.
        Returns when the job is finished."""
        job = _Answered(p, out, blob, commit, receipt, worker_id, started)
        if self.buckets[-1] == 1 or not self._can_batch(p):
            async with self._slots:
                await self._prove([job], 1)
            return
        queue = self._queues.setdefault(p.model_hash, [])
        queue.append(job)
        if len(queue) == 1:  # the first of a batch: collect the model's jobs until they leave
            self._spawn(self._collect(p.model_hash))
        self._arrived.setdefault(p.model_hash, asyncio.Event()).set()
        await job.done

    def _can_batch(self, p: Pending) -> bool:
        """Whether ``p`` may share a proof: one row, of a model with a batch dim whose set-up is public/public."""
        if any(np.ndim(a) == 0 or np.shape(a)[0] != 1 for a in p.inputs.values()):
            return False  # proven alone, as before batching
        status = self.models.zk_status(p.model_hash) or {}
        if (status.get("input_visibility"), status.get("output_visibility")) != ("public", "public"):
            return False
        if p.model_hash not in self._batchable:
            try:
                self._batchable[p.model_hash] = batch_dim(self.models.read_bytes(p.model_hash)) is not None
            except Exception as exc:  # an unreadable model: proven alone, which reports what is wrong
                log.warning("zk batching of %s: %s", p.model_hash[:12], exc)
                self._batchable[p.model_hash] = False
        return self._batchable[p.model_hash]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, model: str) -> None:
        """Send this model's queued jobs to proving, a batch at a time, until its queue is empty."""
        queue, arrived = self._queues[model], self._arrived.setdefault(model, asyncio.Event())
        wait_s = self.cfg.zk_batch_wait_ms / 1000
        while queue:
            plan = zk_bucket(len(queue), time.monotonic() - queue[0].arrived, wait_s, self.buckets)
            if isinstance(plan, float):
                arrived.clear()
                with contextlib.suppress(TimeoutError):  # a new job may fill the largest bucket: look again then
                    await asyncio.wait_for(arrived.wait(), timeout=plan)
                continue
            await self._slots.acquire()  # jobs that arrive meanwhile join this batch, up to the largest bucket
            jobs = queue[:self.buckets[-1]]
            del queue[:len(jobs)]
            self._spawn(self._prove_released(jobs, smallest_bucket(len(jobs), self.buckets)))

    async def _prove_released(self, jobs: list[_Answered], bucket: int) -> None:
        try:
            await self._prove(jobs, bucket)
        finally:
            self._slots.release()

    async def _setup(self, model: str, bucket: int) -> str:
        """The (model, B) set-up's folder, made on first use (one at a time per model and B)."""
        one = self.models.zk_dir(model)
        folder = batch_dir(one, bucket)
        status = self.models.zk_status(model) or {}
        async with self._setups.setdefault((model, bucket), asyncio.Lock()):
            meta = json.loads((folder / "setup.json").read_text()) if (folder / "setup.json").is_file() else {}
            if [meta.get(k) for k in ("input_visibility", "output_visibility")] != [
                    status.get(k) for k in ("input_visibility", "output_visibility")]:
                from ciro.estimate import calibration_sample

                data = self.models.read_bytes(model)
                t0 = time.perf_counter()
                await asyncio.to_thread(run_setup, data, folder, calibration_sample(data), self.cfg.srs_dir,
                                        str(self.cfg.home), status.get("input_visibility", "public"),
                                        status.get("output_visibility", "public"), bucket)
                log.info("zk set-up of %s for batches of %d made in %.1f s", model[:12], bucket,
                         time.perf_counter() - t0)
        return str(folder)

    async def _prove(self, jobs: list[_Answered], bucket: int) -> None:
        """One proof for ``jobs`` (a bucket of ``bucket`` rows); every job is finished when this returns."""
        p0 = jobs[0].p
        info = self.models.get(p0.model_hash)
        try:
            try:
                payload = [{"inputs": [j.p.inputs[s.name] for s in info.inputs], "input_commitment":
                            j.p.input_commitment, "output_commitment": j.commit,
                            "outputs": [j.out[s.name] for s in info.outputs]} for j in jobs]
                if bucket == 1:
                    proved = [await self.prover().prove.remote(
                        str(self.models.zk_dir(p0.model_hash)), self.cfg.srs_dir, str(self.cfg.home),
                        payload[0]["inputs"], p0.model_hash, p0.input_commitment, jobs[0].commit,
                        payload[0]["outputs"], self.cfg.proof_timeout_s)]
                else:
                    try:
                        folder = await self._setup(p0.model_hash, bucket)
                    except Exception as exc:  # e.g. the B-row circuit is too large: prove the jobs one by one
                        log.warning("zk set-up of %s for batches of %d failed (%s): proving its jobs one at a time",
                                    p0.model_hash[:12], bucket, str(getattr(exc, "cause", None) or exc)[:300])
                        self._batchable[p0.model_hash] = False
                        for j in jobs:
                            await self._prove([j], 1)
                        return
                    proved = await self.prover().prove_batch.remote(
                        folder, self.cfg.srs_dir, str(self.cfg.home), p0.model_hash, payload,
                        self.cfg.proof_timeout_s)
            except Exception as exc:  # a failed proof fails the job; it never passes as proven
                cause = getattr(exc, "cause", None) or exc
                self.finisher.fail([j.p for j in jobs], WorkerError(
                    f"Proving failed: {str(cause).splitlines()[0][:300]}. Resubmit; if it fails again, check the "
                    "model's zk set-up (GET /v1/models/REF)."))
                return
            for j, res in zip(jobs, proved, strict=True):
                self._finish(j, res)
        finally:
            for j in jobs:
                if not j.done.done():
                    j.done.set_result(None)

    def _finish(self, j: _Answered, proved: dict[str, Any]) -> None:
        p, out, commit, receipt = j.p, j.out, j.commit, j.receipt
        artifact, gap, tol = proved["artifact"], float(proved["output_gap"]), float(proved["tolerance"])
        if not gap <= tol:
            self._reject(p, out, commit, receipt, j.worker_id, artifact, gap, tol)
            return
        evidence = {"receipt": receipt, "zk": artifact}
        self.finisher.complete([(p, (p.id, p.attempt, commit, j.blob, j.worker_id, json.dumps(evidence)),
                                 Outcome(JobStatus.DONE, out, commit, j.worker_id, p.attempt, j.started, time.time(),
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
