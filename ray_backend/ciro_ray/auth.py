"""Who may POST to this gateway: signed requests (``ciro.auth``), a nonce store against replays,
and the allow-lists of client and worker keys.

Policy (``auth`` setting):
- ``auto``: an unsigned POST is accepted only from this machine (a loopback peer), i.e. the caller's
  own local gateway; a signed one is always checked, wherever it comes from.
- ``required``: every POST must be signed.
Worker endpoints (``/v1/workers/...``) are always signed, by a worker key this gateway knows.
Behind a reverse proxy on the same host every peer looks local: use ``required`` there.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import Request

from ciro import Config, ConfigError
from ciro.auth import SignedRequest, canonical_target
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


class RequestAuth:
    """A FastAPI dependency run before every route: checks POSTs, leaves reads alone."""

    def __init__(self, cfg: Config, nonces: NonceStore, known_workers: Callable[[], set[int]]) -> None:
        self.cfg = cfg
        self.nonces = nonces
        self.known_workers = known_workers
        self.allowed_clients = read_keys(cfg.allowed_clients) if cfg.allowed_clients else None

    async def __call__(self, request: Request) -> None:
        request.state.account = None
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        path = request.url.path
        if path.startswith(SELF_AUTHENTICATED):
            return  # webhooks come from other services, unsigned: their handler checks a shared secret
        worker_path = path.startswith(_WORKER_PATHS)
        sig = SignedRequest.from_headers(request.headers)
        if sig is None:
            if worker_path:
                raise UnauthenticatedError(f"{path} takes only requests signed by a worker key. Sign with the "
                                           "worker's key (ciro.auth.sign_request).", detail={"reason": "unsigned"})
            if self.cfg.auth == "auto" and _loopback(request):
                return  # the caller's own local gateway
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
        elif self.allowed_clients is not None and sig.account not in self.allowed_clients:
            raise ForbiddenError(
                f"Client key {sig.account_hex} is not allowed to use this gateway. Ask its operator to add it to "
                "allowed_clients.", detail={"reason": "unknown_client", "account": sig.account_hex})
        # Last, so that a forged or refused request cannot burn a nonce the real owner has not used yet.
        if not self.nonces.use(sig.account, sig.nonce, sig.expiry):
            raise UnauthenticatedError(
                f"Replayed request: account {sig.account_hex} already used nonce {sig.nonce:#x}. Sign every "
                "request with a fresh nonce.", detail={"reason": "replayed", "account": sig.account_hex})
        request.state.account = sig.account_hex
