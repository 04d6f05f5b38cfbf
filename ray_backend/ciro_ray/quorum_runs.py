"""A quorum batch: the same jobs on k distinct workers, the agreeing outputs accepted, dissenters recorded.

A job is accepted when at least ``policy.threshold`` of the k replies agree (``ciro.quorum.group_votes``); its
evidence holds every vote. Fewer agreeing replies fail the job (or retry it when a worker died) rather than guess.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.exceptions import RayActorError

from ciro import JobStatus, NoQuorumError, QuorumPolicy, WorkerError, canonical_bytes, encode_json
from ciro.quorum import group_votes

from .batching import Pending
from .metrics import Metrics
from .outcomes import Finisher, Outcome
from .pool import WorkerHandle, WorkerPool
from .runs import ModelBoxes, gather_replies, reply_problem

__all__ = ["QuorumRunner"]

log = logging.getLogger("ciro.scheduler")
Tensors = dict[str, np.ndarray]
Fault = tuple[str, str, str, str, dict[str, Any]]


@dataclass(frozen=True)
class Vote:
    worker: WorkerHandle
    outputs: Tensors
    blob: bytes  # canonical bytes of the outputs
    commit: str
    receipt: dict[str, Any]


class QuorumRunner:
    def __init__(self, pool: WorkerPool, metrics: Metrics, boxes: ModelBoxes, finisher: Finisher,
                 max_attempts: int) -> None:
        self.pool = pool
        self.metrics = metrics
        self.boxes = boxes
        self.finisher = finisher
        self.max_attempts = max_attempts

    async def run(self, workers: list[WorkerHandle], model: str, batch: list[Pending], policy: QuorumPolicy) -> None:
        try:
            batch = self.finisher.mark_running(batch, "quorum:" + ",".join(w.id for w in workers))
            if not batch:
                return
            started = time.time()
            replies = await gather_replies(workers, self.boxes, model, batch)
            votes: list[list[Vote]] = [[] for _ in batch]
            faults: list[Fault] = []
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
                    problem = reply_problem(blob, commit, receipt, p, w)
                    if problem:
                        faults.append((p.id, str(w.info.get("worker_key")), w.id, "bad_evidence",
                                       {"reason": "bad_reply", "problem": problem}))
                    else:
                        votes[j].append(Vote(w, out, blob, commit, receipt or {}))
            for p, job_votes in zip(batch, votes, strict=True):
                faults += self._decide(p, job_votes, policy, started, retry=worker_died)
            if faults:
                self.finisher.store.record_faults(faults)
                self.metrics.invalid_compute.inc(sum(1 for f in faults if f[3] == "invalid_compute"))
        except Exception:
            log.exception("quorum dispatch of %d jobs failed", len(batch))
            self.finisher.fail(batch, WorkerError("Internal error while running the quorum. See the gateway log."))

    def _decide(self, p: Pending, votes: list[Vote], policy: QuorumPolicy, started: float,
                *, retry: bool) -> list[Fault]:
        """Accept the output ``policy.threshold`` workers agree on, or fail the job; returns fault records of
        dissenters."""
        groups = group_votes([v.outputs for v in votes], policy)
        if not groups or len(groups[0]) < policy.threshold:
            if retry and p.attempt < self.max_attempts:
                self.finisher.retry([p], "a quorum worker died")
                return []
            sizes = ", ".join(str(len(g)) for g in groups) or "none"
            self.finisher.fail([p], NoQuorumError(
                f"No quorum: {len(votes)} of k={policy.k} workers answered and the largest agreeing group has "
                f"{len(groups[0]) if groups else 0} (groups: {sizes}); {policy.threshold} must agree. The job fails "
                "rather than guess; resubmit it, or check GET /v1/faults."))
            return []
        rep = votes[groups[0][0]]
        evidence = {"receipt": rep.receipt, "quorum": {**policy.to_dict(), "votes": [
            {"worker": v.worker.id, "provider": v.worker.info.get("provider"), "agrees": i in groups[0],
             "receipt": v.receipt,
             "outputs": encode_json(v.outputs)} for i, v in enumerate(votes)]}}
        done = self.finisher.complete([(p, (p.id, p.attempt, rep.commit, rep.blob, rep.worker.id,
                                            json.dumps(evidence)),
                                        Outcome(JobStatus.DONE, rep.outputs, rep.commit, rep.worker.id, p.attempt,
                                                started, time.time(), evidence=evidence))])
        if p.id not in done:
            return []
        return [(p.id, str(v.receipt.get("worker_key")), v.worker.id, "invalid_compute",
                 {"reason": "quorum_dissent", "output_commitment": v.commit,
                  "majority_output_commitment": rep.commit, "receipt": v.receipt,
                  "policy": policy.to_dict()})
                for i, v in enumerate(votes) if i not in groups[0]]
