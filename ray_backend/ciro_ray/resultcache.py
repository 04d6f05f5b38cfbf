"""The result cache: a job that asks exactly what a done job of the same submitter asked is answered with that
job's outputs and evidence (``docs/verification.md``, "Reused results").

What "exactly" means is :func:`cache_keys`: the model hash, the input commitment, the verification level, what of
the level changes the evidence (a quorum's policy; a zk job's set-up: settings, verifying key and SRS), the
hardware the job requires, and the scope: the account that signed the submission, or the operator's for an
unsigned local one. A result is never reused across submitters: a ``cached: true`` answer (or its latency) would
tell one client that another had submitted the same input.

The cache is a table of the job store's database (``$CIRO_HOME/jobs.db``), so it survives a gateway restart. An
entry names the done job whose row holds the result; it copies nothing. At most ``size`` entries are kept and
the least recently used (recorded or hit) goes first. What is recorded (done jobs only, zk jobs once proven)
and what may be answered from it (never an escrowed job, never one that asks for ``fresh``) is decided by the
finisher (``outcomes``) and the intake (``intake``); this module keeps the entries.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ciro import QuorumPolicy, VerificationLevel

__all__ = ["ResultCache", "cache_keys"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS result_cache (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS result_cache_used ON result_cache(used);
"""
#: Changes whenever what goes into a key changes, so that entries of an older rule never match.
_KEY_VERSION = 1


def cache_keys(*, scope: str | None, model_hash: str, level: VerificationLevel, options: Mapping[str, Any],
               fit: Mapping[str, Any], zk: Mapping[str, Any] | None) -> Callable[[str], str] | None:
    """The cache key of each job of one request, as a function of its input commitment (hex SHA-256 keys that two
    jobs share exactly when one's result may answer the other), or None when the request's results are never
    reused (zk jobs of a model without a set-up). ``scope``: the submitting account, None for the operator;
    ``options``: the jobs' checked options; ``fit``: the hardware they require (their deployment's and their own,
    ``Fit.to_dict``); ``zk``: the model's zk set-up (``ModelStore.zk_status``)."""
    evidence: dict[str, Any] = {}
    if level is VerificationLevel.QUORUM:
        policy = QuorumPolicy.from_options(options)
        evidence = {"f": policy.f, "rtol": policy.rtol, "atol": policy.atol}
    elif level is VerificationLevel.ZKML:
        if not zk or not zk.get("vk_hash") or not zk.get("settings_hash"):
            return None
        evidence = {"settings_hash": zk["settings_hash"], "vk_hash": zk["vk_hash"],
                    "srs_sha256": (zk.get("srs") or {}).get("sha256")}
    doc = {"v": _KEY_VERSION, "scope": scope, "model_hash": model_hash, "level": level.value, "evidence": evidence,
           "fit": dict(fit)}
    # what the request's jobs share is hashed once; each job adds its input commitment (64 hex characters)
    head = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")

    def key(input_commitment: str) -> str:
        h = head.copy()
        h.update(input_commitment.encode())
        return h.hexdigest()

    return key


class ResultCache:
    """The ``result_cache`` table of the job store's database at ``path`` (the ``jobs`` table must exist: an entry
    is recorded from a done job's ``cache_key``). ``size`` 0 disables it: nothing is recorded or found."""

    def __init__(self, path: Path, size: int) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        #: The recency clock: each record or hit stamps its entry with the next value.
        self._clock = int(self._db.execute("SELECT COALESCE(MAX(used), 0) FROM result_cache").fetchone()[0])
        if size:
            with self._transaction() as db:
                self._evict(db)  # the size may have been lowered since the last start

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM result_cache").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def lookup(self, keys: Sequence[str]) -> dict[str, str]:
        """key -> the done job whose result it names, for the keys that have an entry; each hit becomes the most
        recently used."""
        wanted = list(dict.fromkeys(keys))
        if not self.enabled or not wanted:
            return {}
        found: dict[str, str] = {}
        with self._transaction() as db:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                found.update(db.execute(f"SELECT key, job_id FROM result_cache WHERE key IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall())
            db.executemany("UPDATE result_cache SET used=? WHERE key=?", [(self._tick(), k) for k in found])
        return found

    def record(self, job_ids: Sequence[str]) -> int:
        """Make each of these jobs, once done and computed (not itself reused), the entry of its key, replacing
        the one before (a ``fresh`` run refreshes it); evict the least recently used beyond ``size``. Returns how
        many were recorded."""
        if not self.enabled or not job_ids:
            return 0
        recorded = 0
        with self._transaction() as db:
            for i in range(0, len(job_ids), 500):
                chunk = list(job_ids[i:i + 500])
                rows = db.execute(f"SELECT cache_key, id FROM jobs WHERE id IN ({','.join('?' * len(chunk))}) "
                                  "AND status='done' AND cache_key IS NOT NULL AND cached_from IS NULL "
                                  "ORDER BY finished_at", chunk).fetchall()
                db.executemany("INSERT INTO result_cache (key, job_id, used) VALUES (?,?,?) ON CONFLICT(key) DO "
                               "UPDATE SET job_id=excluded.job_id, used=excluded.used",
                               [(key, job_id, self._tick()) for key, job_id in rows])
                recorded += len(rows)
            self._evict(db)
        return recorded

    def forget(self, keys: Sequence[str]) -> None:
        """Drop these entries (their job no longer answers them)."""
        if keys:
            with self._transaction() as db:
                db.executemany("DELETE FROM result_cache WHERE key=?", [(k,) for k in keys])

    def _evict(self, db: sqlite3.Connection) -> None:
        over = int(db.execute("SELECT COUNT(*) FROM result_cache").fetchone()[0]) - self.size
        if over > 0:
            db.execute("DELETE FROM result_cache WHERE key IN (SELECT key FROM result_cache ORDER BY used LIMIT ?)",
                       (over,))
