"""``/v1/deployments``: a name serving an uploaded model with its settings, checked against the workers
(``admission.check_deployment``); only its owner or the operator changes it."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ciro import Config, Deployment, DeploymentExistsError, ModelStore, VerificationLevel

from ..admission import Caller, check_deployment, require_deployment_owner
from ..deployments import DeploymentStore, apply, withdraw
from ..records import model_view
from ..runtime import Runtime
from ..schemas import ERRORS, DeploymentIn, DeploymentUpdate

__all__ = ["router"]


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status_code=status, media_type="application/json")


def router(cfg: Config, deployments: DeploymentStore, models: ModelStore, live: Runtime) -> APIRouter:
    api = APIRouter(tags=["deployments"])

    def _check(d: Deployment) -> None:
        zk_ready = (models.zk_status(d.model_hash) or {}).get("status") == "ready"
        check_deployment(cfg, live, d, zk_ready=zk_ready)

    def _out(d: Deployment) -> dict[str, Any]:
        return {**d.to_dict(), "model": model_view(models, models.get(d.model_hash)),
                "settlement": live.settlement.info() if live.settlement else None}

    @api.post("/v1/deployments", status_code=201, responses=ERRORS)
    async def create_deployment(body: DeploymentIn, request: Request) -> Response:
        """Deploy an uploaded model under a name, with its serving settings (checked against the workers)."""
        if deployments.get(body.name) is not None:
            raise DeploymentExistsError(f"Deployment {body.name!r} exists. Update it (PUT /v1/deployments/NAME, "
                                        "mlflow deployments update), or delete it first.")
        info = models.resolve(body.model)
        now = time.time()
        level = body.verification or VerificationLevel.RECEIPT.value
        d = Deployment(name=body.name, model_hash=info.hash, verification=level,
                       replicas=body.replicas, max_batch_size=body.max_batch_size, gpu=bool(body.gpu),
                       gpu_memory_gb=body.gpu_memory_gb, gpu_model=body.gpu_model or None, cpu_only=bool(body.cpu_only),
                       max_payment=int(body.max_payment) if body.max_payment is not None else None,
                       metadata=body.metadata or {}, created_at=now, updated_at=now, owner=request.state.account)
        _check(d)
        deployments.put(d)
        apply(d, models, live.scheduler)
        return _json(_out(d), 201)

    @api.put("/v1/deployments/{name}", responses=ERRORS)
    async def update_deployment(name: str, body: DeploymentUpdate, request: Request) -> Response:
        """Change a deployment; a new model takes over atomically (jobs already submitted keep theirs)."""
        old = deployments.require(name)
        require_deployment_owner(Caller.of(request), old)
        info = models.resolve(body.model) if body.model is not None else models.get(old.model_hash)
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
        _check(new)
        deployments.put(new)
        apply(new, models, live.scheduler)
        return _json(_out(new))

    @api.get("/v1/deployments")
    async def list_deployments() -> Response:
        return _json([_out(d) for d in deployments.list()])

    @api.get("/v1/deployments/{name}", responses=ERRORS)
    async def get_deployment(name: str) -> Response:
        return _json(_out(deployments.require(name)))

    @api.delete("/v1/deployments/{name}", responses=ERRORS)
    async def delete_deployment(name: str, request: Request) -> Response:
        """Remove a deployment (idempotent: deleting a missing one answers ``deleted: false``). The model stays
        in the store; jobs already submitted finish."""
        d = deployments.get(name)
        if d is None:
            return _json({"name": name, "deleted": False})
        require_deployment_owner(Caller.of(request), d)
        withdraw(d, deployments, models, live.scheduler)
        return _json({"name": name, "deleted": True})

    return api
