"""``/dashboard`` (a page that refreshes itself) and ``/v1/dashboard`` (its data): see ``dashboard``."""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ..dashboard import collect, render
from ..jobstore import JobStore
from ..providers import ProviderStore
from ..runtime import Runtime

__all__ = ["router"]


def router(store: JobStore, providers: ProviderStore, live: Runtime) -> APIRouter:
    api = APIRouter(tags=["service"])

    @api.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(render(await collect(store, providers, live)))

    @api.get("/v1/dashboard")
    async def dashboard_data() -> Response:
        return Response(json.dumps(await collect(store, providers, live)), media_type="application/json")

    return api
