"""The gateway: Ciro's HTTP API on the Ray head (FastAPI). ``create_app(cfg)`` builds it around a ``Gateway``.

``Gateway`` wires the service: it opens the stores, and at start-up starts the workers, connects the chain
(settlement), watches provider nodes and starts the scheduler; ``stop`` undoes that. The routes are in
``routes/`` (one module per resource), what is admitted in ``admission``, how jobs come in in ``intake``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import ray
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ciro import CiroError, Config, InputError, ModelStore, __version__

from .auth import NonceStore, RequestAuth, read_keys
from .deployments import DeploymentStore, apply_all
from .intake import JobIntake
from .jobstore import JobStore
from .limits import BodyLimitMiddleware
from .metrics import Metrics
from .nodes import ProviderNodes
from .plugins import install_plugins
from .pool import WorkerPool
from .providers import ProviderStore
from .records import json_response, pending_from_row
from .routes import dashboard, deployments, jobs, models, service, workers
from .runtime import Runtime
from .scheduler import Scheduler
from .settlement import Settlement

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("ciro.gateway")


class Gateway:
    """One gateway's stores and, once started, its running parts (``live``); ``create_app`` serves it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.models = ModelStore(cfg.paths.models, max_bytes=cfg.max_model_bytes)
        self.store = JobStore.for_config(cfg)
        self.allowed_workers = read_keys(cfg.allowed_workers) if cfg.allowed_workers else None
        self.nonces = NonceStore(cfg.paths.db("nonces"))
        self.deployments = DeploymentStore(cfg.paths.db("deployments"))
        self.providers = ProviderStore(cfg.paths.db("providers"))
        self.auth = RequestAuth(cfg, self.nonces, self.known_workers)
        self.live = Runtime()
        self.intake = JobIntake(cfg, self.models, self.store, self.live, self.metrics)

    async def start(self) -> None:
        if not ray.is_initialized():
            # ray.init replaces the SIGTERM handler with one that calls sys.exit inside the event loop;
            # keep the server's own handler so SIGTERM means a graceful shutdown.
            previous = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.cfg.ray_address, namespace="ciro", logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        live = self.live
        live.pool = pool = WorkerPool(self.cfg, allowed_keys=self.allowed_workers)
        await pool.start()
        live.settlement = settlement = await Settlement.open(self.cfg, self.store, providers=self.providers,
                                                             on_ineligible=self._drop_workers)
        if settlement is not None:  # only staked workers are scheduled
            eligible = await settlement.onboard(pool.keys())
            pool.allowed_keys = eligible if self.allowed_workers is None else eligible & self.allowed_workers
            pool.readmit()
            settlement.start()
        live.nodes = nodes = ProviderNodes(self.cfg, pool, self.providers, allowed=self.allowed_workers,
                                           eligible=settlement.eligible if settlement is not None else None)
        await nodes.poll()  # provider nodes already in the cluster get their workers now
        nodes.start()
        live.scheduler = scheduler = Scheduler(self.cfg, self.store, self.models, pool, self.metrics)
        apply_all(self.deployments, self.models, scheduler)
        recovered = self.store.recover()
        queued = self.store.queued()
        scheduler.enqueue([pending_from_row(r) for r in queued])
        scheduler.start()
        log.info("gateway up: %d workers, %d queued jobs resumed (%d were running)",
                 len(pool.workers), len(queued), recovered)

    async def stop(self) -> None:
        live = self.live
        if live.nodes:
            await live.nodes.stop()
        if live.settlement:
            await live.settlement.stop()
        if live.scheduler:
            await live.scheduler.stop()
        if live.pool:
            live.pool.shutdown()
        self.store.close()
        self.nonces.close()
        self.deployments.close()
        self.providers.close()

    def _drop_workers(self, keys: set[int]) -> None:
        """Stop scheduling workers a slash left ineligible (they stay listed, ``admitted: false``)."""
        pool = self.live.pool
        if pool is not None and pool.allowed_keys is not None:
            pool.allowed_keys -= keys
            pool.readmit()
            log.warning("%d slashed worker(s) no longer eligible: %s", len(keys), ", ".join(hex(k) for k in keys))

    def known_workers(self) -> set[int]:
        """Worker keys this gateway admits: the allowed_workers list, else the workers it started."""
        if self.allowed_workers is not None:
            return self.allowed_workers
        started = self.live.pool.all_keys() if self.live.pool else set()
        return started | {int(w["worker_key"], 16) for w in self.providers.workers(include_left=False)}


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
    _add_error_handlers(app)
    live = gw.live
    app.include_router(service.router(cfg, live, gw.metrics))
    app.include_router(deployments.router(cfg, gw.deployments, gw.models, live))
    app.include_router(dashboard.router(gw.store, gw.providers, live))
    install_plugins(app, cfg)  # pages and webhooks of the packages installed (the Hugging Face ones)
    app.include_router(models.router(cfg, gw.models, live))
    app.include_router(jobs.router(gw.intake, gw.store, gw.models, live))
    app.include_router(workers.router(live, gw.providers, gw.store))
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON, ``{"error": {"code", "message", "detail"}}``, with a message that says what to do."""

    @app.exception_handler(CiroError)
    async def _ciro_error(_: Request, exc: CiroError) -> Response:
        return json_response(exc.to_payload(), exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b[:100].decode("latin-1")})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return json_response({"error": {"code": InputError.code,
                                        "message": f"Invalid request at {where}: {first.get('msg', 'invalid')}. "
                                                   "See /docs for the request schema.",
                                        "detail": {"errors": errors}}}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"error": {"code": "http_error", "message": f"{exc.detail}. See /docs for the API.",
                                        "detail": {}}}, exc.status_code)
