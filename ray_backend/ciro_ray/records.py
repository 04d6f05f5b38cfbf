"""What the gateway answers about its records: a job (``ciro.jobs.job_record``, from a stored row or from the
outcome a waiter got), a model (its description with the zk set-up and processor), and JSON responses."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from ciro import ModelInfo, ModelStore, decode_canonical, encode_json
from ciro.jobs import job_record

from .jobstore import JobRow
from .scheduler import Outcome, Pending

__all__ = ["escrow_terms", "job_from_outcome", "job_from_row", "json_response", "model_view", "pending_from_row"]


def job_from_row(r: JobRow, *, outputs: bool) -> dict[str, Any]:
    """A stored job as the API shows it; its outputs only with ``outputs`` (results, not listings)."""
    return job_record(
        id=r.id, model_hash=r.model_hash, status=r.status.value, verification=r.verification,
        input_commitment=r.input_commitment, output_commitment=r.output_commitment,
        outputs=encode_json(decode_canonical(r.outputs)) if outputs and r.outputs else None,
        worker=r.worker, attempts=r.attempts, submitted_at=r.submitted_at, started_at=r.started_at,
        finished_at=r.finished_at, error=r.error, options=r.options, client=r.client, settlement=r.settlement,
        settlement_tx=r.settlement_tx, payment=str(r.payment) if r.payment is not None else None,
        cached_from=r.cached_from, **_evidence(r.evidence))


def job_from_outcome(p: Pending, o: Outcome) -> dict[str, Any]:
    """A job that just reached a final state, as a waiter learnt it. It cannot have been paid or refunded yet:
    settlement runs on finished jobs, later, in batches; and it ran (a job answered from the result cache has no
    outcome: it is read from its row)."""
    return job_record(
        id=p.id, model_hash=p.model_hash, status=o.status.value, verification=p.verification,
        input_commitment=p.input_commitment, output_commitment=o.output_commitment,
        outputs=encode_json(o.outputs) if o.outputs is not None else None, worker=o.worker, attempts=o.attempts,
        submitted_at=p.submitted_at, started_at=o.started_at, finished_at=o.finished_at, error=o.error,
        options=p.options, client=p.client, settlement=p.settlement, settlement_tx=None, payment=None,
        cached_from=None, **_evidence(o.evidence))


def _evidence(ev: dict[str, Any] | None) -> dict[str, Any]:
    """The evidence as stored, verbatim: a worker's malformed receipt is shown as it came, never parsed here."""
    ev = ev or {}
    return {"receipt": ev.get("receipt"), "quorum": ev.get("quorum"), "zk": ev.get("zk")}


def pending_from_row(r: JobRow) -> Pending:
    """A stored job (read with its inputs) as the scheduler queues it."""
    assert r.inputs is not None
    price, payer = escrow_terms(r.escrow)
    return Pending(r.id, r.model_hash, decode_canonical(r.inputs), r.input_commitment, r.verification,
                   r.submitted_at, r.options, r.attempts, client=r.client, settlement=r.settlement, price=price,
                   payer=payer)


def escrow_terms(escrow: dict[str, Any] | None) -> tuple[int, str]:
    """(price, client account) of an escrow record (``Settlement.verify_escrow``); (0, "0x0") for an unpaid job."""
    if not escrow:
        return 0, "0x0"
    return int(escrow["price"]), str(escrow["client"])


def model_view(models: ModelStore, info: ModelInfo) -> dict[str, Any]:
    return {**info.to_dict(), "zk": models.zk_status(info.hash), "processor": models.processor_info(info.hash)}


def json_response(obj: Any, status: int = 200) -> Response:
    try:
        body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a value JSON cannot carry exactly (an integer beyond 64 bits, stored by an older build)
        body = orjson.dumps(_jsonable(obj), option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json")


def _jsonable(obj: Any) -> Any:
    """``obj`` with integers orjson refuses written as decimal strings, so one stored value cannot break a listing."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool) and not -(2**63) <= obj < 2**64:
        return str(obj)
    return obj
