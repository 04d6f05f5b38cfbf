"""Who may do what on this gateway: signed requests (``ciro.auth``), a nonce store against replays,
the allow-lists of client and worker keys, and who counts as the operator.

Policy (``auth`` setting):
- ``auto``: an unsigned request is trusted only when it is *local*: from this machine (a loopback peer), with
  this gateway's own Host and no other site's Origin; a signed one is always checked, wherever it comes from.
- ``required``: every write must be signed, or carry the local token (``$CIRO_HOME/run/gateway.token``,
  which the SDK on this machine sends by itself).
Job data (lists, results, faults) is shown only to its submitter (signed reads) and the operator; cancel
likewise (``admission`` decides that). Worker endpoints (``/v1/workers/...``) are always signed, by a worker
key this gateway knows.
Behind a reverse proxy on the same host every peer looks local: use ``required`` there.
"""

from __future__ import annotations

import hmac
import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import Request

from ciro import Config, ConfigError, KeyStore
from ciro.auth import LOCAL_TOKEN_HEADER, SignedRequest, canonical_target, ensure_local_token
from ciro.errors import ForbiddenError, UnauthenticatedError

__all__ = ["NonceStore", "RequestAuth", "read_keys"]

_WORKER_PATHS = ("/v1/workers/",)


def read_keys(path: str | Path) -> set[int]:
    """A key list: one 0x-hex public key per line; '#' starts a comment."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"Cannot read the key list {p} ({exc}). Create it with one 0x-hex public key per line "
                          "(`ciro keys show NAME` prints one).") from exc
    keys = set()
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                keys.add(int(text, 16))
            except ValueError as exc:
                raise ConfigError(f"{p}:{n}: {text!r} is not a hex public key. Fix or remove that line.") from exc
    return keys


class NonceStore:
    """Every (account, nonce) seen, kept until its expiry; on disk so a restart does not reopen replays."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS nonces (account TEXT NOT NULL, nonce TEXT NOT NULL, "
                         "expiry INTEGER NOT NULL, PRIMARY KEY (account, nonce)) WITHOUT ROWID")
        self._lock = threading.Lock()
        self._since_prune = 0

    def use(self, account: int, nonce: int, expiry: int) -> bool:
        """Record a nonce; False if this account already used it (a replay)."""
        with self._lock:
            self._since_prune += 1
            if self._since_prune >= 1000:
                self._db.execute("DELETE FROM nonces WHERE expiry < ?", (int(time.time()) - 1,))
                self._since_prune = 0
            try:
                self._db.execute("INSERT INTO nonces VALUES (?, ?, ?)", (hex(account), hex(nonce), expiry))
            except sqlite3.IntegrityError:
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Paths whose handlers authenticate requests themselves (a webhook's shared secret).
SELF_AUTHENTICATED = ("/webhooks/",)
_READS = ("GET", "HEAD", "OPTIONS")
#: What a browser says about where a request comes from (Fetch Metadata); anything else is another site.
_SAME_SITE = {"same-origin", "none"}


class RequestAuth:
    """A FastAPI dependency run before every route. It sets on ``request.state``:

    - ``account``: the public key that signed the request (0x-hex), or None;
    - ``operator``: True for the operator: a request signed by ``operator_key``, or a *local* request: from this
      machine (a loopback peer) whose Host is this gateway's own and that carries no other site's Origin (so no
      web page the user opens can act through their browser: cross-site forgery, DNS rebinding), or that carries
      the local token from ``$CIRO_HOME/run/gateway.token``. With ``auth=required`` only the token counts.

    Writes need a signature or the operator; reads are public here and the routes that show job data scope
    them (``admission.Caller.may_read``).
    """

    def __init__(self, cfg: Config, nonces: NonceStore, known_workers: Callable[[], set[int]]) -> None:
        self.cfg = cfg
        self.nonces = nonces
        self.known_workers = known_workers
        self.allowed_clients = read_keys(cfg.allowed_clients) if cfg.allowed_clients else None
        self.token = ensure_local_token(cfg.home)
        self.operator_key = _operator_key(cfg)
        names = {"127.0.0.1", "localhost", "[::1]", cfg.host}
        self.hosts = {f"{n}:{cfg.port}" for n in names}
        self.origins = {f"{scheme}://{h}" for h in self.hosts for scheme in ("http", "https")}

    def local(self, request: Request) -> bool:
        """Whether the request comes from the operator's own machine and not through a web page of another site."""
        if not _loopback(request):
            return False
        token = request.headers.get(LOCAL_TOKEN_HEADER)
        # A wrong token (another home's gateway) grants nothing and costs nothing: the checks below still apply.
        if token is not None and hmac.compare_digest(token.encode(), self.token.encode()):
            return True
        if self.cfg.auth == "required":
            return False
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        return (request.headers.get("host") in self.hosts and (origin is None or origin in self.origins)
                and (site is None or site in _SAME_SITE))

    async def __call__(self, request: Request) -> None:
        request.state.account = None
        request.state.operator = False
        path = request.url.path
        if path.startswith(SELF_AUTHENTICATED):
            return  # webhooks come from other services, unsigned: their handler checks a shared secret
        worker_path = path.startswith(_WORKER_PATHS) and request.method not in _READS
        sig = SignedRequest.from_headers(request.headers)
        if sig is None:
            if worker_path:
                raise UnauthenticatedError(f"{path} takes only requests signed by a worker key. Sign with the "
                                           "worker's key (ciro.auth.sign_request).", detail={"reason": "unsigned"})
            if self.local(request):
                request.state.operator = True  # the caller's own local gateway
                return
            if request.method in _READS:
                return  # public reads; job data is scoped by the routes
            if _loopback(request) and self.cfg.auth == "auto":
                raise ForbiddenError(
                    "Refused an unsigned request from this machine that names another site (its Host, Origin or "
                    "Sec-Fetch-Site header): a web page cannot act on this gateway. Use the Ciro SDK or CLI, or "
                    "the gateway's own pages.", detail={"reason": "cross_site"})
            if self.cfg.auth == "required":
                raise UnauthenticatedError(
                    "This gateway (auth=required) takes only signed requests, or from this machine requests that "
                    "carry its local token. Use the Ciro SDK or CLI with this gateway's CIRO_HOME, or sign with a "
                    "key from your key store (sign_requests='always').", detail={"reason": "unsigned"})
            raise UnauthenticatedError(
                "This gateway takes only signed requests from other machines. Use the Ciro SDK or CLI, which sign "
                "with the key `client_key` in your key store (create it with `ciro keys new client`), or set "
                "sign_requests='always'.", detail={"reason": "unsigned"})
        body = await request.body()
        sig.check(method=request.method, target=canonical_target(path, request.query_params.multi_items()),
                  body=body, now=time.time(), max_ttl_s=self.cfg.max_request_ttl_s)
        if worker_path:
            if sig.account not in self.known_workers():
                raise ForbiddenError(
                    f"Unknown worker {sig.account_hex}: this gateway does not admit that key. Add it to the "
                    "allowed_workers list (CIRO_ALLOWED_WORKERS) or register the worker with this gateway.",
                    detail={"reason": "unknown_worker", "account": sig.account_hex})
        elif (self.allowed_clients is not None and sig.account not in self.allowed_clients
              and sig.account != self.operator_key):
            raise ForbiddenError(
                f"Client key {sig.account_hex} is not allowed to use this gateway. Ask its operator to add it to "
                "allowed_clients.", detail={"reason": "unknown_client", "account": sig.account_hex})
        # Last, so that a forged or refused request cannot burn a nonce the real owner has not used yet.
        if not self.nonces.use(sig.account, sig.nonce, sig.expiry):
            raise UnauthenticatedError(
                f"Replayed request: account {sig.account_hex} already used nonce {sig.nonce:#x}. Sign every "
                "request with a fresh nonce.", detail={"reason": "replayed", "account": sig.account_hex})
        request.state.account = sig.account_hex
        request.state.operator = sig.account == self.operator_key


def _operator_key(cfg: Config) -> int | None:
    """The operator's public key (``operator_key`` in the key store), if this machine holds it."""
    try:
        return KeyStore(cfg.paths.keys).get(cfg.operator_key).public_key
    except ConfigError:
        return None

