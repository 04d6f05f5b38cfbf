"""The typed job model shared by the SDK, the CLI and the gateway."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .receipts import Receipt
from .tensors import decode_json, dtype_name, encode_json

__all__ = [
    "BatchResult",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "ModelInfo",
    "TensorSpec",
    "VerificationLevel",
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


class VerificationLevel(enum.StrEnum):
    """What evidence comes back with a result (``docs/verification.md``).

    ``NONE``: the output and its commitments only; nothing about who computed it.
    ``RECEIPT`` (the default): the worker's Stark-key signature over the job's commitments; it
    proves which worker vouched for this output, not that the output is correct.
    ``QUORUM``: the job runs on k = 3f+1 distinct workers and is accepted when 2f+1 agree; it
    proves agreement of that many independently keyed workers, not correctness.
    ``ZKML``: an EZKL proof that the output is the fixed-point evaluation of the committed model on
    the committed input; only sound when the SRS did not come from the prover (see docs).
    """

    NONE = "none"
    RECEIPT = "receipt"
    QUORUM = "quorum"
    ZKML = "zk"

    @property
    def proves(self) -> str:
        """What a valid result at this level proves, and what it does not (``docs/verification.md``)."""
        return _PROVES[self]

    @classmethod
    def parse(cls, value: VerificationLevel | str | bool | None) -> VerificationLevel:
        if value is None or value is False:
            return cls.NONE
        if isinstance(value, cls):
            return value
        text = str(value).lower()
        aliases = {"zkml": cls.ZKML, "zk": cls.ZKML, "none": cls.NONE, "receipt": cls.RECEIPT,
                   "quorum": cls.QUORUM}
        if text not in aliases:
            raise InputError(f"Unknown verification level {value!r}. Use one of: none, receipt, quorum, zk.")
        return aliases[text]


_PROVES: dict[VerificationLevel, str] = {
    VerificationLevel.NONE: "nothing about who computed the output or whether it is correct: only which "
                            "model, inputs and outputs the result refers to",
    VerificationLevel.RECEIPT: "that the worker holding the signing key vouched for exactly these model, input and "
                               "output commitments; not that the output is correct",
    VerificationLevel.ZKML: "that the output is the fixed-point evaluation of the model whose verifying key the "
                            "proof checks against, on the proof's public input, within the stated tolerance; only "
                            "sound if the prover did not make the SRS",
    VerificationLevel.QUORUM: "that at least 2f+1 distinct worker keys each signed an output agreeing with this one "
                              "under the stated policy; agreement, not correctness (colluding or identically "
                              "wrong workers agree too)",
}

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


@dataclass
class JobResult:
    """A job's state and, once done, its outputs and commitments."""

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
    #: The job's options (quorum policy, hardware), checked and typed by :func:`ciro.check_options`.
    options: dict[str, Any] = field(default_factory=dict)
    #: The worker's signed receipt (levels receipt and quorum).
    receipt: Receipt | None = None
    #: Quorum evidence: the policy and every vote (receipt, outputs, whether it agrees).
    quorum: dict[str, Any] | None = None
    #: Zero-knowledge proof artifact (level zk): proof, vk, settings, SRS identity.
    zk: dict[str, Any] | None = None
    #: Evidence references, filled by the gateway when a verification level produces them.
    proof_hash: str | None = None
    settlement_tx: str | None = None
    #: Public key that signed the submission (None: unsigned, from the gateway's own machine).
    client: str | None = None
    #: On-chain payment: None (not escrowed), "escrowed", "paid", "refunded" or "error".
    settlement: str | None = None
    #: Payment in CIRO base units (what the worker was paid once "paid").
    payment: int | None = None
    on_chain_verified: bool = False
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
            receipt=Receipt.from_dict(d["receipt"]) if d.get("receipt") else None,
            quorum=d.get("quorum"), zk=d.get("zk"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as a self-contained JSON-able dict (what `ciro verify` reads)."""
        return {
            "id": self.job_id, "status": self.status.value, "model_hash": self.model_hash,
            "verification": self.verification.value, "input_commitment": self.input_commitment,
            "output_commitment": self.output_commitment, "worker": self.worker, "attempts": self.attempts,
            "submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "outputs": encode_json(self.outputs, list_limit=1 << 62) if self.outputs is not None else None,
            "receipt": self.receipt.to_dict() if self.receipt else None, "quorum": self.quorum, "zk": self.zk,
            "error": self.error,
            "options": self.options, "proof_hash": self.proof_hash, "settlement_tx": self.settlement_tx,
            "on_chain_verified": self.on_chain_verified, "client": self.client, "settlement": self.settlement,
            "payment": self.payment,
        }

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
