"""The gateway: Ciro's HTTP API on the Ray head (FastAPI). ``create_app(cfg)`` builds it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
import orjson
import ray
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ciro import (
    BINARY_CONTENT_TYPE,
    SERVED_LEVELS,
    CiroError,
    Config,
    InputError,
    InsufficientEscrowError,
    InvalidModelError,
    JobNotFoundError,
    JobStatus,
    ModelInfo,
    ModelStore,
    QuorumPolicy,
    VerificationLevel,
    WorkerBusyError,
    __version__,
    canonical_bytes,
    check_options,
    decode_binary,
    decode_canonical,
    decode_json,
    encode_json,
    new_job_ids,
)

from .auth import NonceStore, RequestAuth, read_keys, require_owner
from .dashboard import add_dashboard
from .deployments import DeploymentStore, add_routes, apply_all
from .groupcommit import GroupCommitter
from .jobstore import JobRow, JobStore, NewJob
from .limits import BodyLimitMiddleware
from .metrics import Metrics
from .nodes import ProviderNodes
from .plugins import install_plugins
from .pool import WorkerPool
from .providers import ProviderStore
from .proving import run_setup
from .scheduler import DEFAULT_SERVING, Outcome, Pending, Scheduler, admit_fit
from .schemas import (
    _OPTIONS_DOC,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    EscrowRequest,
    JobOut,
    JobRequest,
    ModelOut,
    WorkerOut,
)
from .settlement import Settlement, require_settled_level

__all__ = ["create_app"]

log = logging.getLogger("ciro.gateway")
Tensors = dict[str, np.ndarray]
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 402, 403, 404, 409, 413, 422, 503)
}
MAX_WAIT_S = 300.0
#: Job ids are 32 lowercase hex characters (ciro.new_job_id); anything else is refused before a lookup.
_JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="the job id: 32 hex characters")
_ESCROW_DOC = ("hold the job until its payment is escrowed on chain (then POST /v1/jobs/escrow with the "
               "transaction); it is then paid to the worker once verified")


class Gateway:
    """State of one running gateway; handlers reach it through ``app.state.gw``."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.models = ModelStore(cfg.home / "models", max_bytes=cfg.max_model_bytes)
        self.store = JobStore.for_config(cfg)
        self.committer = GroupCommitter(self.store)
        self._zk_lock = asyncio.Lock()
        self.allowed_workers = read_keys(cfg.allowed_workers) if cfg.allowed_workers else None
        self.nonces = NonceStore(cfg.home / "nonces.db")
        self.deployments = DeploymentStore(cfg.home / "deployments.db")
        self.providers = ProviderStore(cfg.home / "providers.db")
        self.auth = RequestAuth(cfg, self.nonces, self.known_workers)
        self.pool: WorkerPool | None = None
        self.nodes: ProviderNodes | None = None
        self.scheduler: Scheduler | None = None
        self.settlement: Settlement | None = None
        self.started_at = time.time()

    def _drop_workers(self, keys: set[int]) -> None:
        """Stop scheduling workers a slash left ineligible (they stay listed, ``admitted: false``)."""
        if self.pool is not None and self.pool.allowed_keys is not None:
            self.pool.allowed_keys -= keys
            self.pool.readmit()
            log.warning("%d slashed worker(s) no longer eligible: %s", len(keys), ", ".join(hex(k) for k in keys))

    async def start(self) -> None:
        if not ray.is_initialized():
            # ray.init replaces the SIGTERM handler with one that calls sys.exit inside the event loop;
            # keep the server's own handler so SIGTERM means a graceful shutdown.
            previous = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.cfg.ray_address, namespace="ciro", logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        self.pool = WorkerPool(self.cfg, allowed_keys=self.allowed_workers)
        await self.pool.start()
        self.settlement = await Settlement.open(self.cfg, self.store)
        if self.settlement is not None:  # only staked workers are scheduled
            eligible = await self.settlement.onboard(self.pool.keys())
            self.pool.allowed_keys = eligible if self.allowed_workers is None else eligible & self.allowed_workers
            self.pool.readmit()
            self.settlement.on_ineligible = self._drop_workers
            self.settlement.providers = self.providers
            self.settlement.start()
        self.nodes = ProviderNodes(self.cfg, self.pool, self.providers, allowed=self.allowed_workers,
                                   eligible=self.settlement.eligible if self.settlement is not None else None)
        await self.nodes.poll()  # provider nodes already in the cluster get their workers now
        self.nodes.start()
        self.scheduler = Scheduler(self.cfg, self.store, self.models, self.pool, self.metrics)
        apply_all(self)
        recovered = self.store.recover()
        queued = self.store.queued()
        self.scheduler.enqueue([_pending_from_row(r) for r in queued])
        self.scheduler.start()
        log.info("gateway up: %d workers, %d queued jobs resumed (%d were running)",
                 len(self.pool.workers), len(queued), recovered)

    async def stop(self) -> None:
        if self.nodes:
            await self.nodes.stop()
        if self.settlement:
            await self.settlement.stop()
        if self.scheduler:
            await self.scheduler.stop()
        if self.pool:
            self.pool.shutdown()
        self.store.close()
        self.nonces.close()
        self.deployments.close()
        self.providers.close()

    def known_workers(self) -> set[int]:
        """Worker keys this gateway admits: the allowed_workers list, else the workers it started."""
        if self.allowed_workers is not None:
            return self.allowed_workers
        started = self.pool.all_keys() if self.pool else set()
        return started | {int(w["worker_key"], 16) for w in self.providers.workers(include_left=False)}

    @property
    def sched(self) -> Scheduler:
        if self.scheduler is None:
            raise CiroError("The gateway is still starting. Retry in a moment.")
        return self.scheduler

    def model_dict(self, info: ModelInfo) -> dict[str, Any]:
        return {**info.to_dict(), "zk": self.models.zk_status(info.hash),
                "processor": self.models.processor_info(info.hash)}

    async def zk_setup(self, info: ModelInfo, data: bytes, inputs: str = "public", outputs: str = "public") -> None:
        """EZKL set-up for a model, once per settings; refuses clearly when EZKL cannot handle it."""
        status = self.models.zk_status(info.hash)
        if status is not None and (status["input_visibility"], status["output_visibility"]) == (inputs, outputs):
            return
        rng = np.random.default_rng(0)
        calibration = [rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
                       if t.dtype.startswith("float") else np.zeros([d if isinstance(d, int) else 1 for d in t.shape],
                                                                      dtype=t.dtype) for t in info.inputs]
        try:
            async with self._zk_lock:
                await asyncio.to_thread(run_setup, data, self.models.zk_dir(info.hash), calibration,
                                        self.cfg.srs_dir, str(self.cfg.home), inputs, outputs)
            await self.sched.prover().warm.remote()  # the first proof need not wait for EZKL's import
        except InvalidModelError as exc:
            raise InvalidModelError(
                f"Model {info.hash[:12]} is deployed and serves receipt and quorum jobs, but not zk: {exc.message}",
                detail={"model_hash": info.hash, "deployed": True}) from exc

    # -- accepting jobs --------------------------------------------------------------------
    async def accept(self, model_ref: str, items: list[Tensors], verification: str, options: dict[str, Any],
               *, batch_id: str | None = None, client: str | None = None,
               escrow: bool = False) -> tuple[ModelInfo, list[Pending]]:
        options = check_options(options)
        info = self.models.resolve(model_ref)
        if escrow:
            if self.settlement is None:
                raise InputError("This gateway does not settle on chain (no deployment in its chain.json, or "
                                 "settlement=off). Submit without max_payment/escrow.")
            require_settled_level(VerificationLevel.parse(verification).value)
            zk = self.models.zk_status(info.hash)
            await self.settlement.ensure_model(info.hash, zk["vk_hash"] if zk else None)
        elif self.settlement is not None and self.cfg.settlement == "required":
            raise InsufficientEscrowError("This gateway runs only jobs whose payment is escrowed on chain. Pass "
                                          "max_payment= (SDK) so the client escrows each job, then submits it.")
        level = VerificationLevel.parse(verification)
        if level not in SERVED_LEVELS:
            raise InputError(
                f"Verification level {level.value!r} is not available on this gateway yet (served: "
                f"{', '.join(sorted(v.value for v in SERVED_LEVELS))}). Submit with one of those."
            )
        if not items:
            raise InputError("The batch holds no jobs. Send at least one input.")
        serving = self.scheduler.serving.get(info.hash, DEFAULT_SERVING) if self.scheduler else DEFAULT_SERVING
        fit = admit_fit(serving.fit, options, self.pool)  # the hardware it needs, which some worker has
        if level is VerificationLevel.ZKML:
            if self.models.zk_status(info.hash) is None:
                raise InputError(f"Model {info.hash[:12]} has no zk set-up. Deploy it with zk=True "
                                 "(ciro deploy --zk MODEL.onnx), then submit zk jobs.")
            for inputs in items:
                for spec in info.inputs:
                    dims = inputs[spec.name].shape if spec.name in inputs else ()
                    if any(not isinstance(d, int) and n != 1 for d, n in zip(spec.shape, dims, strict=False)):
                        raise InputError(f"A zk job proves one row: input {spec.name!r} must have 1 in its free "
                                         "dimensions. Split larger inputs into jobs (infer_batch).")
        if level is VerificationLevel.QUORUM:
            policy = QuorumPolicy.from_options(options)
            have = self.pool.eligible_count(fit) if self.pool else 0
            if have < policy.k:
                raise InputError(
                    f"Quorum with f={policy.f} needs k={policy.k} distinct workers; this gateway has {have}. "
                    f"Start more workers (ciro up --workers {policy.k}), lower f, or use verification='receipt'.")
        new, pending = [], []
        for job_id, inputs in zip(new_job_ids(len(items)), items, strict=True):
            info.check_inputs(inputs)
            blob = canonical_bytes(inputs)  # stored as is; its SHA-256 is the input commitment
            ic = hashlib.sha256(blob).hexdigest()
            new.append(NewJob(job_id, info.hash, level.value, options, ic, blob, batch_id, client,
                              JobStatus.AWAITING_ESCROW if escrow else JobStatus.QUEUED))
            pending.append(Pending(job_id, info.hash, inputs, ic, level.value, 0.0, options, client=client,
                                   settlement="escrowed" if escrow else None))
        submitted = await self.committer.insert(new)  # durable before we answer
        for p in pending:
            p.submitted_at = submitted
        self.metrics.jobs_submitted.labels(info.hash[:12]).inc(len(pending))
        return info, pending

    async def wait_for(self, pending: list[Pending], wait: float) -> list[dict[str, Any]] | None:
        """Enqueue and, when ``wait`` > 0, wait up to that long for all of them."""
        sched = self.sched
        futs = [sched.waiter(p.id) for p in pending] if wait > 0 else []
        sched.enqueue(pending)
        if not futs:
            return None
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*futs), timeout=min(wait, MAX_WAIT_S))
        except TimeoutError:
            for p, f in zip(pending, futs, strict=True):
                sched.drop_waiter(p.id, f)
            return None
        return [_out_from_outcome(p, o) for p, o in zip(pending, outcomes, strict=True)]

    def readable_row(self, request: Request, job_id: str, *, what: str | None = None) -> JobRow:
        """The job, if the caller may see (or act on) it: its submitter or the operator."""
        row = self.row(job_id)
        require_owner(request, row.client, what or f"Reading job {job_id}")
        return row

    def row(self, job_id: str, *, with_inputs: bool = False) -> JobRow:
        row = self.store.get(job_id, with_inputs=with_inputs)
        if row is None:
            raise JobNotFoundError(f"No job {job_id!r} on this gateway. List jobs with `ciro jobs`.")
        return row


