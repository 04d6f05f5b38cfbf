"""``/v1/jobs``: submit jobs (one, a batch; JSON or safetensors; escrowed or not), confirm their escrow, read,
wait for and cancel them. Job data is shown only to its submitter and the operator (``admission``)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response

from ciro import BINARY_CONTENT_TYPE, InputError, JobStatus, ModelStore, decode_binary, decode_json
from ciro.chain.ledger import SPEND_HEADER

from ..admission import Caller, require_owner, require_reader
from ..intake import MAX_WAIT_S, Accepted, JobIntake
from ..jobstore import JobStore
from ..records import escrow_terms, job_from_row, json_response, pending_from_row
from ..runtime import Runtime
from ..scheduler import Outcome
from ..schemas import ERRORS, OPTIONS_DOC, BatchRequest, BatchResponse, EscrowRequest, JobOut, JobRequest, Tensor

__all__ = ["router"]

Tensors = dict[str, np.ndarray]
#: Job ids are 32 lowercase hex characters (ciro.new_job_id); anything else is refused before a lookup.
_JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="the job id: 32 hex characters")
_ESCROW_DOC = ("hold the job until its payment is escrowed on chain (then POST /v1/jobs/escrow with the "
               "transaction); it is then paid to the worker once verified")
_SPEND_DOC = ("prepaid jobs (CiroLedger): JSON {\"client\": \"0x<account>\", \"caps\": [{\"cumulative\": N, \"r\": "
              "\"0x..\", \"s\": \"0x..\"}, ...]}, one cap per job, each the last accepted cap plus the price per "
              "job (GET /v1/ledger/{account}), signed by the account's ledger key")
_BINARY_BODY = {"requestBody": {"required": True, "content": {
    BINARY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


def _split_stacked(inputs: Tensors, rows_per_job: int) -> list[Tensors]:
    counts = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(counts) != 1 or -1 in counts:
        raise InputError("Stacked batch inputs must all have the same first dimension (one row group per job).")
    n = counts.pop()
    if n == 0 or n % rows_per_job:
        raise InputError(f"{n} stacked rows do not split into jobs of {rows_per_job} rows. Fix rows_per_job.")
    return [{k: v[i:i + rows_per_job] for k, v in inputs.items()} for i in range(0, n, rows_per_job)]


def _json_options(options: str | None) -> dict[str, Any]:
    """The ``options`` query parameter of the binary routes: a JSON object (checked further by the intake)."""
    try:
        opts = orjson.loads(options) if options else {}
    except orjson.JSONDecodeError as exc:
        raise InputError(f"The options query parameter is not JSON ({exc}). Send a JSON object.") from None
    if not isinstance(opts, dict):
        raise InputError("The options query parameter must be a JSON object, e.g. {\"gpu\": true}.")
    return opts


def _tensors(obj: dict[str, Tensor]) -> Tensors:
    return decode_json({k: v.model_dump(exclude_none=True) for k, v in obj.items()})


def router(intake: JobIntake, store: JobStore, models: ModelStore, live: Runtime) -> APIRouter:
    api = APIRouter(tags=["jobs"])

    @api.post("/v1/jobs", response_model=JobOut, status_code=202, responses=ERRORS)
    async def submit_job(body: JobRequest, request: Request, wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                         escrow: bool = Query(False, description=_ESCROW_DOC),
                         spend: str | None = Header(None, alias=SPEND_HEADER, description=_SPEND_DOC)) -> Response:
        """Submit one job. With ``wait`` > 0 the answer holds the result if it is ready within that many seconds.
        A job asking exactly what a done job of the same submitter asked is done at once with that job's result
        (``cached``, ``cached_from``), unless it is escrowed or its options say ``fresh``."""
        accepted = await intake.accept(body.model, [_tensors(body.inputs)], body.verification, body.options,
                                       client=request.state.account, escrow=escrow, spend=spend)
        if escrow:
            return json_response(job_from_row(intake.row(accepted.ids[0]), outputs=False), 202)
        return await _submitted(accepted, wait)

    @api.post("/v1/jobs/binary", response_model=JobOut, status_code=202, responses=ERRORS,
              openapi_extra=_BINARY_BODY)
    async def submit_job_binary(request: Request, model: str = Query(..., max_length=200),
                                verification: str = Query("receipt", max_length=16),
                                wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                                options: str | None = Query(None, description="JSON object: " + OPTIONS_DOC),
                                spend: str | None = Header(None, alias=SPEND_HEADER, description=_SPEND_DOC)
                                ) -> Response:
        """Submit one job whose inputs are safetensors bytes."""
        accepted = await intake.accept(model, [decode_binary(await request.body())], verification,
                                       _json_options(options), client=request.state.account, spend=spend)
        return await _submitted(accepted, wait)

    async def _submitted(accepted: Accepted, wait: float) -> Response:
        results = await intake.wait_for(accepted, wait)
        if results:
            out = results[0]
            return json_response(out, 200 if JobStatus(out["status"]).terminal else 202)
        return json_response(job_from_row(intake.row(accepted.ids[0]), outputs=False), 202)

    @api.post("/v1/jobs/batch", response_model=BatchResponse, status_code=202, responses=ERRORS)
    async def submit_batch(body: BatchRequest, request: Request, wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                           escrow: bool = Query(False, description=_ESCROW_DOC),
                           spend: str | None = Header(None, alias=SPEND_HEADER, description=_SPEND_DOC)) -> Response:
        """Submit many jobs in one request: ``items`` (one input dict each) or stacked ``inputs``. Each job may be
        answered from the result cache, as for ``POST /v1/jobs``."""
        if (body.items is None) == (body.inputs is None):
            raise InputError('Give exactly one of "items" (a list of input dicts) or "inputs" (stacked tensors).')
        items = ([_tensors(i) for i in body.items] if body.items is not None
                 else _split_stacked(_tensors(body.inputs or {}), body.rows_per_job))
        return await _batch(body.model, items, body.verification, body.options, wait, request.state.account, escrow,
                            spend)

    @api.post("/v1/jobs/batch/binary", response_model=BatchResponse, status_code=202, responses=ERRORS,
              openapi_extra=_BINARY_BODY)
    async def submit_batch_binary(request: Request, model: str = Query(..., max_length=200),
                                  rows_per_job: int = Query(1, ge=1, le=2**31),
                                  verification: str = Query("receipt", max_length=16),
                                  wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                                  escrow: bool = Query(False, description=_ESCROW_DOC),
                                  options: str | None = Query(None, description="JSON object: " + OPTIONS_DOC),
                                  spend: str | None = Header(None, alias=SPEND_HEADER, description=_SPEND_DOC)
                                  ) -> Response:
        """Submit stacked safetensors inputs, split along axis 0 into jobs of ``rows_per_job`` rows."""
        items = _split_stacked(decode_binary(await request.body()), rows_per_job)
        return await _batch(model, items, verification, _json_options(options), wait, request.state.account, escrow,
                            spend)

    async def _batch(model: str, items: list[Tensors], verification: str, options: dict[str, Any],
                     wait: float, client: str | None, escrow: bool = False, spend: str | None = None) -> Response:
        batch_id = uuid.uuid4().hex
        accepted = await intake.accept(model, items, verification, options, batch_id=batch_id, client=client,
                                       escrow=escrow, spend=spend)
        if escrow:
            jobs = [job_from_row(intake.row(i), outputs=False) for i in accepted.ids]
            return json_response({"batch_id": batch_id, "job_ids": accepted.ids, "results": None, "jobs": jobs}, 202)
        results = await intake.wait_for(accepted, wait)
        body: dict[str, Any] = {"batch_id": batch_id, "job_ids": accepted.ids, "results": results}
        return json_response(body, 200 if results else 202)

    @api.post("/v1/jobs/escrow", responses=ERRORS)
    async def confirm_escrow(body: EscrowRequest, request: Request) -> Response:
        """Tell the gateway the transaction that escrowed jobs submitted with ``escrow=true``. The gateway checks
        its JobSubmitted events (model, input commitment, level, payment >= price, deadline, client) and then
        schedules the jobs; a job not covered gets 402 and stays waiting."""
        if live.settlement is None:
            raise InputError("This gateway does not settle on chain. Nothing to confirm.")
        rows = [intake.row(j, with_inputs=True) for j in body.job_ids]
        waiting = [r for r in rows if r.status is JobStatus.AWAITING_ESCROW]
        if len(waiting) != len(rows):
            raise InputError(f"{len(rows) - len(waiting)} of these jobs are not waiting for an escrow (already "
                             "escrowed, finished or expired). Confirm only jobs submitted with escrow=true.")
        caller = Caller.of(request)
        for r in rows:
            require_owner(caller, r.client, f"Confirming the escrow of job {r.id}")
        try:
            tx_hash = int(body.tx_hash, 16)
        except ValueError as exc:
            raise InputError(f"tx_hash {body.tx_hash!r} is not hex.") from exc
        escrow = await live.settlement.verify_escrow(rows, tx_hash)
        moved = store.escrowed(body.job_ids, escrow)
        pending = [pending_from_row(r) for r in rows if r.id in moved]
        for p in pending:
            p.settlement = "escrowed"  # the rows were read before the escrow was recorded
            p.price, p.payer = escrow_terms(escrow[p.id])
        live.sched.enqueue(pending)
        return json_response({"job_ids": sorted(moved), "status": JobStatus.QUEUED.value, "escrow_tx": hex(tx_hash)})

    @api.get("/v1/jobs", response_model=list[JobOut], responses=ERRORS)
    async def list_jobs(request: Request, status: JobStatus | None = None,
                        model: str | None = Query(None, max_length=200),
                        limit: int = Query(100, ge=1, le=10_000)) -> Response:
        """Recent jobs: the operator sees all, a signed caller the jobs it submitted."""
        caller = Caller.of(request)
        require_reader(caller, "Listing jobs")
        model_hash = models.resolve(model).hash if model else None
        rows = store.recent(status=status.value if status else None, model_hash=model_hash, limit=limit,
                            client=None if caller.operator else caller.account)
        return json_response([job_from_row(r, outputs=False) for r in rows])

    @api.get("/v1/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
    async def job_status(request: Request, job_id: str = _JOB_ID) -> Response:
        """A job's state and evidence, without outputs: its submitter or the operator."""
        return json_response(job_from_row(intake.readable_row(Caller.of(request), job_id), outputs=False))

    @api.get("/v1/jobs/{job_id}/result", response_model=JobOut,
             responses={**ERRORS, 202: {"model": JobOut, "description": "not final yet"}})
    async def job_result(request: Request, job_id: str = _JOB_ID,
                         wait: float = Query(0.0, ge=0, le=MAX_WAIT_S)) -> Response:
        """The job with its outputs: 200 once final (done, failed, cancelled), 202 while not. Its submitter or the
        operator only."""
        row = await intake.wait_final(intake.readable_row(Caller.of(request), job_id), wait)
        return json_response(job_from_row(row, outputs=True), 200 if row.status.terminal else 202)

    @api.post("/v1/jobs/{job_id}/cancel", response_model=JobOut, responses=ERRORS)
    async def cancel_job(request: Request, job_id: str = _JOB_ID) -> Response:
        """Cancel a queued or running job; a finished job is left as it is. Only its submitter (a request signed
        with the same key) or the operator may."""
        intake.readable_row(Caller.of(request), job_id, what=f"Cancelling job {job_id}")
        if store.cancel(job_id) is JobStatus.CANCELLED:
            live.sched.notify(job_id, Outcome(JobStatus.CANCELLED, finished_at=time.time()))
        return json_response(job_from_row(intake.row(job_id), outputs=False))

    return api
