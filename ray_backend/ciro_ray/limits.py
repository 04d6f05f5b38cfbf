"""Refuse request bodies over a size limit with a JSON 413, before anything parses them."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["BodyLimitMiddleware"]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI middleware: checks Content-Length up front and counts streamed bytes otherwise."""

    def __init__(self, app: Any, *, default_limit: int, limits: dict[str, int] | None = None,
                 codes: dict[str, str] | None = None) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits or {}
        self.codes = codes or {}

    def _limit(self, path: str) -> int:
        return self.limits.get(path.rstrip("/"), self.default_limit)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        code = self.codes.get(scope["path"].rstrip("/"), "payload_too_large")
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = 0
                if size > limit:
                    await _reject(send, size, limit, code)
                    return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send, seen, limit, code)


_FIXES = {
    "payload_too_large": "Split the batch into smaller requests, or raise max_payload_bytes on the gateway "
                         "(CIRO_MAX_PAYLOAD_BYTES).",
    "model_too_large": "Raise max_model_bytes on the gateway (CIRO_MAX_MODEL_BYTES), or quantize/prune the model.",
}


async def _reject(send: Any, size: int, limit: int, code: str) -> None:
    body = orjson.dumps({"error": {
        "code": code,
        "message": f"The request body ({size:,} bytes or more) is over this endpoint's limit of {limit:,} bytes. "
                   + _FIXES.get(code, _FIXES["payload_too_large"]),
        "detail": {"size": size, "limit": limit},
    }})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
