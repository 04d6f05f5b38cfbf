"""The service itself: ``/healthz``, ``/metrics`` (Prometheus), ``/v1/chain`` (where it settles) and
``/v1/ledger/{account}`` (a prepaid client's standing)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from ciro import Config, InputError, __version__

from ..metrics import Metrics
from ..records import json_response
from ..runtime import Runtime
from ..schemas import ERRORS

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

    @api.get("/v1/ledger/{account}", responses=ERRORS)
    async def ledger_account(account: str = Path(pattern=r"^0x[0-9a-fA-F]{1,64}$",
                                                 description="the client's account address (0x-hex)")) -> Response:
        """What a prepaid client signs its next caps from: the price per job, the last cap this gateway accepted
        (``authorized``), what the ledger has charged, the deposit left and the key the account registered."""
        prepaid = live.settlement.prepaid if live.settlement else None
        if prepaid is None:
            raise InputError("This gateway settles no prepaid jobs (no CiroLedger in its deployment, or "
                             "settlement=off).")
        address = int(account, 16)
        if address >= 2**251:
            raise InputError(f"{account} is not a Starknet address (below 2**251). Pass the client's account address.")
        return json_response(await prepaid.account(address))

    return api
