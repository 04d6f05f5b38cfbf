"""The typed job model shared by the SDK, the CLI and the gateway."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .levels import VerificationLevel
from .receipts import Receipt
from .tensors import decode_json, dtype_name, encode_json

__all__ = [
    "JOB_RECORD",
    "BatchResult",
    "JobField",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "ModelInfo",
    "TensorSpec",
    "VerificationLevel",
    "job_record",
    "new_job_id",
    "new_job_ids",
]


class JobStatus(enum.StrEnum):
    #: Accepted, waiting for its payment to be escrowed on chain before it is scheduled.
    AWAITING_ESCROW = "awaiting_escrow"
    QUEUED = "queued"
    RUNNING = "running"
    PROVING = "proving"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


SERVED_LEVELS = frozenset(VerificationLevel)


def new_job_id() -> str:
    """A random 128-bit job id, 32 hex characters."""
    return os.urandom(16).hex()


def new_job_ids(n: int) -> list[str]:
    """``n`` job ids from one read of the OS random source (a batch of 1,000 costs one syscall)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i:i + 32] for i in range(0, 32 * n, 32)]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    #: Each dim is an int, or a string/None for a dynamic (symbolic) dim.
    shape: list[int | str | None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=d["name"], dtype=d["dtype"], shape=list(d["shape"]))

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)

    def check(self, arr: np.ndarray) -> None:
        """Raise :class:`InputError` unless ``arr`` fits this spec."""
        if dtype_name(arr.dtype) != self.dtype:
            raise InputError(
                f"Input {self.name!r} has dtype {arr.dtype.name}; the model expects {self.dtype}. "
                f"Cast it (e.g. x.astype(np.{self.dtype}))."
            )
        if arr.ndim != len(self.shape) or any(
            isinstance(d, int) and d != n for d, n in zip(self.shape, arr.shape, strict=False)
        ):
            raise InputError(
                f"Input {self.name!r} has shape {list(arr.shape)}; the model expects {_shape_text(self.shape)}. "
                "Reshape the input (dims shown as names or ? are free)."
            )


def _shape_text(shape: list[int | str | None]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


@dataclass(frozen=True)
class ModelInfo:
    hash: str
    name: str
    size: int
    opset: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    created_at: float
    producer: str = ""
    #: Zero-knowledge set-up of this model (logrows, vk hash, SRS kind), when it was deployed with zk.
    zk: dict[str, Any] | None = None
    #: Its pre/post-processing bundle (kind, task, sha256), when one is attached: raw inputs (text, images) are
    #: turned into tensors, and outputs into predictions, by the processor plugin of that kind.
    processor: dict[str, Any] | None = None
    #: Client side only: how ``deploy_model`` converted and optimised the file, and how it checked the result.
    conversion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash, "name": self.name, "size": self.size, "opset": dict(self.opset),
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "created_at": self.created_at, "producer": self.producer, "zk": self.zk, "processor": self.processor,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(
            hash=d["hash"], name=d.get("name", ""), size=int(d["size"]), opset=dict(d.get("opset", {})),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            created_at=float(d.get("created_at", 0.0)), producer=d.get("producer", ""), zk=d.get("zk"),
            processor=d.get("processor"),
        )

    @property
    def id(self) -> str:  # the SDK document calls it ``dep.id``
        return self.hash

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        expected = {t.name for t in self.inputs}
        if set(inputs) != expected:
            missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
            raise InputError(
                f"Inputs do not match model {self.hash[:12]}: missing {missing}, unexpected {extra}. "
                f"The model's inputs are {sorted(expected)}."
            )
        for spec in self.inputs:
            spec.check(inputs[spec.name])


@dataclass(frozen=True)
class JobSpec:
    """One inference job as the client asks for it."""

    model: str
    inputs: dict[str, np.ndarray]
    verification: VerificationLevel = VerificationLevel.NONE
    options: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "inputs": encode_json(self.inputs),
                "verification": self.verification.value, "options": dict(self.options)}


@dataclass(frozen=True)
class JobField:
    """One key of the job record: its name on the wire, the type of its JSON value, what it holds."""

    key: str
    json_type: Any
    doc: str


