"""Deployments: a name that serves one model with fixed settings, kept by the gateway (``/v1/deployments``).

A deployment points its name at a model hash, so ``client.infer("my-deployment", x)`` runs that model; an
update switches the name to a new model only once the new one is stored (and, for zk, set up), so jobs never
see a half-ready model. Jobs submitted before the switch finish on the model they were submitted to.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DEPLOYMENT_NAME", "Deployment", "valid_deployment_name"]

#: A deployment's name: letters, digits, '.', '_', '-', at most 128, starting with a letter or digit.
DEPLOYMENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def valid_deployment_name(name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(DEPLOYMENT_NAME, name) is not None


@dataclass(frozen=True)
class Deployment:
    name: str
    model_hash: str
    #: The verification level its jobs ask for (receipt, quorum, zk, none).
    verification: str
    #: At most this many workers run its batches at once (None: as many as are free).
    replicas: int | None = None
    #: At most this many jobs per batch (None: the gateway's max_batch_size).
    max_batch_size: int | None = None
    #: Only workers holding a GPU share run it.
    gpu: bool = False
    #: Only workers whose GPU share has at least this much memory (GB) run it.
    gpu_memory_gb: float | None = None
    #: Only workers whose GPU model name contains this (case-insensitive, e.g. "H100") run it.
    gpu_model: str | None = None
    #: Only workers without a GPU share run it (keeps GPUs for the deployments that need them).
    cpu_only: bool = False
    #: The most a job may cost (token base units), escrowed per job on chain; None: unpaid jobs.
    max_payment: int | None = None
    #: Free-form data of the tool that made it (the MLflow plugin keeps the model URI, flavor, signature here).
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    previous_model_hash: str | None = None
    status: str = "ready"
    created_at: float = 0.0
    updated_at: float = 0.0
    #: The account (public key) that created it; only it may change or delete it. None: created unsigned.
    owner: str | None = None
    #: The model's description (inputs, outputs, zk set-up) as ``GET /v1/models/REF`` gives it.
    model: dict[str, Any] = field(default_factory=dict)
    #: The gateway's on-chain settlement (price per job, contracts), when it has one.
    settlement: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Deployment:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("max_payment") is not None:
            kw["max_payment"] = int(kw["max_payment"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_payment"] = str(self.max_payment) if self.max_payment is not None else None
        return d
