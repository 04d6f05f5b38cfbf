"""Signed HTTP requests: who sent a request, that it was not altered, and that it is fresh.

A signed request carries four headers (encoding in ``docs/encoding.md``)::

    x-ciro-account:   the sender's Stark public key (0x-hex)
    x-ciro-nonce:     a random 120-bit number, never reused by that account
    x-ciro-expiry:    unix seconds after which the gateway refuses it
    x-ciro-signature: r,s (0x-hex) of Stark ECDSA over request_message(...)

``request_message`` is Poseidon over (domain, method, SHA-256 of the canonical target, SHA-256 of
the body, account, nonce, expiry), the same primitives as receipts, so Cairo can check it too.
The gateway keeps every (account, nonce) until its expiry, which is what makes a replay fail.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from .errors import UnauthenticatedError
from .identity import MAX_MESSAGE, Identity, verify_felt
from .receipts import short_string

__all__ = ["LOCAL_TOKEN_HEADER", "REQUEST_DOMAIN", "SignedRequest", "canonical_target", "csrf_token",
           "ensure_local_token", "is_loopback_url", "local_token_path", "read_local_token", "request_message",
           "sign_request"]

REQUEST_DOMAIN = short_string("CIRO_REQUEST_V1")
H_ACCOUNT, H_NONCE, H_EXPIRY, H_SIGNATURE = "x-ciro-account", "x-ciro-nonce", "x-ciro-expiry", "x-ciro-signature"
#: How long a signed request stays valid when the signer does not say.
DEFAULT_TTL_S = 120
_SIGN_HINT = ("Sign requests with a key from your key store (the SDK does when the gateway is not on this machine, "
              "or with sign_requests='always'; create one with `ciro keys new client`).")


def canonical_target(path: str, query: Iterable[tuple[str, str]] = ()) -> str:
    """The path plus its query parameters sorted by name then value, URL-encoded."""
    items = sorted((str(k), str(v)) for k, v in query)
    return path + ("?" + urlencode(items) if items else "")


def _u256(data: bytes) -> tuple[int, int]:
    v = int.from_bytes(hashlib.sha256(data).digest(), "big")
    return v >> 128, v & ((1 << 128) - 1)


def request_message(*, method: str, target: str, body: bytes, account: int, nonce: int, expiry: int) -> int:
    from starknet_pathfinder_crypto import poseidon_hash_many

    felts = [REQUEST_DOMAIN, short_string(method.upper()), *_u256(target.encode()), *_u256(body), account, nonce,
             expiry]
    return int(poseidon_hash_many(felts))


def sign_request(identity: Identity, *, method: str, path: str, query: Mapping[str, str] | None = None,
                 body: bytes = b"", ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> dict[str, str]:
    """The headers that sign one request."""
    target = canonical_target(path, (query or {}).items())
    expiry = int((time.time() if now is None else now) + ttl_s)
    while True:
        nonce = secrets.randbits(120)
        msg = request_message(method=method, target=target, body=body, account=identity.public_key, nonce=nonce,
                              expiry=expiry)
        if 0 < msg < MAX_MESSAGE:  # a Poseidon output >= 2**251 (odds ~2**-59) cannot be signed: new nonce
            break
    r, s = identity.sign(msg)
    return {H_ACCOUNT: identity.public_hex, H_NONCE: hex(nonce), H_EXPIRY: str(expiry),
            H_SIGNATURE: f"{r:#x},{s:#x}"}


@dataclass(frozen=True)
class SignedRequest:
    account: int
    nonce: int
    expiry: int
    r: int
    s: int

    @property
    def account_hex(self) -> str:
        return f"{self.account:#066x}"

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SignedRequest | None:
        """None when the request carries no signature at all; an error when it carries a broken one."""
        present = [h for h in (H_ACCOUNT, H_NONCE, H_EXPIRY, H_SIGNATURE) if headers.get(h)]
        if not present:
            return None
        missing = sorted({H_ACCOUNT, H_NONCE, H_EXPIRY, H_SIGNATURE} - set(present))
        if missing:
            raise UnauthenticatedError(f"The request's signature is incomplete: missing {', '.join(missing)}. "
                                       + _SIGN_HINT, detail={"reason": "malformed"})
        try:
            r, s = (int(x, 16) for x in headers[H_SIGNATURE].split(","))
            return cls(account=int(headers[H_ACCOUNT], 16), nonce=int(headers[H_NONCE], 16),
                       expiry=int(headers[H_EXPIRY]), r=r, s=s)
        except ValueError as exc:
            raise UnauthenticatedError(
                f"The request's signature headers are malformed ({exc}): {H_SIGNATURE} must be 'r,s' in hex, "
                f"{H_ACCOUNT} and {H_NONCE} hex, {H_EXPIRY} unix seconds. " + _SIGN_HINT,
                detail={"reason": "malformed"}) from exc

    def check(self, *, method: str, target: str, body: bytes, now: float, max_ttl_s: float) -> None:
        """Signature and freshness; raises :class:`UnauthenticatedError` naming what is wrong."""
        detail = {"account": self.account_hex}
        if self.expiry < now:
            raise UnauthenticatedError(
                f"The signed request expired {now - self.expiry:.0f}s ago. Sign it again (check this machine's "
                "clock if this keeps happening).", detail={**detail, "reason": "expired"})
        if self.expiry > now + max_ttl_s:
            raise UnauthenticatedError(
                f"The signed request's expiry is {self.expiry - now:.0f}s away; this gateway accepts at most "
                f"{max_ttl_s:.0f}s. Sign with a shorter lifetime (or fix this machine's clock).",
                detail={**detail, "reason": "expiry_too_far"})
        msg = request_message(method=method, target=target, body=body, account=self.account, nonce=self.nonce,
                              expiry=self.expiry)
        if not verify_felt(self.account, msg, self.r, self.s):
            raise UnauthenticatedError(
                f"The request's signature does not verify for account {self.account_hex}: it was forged, or the "
                "body, path or query changed after signing. Sign the exact bytes you send.",
                detail={**detail, "reason": "bad_signature"})


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: A request from this machine that carries the gateway's local token acts for the operator (as Jupyter's token does).
LOCAL_TOKEN_HEADER = "x-ciro-local-token"


def local_token_path(home: Path) -> Path:
    """Where the gateway of ``CIRO_HOME`` keeps its local token (readable by its user only)."""
    return Path(home) / "run" / "gateway.token"


def read_local_token(home: Path) -> str | None:
    """The local gateway's token, or None when there is none or this user cannot read it."""
    try:
        text = local_token_path(home).read_text().strip()
    except OSError:
        return None
    return text or None


def ensure_local_token(home: Path) -> str:
    """The local token, created (mode 0600) if missing; a gateway calls this when it starts."""
    existing = read_local_token(home)
    if existing:
        return existing
    path = local_token_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(tmp, path)
    return token


def csrf_token(secret: str, purpose: str) -> str:
    """A form's anti-forgery token: an HMAC of ``purpose`` under the gateway's secret. A page on another site
    cannot read the gateway's pages, so it cannot learn the token its forged POST would need."""
    return hmac.new(secret.encode(), b"ciro-csrf:" + purpose.encode(), hashlib.sha256).hexdigest()
