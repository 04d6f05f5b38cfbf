"""The HTTP side of the SDK: one aiohttp session per client, signed requests, retries, errors as CiroErrors.

``_BaseClient`` is what :class:`ciro.AsyncCiroClient` (and through it the sync :class:`ciro.CiroClient`) talks
through: requests to a remote gateway are signed with the client's key (reads too); a gateway on this machine
gets the local token instead; https is verified against the system store plus ``ca_bundle``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from .auth import LOCAL_TOKEN_HEADER, is_loopback_url, read_local_token, sign_request
from .config import Config
from .errors import GatewayUnavailableError, JobTimeoutError, ProtocolError, error_from_payload
from .identity import Identity, KeyStore
from .tls import CA_HINT, client_ssl_context

__all__ = ["KEEPALIVE_S", "START_HINT"]

START_HINT = "Start the embedded default with `ciro up` (or CiroClient.local()), or pass the URL of a running gateway."
KEEPALIVE_S = 2.0


class _BaseClient:
    """One gateway's HTTP connection."""

    def __init__(self, url: str | None, *, config: Config | None, timeout: float | None, retries: int,
                 identity: Identity | None) -> None:
        self.config = config or Config.load()
        self.url = (url or self.config.url).rstrip("/")
        #: The key that signs this client's requests (None: unsigned, only a gateway on this machine takes them).
        self.identity = identity or self._default_identity()
        self.timeout = timeout or self.config.request_timeout_s
        self.retries = retries
        self._http: aiohttp.ClientSession | None = None
        self._token: str | None = None

    def _default_identity(self) -> Identity | None:
        mode = self.config.sign_requests
        if mode == "never" or (mode == "auto" and is_loopback_url(self.url)):
            return None
        return KeyStore(self.config.paths.keys).get_or_create(self.config.client_key)

    def _local_token(self) -> str | None:
        """The local gateway's token ($CIRO_HOME/run/gateway.token), sent only to a gateway on this machine."""
        if self._token is None and is_loopback_url(self.url):
            self._token = read_local_token(self.config.home)
        return self._token

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                base_url=self.url + "/",
                # Idle connections are dropped well before the gateway's keep-alive (30 s; a proxy's may be 5 s)
                # closes them, so a request never goes out on a connection the server is closing ("Server
                # disconnected" after the client idled, e.g. while importing a tokenizer).
                # https: certificates are verified against the system store plus ca_bundle, never skipped
                connector=aiohttp.TCPConnector(limit=512, force_close=False, keepalive_timeout=KEEPALIVE_S,
                                               ssl=client_ssl_context(self.config)
                                               if self.url.startswith("https://") else True),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _request(self, method: str, path: str, *, read_timeout: float | None = None,
                       params: Mapping[str, Any] | None = None, raw: bool = False, **kw: Any) -> Any:
        total = self.timeout + (read_timeout or 0.0)
        timeout = aiohttp.ClientTimeout(total=total, connect=5.0)
        if "json" in kw:  # orjson: several times faster than the stdlib encoder
            kw["data"] = orjson.dumps(kw.pop("json"))
            kw["headers"] = {**kw.get("headers", {}), "content-type": "application/json"}
        query = {k: str(v) for k, v in (params or {}).items()}
        if self.identity is not None:  # reads too: a remote gateway shows a key only the jobs it submitted
            body = kw.get("data") or b""
            kw["headers"] = {**kw.get("headers", {}), **sign_request(
                self.identity, method=method, path="/" + path.lstrip("/"), query=query, body=bytes(body))}
        elif (token := self._local_token()) is not None:
            kw["headers"] = {**kw.get("headers", {}), LOCAL_TOKEN_HEADER: token}
        session = await self._session()
        try:
            for attempt in range(self.retries + 1):
                try:
                    async with session.request(method, path.lstrip("/"), params=query, timeout=timeout,
                                               **kw) as resp:
                        status, body = resp.status, await resp.read()
                    break
                except aiohttp.ClientConnectorError:
                    if attempt == self.retries:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise GatewayUnavailableError(f"The gateway at {self.url} presented a certificate this client does not "
                                          f"trust ({exc.certificate_error}). {CA_HINT}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise GatewayUnavailableError(f"No Ciro gateway answers at {self.url} ({exc}). {START_HINT}") from exc
        except TimeoutError as exc:
            raise JobTimeoutError(
                f"The gateway at {self.url} did not answer within {total:.0f}s. Raise the client "
                "timeout, or check the gateway with `ciro status`.") from exc
        except aiohttp.ClientError as exc:
            raise GatewayUnavailableError(f"HTTP error talking to {self.url}: {exc}. {START_HINT}") from exc
        if raw and status < 400:
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(
                f"{self.url}{path} answered HTTP {status} with a non-JSON body. Is this a Ciro gateway?"
            ) from exc
        if status >= 400:
            raise error_from_payload(payload, status=status)
        return payload
