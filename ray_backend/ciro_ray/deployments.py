"""Deployments on the gateway: a durable registry (SQLite under ``CIRO_HOME``) and the ``/v1/deployments`` routes.

A deployment names a model and how it is served (verification level, replicas, batch size, hardware, payment).
Creating or updating one points the model store's name at the model hash and gives the scheduler the serving
settings, so jobs submitted by name run on the deployed model. The registry survives a gateway restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ciro import (
    DEPLOYMENT_NAME,
    SERVED_LEVELS,
    Deployment,
    DeploymentExistsError,
    DeploymentNotFoundError,
    ForbiddenError,
    InputError,
    QuorumPolicy,
)

from .fit import Fit
from .scheduler import Serving, hardware_summary, unfit_error

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["DeploymentIn", "DeploymentStore", "DeploymentUpdate", "add_routes"]

_NAME = DEPLOYMENT_NAME
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
"""


class DeploymentStore:
    """Deployment records by name (JSON per row; one writer, the gateway's event loop)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def get(self, name: str) -> Deployment | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM deployments WHERE name=?", (name,)).fetchone()
        return Deployment.from_wire(json.loads(row[0])) if row else None

    def list(self) -> list[Deployment]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM deployments ORDER BY name").fetchall()
        return [Deployment.from_wire(json.loads(r[0])) for r in rows]

    def put(self, d: Deployment) -> None:
        record = {k: v for k, v in d.to_dict().items() if k not in ("model", "settlement")}  # derived on read
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO deployments (name, record) VALUES (?, ?)",
                             (d.name, json.dumps(record)))

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM deployments WHERE name=?", (name,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
    name: str = Field(pattern=_NAME, description="letters, digits, '.', '_', '-'; at most 128")
    model: str = Field(description="model hash, unique hash prefix or name (upload it first)")


def _fit(d: Deployment) -> Fit:
    """The hardware a deployment's workers need (InputError for settings that contradict each other)."""
    return Fit.of({"gpu": d.gpu, "gpu_memory_gb": d.gpu_memory_gb, "gpu_model": d.gpu_model, "cpu_only": d.cpu_only})


def _apply(gw: Gateway, d: Deployment) -> None:
    """Point the name at the model and hand the scheduler its serving settings."""
    gw.models.set_name(d.name, d.model_hash)
    if gw.scheduler is not None:
        gw.scheduler.serving[d.model_hash] = Serving(d.max_batch_size, d.replicas, _fit(d))


def _check(gw: Gateway, d: Deployment) -> None:
    """Refuse settings this gateway cannot serve, saying what would make them servable."""
    if d.verification not in SERVED_LEVELS:
        raise InputError(f"Unknown verification {d.verification!r}. Use one of: {', '.join(sorted(SERVED_LEVELS))}.")
    if d.verification == "zk" and not (gw.models.zk_status(d.model_hash) or {}).get("status") == "ready":
        raise InputError(f"Model {d.model_hash[:12]} has no zk set-up, so it cannot be deployed with verification "
                         "zk. Upload it with zk=true (ciro deploy --zk), or choose receipt or quorum.")
    pool = gw.pool
    fit = _fit(d)
    workers = pool.eligible_count(fit) if pool is not None else 0
    if not fit.any and workers == 0:
        raise unfit_error(fit, pool, subject="this deployment", instead="Deploy without the requirement ("
                          + ("cpu_only=false" if fit.cpu_only else "gpu=false, no gpu_model or gpu_memory_gb") + ")")
    hardware = f" of {fit.describe()}" if not fit.any else ""
    if d.verification == "quorum" and workers < QuorumPolicy().k:
        raise InputError(f"A quorum deployment needs {QuorumPolicy().k} eligible workers{hardware} (k = 3f+1, "
                         f"f = 1); this gateway has {workers} ({hardware_summary(pool)}). Add workers, or choose "
                         "receipt or zk.")
    if d.replicas is not None and d.replicas > max(workers, 1):
        raise InputError(f"replicas={d.replicas} but this gateway has {workers} eligible worker(s){hardware}. Lower "
                         "replicas or add workers (ciro up --workers N, or ciro provider join).")
    if d.max_batch_size is not None and d.max_batch_size > gw.cfg.max_batch_size:
        raise InputError(f"max_batch_size={d.max_batch_size} is above this gateway's limit "
                         f"{gw.cfg.max_batch_size}. Lower it, or raise CIRO_MAX_BATCH_SIZE on the gateway.")
    if d.max_payment is not None:
        if gw.settlement is None:
            raise InputError("max_payment is set, but this gateway settles no payments on chain. Drop max_payment, "
                             "or start the gateway with settlement (a chain.json in CIRO_HOME; `ciro up`).")
        if d.max_payment < gw.cfg.price_per_job:
            raise InputError(f"max_payment={d.max_payment} is below this gateway's price per job "
                             f"{gw.cfg.price_per_job}. Raise it.")


