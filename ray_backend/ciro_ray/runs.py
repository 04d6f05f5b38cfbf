"""A batch on one worker: the Ray call, the checks on each reply, retry on a worker's death, and each job's end.

A reply is accepted only when its output commitment is the hash of its outputs and, at levels that sign, its
receipt describes this job, this model, these inputs and outputs and this worker's key. (The signature itself is
checked by whoever relies on it, offline: `ciro verify`; checking it here would cost 0.5 ms of gateway CPU a job.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from ciro import JobStatus, ModelStore, VerificationLevel, WorkerError, canonical_bytes
from ciro.receipts import MERKLE_SCHEME

from .batching import Pending
from .metrics import Metrics
from .outcomes import DoneRow, Finisher, Outcome
from .pool import WorkerHandle, WorkerPool
from .worker import RECEIPT_LEVELS, JobMeta
from .zk_jobs import ZkJobs

__all__ = ["BatchRunner", "ModelBoxes", "reply_problem"]

log = logging.getLogger("ciro.scheduler")
Tensors = dict[str, np.ndarray]
Reply = tuple[Tensors, str, dict[str, Any] | None]


def reply_problem(blob: bytes, commit: str, receipt: dict[str, Any] | None, p: Pending,
                  worker: WorkerHandle) -> str | None:
    """Why a worker's reply for job ``p`` cannot be accepted (``blob``: the canonical bytes of its outputs)."""
    if hashlib.sha256(blob).hexdigest() != commit:
        return "an output commitment that does not match its outputs"
    return _receipt_problem(receipt, p, commit, worker) if p.verification in RECEIPT_LEVELS else None


def _receipt_problem(receipt: dict[str, Any] | None, p: Pending, commit: str, worker: WorkerHandle) -> str | None:
    """Every field of the worker's receipt must describe this job."""
    if receipt is None:
        return "no receipt for a job that asked for one"
    expected = {"job_id": p.id, "model_hash": p.model_hash, "input_commitment":
                p.input_commitment, "output_commitment": commit, "level": p.verification,
                "worker_key": worker.info.get("worker_key"), "price": str(p.price), "client": p.payer,
                "scheme": MERKLE_SCHEME}
    wrong = sorted(k for k, v in expected.items() if receipt.get(k) != v)
    return f"a receipt whose {', '.join(wrong)} do not match the job" if wrong else None


def metas(batch: list[Pending]) -> list[JobMeta]:
    return [JobMeta(p.id, p.verification, p.input_commitment, p.price, p.payer) for p in batch]


class ModelBoxes:
    """Each model's bytes put in Ray's object store once (a one-element list, so workers get the reference)."""

    def __init__(self, models: ModelStore) -> None:
        self.models = models
        self._boxes: dict[str, list[Any]] = {}

    def get(self, model_hash: str) -> list[Any]:
        box = self._boxes.get(model_hash)
        if box is None:
            box = [ray.put(self.models.read_bytes(model_hash))]
            self._boxes[model_hash] = box
        return box


class BatchRunner:
    """Runs a batch on one worker and ends each of its jobs (zk jobs go on to ``zk``)."""

    def __init__(self, pool: WorkerPool, metrics: Metrics, boxes: ModelBoxes, finisher: Finisher, zk: ZkJobs,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.pool = pool
        self.metrics = metrics
        self.boxes = boxes
        self.finisher = finisher
        self.zk = zk
        self._spawn = spawn

    async def run(self, worker: WorkerHandle, model: str, batch: list[Pending]) -> None:
        try:
            batch = self.finisher.mark_running(batch, worker.id)
            if batch:
                await self._call(worker, model, batch)
        except Exception:  # never lose a batch silently: fail it loudly
            log.exception("dispatch of %d jobs failed", len(batch))
            self.finisher.fail(batch, WorkerError("Internal error while dispatching the job. See the gateway log."))

    async def _call(self, worker: WorkerHandle, model: str, batch: list[Pending]) -> None:
        started = time.time()
        try:
            ref = worker.actor.run.remote(model, self.boxes.get(model), [p.inputs for p in batch], metas(batch))
            results = await ref
        except RayActorError as exc:
            self.metrics.worker_deaths.inc()
            self.pool.mark_dead(worker, exc)
            self.finisher.retry(batch, f"worker {worker.id} died: {type(exc).__name__}")
            return
        except RayTaskError as exc:
            if len(batch) > 1:  # isolate the job that broke the batch
                for p in batch:
                    await self._call(worker, model, [p])
                return
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            msg = str(cause).strip().splitlines()[0][:500] if str(cause).strip() else type(cause).__name__
            self.finisher.fail(batch, WorkerError(f"The model failed on this input: {msg}. Check the input values."))
            return
        self._complete(worker, batch, results, started)

    def _complete(self, worker: WorkerHandle, batch: list[Pending], results: list[Reply], started: float) -> None:
        done: list[tuple[Pending, DoneRow, Outcome]] = []
        now = time.time()
        for p, (out, commit, receipt) in zip(batch, results, strict=True):
            blob = canonical_bytes(out)  # stored as is, and hashed once to check the worker's commitment
            problem = reply_problem(blob, commit, receipt, p, worker)
            if problem:
                self.finisher.fail([p], WorkerError(f"Worker {worker.id} returned {problem}. Report this worker; "
                                                    "resubmit the job."))
                continue
            evidence = json.dumps({"receipt": receipt}) if receipt else None
            if p.verification == VerificationLevel.ZKML:  # outputs are kept now; the job is done when its proof is
                if self.finisher.store.mark_proving(p.id, p.attempt, commit, blob, worker.id, evidence):
                    self._spawn(self.zk.prove(p, out, blob, commit, receipt, worker.id, started))
                continue
            done.append((p, (p.id, p.attempt, commit, blob, worker.id, evidence),
                         Outcome(JobStatus.DONE, out, commit, worker.id, p.attempt, started, now,
                                 evidence={"receipt": receipt} if receipt else None)))
        self.finisher.complete(done)


async def gather_replies(workers: list[WorkerHandle], boxes: ModelBoxes, model: str,
                         batch: list[Pending]) -> list[Any]:
    """The same batch on each of ``workers`` at once; a reply is the worker's results or its exception."""
    box = boxes.get(model)
    return await asyncio.gather(*(w.actor.run.remote(model, box, [p.inputs for p in batch], metas(batch))
                                  for w in workers), return_exceptions=True)