#: The job record: what the gateway answers for a job (every key, always), what :meth:`JobResult.from_wire` reads
#: and :meth:`JobResult.to_dict` writes (``ciro verify``'s file). The gateway's OpenAPI schema is made from it.
JOB_RECORD: tuple[JobField, ...] = (
    JobField("id", str, "the job id: 32 hex characters"),
    JobField("model_hash", str, "SHA-256 of the model's ONNX bytes"),
    JobField("status", str, "awaiting_escrow, queued, running, proving, done, failed or cancelled"),
    JobField("verification", str, "the verification level: none, receipt, quorum or zk"),
    JobField("input_commitment", str, "SHA-256 of the inputs' canonical bytes (docs/encoding.md)"),
    JobField("output_commitment", str | None, "SHA-256 of the outputs' canonical bytes, once done"),
    JobField("outputs", dict[str, Any] | None, "the named output tensors; only in results, once done"),
    JobField("worker", str | None, "the worker that ran it"),
    JobField("attempts", int, "how many times it was dispatched (a worker that died counts)"),
    JobField("submitted_at", float, "when it was stored (Unix seconds)"),
    JobField("started_at", float | None, "when its last attempt started"),
    JobField("finished_at", float | None, "when it reached a final state"),
    JobField("error", dict[str, Any] | None, "why it failed: {code, message, detail}"),
    JobField("options", dict[str, Any], "its checked options (quorum policy, hardware)"),
    JobField("client", str | None, "public key that signed the submission (None: unsigned, from the gateway's own "
                                   "machine)"),
    JobField("settlement", str | None, "on-chain payment: escrowed or prepaid (waiting), paid, refunded, "
             "uncharged (a prepaid job that ended without a result) or error (None: unpaid)"),
    JobField("settlement_tx", str | None, "the transaction that paid or refunded it"),
    JobField("payment", str | None, "what the worker was paid, in CIRO base units (a decimal string)"),
    JobField("on_chain_verified", bool, "True once the JobManager accepted its settlement after Cairo checked the "
                                        "receipt's (or 2f+1 votes') signature; for a prepaid job, once CiroLedger "
                                        "paid its worker batch and its job_in_batch confirmed the job's leaf"),
    JobField("cached", bool, "True when the gateway answered it from its result cache: the outputs and evidence "
                             "are those of job cached_from, done earlier for the same submitter"),
    JobField("cached_from", str | None, "the job whose run this result reuses (its receipt and proof name that "
                                        "job); None: computed for this job"),
    JobField("receipt", dict[str, Any] | None, "the worker's signed receipt (docs/encoding.md)"),
    JobField("quorum", dict[str, Any] | None, "quorum evidence: policy and every vote (receipt, outputs, agrees)"),
    JobField("zk", dict[str, Any] | None, "EZKL proof artifact: proof, vk, settings, SRS identity "
                                          "(docs/verification.md)"),
    JobField("proof_hash", str | None, "the zk proof's hash"),
)
_DERIVED = frozenset({"proof_hash", "on_chain_verified", "cached"})


