"""Dispatch queued jobs to worker actors with dynamic batching, retry on worker death.

Batching policy: when a worker is idle, whatever is queued for a model (up to ``max_batch_size``)
goes at once, so a lone job pays no batching delay. While every worker is busy, jobs accumulate
and a batch leaves when it reaches ``max_batch_size`` or its oldest job has waited
``batch_timeout_ms``. Each worker takes at most ``PIPELINE`` batches in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ciro import (
    CiroError,
    Config,
    InputError,
    InvalidComputeError,
    JobStatus,
    ModelStore,
    NoQuorumError,
    QuorumPolicy,
    WorkerError,
    canonical_bytes,
    encode_json,
)
from ciro.quorum import group_votes

from .fit import FIT_OPTIONS, Fit
from .jobstore import JobStore
from .metrics import Metrics
from .pool import WorkerHandle, WorkerPool
from .proving import Prover
from .worker import RECEIPT_LEVELS, JobMeta

__all__ = ["DEFAULT_SERVING", "Outcome", "Pending", "Scheduler", "Serving", "admit_fit", "hardware_summary",
           "job_fit", "unfit_error"]

log = logging.getLogger("ciro.scheduler")
PIPELINE = 2
#: How far past a blocked head the scheduler looks for jobs that need other hardware.
LOOKAHEAD = 128

Tensors = dict[str, np.ndarray]


@dataclass
class Pending:
    id: str
    model_hash: str
    inputs: Tensors
    input_commitment: str
    verification: str
    submitted_at: float
    options: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    enqueued_at: float = field(default_factory=time.monotonic)
    client: str | None = None
    settlement: str | None = None

    @property
    def quorum(self) -> QuorumPolicy | None:
        return QuorumPolicy.from_options(self.options) if self.verification == "quorum" else None


@dataclass(frozen=True)
class Serving:
    """How a deployed model is served: jobs per batch, how many workers run it at once, the hardware they need."""

    max_batch_size: int | None = None
    replicas: int | None = None
    fit: Fit = field(default_factory=Fit)


DEFAULT_SERVING = Serving()


def job_fit(serving: Serving, p: Pending) -> Fit:
    """The hardware job ``p`` needs: its options' requirement on top of its deployment's. The gateway refuses
    invalid or conflicting options at admission; one that slips through (a job stored before its deployment
    changed) counts as asking for nothing beyond the deployment."""
    if not any(k in p.options for k in FIT_OPTIONS):
        return serving.fit
    try:
        return serving.fit.merge(Fit.of(p.options))
    except InputError:
        return serving.fit


def gpu_preference(p: Pending) -> Callable[[WorkerHandle], bool] | None:
    """A job's ``gpu="H100"`` (the SDK's ``gpu_preference``): prefer free workers whose GPU model contains it,
    else any free worker that fits (a preference, unlike ``gpu_model``, never makes a job wait)."""
    want = p.options.get("gpu")
    if not isinstance(want, str) or want.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return None
    name = want.lower()
    return lambda w: name in str(w.info.get("gpu_model") or "").lower() and float(w.info.get("num_gpus") or 0) > 0


def hardware_summary(pool: WorkerPool | None) -> str:
    """What the workers that may get jobs run on, e.g. "2 CPU-only, 1 with a 0.5 share of a GPU H100 (80 GB)"."""
    kinds: Counter[str] = Counter()
    for w in (pool.workers.values() if pool is not None else ()):
        if not (w.alive and w.admitted and not w.draining and w.info):
            continue
        share = float(w.info.get("num_gpus") or 0.0)
        if share <= 0:
            kinds["CPU-only"] += 1
            continue
        memory = float(w.info.get("gpu_memory_gb") or 0.0)
        size = "a whole GPU" if share == 1 else f"{share:g} GPUs" if share > 1 else f"a {share:g} share of a GPU"
        kinds[f"with {size} {w.info.get('gpu_model') or 'of unknown model'}"
              + (f" ({memory:g} GB)" if memory else "")] += 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "none"


def unfit_error(fit: Fit, pool: WorkerPool | None, *, subject: str, instead: str) -> InputError:
    """No eligible worker has the hardware ``fit`` requires: say what is required, what the workers have, the fix
    (``instead``: how to ask for less, e.g. "Submit without gpu")."""
    add = ("a worker without a GPU share (`ciro provider join --num-gpus 0` on a CPU machine)" if fit.cpu_only else
           "a provider node with such a GPU (`ciro provider join --num-gpus 1` on it; --gpu-model and "
           "--gpu-memory-gb declare a GPU nvidia-smi cannot see)")
    return InputError(f"No worker of this gateway fits {subject}: it requires {fit.describe()}, and the workers "
                      f"have: {hardware_summary(pool)} (GET /v1/workers). {instead}, or add {add}.",
                      detail={"required": fit.to_dict()})


def admit_fit(deployed: Fit, options: Mapping[str, Any], pool: WorkerPool | None) -> Fit:
    """The hardware a new job needs: its options' (a string ``gpu`` such as "H100" is a preference, recorded only)
    on top of its deployment's ``deployed``. Refused, with the fix, when its options are invalid, contradict the
    deployment, or no eligible worker has that hardware."""
    job = Fit.of(options)
    if (deployed.cpu_only and job.needs_gpu) or (job.cpu_only and deployed.needs_gpu):
        raise InputError(f"The job asks for {job.describe()} but its deployment requires {deployed.describe()}. "
                         f"Submit without {_fit_keys(job)}, or update the deployment.")
    fit = deployed.merge(job)
    if fit.any or (pool is not None and pool.eligible_count(fit) > 0):
        return fit
    if job.any:
        instead = "Update its deployment to require less"
    else:
        instead = f"Submit without {_fit_keys(job)}" + (
            "" if deployed.any else f" (its deployment also requires {deployed.describe()}: update it)")
    raise unfit_error(fit, pool, subject="this job", instead=instead)


def _fit_keys(fit: Fit) -> str:
    return "cpu_only" if fit.cpu_only else "gpu, gpu_model and gpu_memory_gb"


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


@dataclass(frozen=True)
class Vote:
    worker: WorkerHandle
    outputs: Tensors
    blob: bytes  # canonical bytes of the outputs
    commit: str
    receipt: dict[str, Any]


def _take(q: deque[Pending], n: int, fits: Callable[[Pending], bool]) -> list[Pending]:
    """Up to ``n`` jobs from the head of ``q`` while they fit the batch's kind."""
    batch: list[Pending] = []
    while q and len(batch) < n and fits(q[0]):
        batch.append(q.popleft())
    return batch


