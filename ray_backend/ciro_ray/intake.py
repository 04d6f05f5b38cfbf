"""Taking jobs in: admitted (``admission``), answered from the result cache where they may be (``resultcache``),
stored durably before the gateway answers, then handed to the scheduler; and reading them back for the caller that
may see them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from prometheus_client import Counter

from ciro import (
    Config,
    InputError,
    JobNotFoundError,
    JobStatus,
    ModelInfo,
    ModelStore,
    VerificationLevel,
    canonical_bytes,
    check_options,
    new_job_ids,
)

from .admission import Caller, admit_jobs, require_owner
from .fit import Fit
from .groupcommit import GroupCommitter
from .jobstore import JobRow, JobStore, NewJob
from .metrics import Metrics
from .prepaid import check_level
from .records import job_from_outcome, job_from_row
from .resultcache import cache_keys
from .runtime import Runtime
from .scheduler import Pending

__all__ = ["MAX_WAIT_S", "Accepted", "JobIntake"]

Tensors = dict[str, np.ndarray]
#: The longest a request may wait for its jobs (``wait=`` seconds).
MAX_WAIT_S = 300.0


@dataclass
class Accepted:
    """A request's jobs once stored: every id in input order, the jobs that run, the jobs done at once."""

    info: ModelInfo
    ids: list[str]
    #: To be queued (escrowed ones: once their escrow is confirmed).
    pending: list[Pending]
    #: id -> stored row of each job answered from the result cache (done, ``cached_from`` set).
    reused: dict[str, JobRow]


