"""How a dispatched job ends: completed, failed, or queued again; the store, the metrics and the waiters told once.

``Finisher`` is what the batch runner, the quorum runner and the zk prover share: each decides an outcome, this
records it (the job store's conditional updates make a stale attempt or a cancelled job a no-op; a completed job
becomes the result cache's entry for its key) and wakes whoever waits for the job (``POST /v1/jobs?wait=...``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ciro import CiroError, JobStatus, WorkerError

from .batching import Pending
from .jobstore import JobStore
from .metrics import Metrics

__all__ = ["Finisher", "Outcome", "Waiters"]

Tensors = dict[str, np.ndarray]
#: A completed job's row for ``JobStore.complete``: id, attempt, output commitment, outputs, worker, evidence JSON.
DoneRow = tuple[str, int, str, bytes, str, str | None]


@dataclass(frozen=True)
class Outcome:
    """What a waiter learns when a job reaches a final state."""

    status: JobStatus
    outputs: Tensors | None = None
    output_commitment: str | None = None
    worker: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None


class Waiters:
    """Futures of requests waiting for a job's final state."""

    def __init__(self) -> None:
        self._futures: dict[str, list[asyncio.Future[Outcome]]] = {}

    def add(self, job_id: str) -> asyncio.Future[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(job_id, []).append(fut)
        return fut

    def drop(self, job_id: str, fut: asyncio.Future[Outcome]) -> None:
        futs = self._futures.get(job_id)
        if futs and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._futures[job_id]

    def notify(self, job_id: str, outcome: Outcome) -> None:
        for fut in self._futures.pop(job_id, []):
            if not fut.done():
                fut.set_result(outcome)


class Finisher:
    """Records final states and retries. ``requeue``: puts jobs back at the head of their queues."""

    def __init__(self, store: JobStore, metrics: Metrics, waiters: Waiters, *, max_attempts: int,
                 requeue: Callable[[list[Pending]], None]) -> None:
        self.store = store
        self.metrics = metrics
        self.waiters = waiters
        self.max_attempts = max_attempts
        self._requeue = requeue

    def complete(self, done: Sequence[tuple[Pending, DoneRow, Outcome]]) -> set[str]:
        """Store each job's result, make it the result cache's entry for its key (only here: a failed, cancelled
        or still proving job is never reused), and wake its waiters; returns the ids that completed (not cancelled
        meanwhile, not a stale attempt)."""
        completed = self.store.complete([row for _, row, _ in done]) if done else set()
        self.store.results.record([p.id for p, _, _ in done if p.id in completed])
        now = time.time()
        for p, _, outcome in done:
            if p.id in completed:
                self.metrics.jobs_finished.labels("done").inc()
                self.metrics.job_latency.observe(now - p.submitted_at)
                self.waiters.notify(p.id, outcome)
        return completed

    def fail(self, batch: Sequence[Pending], err: CiroError) -> None:
        payload = err.to_payload()["error"]
        failed = self.store.fail([(p.id, p.attempt, payload) for p in batch])
        now = time.time()
        for p in batch:
            if p.id in failed:
                self.metrics.jobs_finished.labels("failed").inc()
                self.waiters.notify(p.id, Outcome(JobStatus.FAILED, attempts=p.attempt, finished_at=now,
                                                  error=payload))

    def retry(self, batch: Sequence[Pending], reason: str) -> None:
        """Queue again the jobs a worker's death interrupted, while they have attempts left; fail the others."""
        again = [p for p in batch if p.attempt < self.max_attempts]
        out_of_tries = [p for p in batch if p.attempt >= self.max_attempts]
        requeued = self.store.requeue([(p.id, p.attempt) for p in again])
        self.metrics.retries.inc(len(requeued))
        self._requeue([p for p in again if p.id in requeued])
        if out_of_tries:
            self.fail(out_of_tries, WorkerError(
                f"The job failed {self.max_attempts} times because its worker died ({reason}). "
                "Check the workers (GET /v1/workers) and resubmit."))

    def mark_running(self, batch: list[Pending], worker: str) -> list[Pending]:
        """Move the batch to running on ``worker``; returns the jobs that moved (a cancelled one does not), each
        with its new attempt number."""
        moved = self.store.mark_running([p.id for p in batch], worker)
        batch = [p for p in batch if p.id in moved]
        for p in batch:
            p.attempt = moved[p.id]
        if batch:
            self.metrics.batch_size.observe(len(batch))
        return batch
