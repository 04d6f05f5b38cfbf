"""``/v1/workers``, ``/v1/providers``, ``/v1/downtime``, ``/v1/faults``: the workers, the providers' heartbeats and
downtime, and the evidence recorded against workers. The worker writes are signed by the worker's own key."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ciro import WorkerBusyError

from ..admission import Caller, require_reader
from ..jobstore import JobStore
from ..providers import ProviderStore
from ..records import json_response
from ..runtime import Runtime
from ..schemas import ERRORS, WorkerOut

__all__ = ["router"]

log = logging.getLogger("ciro.gateway")


def router(live: Runtime, providers: ProviderStore, store: JobStore) -> APIRouter:
    api = APIRouter(tags=["workers"])

    @api.get("/v1/faults")
    async def list_faults(request: Request, worker_key: str | None = Query(None, max_length=100),
                          limit: int = Query(1000, ge=1, le=100_000)) -> Response:
        """Evidence recorded against workers: ``invalid_compute`` (a dissenting quorum vote, with its signed
        receipt) and ``bad_evidence`` (a reply whose receipt or commitment did not match the job). It holds job
        outputs, so the operator sees every fault and a signed caller those of the jobs it submitted."""
        caller = Caller.of(request)
        require_reader(caller, "Reading faults")
        faults = store.faults(worker_key=worker_key, limit=limit)
        if not caller.operator:
            mine = store.clients([f["job_id"] for f in faults])
            faults = [f for f in faults if mine.get(f["job_id"]) == caller.account]
        return json_response(faults)

    @api.get("/v1/workers", response_model=list[WorkerOut])
    async def list_workers() -> Response:
        if live.pool is None:
            return json_response([])
        try:
            await asyncio.wait_for(live.pool.refresh(), timeout=5.0)
        except TimeoutError:
            log.warning("worker refresh timed out; showing the last known capabilities")
        return json_response(live.pool.describe())

    @api.post("/v1/workers/heartbeat", responses=ERRORS)
    async def worker_heartbeat(request: Request) -> Response:
        """A worker says it is alive. Signed by the worker's key; a key this gateway does not know gets 403. A
        provider worker silent for longer than heartbeat_timeout_s is down (GET /v1/downtime)."""
        key = request.state.account
        now = time.time()
        state = live.nodes.heartbeat(key) if live.nodes is not None else {}
        admitted = int(key, 16) in (live.pool.keys() if live.pool is not None else set())
        return json_response({"worker_key": key, "admitted": admitted, "last_seen": now, **state})

    @api.post("/v1/workers/drain", responses=ERRORS)
    async def worker_drain(request: Request) -> Response:
        """The signing worker stops taking new jobs; what it runs finishes. Poll ``inflight_batches`` (here or
        in GET /v1/workers) until it is 0, then POST /v1/workers/leave."""
        return json_response(live.provider_nodes.drain(request.state.account))

    @api.post("/v1/workers/leave", responses=ERRORS)
    async def worker_leave(request: Request) -> Response:
        """The signing worker leaves: it is stopped and no longer watched for downtime. 409 while it still runs
        batches (drain first)."""
        out = live.provider_nodes.leave(request.state.account)
        if out["state"] != "left":
            raise WorkerBusyError(f"Worker {out['worker_key']} still runs {out['inflight_batches']} batch(es). "
                                  "POST /v1/workers/drain, wait until inflight_batches is 0, then leave.",
                                  detail=out)
        return json_response(out)

    @api.get("/v1/providers")
    async def list_providers() -> Response:
        """Provider workers this gateway watches: provider, node, state, last heartbeat, whether down."""
        rows = providers.workers()
        for r in rows:
            r["down"] = providers.is_down(r["worker_key"])
        return json_response(rows)

    @api.get("/v1/downtime")
    async def list_downtime(worker_key: str | None = None, limit: int = Query(100, ge=1, le=10_000)) -> Response:
        """Downtime records, newest first: last heartbeat, when it was detected, when it ended, and the slash
        filed for it (with the evidence whose SHA-256 the slash recorded)."""
        return json_response(providers.downtime(worker_key=worker_key, limit=limit))

    return api