class JobIntake:
    def __init__(self, cfg: Config, models: ModelStore, store: JobStore, live: Runtime, metrics: Metrics) -> None:
        self.cfg = cfg
        self.models = models
        self.store = store
        self.live = live
        self.metrics = metrics
        self.committer = GroupCommitter(store)
        self.cache_hits = Counter("ciro_result_cache_hits", "Jobs answered from the result cache",
                                  registry=metrics.registry)

    async def accept(self, model_ref: str, items: list[Tensors], verification: str, options: dict[str, Any],
                     *, batch_id: str | None = None, client: str | None = None, escrow: bool = False,
                     spend: str | None = None) -> Accepted:
        """Admit and store one job per item (durable before this returns). A job the result cache answers is
        stored done; the others are not queued yet: an escrowed job waits for its escrow, the others for
        :meth:`wait_for`. An escrowed or prepaid (``spend``: the ``x-ciro-spend`` header) job, or one with
        ``fresh``, is never answered from the cache."""
        options = check_options(options)
        if spend is not None:  # before the level's own admission, which would name another fix
            check_level(VerificationLevel.parse(verification))
        info = self.models.resolve(model_ref)
        zk = self.models.zk_status(info.hash)
        level = admit_jobs(self.cfg, self.live, info, items, verification, options, escrow=escrow or spend is not None,
                           zk_ready=zk is not None)
        if spend is None:
            return await self._store(info, items, level, options, zk, batch_id, client, escrow, None)
        prepaid = self.live.settlement.prepaid if self.live.settlement is not None else None
        if escrow or prepaid is None:
            raise InputError("A job is escrowed (escrow=true) or prepaid (x-ciro-spend), not both." if escrow else
                             "This gateway settles no prepaid jobs (no CiroLedger in its deployment, or settlement=off)"
                             ". Drop the x-ciro-spend header, or pay with max_payment= (a JobManager escrow).")
        async with prepaid.authorize(spend, len(items), level) as records:
            return await self._store(info, items, level, options, zk, batch_id, client, False, records)

    async def _store(self, info: ModelInfo, items: list[Tensors], level: VerificationLevel, options: dict[str, Any],
                     zk: dict[str, Any] | None, batch_id: str | None, client: str | None, escrow: bool,
                     prepaid: list[dict[str, Any]] | None) -> Accepted:
        if escrow and self.live.settlement is not None:  # the client's escrow names the model: register it
            await self.live.settlement.ensure_model(info.hash, zk["vk_hash"] if zk else None)
        keys = cache_keys(scope=client, model_hash=info.hash, level=level, options=options, zk=zk,
                          fit=self.live.serving(info.hash).fit.merge(Fit.of(options)).to_dict()  # as admitted
                          ) if self.store.results.enabled else None
        new: list[NewJob] = []
        tensors: dict[str, Tensors] = {}
        for i, (job_id, inputs) in enumerate(zip(new_job_ids(len(items)), items, strict=True)):
            info.check_inputs(inputs)
            blob = canonical_bytes(inputs)  # stored as is; its SHA-256 is the input commitment
            ic = hashlib.sha256(blob).hexdigest()
            new.append(NewJob(job_id, info.hash, level.value, options, ic, blob, batch_id, client,
                              JobStatus.AWAITING_ESCROW if escrow else JobStatus.QUEUED,
                              cache_key=keys(ic) if keys else None, prepaid=prepaid[i] if prepaid else None))
            tensors[job_id] = inputs
        if keys and not escrow and prepaid is None and not options.get("fresh"):
            new = self._reuse(new)
        submitted = await self.committer.insert(new)  # durable before we answer
        pending = [Pending(j.id, j.model_hash, tensors[j.id], j.input_commitment, j.verification, submitted,
                           options, client=client, settlement="escrowed" if escrow else
                           "prepaid" if j.prepaid else None, price=int(j.prepaid["price"]) if j.prepaid else 0,
                           payer=str(j.prepaid["client"]) if j.prepaid else "0x0")
                   for j in new if j.reuses is None]
        reused = self.store.get_many([j.id for j in new if j.reuses is not None])
        self.metrics.jobs_submitted.labels(info.hash[:12]).inc(len(new))
        if reused:
            self.cache_hits.inc(len(reused))
            self.metrics.jobs_finished.labels("done").inc(len(reused))
        return Accepted(info, [j.id for j in new], pending, reused)

    def _reuse(self, new: list[NewJob]) -> list[NewJob]:
        """The jobs, each one the result cache answers set to reuse that result. An entry answers only while its
        job is what the key says (done, computed here, same model, input, level and submitter) and no invalid
        compute is on record against the worker key that signed its result; otherwise the entry is dropped."""
        hits = self.store.results.lookup([j.cache_key for j in new if j.cache_key])
        if not hits:
            return new
        originals = self.store.get_many(list(hits.values()))
        asked = {j.cache_key: j for j in new}
        faulty = {k for k in {_signer(o) for o in originals.values()} if k and self.store.faults(worker_key=k, limit=1)}
        answers = {k: o for k, job_id in hits.items()
                   if (o := originals.get(job_id)) is not None and _answers(o, asked[k]) and _signer(o) not in faulty}
        self.store.results.forget([k for k in hits if k not in answers])
        return [replace(j, reuses=answers[j.cache_key]) if j.cache_key in answers else j for j in new]

    async def wait_for(self, accepted: Accepted, wait: float) -> list[dict[str, Any]] | None:
        """Enqueue the jobs that run and, when ``wait`` > 0, wait up to that long for all of them: every job's
        record in input order (the cached ones as stored), or None."""
        sched = self.live.sched
        pending = accepted.pending
        futs = [sched.waiter(p.id) for p in pending] if wait > 0 else []
        if pending:
            sched.enqueue(pending)
        if wait <= 0:
            return None
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*futs), timeout=min(wait, MAX_WAIT_S)) if futs else []
        except TimeoutError:
            for p, f in zip(pending, futs, strict=True):
                sched.drop_waiter(p.id, f)
            return None
        ran = {p.id: job_from_outcome(p, o) for p, o in zip(pending, outcomes, strict=True)}
        return [ran[i] if i in ran else job_from_row(accepted.reused[i], outputs=True) for i in accepted.ids]

    async def wait_final(self, row: JobRow, wait: float) -> JobRow:
        """The job once final, or as it is after ``wait`` seconds (``row``: as it was just read)."""
        if row.status.terminal or wait <= 0:
            return row
        sched = self.live.sched
        fut = sched.waiter(row.id)
        try:
            row = self.row(row.id)  # it may have finished before the waiter existed
            if not row.status.terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
                row = self.row(row.id)
        finally:
            sched.drop_waiter(row.id, fut)
        return row

    def readable_row(self, caller: Caller, job_id: str, *, what: str | None = None) -> JobRow:
        """The job, if the caller may see (or act on) it: its submitter or the operator."""
        row = self.row(job_id)
        require_owner(caller, row.client, what or f"Reading job {job_id}")
        return row

    def row(self, job_id: str, *, with_inputs: bool = False) -> JobRow:
        row = self.store.get(job_id, with_inputs=with_inputs)
        if row is None:
            raise JobNotFoundError(f"No job {job_id!r} on this gateway. List jobs with `ciro jobs`.")
        return row


def _answers(o: JobRow, j: NewJob) -> bool:
    """Whether done job ``o`` is what ``j`` asks (the cache key says so; this checks the stored row)."""
    return (o.status is JobStatus.DONE and o.cached_from is None and o.outputs is not None
            and o.output_commitment is not None
            and (o.model_hash, o.input_commitment, o.verification, o.client)
            == (j.model_hash, j.input_commitment, j.verification, j.client))


def _signer(o: JobRow) -> str | None:
    """The worker key that signed a result's receipt (a quorum's: the accepted vote's), if any."""
    receipt = (o.evidence or {}).get("receipt")
    key = receipt.get("worker_key") if isinstance(receipt, dict) else None
    return str(key) if key else None