def _pending_from_row(r: JobRow) -> Pending:
    assert r.inputs is not None
    return Pending(r.id, r.model_hash, decode_canonical(r.inputs), r.input_commitment, r.verification,
                   r.submitted_at, r.options, r.attempts, client=r.client, settlement=r.settlement)


def _out_from_outcome(p: Pending, o: Outcome) -> dict[str, Any]:
    return {
        "id": p.id, "model_hash": p.model_hash, "status": o.status.value, "verification": p.verification,
        "input_commitment": p.input_commitment, "output_commitment": o.output_commitment,
        "outputs": encode_json(o.outputs) if o.outputs is not None else None, "worker": o.worker,
        "attempts": o.attempts, "submitted_at": p.submitted_at, "started_at": o.started_at,
        "finished_at": o.finished_at, "error": o.error, "options": p.options, "client": p.client,
        "settlement": p.settlement,
        **_evidence(o.evidence),
    }


def _out_from_row(r: JobRow, *, outputs: bool) -> dict[str, Any]:
    return {
        "id": r.id, "model_hash": r.model_hash, "status": r.status.value, "verification": r.verification,
        "input_commitment": r.input_commitment, "output_commitment": r.output_commitment,
        "outputs": encode_json(decode_canonical(r.outputs)) if outputs and r.outputs else None,
        "worker": r.worker, "attempts": r.attempts, "submitted_at": r.submitted_at,
        "started_at": r.started_at, "finished_at": r.finished_at, "error": r.error, "options": r.options,
        "client": r.client, "settlement": r.settlement, "settlement_tx": r.settlement_tx,
        "payment": str(r.payment) if r.payment is not None else None,
        # paid: JobManager accepted the settlement after Cairo checked the receipt's (or 2f+1 votes') signature
        "on_chain_verified": r.settlement == "paid", **_evidence(r.evidence),
    }


