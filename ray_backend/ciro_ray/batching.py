"""Which queued jobs leave together, and for which workers: a pure choice over a model's queue.

Batching policy: when a worker is idle, whatever is queued for a model (up to ``max_batch_size``) goes at once,
so a lone job pays no batching delay. While every worker is busy, jobs accumulate and a batch leaves when it
reaches ``max_batch_size`` or its oldest job has waited ``batch_timeout_ms``. Each worker takes at most
``PIPELINE`` batches in flight. A batch holds jobs of one hardware requirement (``Fit``); a head of the queue no
free worker fits keeps its place while jobs behind it that need other hardware may go.

``choose_batch`` reads the queue and the pool and changes neither; the scheduler removes what it returns and
launches it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from ciro import ConfigError, InputError, QuorumPolicy, VerificationLevel

from .fit import FIT_OPTIONS, Fit
from .pool import WorkerHandle

__all__ = ["DEFAULT_SERVING", "LOOKAHEAD", "PIPELINE", "Choice", "Pending", "Serving", "choose_batch",
           "gpu_preference", "job_fit", "smallest_bucket", "zk_bucket",
           "zk_buckets"]

#: Batches a worker takes in flight at once.
PIPELINE = 2
#: How far past a blocked head the scheduler looks for jobs that need other hardware.
LOOKAHEAD = 128

Tensors = dict[str, np.ndarray]
WorkerFilter = Callable[[WorkerHandle], bool] | None


@dataclass
class Pending:
    """A job waiting in the scheduler's queue (and, while it runs, the attempt it is on)."""

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
    #: For an escrowed job: the price the worker's receipt states it is owed, and the client's account on chain.
    price: int = 0
    payer: str = "0x0"

    @property
    def quorum(self) -> QuorumPolicy | None:
        return QuorumPolicy.from_options(self.options) if self.verification == VerificationLevel.QUORUM else None


@dataclass(frozen=True)
class Serving:
    """How a deployed model is served: jobs per batch, how many workers run it at once, the hardware they need."""

    max_batch_size: int | None = None
    replicas: int | None = None
    fit: Fit = field(default_factory=Fit)


DEFAULT_SERVING = Serving()


@dataclass(frozen=True)
class Choice:
    """A batch that may leave now: its jobs, in queue order, and its worker (``k`` distinct ones for a quorum)."""

    jobs: tuple[Pending, ...]
    workers: tuple[WorkerHandle, ...]
    quorum: QuorumPolicy | None = None


class Workers(Protocol):
    """The part of the worker pool the choice reads (``WorkerPool``)."""

    def pick(self, limit: int, fits: WorkerFilter = None, prefer: WorkerFilter = None) -> WorkerHandle | None: ...

    def pick_distinct(self, k: int, limit: int, fits: WorkerFilter = None) -> list[WorkerHandle] | None: ...


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


def gpu_preference(p: Pending) -> WorkerFilter:
    """A job's ``gpu="H100"`` (the SDK's ``gpu_preference``): prefer free workers whose GPU model contains it,
    else any free worker that fits (a preference, unlike ``gpu_model``, never makes a job wait)."""
    want = p.options.get("gpu")
    if not isinstance(want, str) or want.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return None
    name = want.lower()
    return lambda w: name in str(w.info.get("gpu_model") or "").lower() and float(w.info.get("num_gpus") or 0) > 0


def eligible(serving: Serving, busy: Mapping[str, int] | None) -> WorkerFilter:
    """Which workers may take a batch: those whose hardware ``serving.fit`` accepts, and while ``replicas``
    workers are busy with the model (``busy``: batches in flight per worker id; None for a quorum, which
    ``replicas`` does not cap), only those."""
    full = busy is not None and serving.replicas is not None and len(busy) >= serving.replicas
    fit = serving.fit
    if fit.any and not full:
        return None
    return lambda w: fit.accepts(w.info) and (not full or w.id in busy)  # type: ignore[operator]


def _batch_limit(serving: Serving, max_batch_size: int, head: Pending | None = None) -> int:
    limit = min(max_batch_size, serving.max_batch_size or max_batch_size)
    return min(limit, PREPAID_MAX_LEAVES) if head is not None and prepaid(head) else limit


#: The most jobs in one worker batch of prepaid jobs: a Merkle path of at most 6 siblings, so that disputing one of
#: its jobs on chain costs no more than a JobManager finalize_receipt (bench/README.md, settlement).
PREPAID_MAX_LEAVES = 64


def prepaid(p: Pending) -> bool:
    """Prepaid jobs (CiroLedger) run in worker batches of their own: the ledger pays a worker's signed batch whole, so
    no job paid another way may share its signed total."""
    return p.settlement == "prepaid"