def _out(gw: Gateway, d: Deployment) -> dict[str, Any]:
    model = gw.model_dict(gw.models.get(d.model_hash))
    return {**d.to_dict(), "model": model, "settlement": gw.settlement.info() if gw.settlement else None}


def _owned(d: Deployment, request: Request) -> None:
    """Its owner or the operator may change it (a deployment made unsigned on the gateway's machine is the
    operator's: a remote key, however freshly made, may not)."""
    account = request.state.account
    if not request.state.operator and account != d.owner:
        raise ForbiddenError(f"Deployment {d.name!r} belongs to "
                             + (f"account {d.owner[:18]}..." if d.owner else "the gateway's operator")
                             + "; only it may change or delete it. Sign with that key, or create a deployment of "
                             "your own.", detail={"reason": "not_owner"})


def apply_all(gw: Gateway) -> None:
    """At start-up: every stored deployment's name and serving settings."""
    for d in gw.deployments.list():
        _apply(gw, d)


def add_routes(app: FastAPI, gw: Gateway, errors: dict[int | str, dict[str, Any]]) -> None:
    def _json(obj: Any, status: int = 200) -> Response:
        return Response(json.dumps(obj), status_code=status, media_type="application/json")

    def _get(name: str) -> Deployment:
        d = gw.deployments.get(name)
        if d is None:
            raise DeploymentNotFoundError(f"No deployment {name!r} on this gateway. List them with GET "
                                          "/v1/deployments (mlflow deployments list -t ciro), or create it.")
        return d

    @app.post("/v1/deployments", tags=["deployments"], status_code=201, responses=errors)
    async def create_deployment(body: DeploymentIn, request: Request) -> Response:
        """Deploy an uploaded model under a name, with its serving settings (checked against the workers)."""
        if gw.deployments.get(body.name) is not None:
            raise DeploymentExistsError(f"Deployment {body.name!r} exists. Update it (PUT /v1/deployments/NAME, "
                                        "mlflow deployments update), or delete it first.")
        info = gw.models.resolve(body.model)
        now = time.time()
        d = Deployment(name=body.name, model_hash=info.hash, verification=body.verification or "receipt",
                       replicas=body.replicas, max_batch_size=body.max_batch_size, gpu=bool(body.gpu),
                       gpu_memory_gb=body.gpu_memory_gb, gpu_model=body.gpu_model or None, cpu_only=bool(body.cpu_only),
                       max_payment=int(body.max_payment) if body.max_payment is not None else None,
                       metadata=body.metadata or {}, created_at=now, updated_at=now, owner=request.state.account)
        _check(gw, d)
        gw.deployments.put(d)
        _apply(gw, d)
        return _json(_out(gw, d), 201)

    @app.put("/v1/deployments/{name}", tags=["deployments"], responses=errors)
    async def update_deployment(name: str, body: DeploymentUpdate, request: Request) -> Response:
        """Change a deployment; a new model takes over atomically (jobs already submitted keep theirs)."""
        old = _get(name)
        _owned(old, request)
        info = gw.models.resolve(body.model) if body.model is not None else gw.models.get(old.model_hash)
        fields = body.model_dump(exclude_unset=True, exclude={"model"})
        if "max_payment" in fields and fields["max_payment"] is not None:
            fields["max_payment"] = int(fields["max_payment"])
        for flag in ("gpu", "cpu_only"):  # an explicit null switches the requirement off
            if flag in fields:
                fields[flag] = bool(fields[flag])
        if "gpu_model" in fields:
            fields["gpu_model"] = fields["gpu_model"] or None
        new = Deployment(**{**old.to_dict(), **fields, "max_payment": fields.get("max_payment", old.max_payment),
                            "model_hash": info.hash, "version": old.version + 1, "updated_at": time.time(),
                            "previous_model_hash": old.model_hash if info.hash != old.model_hash
                            else old.previous_model_hash, "model": {}, "settlement": None})
        _check(gw, new)
        gw.deployments.put(new)
        _apply(gw, new)
        return _json(_out(gw, new))

    @app.get("/v1/deployments", tags=["deployments"])
    async def list_deployments() -> Response:
        return _json([_out(gw, d) for d in gw.deployments.list()])

    @app.get("/v1/deployments/{name}", tags=["deployments"], responses=errors)
    async def get_deployment(name: str) -> Response:
        return _json(_out(gw, _get(name)))

    @app.delete("/v1/deployments/{name}", tags=["deployments"], responses=errors)
    async def delete_deployment(name: str, request: Request) -> Response:
        """Remove a deployment (idempotent: deleting a missing one answers ``deleted: false``). The model stays
        in the store; jobs already submitted finish."""
        d = gw.deployments.get(name)
        if d is None:
            return _json({"name": name, "deleted": False})
        _owned(d, request)
        gw.deployments.delete(name)
        gw.models.unset_name(name, d.model_hash)
        if gw.scheduler is not None and not any(o.model_hash == d.model_hash for o in gw.deployments.list()):
            gw.scheduler.serving.pop(d.model_hash, None)
        return _json({"name": name, "deleted": True})
