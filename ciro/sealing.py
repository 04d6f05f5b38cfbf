"""Payloads sealed at rest: AES-256-GCM under one key per ``CIRO_HOME``.

With ``encrypt_at_rest`` on, the gateway's job store keeps each job's input and output blobs sealed::

    b"CIROENC1" | 12-byte random nonce | ciphertext and 16-byte tag

with the job id and the field ("inputs", "outputs") as associated data, so a sealed blob moved to another row
or field does not open. The key is 32 random bytes in ``$CIRO_HOME/keys/store.key`` (mode 0600), made on first
use. A blob without the prefix is a plaintext one written before sealing was turned on and reads as it is.

This protects a copied database file or backup; the key sits on the same disk, so it does not protect
against anyone who can read ``$CIRO_HOME`` on the host (docs/architecture.md, "TLS and payloads at rest").
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import Config
from .errors import ConfigError
from .home import HomePaths

__all__ = ["KEY_BYTES", "MAGIC", "Sealer", "is_sealed", "job_context", "open_blob", "store_key_path",
           "store_sealer"]

MAGIC = b"CIROENC1"
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


def store_key_path(home: Path) -> Path:
    return HomePaths(home).store_key


def job_context(job_id: str, column: str) -> bytes:
    """A job store blob's associated data: it opens only in this job's row and this column."""
    return f"ciro-job:{job_id}:{column}".encode()


def is_sealed(blob: bytes) -> bool:
    return bytes(blob[:len(MAGIC)]) == MAGIC


class Sealer:
    """Seals and opens blobs under one AES-256-GCM key. Build one with :meth:`for_home`."""

    def __init__(self, key: bytes, *, source: str = "the key given") -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"A store key is {KEY_BYTES} bytes, not {len(key)}. Pass the contents of "
                              "$CIRO_HOME/keys/store.key.")
        self._aead = AESGCM(key)
        #: Where the key came from, for error messages.
        self.source = source

    @classmethod
    def for_home(cls, home: Path) -> Sealer:
        """The key in ``$CIRO_HOME/keys/store.key``, made (mode 0600) when there is none."""
        path = store_key_path(home)
        return cls(_load_or_create_key(path), source=str(path))

    def seal(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, bytes(data), context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        """The plaintext of a sealed blob; a blob that is not sealed is returned as it is."""
        blob = bytes(blob)
        if not is_sealed(blob):
            return blob
        body = blob[len(MAGIC):]
        if len(body) < _NONCE_BYTES + _TAG_BYTES:
            raise ConfigError(f"A sealed blob ({context.decode(errors='replace')}) is truncated. Restore the job "
                              "store from a backup.")
        try:
            return self._aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], context)
        except InvalidTag:
            raise ConfigError(
                f"A sealed blob ({context.decode(errors='replace')}) does not open with the key in {self.source}: "
                "either that is not the key that sealed it (restore the original store.key) or the stored bytes "
                "were altered (restore the job store from a backup).") from None


def open_blob(blob: bytes, context: bytes, sealer: Sealer | None) -> bytes:
    """Read a stored blob: plaintext as it is, a sealed one opened with ``sealer`` (an error without one)."""
    if not is_sealed(blob):
        return bytes(blob)
    if sealer is None:
        raise ConfigError(
            f"A stored blob ({context.decode(errors='replace')}) is sealed, but encrypt_at_rest is off. Turn it "
            "on (CIRO_ENCRYPT_AT_REST=true, or encrypt_at_rest = true in config.toml) with the key that sealed it "
            "in $CIRO_HOME/keys/store.key.")
    return sealer.open(blob, context)


def store_sealer(cfg: Config) -> Sealer | None:
    """The job store's sealer for this configuration: None unless ``encrypt_at_rest`` is on."""
    return Sealer.for_home(cfg.home) if cfg.encrypt_at_rest else None


def _load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process made one first: use that
                os.link(tmp, path)  # atomic, and never replaces an existing key
        finally:
            tmp.unlink(missing_ok=True)
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the store key {path} ({exc}). Make it readable by the user that runs "
                          "the gateway.") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"The store key {path} is open to other users (mode {stat.filemode(mode)}). Run "
                          f"`chmod 600 {path}`.")
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"The store key {path} is {len(key)} bytes, not {KEY_BYTES}: it is not a Ciro store key. Restore the "
            "original (jobs sealed under it cannot be read without it), or remove it if no job was ever sealed "
            "and a new key will be made.")
    return key