def job_record(**values: Any) -> dict[str, Any]:
    """The job record with every key of :data:`JOB_RECORD`, in its order. Every key is given, except the three the
    record derives when they are not: ``proof_hash`` (from ``zk``), ``on_chain_verified`` (settlement "paid") and
    ``cached`` (``cached_from`` is set).
    A key missing or unknown is a programming error (TypeError): the record never loses a field silently."""
    keys = {f.key for f in JOB_RECORD}
    unknown, missing = set(values) - keys, keys - _DERIVED - set(values)
    if unknown or missing:
        raise TypeError(f"job_record: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    zk = values.get("zk")
    values.setdefault("proof_hash", zk.get("proof_hash") if zk else None)
    values.setdefault("on_chain_verified", values["settlement"] == "paid")
    if values.get("cached") is None:
        values["cached"] = values["cached_from"] is not None
    return {f.key: values[f.key] for f in JOB_RECORD}


@dataclass
class JobResult:
    """A job's state and, once done, its outputs and commitments: the job record (:data:`JOB_RECORD`, which says
    what each field holds) as objects; ``job_id`` is its ``id``, ``payment`` an integer."""

    job_id: str
    model_hash: str
    status: JobStatus
    input_commitment: str
    output_commitment: str | None = None
    outputs: dict[str, np.ndarray] | None = None
    verification: VerificationLevel = VerificationLevel.NONE
    worker: str | None = None
    attempts: int = 0
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    receipt: Receipt | None = None
    quorum: dict[str, Any] | None = None
    zk: dict[str, Any] | None = None
    proof_hash: str | None = None
    settlement_tx: str | None = None
    client: str | None = None
    settlement: str | None = None
    payment: int | None = None
    on_chain_verified: bool = False
    cached: bool = False
    cached_from: str | None = None
    #: What the model's processor made of the outputs (labels and scores, entities, an embedding), when the job
    #: was submitted with raw input (text, an image) to a model with a processor bundle; None otherwise.
    prediction: Any = None
    #: Set by the sync client: waits for this job's on-chain settlement (see :meth:`wait_settled`).
    _settle: Any = field(default=None, repr=False, compare=False)

    def wait_settled(self, timeout: float | None = None) -> JobResult:
        """Wait until the job's payment is settled on chain (paid or refunded) and return the job then;
        ``on_chain_verified`` is True once the settlement transaction was accepted after the chain checked
        the job's receipt (a quorum's 2f+1 signatures). Only for results a :class:`CiroClient` returned."""
        if self._settle is None:
            raise InputError("This result is not attached to a client. Call client.wait_settled(result.job_id).")
        result: JobResult = self._settle(self.job_id, timeout)
        return result

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> JobResult:
        """A job record (:data:`JOB_RECORD`) as the gateway sends it or :meth:`to_dict` wrote it."""
        outputs = decode_json(d["outputs"]) if d.get("outputs") else None
        return cls(
            job_id=d["id"], model_hash=d["model_hash"], status=JobStatus(d["status"]),
            input_commitment=d["input_commitment"], output_commitment=d.get("output_commitment"),
            outputs=outputs, verification=VerificationLevel(d.get("verification", "none")),
            worker=d.get("worker"), attempts=int(d.get("attempts", 0)),
            submitted_at=float(d.get("submitted_at") or 0.0), started_at=d.get("started_at"),
            finished_at=d.get("finished_at"), error=d.get("error"), options=dict(d.get("options") or {}),
            proof_hash=d.get("proof_hash") or (d.get("zk") or {}).get("proof_hash"),
            settlement_tx=d.get("settlement_tx"), client=d.get("client"), settlement=d.get("settlement"),
            payment=int(d["payment"]) if d.get("payment") is not None else None,
            on_chain_verified=bool(d.get("on_chain_verified", False)),
            cached=bool(d.get("cached", False)), cached_from=d.get("cached_from"),
            receipt=Receipt.from_dict(d["receipt"]) if d.get("receipt") else None,
            quorum=d.get("quorum"), zk=d.get("zk"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as a self-contained JSON-able dict (what `ciro verify` reads): the job record, with every
        output value listed and the payment an exact integer."""
        return {**job_record(
            id=self.job_id, model_hash=self.model_hash, status=self.status.value, verification=self.verification.value,
            input_commitment=self.input_commitment, output_commitment=self.output_commitment,
            outputs=encode_json(self.outputs, list_limit=1 << 62) if self.outputs is not None else None,
            worker=self.worker, attempts=self.attempts, submitted_at=self.submitted_at, started_at=self.started_at,
            finished_at=self.finished_at, error=self.error, options=self.options, client=self.client,
            settlement=self.settlement, settlement_tx=self.settlement_tx, payment=None,
            on_chain_verified=self.on_chain_verified, cached=self.cached, cached_from=self.cached_from,
            receipt=self.receipt.to_dict() if self.receipt else None,
            quorum=self.quorum, zk=self.zk, proof_hash=self.proof_hash), "payment": self.payment}

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.submitted_at

    # Names from the project's SDK document -------------------------------------------------
    @property
    def output(self) -> np.ndarray | dict[str, np.ndarray] | None:
        """The single output array, or the dict of outputs when the model has several."""
        if self.outputs is None or len(self.outputs) != 1:
            return self.outputs
        return next(iter(self.outputs.values()))

    @property
    def confidence(self) -> np.ndarray | None:
        """For a classifier, the top probability of each row: the per-row max of the first output whose rows are
        probabilities (non-negative, summing to 1). None for any other model (regression, embeddings, logits):
        a number there would claim a certainty the model does not state."""
        for arr in (self.outputs or {}).values():
            if arr.dtype.kind == "f" and arr.ndim >= 1 and arr.size and np.all(arr >= 0):
                sums = arr.sum(axis=-1)
                if np.allclose(sums, 1.0, atol=1e-3):
                    return np.asarray(arr.max(axis=-1))
        return None


@dataclass
class BatchResult:
    """The results of one ``infer`` call that ``batch_size`` split into several jobs, in input order. Each job
    keeps its own evidence (``results``); ``output``, ``outputs`` and ``confidence`` join the rows again."""

    results: list[JobResult]

    @property
    def job_ids(self) -> list[str]:
        return [r.job_id for r in self.results]

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        names = list(self.results[0].outputs or {})
        return {n: np.concatenate([(r.outputs or {})[n] for r in self.results]) for n in names}

    @property
    def output(self) -> np.ndarray | dict[str, np.ndarray]:
        outs = self.outputs
        return next(iter(outs.values())) if len(outs) == 1 else outs

    @property
    def confidence(self) -> np.ndarray | None:
        parts = [r.confidence for r in self.results]
        return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]

    @property
    def proof_hash(self) -> list[str | None]:
        return [r.proof_hash for r in self.results]

    @property
    def on_chain_verified(self) -> bool:
        return all(r.on_chain_verified for r in self.results)

    def wait_settled(self, timeout: float | None = None) -> BatchResult:
        return BatchResult([r.wait_settled(timeout) for r in self.results])
