"""``predict`` and ``predict_stream``: a deployment's input rows run as Ciro jobs; their predictions and evidence
come back as columns in an ``mlflow.deployments.PredictionsResponse``.

A response holds ``predictions`` (what the original model predicts, one per input row), the model's other outputs
by name (e.g. ``probabilities``; ``score`` for text), and per row the evidence of the job that computed it
(``job_id``, ``verification``, ``worker``, ``output_commitment``, ``receipt_signer``, ``proof_hash``,
``settlement``, ``settlement_tx``, ``evidence``). ``pandas.DataFrame(response)`` is that table;
``response.get_predictions()`` the predictions alone, as MLflow's own targets give them.

``predict_stream`` submits every job at once and yields one response per job as soon as that job is done (in the
order the jobs finish, not the input order), with a ``row`` column: the input row of each prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
from mlflow.deployments import PredictionsResponse

from ciro import (
    CiroClient,
    ConfigError,
    Deployment,
    JobCancelledError,
    JobFailedError,
    JobResult,
    JobStatus,
    Processor,
)

from .inputs import Layout, as_columns, evidence, feeds, rows_of
from .text import texts

__all__ = ["PREDICT_CHUNK", "STREAM_WAITERS", "predict", "predict_stream"]

PREDICT_CHUNK = 512  # jobs per request
#: Jobs of a stream waited on at once (each wait is one long-polling request to the gateway).
STREAM_WAITERS = 8

Rows = list[dict[str, Any]]


def _meta(d: Deployment) -> tuple[dict[str, Any], int]:
    meta = d.metadata.get("mlflow") or {}
    return meta, int(meta.get("rows_per_job", 1))


def _fed(d: Deployment, meta: dict[str, Any], inputs: Any) -> tuple[dict[str, np.ndarray], str]:
    layout = Layout.from_dict(meta["layout"]) if meta.get("layout") else Layout(d.model.get("inputs", []))
    return feeds(inputs, layout), meta.get("primary_output") or d.model["outputs"][0]["name"]


def _spans(fed: dict[str, np.ndarray], per_job: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, rows per job) of each request: whole jobs, then the rest, PREDICT_CHUNK jobs at most."""
    rows = len(next(iter(fed.values())))
    step = PREDICT_CHUNK * per_job
    for start in range(0, rows, step):
        end = min(start + step, rows)
        whole = start + (end - start) // per_job * per_job
        for a, b, n in ((start, whole, per_job), (whole, end, end - whole)):
            if b > a:
                yield a, b, n


def _part(fed: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[a:b]) for k, v in fed.items()}


def _processor(client: CiroClient, d: Deployment) -> Processor:
    proc = client.processor(d.model_hash)
    if proc is None:
        raise ConfigError(f"Deployment {d.name!r} is a text model but its Ciro model has no processor bundle. "
                          "Update it with the MLflow model again (mlflow deployments update -t ciro -m URI).")
    return proc


def _text_rows(r: JobResult, predictions: list[dict[str, Any]], url: str) -> Rows:
    """The label and score of each text of a job, with the job's evidence."""
    ev = evidence(r, url)
    return [{"predictions": p["label"], "score": p["score"], **ev} for p in predictions]


def predict(client: CiroClient, d: Deployment, inputs: Any) -> PredictionsResponse:
    """Every input row's prediction with its job's evidence (see the module docstring)."""
    meta, per_job = _meta(d)
    if meta.get("text"):
        items, rows = texts(inputs), []
        options: dict[str, Any] = {"max_payment": d.max_payment} if d.max_payment is not None else {}
        for start in range(0, len(items), per_job):  # the client tokenizes each job's texts and labels its logits
            r = client.infer(d.model_hash, items[start:start + per_job], verification=d.verification, **options)
            rows += _text_rows(r, r.prediction or [], client.url)
        return PredictionsResponse(as_columns(rows))
    fed, primary = _fed(d, meta, inputs)
    results: list[JobResult] = []
    for a, b, n in _spans(fed, per_job):
        results += client.infer_batch(d.model_hash, _part(fed, a, b), rows_per_job=n, verification=d.verification,
                                      max_payment=d.max_payment)
    return PredictionsResponse(as_columns(rows_of(results, primary=primary, gateway_url=client.url)))


def predict_stream(client: CiroClient, d: Deployment, inputs: Any) -> Iterator[PredictionsResponse]:
    """One response per job, as each job completes (see the module docstring)."""
    meta, per_job = _meta(d)
    jobs: list[tuple[str, int, Callable[[JobResult], Rows]]] = []  # job id, its first input row, its rows' reader
    if meta.get("text"):
        items = texts(inputs)
        proc = _processor(client, d)
        chunks = [items[i:i + per_job] for i in range(0, len(items), per_job)]
        ids = client.submit_batch(d.model_hash, [proc.preprocess(c) for c in chunks], verification=d.verification,
                                  max_payment=d.max_payment)

        def reader(chunk: list[str]) -> Callable[[JobResult], Rows]:
            return lambda r: _text_rows(r, proc.postprocess(r.outputs or {}, chunk), client.url)

        jobs = [(jid, k * per_job, reader(c)) for k, (jid, c) in enumerate(zip(ids, chunks, strict=True))]
    else:
        fed, primary = _fed(d, meta, inputs)
        for a, b, n in _spans(fed, per_job):
            ids = client.submit_batch(d.model_hash, _part(fed, a, b), rows_per_job=n, verification=d.verification,
                                      max_payment=d.max_payment)
            jobs += [(jid, a + i * n, lambda r: rows_of([r], primary=primary, gateway_url=client.url))
                     for i, jid in enumerate(ids)]
    if not jobs:
        return
    pool = ThreadPoolExecutor(max_workers=min(STREAM_WAITERS, len(jobs)), thread_name_prefix="ciro-mlflow-stream")
    try:
        waiting = {pool.submit(client.wait, jid): (first, read) for jid, first, read in jobs}
        for done in as_completed(waiting):
            first, read = waiting[done]
            rows = read(_finished(done.result()))
            yield PredictionsResponse(as_columns([{**row, "row": first + i} for i, row in enumerate(rows)]))
    finally:  # a consumer that stops early does not wait for the other jobs (they still run on the gateway)
        pool.shutdown(wait=False, cancel_futures=True)


def _finished(r: JobResult) -> JobResult:
    if r.status is JobStatus.FAILED:
        err = r.error or {}
        raise JobFailedError(f"Job {r.job_id} failed: {err.get('message', 'no reason given')}. The other jobs' "
                             "predictions were streamed; predict this row again, or check GET /v1/faults.",
                             detail={"job_id": r.job_id, "code": err.get("code")})
    if r.status is JobStatus.CANCELLED:
        raise JobCancelledError(f"Job {r.job_id} was cancelled. Predict its rows again.", detail={"job_id": r.job_id})
    return r