def _reply_problem(blob: bytes, commit: str, receipt: dict[str, Any] | None, p: Pending,
                   worker: WorkerHandle) -> str | None:
    """Why a worker's reply for job ``p`` cannot be accepted (``blob``: the canonical bytes of its outputs)."""
    if hashlib.sha256(blob).hexdigest() != commit:
        return "an output commitment that does not match its outputs"
    return _receipt_problem(receipt, p, commit, worker) if p.verification in RECEIPT_LEVELS else None


def _receipt_problem(receipt: dict[str, Any] | None, p: Pending, commit: str, worker: WorkerHandle) -> str | None:
    """Every field of the worker's receipt must describe this job. (The signature itself is checked by
    whoever relies on it, offline: `ciro verify`; checking it here would cost 0.5 ms of gateway CPU a job.)"""
    if receipt is None:
        return "no receipt for a job that asked for one"
    expected = {"job_id": p.id, "model_hash": p.model_hash, "input_commitment":
                p.input_commitment, "output_commitment": commit, "level": p.verification,
                "worker_key": worker.info.get("worker_key")}
    wrong = sorted(k for k, v in expected.items() if receipt.get(k) != v)
    return f"a receipt whose {', '.join(wrong)} do not match the job" if wrong else None


class Scheduler:
    def __init__(self, cfg: Config, store: JobStore, models: ModelStore, pool: WorkerPool, metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.models = models
        self.pool = pool
        self.metrics = metrics
        self.queues: dict[str, deque[Pending]] = {}
        self._wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._model_boxes: dict[str, list[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        pool.on_ready = self._wake.set
        self._proof_slots = asyncio.Semaphore(cfg.max_concurrent_proofs)
        self._prover: Any = None
        #: Per-model serving settings from deployments (model hash -> Serving).
        self.serving: dict[str, Serving] = {}
        #: Batches in flight per model and worker id (for the replicas cap).
        self._busy: dict[str, Counter[str]] = {}

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
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        return fut

    def drop_waiter(self, job_id: str, fut: asyncio.Future[Outcome]) -> None:
        futs = self._waiters.get(job_id)
        if futs and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiters[job_id]

    def notify(self, job_id: str, outcome: Outcome) -> None:
        for fut in self._waiters.pop(job_id, []):
            if not fut.done():
                fut.set_result(outcome)

    # -- dispatch loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._prover is not None:
            try:
                await asyncio.wait_for(self._prover.stop.remote(), timeout=10)
            except Exception as exc:  # the actor is gone already
                log.debug("prover stop: %s", exc)

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
                sent = self._dispatch_model(model)
                if sent is True:
                    break
                if isinstance(sent, float):
                    next_due = sent if next_due is None else min(sent, next_due)
            else:
                return next_due

    def _dispatch_model(self, model: str) -> bool | float | None:
        """Send one batch of ``model`` if a fitting worker is free (True); else None, or the seconds until its
        batch is due (a busy worker waits up to ``batch_timeout_ms`` for a fuller batch)."""
        q = self.queues[model]
        deployed = self.serving.get(model, DEFAULT_SERVING)
        fit = job_fit(deployed, q[0])  # the batch's hardware: jobs that need other hardware wait for their own
        serving = replace(deployed, fit=fit) if fit != deployed.fit else deployed
        max_n = min(self.cfg.max_batch_size, serving.max_batch_size or self.cfg.max_batch_size)
        policy = q[0].quorum
        if policy is not None:  # the same batch goes to k distinct workers (replicas does not cap a quorum)
            workers = self.pool.pick_distinct(policy.k, PIPELINE, self._fits(model, serving, capped=False))
            if workers is None:  # not enough free workers: a finishing batch or a new worker wakes us
                return self._dispatch_other_fit(model, deployed, fit)
            batch = _take(q, max_n, lambda p: p.quorum == policy and job_fit(deployed, p) == fit)
            self._launch(self._execute_quorum(workers, model, batch, policy), workers, model)
            return True
        worker = self.pool.pick(PIPELINE, self._fits(model, serving, capped=True), prefer=gpu_preference(q[0]))
        if worker is None:  # a finishing batch wakes us
            return self._dispatch_other_fit(model, deployed, fit)
        wait_s = self.cfg.batch_timeout_ms / 1000.0
        if worker.inflight > 0 and len(q) < max_n and wait_s > 0:
            due = q[0].enqueued_at + wait_s - time.monotonic()
            if due > 0:
                return due
        batch = _take(q, max_n, lambda p: p.verification != "quorum" and job_fit(deployed, p) == fit)
        self._launch(self._execute(worker, model, batch), [worker], model)
        return True

    def _dispatch_other_fit(self, model: str, deployed: Serving, blocked: Fit) -> bool | None:
        """No free worker has the hardware the head of ``model``'s queue needs. Send the first jobs, among the
        next LOOKAHEAD, that need other hardware a free worker has, so a busy GPU does not hold up the CPU jobs
        queued behind a GPU job. Quorum jobs keep their place; the head keeps its place too."""
        q = self.queues[model]
        tried = {blocked}
        for i, p in enumerate(itertools.islice(q, LOOKAHEAD)):
            fit = job_fit(deployed, p)
            if p.verification == "quorum" or fit in tried:
                continue
            tried.add(fit)
            serving = replace(deployed, fit=fit)
            worker = self.pool.pick(PIPELINE, self._fits(model, serving, capped=True))
            if worker is None:
                continue
            max_n = min(self.cfg.max_batch_size, serving.max_batch_size or self.cfg.max_batch_size)
            batch = [x for x in itertools.islice(q, i, i + LOOKAHEAD)
                     if x.verification != "quorum" and job_fit(deployed, x) == fit][:max_n]
            taken = {id(x) for x in batch}
            kept = [x for x in q if id(x) not in taken]
            q.clear()
            q.extend(kept)
            self._launch(self._execute(worker, model, batch), [worker], model)
            return True
        return None

    def _fits(self, model: str, serving: Serving, *, capped: bool) -> Callable[[WorkerHandle], bool] | None:
        """Which workers may take a batch of ``model``: those whose hardware ``serving.fit`` accepts, and while
        ``replicas`` workers are busy with it, only those."""
        busy = self._busy.get(model) if capped and serving.replicas else None
        full = busy is not None and serving.replicas is not None and len(busy) >= serving.replicas
        fit = serving.fit
        if fit.any and not full:
            return None
        return lambda w: fit.accepts(w.info) and (not full or w.id in busy)  # type: ignore[operator]

    def _launch(self, coro: Coroutine[Any, Any, None], workers: list[WorkerHandle], model: str) -> None:
        self.metrics.queue_depth.set(self.depth())
        busy = self._busy.setdefault(model, Counter())
        for w in workers:
            w.inflight += 1
            busy[w.id] += 1
        self._spawn_task(coro)

    def _release(self, model: str, workers: list[WorkerHandle]) -> None:
        busy = self._busy.get(model)
        for w in workers:
            w.inflight -= 1
            if busy is not None:
                busy[w.id] -= 1
                if busy[w.id] <= 0:
                    del busy[w.id]
        self._wake.set()

    def _model_box(self, model_hash: str) -> list[Any]:
        box = self._model_boxes.get(model_hash)
        if box is None:
            box = [ray.put(self.models.read_bytes(model_hash))]
            self._model_boxes[model_hash] = box
        return box

    async def _execute_quorum(self, workers: list[WorkerHandle], model: str, batch: list[Pending],
                              policy: QuorumPolicy) -> None:
        try:
            moved = self.store.mark_running([p.id for p in batch], "quorum:" + ",".join(w.id for w in workers))
            batch = [p for p in batch if p.id in moved]
            for p in batch:
                p.attempt = moved[p.id]
            if not batch:
                return
            self.metrics.batch_size.observe(len(batch))
            started = time.time()
            metas = [JobMeta(p.id, p.verification, p.input_commitment) for p in batch]
            box = self._model_box(model)
            replies = await asyncio.gather(
                *(w.actor.run.remote(model, box, [p.inputs for p in batch], metas) for w in workers),
                return_exceptions=True)
            votes: list[list[Vote]] = [[] for _ in batch]
            faults: list[tuple[str, str, str, str, dict[str, Any]]] = []
            worker_died = False
            for w, reply in zip(workers, replies, strict=True):
                if isinstance(reply, RayActorError):
                    worker_died = True
                    self.metrics.worker_deaths.inc()
                    self.pool.mark_dead(w, reply)
                    continue
                if isinstance(reply, BaseException):
                    log.warning("quorum replica on %s failed: %s", w.id, reply)
                    continue
                for j, (out, commit, receipt) in enumerate(reply):
                    p = batch[j]
                    blob = canonical_bytes(out)
                    problem = _reply_problem(blob, commit, receipt, p, w)
                    if problem:
                        faults.append((p.id, str(w.info.get("worker_key")), w.id, "bad_evidence",
                                       {"reason": "bad_reply", "problem": problem}))
                    else:
                        votes[j].append(Vote(w, out, blob, commit, receipt or {}))
            for p, job_votes in zip(batch, votes, strict=True):
                faults += self._decide(p, job_votes, policy, started, retry=worker_died)
            if faults:
                self.store.record_faults(faults)
                self.metrics.invalid_compute.inc(sum(1 for f in faults if f[3] == "invalid_compute"))
        except Exception:
            log.exception("quorum dispatch of %d jobs failed", len(batch))
            self._fail(batch, WorkerError("Internal error while running the quorum. See the gateway log."))
        finally:
            self._release(model, workers)

    def _decide(self, p: Pending, votes: list[Vote], policy: QuorumPolicy, started: float,
                *, retry: bool) -> list[tuple[str, str, str, str, dict[str, Any]]]:
        """Accept the output 2f+1 workers agree on, or fail the job; returns fault records of dissenters."""
        groups = group_votes([v.outputs for v in votes], policy)
        if not groups or len(groups[0]) < policy.threshold:
            if retry and p.attempt < self.cfg.max_attempts:
                self._retry([p], "a quorum worker died")
                return []
            sizes = ", ".join(str(len(g)) for g in groups) or "none"
            self._fail([p], NoQuorumError(
                f"No quorum: {len(votes)} of k={policy.k} workers answered and the largest agreeing group has "
                f"{len(groups[0]) if groups else 0} (groups: {sizes}); {policy.threshold} must agree. The job fails "
                "rather than guess; resubmit it, or check GET /v1/faults."))
            return []
        agreeing = [votes[i] for i in groups[0]]
        rep = agreeing[0]
        evidence = {"receipt": rep.receipt, "quorum": {**policy.to_dict(), "votes": [
            {"worker": v.worker.id, "provider": v.worker.info.get("provider"), "agrees": i in groups[0],
             "receipt": v.receipt,
             "outputs": encode_json(v.outputs)} for i, v in enumerate(votes)]}}
        done = self.store.complete([(p.id, p.attempt, rep.commit, rep.blob, rep.worker.id, json.dumps(evidence))])
        if p.id not in done:
            return []
        now = time.time()
        self.metrics.jobs_finished.labels("done").inc()
        self.metrics.job_latency.observe(now - p.submitted_at)
        self.notify(p.id, Outcome(JobStatus.DONE, rep.outputs, rep.commit, rep.worker.id, p.attempt, started, now,
                                  evidence=evidence))
        return [(p.id, str(v.receipt.get("worker_key")), v.worker.id, "invalid_compute",
                 {"reason": "quorum_dissent", "output_commitment": v.commit,
                  "majority_output_commitment": rep.commit, "receipt": v.receipt,
                  "policy": policy.to_dict()})
                for i, v in enumerate(votes) if i not in groups[0]]

    async def _execute(self, worker: WorkerHandle, model: str, batch: list[Pending]) -> None:
        try:
            moved = self.store.mark_running([p.id for p in batch], worker.id)
            batch = [p for p in batch if p.id in moved]
            for p in batch:
                p.attempt = moved[p.id]
            if batch:
                self.metrics.batch_size.observe(len(batch))
                await self._call(worker, model, batch)
        except Exception:  # never lose a batch silently: fail it loudly
            log.exception("dispatch of %d jobs failed", len(batch))
            self._fail(batch, WorkerError("Internal error while dispatching the job. See the gateway log."))
        finally:
            self._release(model, [worker])

    async def _call(self, worker: WorkerHandle, model: str, batch: list[Pending]) -> None:
        started = time.time()
        try:
            metas = [JobMeta(p.id, p.verification, p.input_commitment) for p in batch]
            ref = worker.actor.run.remote(model, self._model_box(model), [p.inputs for p in batch], metas)
            results = await ref
        except RayActorError as exc:
            self.metrics.worker_deaths.inc()
            self.pool.mark_dead(worker, exc)
            self._retry(batch, f"worker {worker.id} died: {type(exc).__name__}")
            return
        except RayTaskError as exc:
            if len(batch) > 1:  # isolate the job that broke the batch
                for p in batch:
                    await self._call(worker, model, [p])
                return
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            msg = str(cause).strip().splitlines()[0][:500] if str(cause).strip() else type(cause).__name__
            self._fail(batch, WorkerError(f"The model failed on this input: {msg}. Check the input values."))
            return
        self._complete(worker, batch, results, started)

    def _complete(self, worker: WorkerHandle, batch: list[Pending],
                  results: list[tuple[Tensors, str, dict[str, Any] | None]], started: float) -> None:
        rows, bad = [], []
        for p, (out, commit, receipt) in zip(batch, results, strict=True):
            blob = canonical_bytes(out)  # stored as is, and hashed once to check the worker's commitment
            problem = _reply_problem(blob, commit, receipt, p, worker)
            if problem:
                bad.append((p, problem))
                continue
            evidence = json.dumps({"receipt": receipt}) if receipt else None
            if p.verification == "zk":  # outputs are kept now; the job is done when its proof is
                if self.store.mark_proving(p.id, p.attempt, commit, blob, worker.id, evidence):
                    self._spawn_task(self._prove(p, out, blob, commit, receipt, worker.id, started))
                continue
            rows.append((p.id, p.attempt, commit, blob, worker.id, evidence))
        for p, problem in bad:
            self._fail([p], WorkerError(f"Worker {worker.id} returned {problem}. Report this worker; "
                                        "resubmit the job."))
        done = self.store.complete(rows)
        now = time.time()
        for p, (out, commit, receipt) in zip(batch, results, strict=True):
            if p.id not in done:
                continue  # cancelled meanwhile, a stale attempt, refused above, or still proving
            self.metrics.jobs_finished.labels("done").inc()
            self.metrics.job_latency.observe(now - p.submitted_at)
            self.notify(p.id, Outcome(JobStatus.DONE, out, commit, worker.id, p.attempt, started, now,
                                      evidence={"receipt": receipt} if receipt else None))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def prover(self) -> Any:
        """The proving actor, started on first use on this (the model store's) node."""
        if self._prover is None:
            self._prover = ray.remote(Prover).options(
                num_cpus=0, max_concurrency=max(1, self.cfg.max_concurrent_proofs),
                scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                   soft=False)).remote()
        return self._prover

    async def _prove(self, p: Pending, out: Tensors, blob: bytes, commit: str, receipt: dict[str, Any] | None,
                     worker_id: str, started: float) -> None:
        """Prove one zk job on the gateway's node; complete it with the artifact when the proof's outputs are the
        worker's, else fail it and record the proof as evidence of the worker's invalid compute."""
        info = self.models.get(p.model_hash)
        async with self._proof_slots:
            try:
                proved = await self.prover().prove.remote(
                    str(self.models.zk_dir(p.model_hash)), self.cfg.srs_dir, str(self.cfg.home),
                    [p.inputs[s.name] for s in info.inputs], p.model_hash, p.input_commitment, commit,
                    [out[s.name] for s in info.outputs], self.cfg.proof_timeout_s)
            except Exception as exc:  # a failed proof fails the job; it never passes as proven
                cause = getattr(exc, "cause", None) or exc
                self._fail([p], WorkerError(f"Proving failed: {str(cause).splitlines()[0][:300]}. Resubmit; if "
                                            "it fails again, check the model's zk set-up (GET /v1/models/REF)."))
                return
        artifact, gap, tol = proved["artifact"], float(proved["output_gap"]), float(proved["tolerance"])
        if not gap <= tol:
            self._reject_proven(p, out, commit, receipt, worker_id, artifact, gap, tol)
            return
        evidence = {"receipt": receipt, "zk": artifact}
        done = self.store.complete([(p.id, p.attempt, commit, blob, worker_id, json.dumps(evidence))])
        if p.id in done:
            now = time.time()
            self.metrics.jobs_finished.labels("done").inc()
            self.metrics.job_latency.observe(now - p.submitted_at)
            self.notify(p.id, Outcome(JobStatus.DONE, out, commit, worker_id, p.attempt, started, now,
                                      evidence=evidence))

    def _reject_proven(self, p: Pending, out: Tensors, commit: str, receipt: dict[str, Any] | None, worker_id: str,
                       artifact: dict[str, Any], gap: float, tol: float) -> None:
        """The proof shows the model's outputs on the job's inputs differ from what the worker returned (and
        signed): the job fails, and the proof, the worker's outputs and its receipt become a fault record, which
        the settler files on chain as invalid compute."""
        worker_key = str((receipt or {}).get("worker_key") or "")
        self.store.record_faults([(p.id, worker_key, worker_id, "invalid_compute", {
            "reason": "zk_output_mismatch", "output_commitment": commit, "outputs": encode_json(out),
            "receipt": receipt, "output_gap": gap, "tolerance": tol, "zk": artifact})])
        self.metrics.invalid_compute.inc()
        self._fail([p], InvalidComputeError(
            f"Worker {worker_id} returned outputs {gap:.3g} away from what the model computes on these inputs "
            f"(the zk proof's outputs; tolerance {tol:.2g}). Its result was rejected and the worker reported for "
            "invalid compute (GET /v1/faults). Resubmit the job.",
            detail={"worker": worker_id, "worker_key": worker_key, "output_gap": gap, "tolerance": tol}))

    def _retry(self, batch: list[Pending], reason: str) -> None:
        again = [p for p in batch if p.attempt < self.cfg.max_attempts]
        out_of_tries = [p for p in batch if p.attempt >= self.cfg.max_attempts]
        requeued = self.store.requeue([(p.id, p.attempt) for p in again])
        self.metrics.retries.inc(len(requeued))
        self.enqueue([p for p in again if p.id in requeued], front=True)
        if out_of_tries:
            self._fail(out_of_tries, WorkerError(
                f"The job failed {self.cfg.max_attempts} times because its worker died ({reason}). "
                "Check the workers (GET /v1/workers) and resubmit."))

    def _fail(self, batch: list[Pending], err: CiroError) -> None:
        payload = err.to_payload()["error"]
        failed = self.store.fail([(p.id, p.attempt, payload) for p in batch])
        now = time.time()
        for p in batch:
            if p.id in failed:
                self.metrics.jobs_finished.labels("failed").inc()
                self.notify(p.id, Outcome(JobStatus.FAILED, attempts=p.attempt, finished_at=now, error=payload))