def _evidence(ev: dict[str, Any] | None) -> dict[str, Any]:
    ev = ev or {}
    zk = ev.get("zk")
    return {"receipt": ev.get("receipt"), "quorum": ev.get("quorum"), "zk": zk,
            "proof_hash": zk.get("proof_hash") if zk else None}


def _json(obj: Any, status: int = 200) -> Response:
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


def _split_stacked(inputs: Tensors, rows_per_job: int) -> list[Tensors]:
    counts = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(counts) != 1 or -1 in counts:
        raise InputError("Stacked batch inputs must all have the same first dimension (one row group per job).")
    n = counts.pop()
    if n == 0 or n % rows_per_job:
        raise InputError(f"{n} stacked rows do not split into jobs of {rows_per_job} rows. Fix rows_per_job.")
    return [{k: v[i:i + rows_per_job] for k, v in inputs.items()} for i in range(0, n, rows_per_job)]


def _tensors(obj: dict[str, Any]) -> Tensors:
    return decode_json({k: v.model_dump(exclude_none=True) for k, v in obj.items()})


def create_app(cfg: Config | None = None) -> FastAPI:
    cfg = cfg or Config.load()
    gw = Gateway(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(
        title="Ciro gateway", version=__version__, lifespan=lifespan, dependencies=[Depends(gw.auth)],
        description="Submit ONNX inference jobs to Ray workers. Every job is stored durably before it is "
                    "acknowledged. Errors are JSON: {\"error\": {\"code\", \"message\", \"detail\"}}. "
                    "POSTs from other machines must be signed (x-ciro-account, x-ciro-nonce, x-ciro-expiry, "
                    "x-ciro-signature; see docs/encoding.md): unsigned, forged, expired or replayed ones get 401, "
                    "keys not allowed here 403.",
    )
    app.state.gw = gw
    app.add_middleware(BodyLimitMiddleware, default_limit=cfg.max_payload_bytes,
                       limits={"/v1/models": cfg.max_model_bytes}, codes={"/v1/models": "model_too_large"})

    @app.exception_handler(CiroError)
    async def _ciro_error(_: Request, exc: CiroError) -> Response:
        return _json(exc.to_payload(), exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b[:100].decode("latin-1")})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return _json({"error": {"code": InputError.code,
                                "message": f"Invalid request at {where}: {first.get('msg', 'invalid')}. "
                                           "See /docs for the request schema.",
                                "detail": {"errors": errors}}}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _json({"error": {"code": "http_error", "message": f"{exc.detail}. See /docs for the API.",
                                "detail": {}}}, exc.status_code)

    # -- service -------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        pool = gw.pool
        return {
            "status": "ok" if gw.scheduler else "starting", "version": __version__,
            "uptime_s": round(time.time() - gw.started_at, 3),
            "workers_alive": sum(w.alive for w in pool.workers.values()) if pool else 0,
            "queue_depth": gw.scheduler.depth() if gw.scheduler else 0,
            "ray_address": cfg.ray_address, "home": str(cfg.home),
        }

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        if gw.pool:
            gw.metrics.workers_alive.set(sum(w.alive for w in gw.pool.workers.values()))
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    add_routes(app, gw, _ERRORS)
    add_dashboard(app, gw)
    install_plugins(app, cfg)

    # -- models --------------------------------------------------------------------------
    @app.post("/v1/models", tags=["models"], status_code=201, response_model=ModelOut, responses=_ERRORS,
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
        info = await asyncio.to_thread(gw.models.add_bytes, data, name=name)
        if zk:
            await gw.zk_setup(info, data, zk_inputs, zk_outputs)
        return _json(gw.model_dict(info), 201)

    @app.get("/v1/models", tags=["models"], response_model=list[ModelOut])
    async def list_models() -> Response:
        return _json([gw.model_dict(m) for m in gw.models.list()])

    @app.get("/v1/models/{ref}", tags=["models"], response_model=ModelOut, responses=_ERRORS)
    async def get_model(ref: str) -> Response:
        return _json(gw.model_dict(gw.models.resolve(ref)))

    @app.put("/v1/models/{ref}/processor", tags=["models"], response_model=ModelOut, responses=_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_processor(ref: str, request: Request) -> Response:
        """Attach a pre/post-processing bundle (a zip with ``processor.json`` naming its ``kind``): clients then
        send raw input (text, images) and get predictions, through the processor plugin of that kind."""
        info = gw.models.resolve(ref)
        await asyncio.to_thread(gw.models.set_processor, info.hash, await request.body())
        return _json(gw.model_dict(info))

    @app.get("/v1/models/{ref}/processor", tags=["models"], responses=_ERRORS, response_class=Response)
    async def get_processor(ref: str) -> Response:
        info = gw.models.resolve(ref)
        data = await asyncio.to_thread(gw.models.read_processor, info.hash)
        return Response(data, media_type="application/zip")

    # -- jobs ----------------------------------------------------------------------------
    @app.post("/v1/jobs", tags=["jobs"], response_model=JobOut, status_code=202, responses=_ERRORS)
    async def submit_job(body: JobRequest, request: Request, wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                         escrow: bool = Query(False, description=_ESCROW_DOC)) -> Response:
        """Submit one job. With ``wait`` > 0 the answer holds the result if it is ready within that many seconds."""
        _, pending = await gw.accept(body.model, [_tensors(body.inputs)], body.verification, body.options,
                                     client=request.state.account, escrow=escrow)
        if escrow:
            return _json(_out_from_row(gw.row(pending[0].id), outputs=False), 202)
        return await _submitted(pending, wait)

    @app.post("/v1/jobs/binary", tags=["jobs"], response_model=JobOut, status_code=202, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  BINARY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
    async def submit_job_binary(request: Request, model: str = Query(..., max_length=200),
                                verification: str = Query("receipt", max_length=16),
                                wait: float = Query(0.0, ge=0, le=MAX_WAIT_S)) -> Response:
        """Submit one job whose inputs are safetensors bytes."""
        _, pending = await gw.accept(model, [decode_binary(await request.body())], verification, {},
                                     client=request.state.account)
        return await _submitted(pending, wait)

    async def _submitted(pending: list[Pending], wait: float) -> Response:
        results = await gw.wait_for(pending, wait)
        if results:
            out = results[0]
            return _json(out, 200 if JobStatus(out["status"]).terminal else 202)
        return _json(_out_from_row(gw.row(pending[0].id), outputs=False), 202)

    @app.post("/v1/jobs/batch", tags=["jobs"], response_model=BatchResponse, status_code=202, responses=_ERRORS)
    async def submit_batch(body: BatchRequest, request: Request, wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                           escrow: bool = Query(False, description=_ESCROW_DOC)) -> Response:
        """Submit many jobs in one request: ``items`` (one input dict each) or stacked ``inputs``."""
        if (body.items is None) == (body.inputs is None):
            raise InputError('Give exactly one of "items" (a list of input dicts) or "inputs" (stacked tensors).')
        items = ([_tensors(i) for i in body.items] if body.items is not None
                 else _split_stacked(_tensors(body.inputs or {}), body.rows_per_job))
        return await _batch(body.model, items, body.verification, body.options, wait, request.state.account, escrow)

    @app.post("/v1/jobs/batch/binary", tags=["jobs"], response_model=BatchResponse, status_code=202,
              responses=_ERRORS, openapi_extra={"requestBody": {"required": True, "content": {
                  BINARY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
    async def submit_batch_binary(request: Request, model: str = Query(..., max_length=200),
                                  rows_per_job: int = Query(1, ge=1, le=2**31),
                                  verification: str = Query("receipt", max_length=16),
                                  wait: float = Query(0.0, ge=0, le=MAX_WAIT_S),
                                  escrow: bool = Query(False, description=_ESCROW_DOC),
                                  options: str | None = Query(None, description="JSON object: " + _OPTIONS_DOC)
                                  ) -> Response:
        """Submit stacked safetensors inputs, split along axis 0 into jobs of ``rows_per_job`` rows."""
        try:
            opts = orjson.loads(options) if options else {}
        except orjson.JSONDecodeError as exc:
            raise InputError(f"The options query parameter is not JSON ({exc}). Send a JSON object.") from None
        if not isinstance(opts, dict):
            raise InputError("The options query parameter must be a JSON object, e.g. {\"gpu\": true}.")
        items = _split_stacked(decode_binary(await request.body()), rows_per_job)
        return await _batch(model, items, verification, opts, wait, request.state.account, escrow)

    async def _batch(model: str, items: list[Tensors], verification: str, options: dict[str, Any],
                     wait: float, client: str | None, escrow: bool = False) -> Response:
        batch_id = uuid.uuid4().hex
        _, pending = await gw.accept(model, items, verification, options, batch_id=batch_id, client=client,
                                     escrow=escrow)
        if escrow:
            jobs = [_out_from_row(gw.row(p.id), outputs=False) for p in pending]
            return _json({"batch_id": batch_id, "job_ids": [p.id for p in pending], "results": None, "jobs": jobs},
                         202)
        results = await gw.wait_for(pending, wait)
        body: dict[str, Any] = {"batch_id": batch_id, "job_ids": [p.id for p in pending], "results": results}
        return _json(body, 200 if results else 202)

    @app.post("/v1/jobs/escrow", tags=["jobs"], responses=_ERRORS)
    async def confirm_escrow(body: EscrowRequest, request: Request) -> Response:
        """Tell the gateway the transaction that escrowed jobs submitted with ``escrow=true``. The gateway checks
        its JobSubmitted events (model, input commitment, level, payment >= price, deadline, client) and then
        schedules the jobs; a job not covered gets 402 and stays waiting."""
        if gw.settlement is None:
            raise InputError("This gateway does not settle on chain. Nothing to confirm.")
        rows = [gw.row(j, with_inputs=True) for j in body.job_ids]
        waiting = [r for r in rows if r.status is JobStatus.AWAITING_ESCROW]
        if len(waiting) != len(rows):
            raise InputError(f"{len(rows) - len(waiting)} of these jobs are not waiting for an escrow (already "
                             "escrowed, finished or expired). Confirm only jobs submitted with escrow=true.")
        for r in rows:
            require_owner(request, r.client, f"Confirming the escrow of job {r.id}")
        try:
            tx_hash = int(body.tx_hash, 16)
        except ValueError as exc:
            raise InputError(f"tx_hash {body.tx_hash!r} is not hex.") from exc
        escrow = await gw.settlement.verify_escrow(rows, tx_hash)
        moved = gw.store.escrowed(body.job_ids, escrow)
        pending = [_pending_from_row(r) for r in rows if r.id in moved]
        for p in pending:
            p.settlement = "escrowed"  # the rows were read before the escrow was recorded
        gw.sched.enqueue(pending)
        return _json({"job_ids": sorted(moved), "status": JobStatus.QUEUED.value, "escrow_tx": hex(tx_hash)})

    @app.get("/v1/chain", tags=["service"])
    async def chain_info() -> Response:
        """Where this gateway settles: the network's addresses and the price per job; {"enabled": false} if none."""
        return _json(gw.settlement.info() if gw.settlement else {"enabled": False})

    @app.get("/v1/jobs", tags=["jobs"], response_model=list[JobOut], responses=_ERRORS)
    async def list_jobs(request: Request, status: JobStatus | None = None,
                        model: str | None = Query(None, max_length=200),
                        limit: int = Query(100, ge=1, le=10_000)) -> Response:
        """Recent jobs: the operator sees all, a signed caller the jobs it submitted."""
        if not request.state.operator and request.state.account is None:
            require_owner(request, None, "Listing jobs")
        model_hash = gw.models.resolve(model).hash if model else None
        rows = gw.store.recent(status=status.value if status else None, model_hash=model_hash, limit=limit,
                               client=None if request.state.operator else request.state.account)
        return _json([_out_from_row(r, outputs=False) for r in rows])

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobOut, responses=_ERRORS)
    async def job_status(request: Request, job_id: str = _JOB_ID) -> Response:
        """A job's state and evidence, without outputs: its submitter or the operator."""
        return _json(_out_from_row(gw.readable_row(request, job_id), outputs=False))

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_model=JobOut,
             responses={**_ERRORS, 202: {"model": JobOut, "description": "not final yet"}})
    async def job_result(request: Request, job_id: str = _JOB_ID,
                         wait: float = Query(0.0, ge=0, le=MAX_WAIT_S)) -> Response:
        """The job with its outputs: 200 once final (done, failed, cancelled), 202 while not. Its submitter or the
        operator only."""
        row = gw.readable_row(request, job_id)
        if not row.status.terminal and wait > 0:
            fut = gw.sched.waiter(job_id)
            row = gw.row(job_id)  # it may have finished before the waiter existed
            if not row.status.terminal:
                try:
                    await asyncio.wait_for(asyncio.shield(fut), timeout=wait)
                except TimeoutError:
                    pass
                finally:
                    gw.sched.drop_waiter(job_id, fut)
                row = gw.row(job_id)
        return _json(_out_from_row(row, outputs=True), 200 if row.status.terminal else 202)

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], response_model=JobOut, responses=_ERRORS)
    async def cancel_job(request: Request, job_id: str = _JOB_ID) -> Response:
        """Cancel a queued or running job; a finished job is left as it is. Only its submitter (a request signed
        with the same key) or the operator may."""
        gw.readable_row(request, job_id, what=f"Cancelling job {job_id}")
        status = gw.store.cancel(job_id)
        if status is JobStatus.CANCELLED:
            gw.sched.notify(job_id, Outcome(JobStatus.CANCELLED, finished_at=time.time()))
        return _json(_out_from_row(gw.row(job_id), outputs=False))

    @app.get("/v1/faults", tags=["workers"])
    async def list_faults(request: Request, worker_key: str | None = Query(None, max_length=100),
                          limit: int = Query(1000, ge=1, le=100_000)) -> Response:
        """Evidence recorded against workers: ``invalid_compute`` (a dissenting quorum vote, with its signed
        receipt) and ``bad_evidence`` (a reply whose receipt or commitment did not match the job). It holds job
        outputs, so the operator sees every fault and a signed caller those of the jobs it submitted."""
        if not request.state.operator and request.state.account is None:
            require_owner(request, None, "Reading faults")
        faults = gw.store.faults(worker_key=worker_key, limit=limit)
        if not request.state.operator:
            mine = gw.store.clients([f["job_id"] for f in faults])
            faults = [f for f in faults if mine.get(f["job_id"]) == request.state.account]
        return _json(faults)

    # -- workers -------------------------------------------------------------------------
    @app.get("/v1/workers", tags=["workers"], response_model=list[WorkerOut])
    async def list_workers() -> Response:
        if gw.pool is None:
            return _json([])
        try:
            await asyncio.wait_for(gw.pool.refresh(), timeout=5.0)
        except TimeoutError:
            log.warning("worker refresh timed out; showing the last known capabilities")
        return _json(gw.pool.describe())

    @app.post("/v1/workers/heartbeat", tags=["workers"], responses=_ERRORS)
    async def worker_heartbeat(request: Request) -> Response:
        """A worker says it is alive. Signed by the worker's key; a key this gateway does not know gets 403. A
        provider worker silent for longer than heartbeat_timeout_s is down (GET /v1/downtime)."""
        key = request.state.account
        now = time.time()
        state = gw.nodes.heartbeat(key) if gw.nodes is not None else {}
        admitted_keys = gw.pool.keys() if gw.pool is not None else set()
        admitted = int(key, 16) in admitted_keys
        return _json({"worker_key": key, "admitted": admitted, "last_seen": now, **state})

    @app.post("/v1/workers/drain", tags=["workers"], responses=_ERRORS)
    async def worker_drain(request: Request) -> Response:
        """The signing worker stops taking new jobs; what it runs finishes. Poll ``inflight_batches`` (here or
        in GET /v1/workers) until it is 0, then POST /v1/workers/leave."""
        if gw.nodes is None:
            raise CiroError("The gateway is still starting. Retry in a moment.")
        return _json(gw.nodes.drain(request.state.account))

    @app.post("/v1/workers/leave", tags=["workers"], responses=_ERRORS)
    async def worker_leave(request: Request) -> Response:
        """The signing worker leaves: it is stopped and no longer watched for downtime. 409 while it still runs
        batches (drain first)."""
        if gw.nodes is None:
            raise CiroError("The gateway is still starting. Retry in a moment.")
        out = gw.nodes.leave(request.state.account)
        if out["state"] != "left":
            raise WorkerBusyError(f"Worker {out['worker_key']} still runs {out['inflight_batches']} batch(es). "
                                  "POST /v1/workers/drain, wait until inflight_batches is 0, then leave.",
                                  detail=out)
        return _json(out)

    @app.get("/v1/providers", tags=["workers"])
    async def list_providers() -> Response:
        """Provider workers this gateway watches: provider, node, state, last heartbeat, whether down."""
        rows = gw.providers.workers()
        for r in rows:
            r["down"] = gw.providers.is_down(r["worker_key"])
        return _json(rows)

    @app.get("/v1/downtime", tags=["workers"])
    async def list_downtime(worker_key: str | None = None, limit: int = Query(100, ge=1, le=10_000)) -> Response:
        """Downtime records, newest first: last heartbeat, when it was detected, when it ended, and the slash
        filed for it (with the evidence whose SHA-256 the slash recorded)."""
        return _json(gw.providers.downtime(worker_key=worker_key, limit=limit))

    return app