def _leading(queue: Sequence[Pending], n: int, same: Callable[[Pending], bool]) -> tuple[Pending, ...]:
    """Up to ``n`` jobs from the head of ``queue`` while they belong to the batch."""
    return tuple(itertools.takewhile(same, itertools.islice(queue, n)))


def choose_batch(queue: Sequence[Pending], deployed: Serving, workers: Workers, *, busy: Mapping[str, int] | None,
                 max_batch_size: int, batch_timeout_s: float, now: float | None = None) -> Choice | float | None:
    """The batch of this model's ``queue`` that may leave now (a ``Choice``); else the seconds until one is due
    (a busy worker waits up to ``batch_timeout_s`` for a fuller batch), or None (nothing until a worker frees up).
    ``deployed``: the model's serving settings; ``busy``: its batches in flight per worker id."""
    head = queue[0]
    fit = job_fit(deployed, head)  # the batch's hardware: jobs that need other hardware wait for their own
    serving = replace(deployed, fit=fit) if fit != deployed.fit else deployed
    limit = _batch_limit(serving, max_batch_size, head)
    policy = head.quorum
    if policy is not None:  # the same batch goes to k distinct workers (replicas does not cap a quorum)
        chosen = workers.pick_distinct(policy.k, PIPELINE, eligible(serving, None))
        if chosen is None:  # not enough free workers: a finishing batch or a new worker wakes the scheduler
            return _other_fit(queue, deployed, fit, workers, busy, max_batch_size)
        jobs = _leading(queue, limit, lambda p: p.quorum == policy and job_fit(deployed, p) == fit)
        return Choice(jobs, tuple(chosen), policy)
    worker = workers.pick(PIPELINE, eligible(serving, busy or {}), prefer=gpu_preference(head))
    if worker is None:
        return _other_fit(queue, deployed, fit, workers, busy, max_batch_size)
    if worker.inflight > 0 and len(queue) < limit and batch_timeout_s > 0:
        due = head.enqueued_at + batch_timeout_s - (time.monotonic() if now is None else now)
        if due > 0:
            return due
    jobs = _leading(queue, limit, lambda p: p.verification != VerificationLevel.QUORUM and job_fit(deployed, p) == fit
                    and prepaid(p) == prepaid(head))
    return Choice(jobs, (worker,))


def _other_fit(queue: Sequence[Pending], deployed: Serving, blocked: Fit, workers: Workers,
               busy: Mapping[str, int] | None, max_batch_size: int) -> Choice | None:
    """No free worker has the hardware the head of the queue needs. The first jobs among the next LOOKAHEAD that
    need other hardware a free worker has may go, so a busy GPU does not hold up the CPU jobs queued behind a
    GPU job. Quorum jobs keep their place; the head keeps its place too."""
    tried = {blocked}
    for i, p in enumerate(itertools.islice(queue, LOOKAHEAD)):
        fit = job_fit(deployed, p)
        if p.verification == VerificationLevel.QUORUM or fit in tried:
            continue
        tried.add(fit)
        serving = replace(deployed, fit=fit)
        worker = workers.pick(PIPELINE, eligible(serving, busy or {}))
        if worker is None:
            continue
        jobs = [x for x in itertools.islice(queue, i, i + LOOKAHEAD)
                if x.verification != VerificationLevel.QUORUM and job_fit(deployed, x) == fit
                and prepaid(x) == prepaid(p)]
        return Choice(tuple(jobs[:_batch_limit(serving, max_batch_size, p)]), (worker,))
    return None


def zk_buckets(text: str) -> tuple[int, ...]:
    """The batch sizes (``zk_batch_buckets``, e.g. "1,4,16,64") zk proofs are made at, ascending."""
    try:
        sizes = sorted({int(s) for s in text.replace(" ", "").split(",") if s})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1 or sizes[-1] > 1024:
        raise ConfigError(f"zk_batch_buckets={text!r} is not a comma-separated list of batch sizes between 1 and "
                          "1024 (e.g. 1,4,16,64). Fix the CIRO_ZK_BATCH_BUCKETS variable or config file.")
    return tuple(sizes)


def zk_bucket(queued: int, waited_s: float, wait_s: float, buckets: Sequence[int]) -> tuple[int, int] | float:
    """The zk batch to prove now from a model's ``queued`` jobs (answered by their workers, waiting for a proof, the
    oldest for ``waited_s``): ``(jobs, B)``, the first ``jobs`` of them proven as one circuit of the smallest bucket
    ``B`` that holds them; or the seconds to wait for more (at most ``wait_s`` from the oldest's arrival, unless the
    largest bucket fills first)."""
    top = buckets[-1]
    if queued >= top:
        return top, top
    if waited_s < wait_s:
        return wait_s - waited_s
    return queued, smallest_bucket(queued, buckets)


def smallest_bucket(jobs: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` (ascending) that holds ``jobs`` (at most the largest)."""
    return next(b for b in buckets if b >= jobs)
