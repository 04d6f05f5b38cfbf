"""Dispatch queued jobs to worker actors: one queue per model, a loop that sends every batch that may leave.

What leaves and where is chosen by ``batching.choose_batch`` (a pure function of the queue and the pool); a
batch then runs on its worker (``runs.BatchRunner``) or, for a quorum, on k workers (``quorum_runs.QuorumRunner``);
zk jobs are proven after their worker answers (``zk_jobs.ZkJobs``); every job ends through ``outcomes.Finisher``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any

from ciro import Config, ModelStore

from .batching import DEFAULT_SERVING, Choice, Pending, Serving, choose_batch, gpu_preference, job_fit
from .jobstore import JobStore
from .metrics import Metrics
from .outcomes import Finisher, Outcome, Waiters
from .pool import WorkerHandle, WorkerPool
from .quorum_runs import QuorumRunner
from .runs import BatchRunner, ModelBoxes
from .zk_jobs import ZkJobs

__all__ = ["DEFAULT_SERVING", "Outcome", "Pending", "Scheduler", "Serving", "gpu_preference", "job_fit"]


class Scheduler:
    def __init__(self, cfg: Config, store: JobStore, models: ModelStore, pool: WorkerPool, metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.models = models
        self.pool = pool
        self.metrics = metrics
        self.queues: dict[str, deque[Pending]] = {}
        self._wake = asyncio.Event()
        self._waiters = Waiters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        pool.on_ready = self._wake.set
        #: Per-model serving settings from deployments (model hash -> Serving).
        self.serving: dict[str, Serving] = {}
        #: Batches in flight per model and worker id (for the replicas cap).
        self._busy: dict[str, Counter[str]] = {}
        self.finisher = Finisher(store, metrics, self._waiters, max_attempts=cfg.max_attempts,
                                 requeue=lambda jobs: self.enqueue(jobs, front=True))
        self.zk = ZkJobs(cfg, models, self.finisher)
        boxes = ModelBoxes(models)
        self.runner = BatchRunner(pool, metrics, boxes, self.finisher, self.zk, self._spawn_task)
        self.quorum = QuorumRunner(pool, metrics, boxes, self.finisher, cfg.max_attempts)

    # -- queue ---------------------------------------------------------------------------
    def enqueue(self, jobs: list[Pending], *, front: bool = False) -> None:
        for job in jobs:
            q = self.queues.setdefault(job.model_hash, deque())
            if front:
                q.appendleft(job)
            else:
                q.append(job)
        self.metrics.queue_depth.set(self.depth())
        self._wake.set()

    def depth(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def waiter(self, job_id: str) -> asyncio.Future[Outcome]:
        return self._waiters.add(job_id)

    def drop_waiter(self, job_id: str, fut: asyncio.Future[Outcome]) -> None:
        self._waiters.drop(job_id, fut)

    def notify(self, job_id: str, outcome: Outcome) -> None:
        self._waiters.notify(job_id, outcome)

    def prover(self) -> Any:
        """The proving actor, started on first use on this (the model store's) node."""
        return self.zk.prover()

    # -- dispatch loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.zk.stop()

    async def _run(self) -> None:
        while True:
            timeout = self._dispatch_ready()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch_ready(self) -> float | None:
        """Send every batch that may leave now; return how long until the next one may."""
        next_due: float | None = None
        while True:
            # The model whose head job has waited longest goes first; a model no free worker fits waits.
            models = sorted((m for m, q in self.queues.items() if q), key=lambda m: self.queues[m][0].enqueued_at)
            for model in models:
                choice = self.take_batch(model)
                if isinstance(choice, Choice):
                    self._launch(choice, model)
                    break
                if isinstance(choice, float):
                    next_due = choice if next_due is None else min(choice, next_due)
            else:
                return next_due

    def take_batch(self, model: str) -> Choice | float | None:
        """Remove from ``model``'s queue the batch that may leave now and return it (not launched yet); else the
        seconds until one is due, or None."""
        q = self.queues[model]
        choice = choose_batch(q, self.serving.get(model, DEFAULT_SERVING), self.pool, busy=self._busy.get(model),
                              max_batch_size=self.cfg.max_batch_size, batch_timeout_s=self.cfg.batch_timeout_ms / 1000)
        if isinstance(choice, Choice):
            _remove(q, choice.jobs)
        return choice

    def _launch(self, choice: Choice, model: str) -> None:
        self.metrics.queue_depth.set(self.depth())
        workers = list(choice.workers)
        busy = self._busy.setdefault(model, Counter())
        for w in workers:
            w.inflight += 1
            busy[w.id] += 1
        if choice.quorum is not None:
            run = self.quorum.run(workers, model, list(choice.jobs), choice.quorum)
        else:
            run = self.runner.run(workers[0], model, list(choice.jobs))
        self._spawn_task(self._released(run, model, workers))

    async def _released(self, run: Coroutine[Any, Any, None], model: str, workers: list[WorkerHandle]) -> None:
        try:
            await run
        finally:
            busy = self._busy.get(model)
            for w in workers:
                w.inflight -= 1
                if busy is not None:
                    busy[w.id] -= 1
                    if busy[w.id] <= 0:
                        del busy[w.id]
            self._wake.set()

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _remove(q: deque[Pending], jobs: tuple[Pending, ...]) -> None:
    """Take ``jobs`` out of ``q``: from the head when they lead it (the usual case), else wherever they are."""
    n = len(jobs)
    if all(q[i] is p for i, p in enumerate(jobs)):
        for _ in range(n):
            q.popleft()
        return
    taken = {id(p) for p in jobs}
    kept = [p for p in q if id(p) not in taken]
    q.clear()
    q.extend(kept)
