"""Request and response bodies of the gateway's HTTP API (they make ``/openapi.json``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ciro import options_doc

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "ErrorResponse",
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


_OPTIONS_DOC = ("job options, each acted on; any other name is refused (422). " + options_doc()
                + ". Hardware options are added to the model's deployment's.")


class JobRequest(BaseModel):
    model: str = Field(max_length=200, description="model hash, unique hash prefix, or model name")
    inputs: dict[str, Tensor]
    verification: str = Field("receipt", max_length=16, description="none, receipt, quorum or zk")
    options: dict[str, Any] = Field(default_factory=dict, description=_OPTIONS_DOC)


class BatchRequest(BaseModel):
    model: str = Field(max_length=200)
    items: list[dict[str, Tensor]] | None = Field(default=None, max_length=100_000,
                                                  description="one input dict per job")
    inputs: dict[str, Tensor] | None = Field(
        None, description="stacked inputs, split along axis 0 into jobs of rows_per_job rows")
    rows_per_job: int = Field(default=1, ge=1, le=2**31)
    verification: str = Field("receipt", max_length=16, description="none, receipt, quorum or zk")
    options: dict[str, Any] = Field(default_factory=dict, description=_OPTIONS_DOC)


class JobOut(BaseModel):
    id: str
    model_hash: str
    status: str
    verification: str
    input_commitment: str
    output_commitment: str | None = None
    outputs: dict[str, Tensor] | None = None
    worker: str | None = None
    attempts: int = 0
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    options: dict[str, Any] = {}
    client: str | None = Field(default=None, description="public key that signed the submission (None: unsigned, "
                                                          "from the gateway's own machine)")
    settlement: str | None = Field(default=None, description="on-chain payment: escrowed, paid, refunded or error")
    payment: str | None = Field(default=None, description="what the worker was paid, in CIRO base units")
    receipt: dict[str, Any] | None = Field(default=None, description="the worker's signed receipt (docs/encoding.md)")
    quorum: dict[str, Any] | None = Field(
        default=None, description="quorum evidence: policy and every vote (receipt, outputs, agrees)")
    zk: dict[str, Any] | None = Field(
        default=None, description="EZKL proof artifact: proof, vk, settings, SRS identity (docs/verification.md)")
    proof_hash: str | None = None
    settlement_tx: str | None = None
    on_chain_verified: bool = False


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
