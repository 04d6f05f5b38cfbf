"""The service itself: ``/healthz``, ``/metrics`` (Prometheus) and ``/v1/chain`` (where it settles)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ciro import Config, __version__

from ..metrics import Metrics
from ..records import json_response
from ..runtime import Runtime

__all__ = ["router"]


def router(cfg: Config, live: Runtime, stats: Metrics) -> APIRouter:
    api = APIRouter(tags=["service"])
    started_at = time.time()

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        pool = live.pool
        return {
            "status": "ok" if live.scheduler else "starting", "version": __version__,
            "uptime_s": round(time.time() - started_at, 3),
            "workers_alive": sum(w.alive for w in pool.workers.values()) if pool else 0,
            "queue_depth": live.scheduler.depth() if live.scheduler else 0,
            "ray_address": cfg.ray_address, "home": str(cfg.home),
        }

    @api.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        if live.pool:
            stats.workers_alive.set(sum(w.alive for w in live.pool.workers.values()))
        return Response(stats.render(), media_type="text/plain; version=0.0.4")

    @api.get("/v1/chain")
    async def chain_info() -> Response:
        """Where this gateway settles: the network's addresses and the price per job; {"enabled": false} if none."""
        return json_response(live.settlement.info() if live.settlement else {"enabled": False})

    return api
