"""``/v1/models``: upload ONNX models (and their zk set-up), read them, attach a processor bundle."""

from __future__ import annotations

import asyncio
from typing import Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ciro import Config, InvalidModelError, ModelInfo, ModelStore

from ..proving import run_setup
from ..records import json_response, model_view
from ..runtime import Runtime
from ..schemas import ERRORS, ModelOut

__all__ = ["ZkSetup", "router"]


class ZkSetup:
    """EZKL set-up of a model, once per settings and one at a time; refuses clearly when EZKL cannot handle it."""

    def __init__(self, cfg: Config, models: ModelStore, live: Runtime) -> None:
        self.cfg = cfg
        self.models = models
        self.live = live
        self._lock = asyncio.Lock()

    async def __call__(self, info: ModelInfo, data: bytes, inputs: str = "public", outputs: str = "public") -> None:
        status = self.models.zk_status(info.hash)
        if status is not None and (status["input_visibility"], status["output_visibility"]) == (inputs, outputs):
            return
        rng = np.random.default_rng(0)
        calibration = [rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
                       if t.dtype.startswith("float") else np.zeros([d if isinstance(d, int) else 1 for d in t.shape],
                                                                      dtype=t.dtype) for t in info.inputs]
        try:
            async with self._lock:
                await asyncio.to_thread(run_setup, data, self.models.zk_dir(info.hash), calibration,
                                        self.cfg.srs_dir, str(self.cfg.home), inputs, outputs)
            await self.live.sched.prover().warm.remote()  # the first proof need not wait for EZKL's import
        except InvalidModelError as exc:
            raise InvalidModelError(
                f"Model {info.hash[:12]} is deployed and serves receipt and quorum jobs, but not zk: {exc.message}",
                detail={"model_hash": info.hash, "deployed": True}) from exc


def router(cfg: Config, models: ModelStore, live: Runtime) -> APIRouter:
    api = APIRouter(tags=["models"])
    zk_setup = ZkSetup(cfg, models, live)

    @api.post("/v1/models", status_code=201, response_model=ModelOut, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_model(request: Request, name: str | None = Query(None, max_length=200),
                           zk: bool = Query(False, description="also run the EZKL set-up (keys) for zk jobs"),
                           zk_inputs: Literal["public", "hashed"] = Query(
                               "public", description="zk: public inputs, or a Poseidon hash of them"),
                           zk_outputs: Literal["public", "hashed"] = Query(
                               "public", description="zk: public outputs, or a Poseidon hash of them"),
                           ) -> Response:
        """Upload ONNX bytes. Validated (protobuf, onnx.checker, onnxruntime load, size) before storing. With
        ``zk=true`` the EZKL set-up runs once (seconds to minutes); a model EZKL cannot handle is still
        deployed for receipt and quorum jobs, and the answer says why zk is unavailable (422)."""
        data = await request.body()
        info = await asyncio.to_thread(models.add_bytes, data, name=name)
        if zk:
            await zk_setup(info, data, zk_inputs, zk_outputs)
        return json_response(model_view(models, info), 201)

    @api.get("/v1/models", response_model=list[ModelOut])
    async def list_models() -> Response:
        return json_response([model_view(models, m) for m in models.list()])

    @api.get("/v1/models/{ref}", response_model=ModelOut, responses=ERRORS)
    async def get_model(ref: str) -> Response:
        return json_response(model_view(models, models.resolve(ref)))

    @api.put("/v1/models/{ref}/processor", response_model=ModelOut, responses=ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_processor(ref: str, request: Request) -> Response:
        """Attach a pre/post-processing bundle (a zip with ``processor.json`` naming its ``kind``): clients then
        send raw input (text, images) and get predictions, through the processor plugin of that kind."""
        info = models.resolve(ref)
        await asyncio.to_thread(models.set_processor, info.hash, await request.body())
        return json_response(model_view(models, info))

    @api.get("/v1/models/{ref}/processor", responses=ERRORS, response_class=Response)
    async def get_processor(ref: str) -> Response:
        info = models.resolve(ref)
        data = await asyncio.to_thread(models.read_processor, info.hash)
        return Response(data, media_type="application/zip")

    return api
