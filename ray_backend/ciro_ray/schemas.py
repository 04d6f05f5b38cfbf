"""Request and response bodies of the gateway's HTTP API (they make ``/openapi.json``). ``JobOut`` is made from
the job record ``ciro.jobs.JOB_RECORD``, the one definition the SDK reads too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, create_model

from ciro import DEPLOYMENT_NAME, options_doc
from ciro.jobs import JOB_RECORD

__all__ = [
    "ERRORS",
    "OPTIONS_DOC",
    "BatchRequest",
    "BatchResponse",
    "DeploymentIn",
    "DeploymentUpdate",
    "ErrorResponse",
    "EscrowRequest",
    "JobOut",
    "JobRequest",
    "ModelOut",
    "Tensor",
    "WorkerOut",
]


#: One dimension of a tensor: far above any real tensor, far below what overflows a size computation.
Dim = Annotated[int, Field(ge=0, le=2**40)]


class Tensor(BaseModel):
    dtype: str = Field(max_length=16, description="numpy dtype name: float32, int64, bool, ...")
    shape: list[Dim] = Field(max_length=32)
    data: list[Any] | None = Field(default=None, description="flat C-order values (give this or b64)")
    b64: str | None = Field(default=None, description="base64 of the raw little-endian bytes (give this or data)")


OPTIONS_DOC = ("job options, each acted on; any other name is refused (422). " + options_doc()
                + ". Hardware options are added to the model's deployment's.")


class JobRequest(BaseModel):
    model: str = Field(max_length=200, description="model hash, unique hash prefix, or model name")
    inputs: dict[str, Tensor]
    verification: str = Field("receipt", max_length=16, description="none, receipt, quorum or zk")
    options: dict[str, Any] = Field(default_factory=dict, description=OPTIONS_DOC)


class BatchRequest(BaseModel):
    model: str = Field(max_length=200)
    items: list[dict[str, Tensor]] | None = Field(default=None, max_length=100_000,
                                                  description="one input dict per job")
    inputs: dict[str, Tensor] | None = Field(
        None, description="stacked inputs, split along axis 0 into jobs of rows_per_job rows")
    rows_per_job: int = Field(default=1, ge=1, le=2**31)
    verification: str = Field("receipt", max_length=16, description="none, receipt, quorum or zk")
    options: dict[str, Any] = Field(default_factory=dict, description=OPTIONS_DOC)


def _job_model() -> type[BaseModel]:
    """The job record as a pydantic model: every key always present (null where it has no value yet)."""
    fields: dict[str, Any] = {
        f.key: (dict[str, Tensor] | None if f.key == "outputs" else f.json_type, Field(description=f.doc))
        for f in JOB_RECORD}
    return create_model("JobOut", __doc__="A job: its state, its evidence and, in results, its outputs.", **fields)


if TYPE_CHECKING:  # generated at run time; to type checkers, a model like any other
    JobOut = BaseModel
else:
    JobOut = _job_model()


class BatchResponse(BaseModel):
    batch_id: str
    job_ids: list[str]
    results: list[JobOut] | None = None
    jobs: list[JobOut] | None = Field(default=None, description="with escrow=true: the jobs awaiting their escrow")


class EscrowRequest(BaseModel):
    job_ids: list[str] = Field(min_length=1, max_length=10_000)
    tx_hash: str = Field(description="the transaction that called JobManager.submit_job for every one of them")


class TensorSpecOut(BaseModel):
    name: str
    dtype: str
    shape: list[int | str | None]


class ModelOut(BaseModel):
    hash: str
    name: str
    size: int
    opset: dict[str, int]
    inputs: list[TensorSpecOut]
    outputs: list[TensorSpecOut]
    created_at: float
    producer: str = ""
    zk: dict[str, Any] | None = None
    processor: dict[str, Any] | None = None


class WorkerOut(BaseModel):
    id: str
    actor_name: str
    alive: bool
    inflight_batches: int
    node_id: str | None = None
    hostname: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    execution_providers: list[str] = Field(default=[], description="onnxruntime execution providers in use")
    provider: str | None = Field(default=None, description="the compute provider running this worker")
    worker_key: str | None = None
    admitted: bool = True
    models_loaded: list[str] = []
    jobs_done: int = 0


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorBody


class DeploymentUpdate(BaseModel):
    model: str | None = Field(None, description="model hash, unique hash prefix or name (upload it first)")
    verification: str | None = Field(None, description="receipt | quorum | zk | none")
    replicas: int | None = Field(None, ge=1, description="at most this many workers run it at once")
    max_batch_size: int | None = Field(None, ge=1, description="at most this many jobs per batch")
    gpu: bool | None = Field(None, description="only workers holding a GPU share")
    gpu_memory_gb: float | None = Field(None, ge=0, description="only workers whose GPU share has at least this "
                                        "much memory (GB; a 0.5 share of an 80 GB GPU has 40)")
    gpu_model: str | None = Field(None, max_length=128, description="only workers whose GPU model name contains "
                                  "this (case-insensitive), e.g. H100")
    cpu_only: bool | None = Field(None, description="only workers without a GPU share")
    max_payment: str | None = Field(None, pattern=r"^[0-9]+$", description="escrow per job (token base units)")
    metadata: dict[str, Any] | None = None


class DeploymentIn(DeploymentUpdate):
    name: str = Field(pattern=DEPLOYMENT_NAME, description="letters, digits, '.', '_', '-'; at most 128")
    model: str = Field(description="model hash, unique hash prefix or name (upload it first)")


#: The error answers every route may give (``{"error": {...}}``), for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 402, 403, 404, 409, 413, 422, 503)
}
