"""The gateway's record of provider workers: who joined, their last heartbeat, and their downtime.

Provider workers are the ones ``ciro provider join`` brings: each runs on its provider's Ray node under a
key that node holds, and the node sends a heartbeat signed by that key every ``heartbeat_interval_s``.
A worker whose last heartbeat is older than ``heartbeat_timeout_s`` is *down*: a downtime record opens
(it gets no new jobs), and closes when heartbeats resume. A downtime longer than ``downtime_slash_s``
(the seed's 6 hours) is evidence the settler files as a ``CDCPool.slash(worker, DOWNTIME, evidence)``;
the evidence is the SHA-256 of the record's canonical JSON, served at ``GET /v1/downtime``.

A worker that leaves (``ciro provider leave``: drain, then leave) is no longer watched.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["ProviderStore", "downtime_evidence", "evidence_felt"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provider_workers (
    worker_key TEXT PRIMARY KEY,
    provider TEXT,
    node_id TEXT,
    joined_at REAL NOT NULL,
    last_seen REAL,
    state TEXT NOT NULL,          -- active | draining | left
    left_at REAL
);
CREATE TABLE IF NOT EXISTS downtime (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    worker_key TEXT NOT NULL,
    provider TEXT,
    node_id TEXT,
    last_seen REAL NOT NULL,      -- the last heartbeat (or the join) before the gap
    detected_at REAL NOT NULL,
    ended_at REAL,                -- the first heartbeat after it; NULL while it lasts
    slash TEXT,                   -- slashed | unregistered | error, once the settler filed it
    slash_tx TEXT,
    evidence TEXT                 -- the JSON whose SHA-256 the slash recorded
);
CREATE INDEX IF NOT EXISTS downtime_open ON downtime (worker_key, ended_at);
"""


def downtime_evidence(record: dict[str, Any], now: float) -> dict[str, Any]:
    """What a downtime slash states: the worker, its last heartbeat and how long it had been silent."""
    end = record["ended_at"] if record.get("ended_at") is not None else now
    return {"worker_key": record["worker_key"], "violation": "downtime",
            "last_heartbeat": round(record["last_seen"], 3), "silent_until": round(end, 3),
            "seconds": round(end - record["last_seen"], 3)}


def evidence_felt(evidence: dict[str, Any]) -> int:
    blob = json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest(), "big") >> 6


class ProviderStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- membership --------------------------------------------------------------------------
    def track(self, worker_key: str, provider: str | None, node_id: str | None, now: float | None = None) -> None:
        """A provider worker reported for duty: watch its heartbeats from now on (again, after a leave)."""
        now = time.time() if now is None else now
        self._exec(
            "INSERT INTO provider_workers (worker_key, provider, node_id, joined_at, state) VALUES (?, ?, ?, ?, "
            "'active') ON CONFLICT(worker_key) DO UPDATE SET provider=excluded.provider, node_id=excluded.node_id, "
            "joined_at=CASE WHEN state='left' THEN excluded.joined_at ELSE joined_at END, state='active', "
            "left_at=NULL", (worker_key, provider, node_id, now))

    def set_state(self, worker_key: str, state: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._exec("UPDATE provider_workers SET state=?, left_at=? WHERE worker_key=?",
                          (state, now if state == "left" else None, worker_key)) > 0

    def worker(self, worker_key: str) -> dict[str, Any] | None:
        rows = self._all("SELECT * FROM provider_workers WHERE worker_key=?", (worker_key,))
        return rows[0] if rows else None

    def workers(self, *, include_left: bool = True) -> list[dict[str, Any]]:
        where = "" if include_left else " WHERE state != 'left'"
        return self._all(f"SELECT * FROM provider_workers{where} ORDER BY joined_at")

    # -- heartbeats and downtime ---------------------------------------------------------------
    def heartbeat(self, worker_key: str, now: float | None = None) -> dict[str, Any] | None:
        """Record a heartbeat; closes the worker's open downtime, which is returned."""
        now = time.time() if now is None else now
        self._exec("UPDATE provider_workers SET last_seen=? WHERE worker_key=?", (now, worker_key))
        open_ = self._all("SELECT * FROM downtime WHERE worker_key=? AND ended_at IS NULL", (worker_key,))
        if open_:
            self._exec("UPDATE downtime SET ended_at=? WHERE id=?", (now, open_[0]["id"]))
            return {**open_[0], "ended_at": now}
        return None

    def silent(self, timeout_s: float, now: float | None = None, *, since: float = 0.0) -> list[dict[str, Any]]:
        """Watched workers (not left) whose last heartbeat, or join, is older than ``timeout_s``. Nothing before
        ``since`` (when this gateway started) counts: while the gateway was away, heartbeats had nowhere to go."""
        now = time.time() if now is None else now
        return self._all("SELECT * FROM provider_workers WHERE state != 'left' AND "
                         "MAX(COALESCE(last_seen, joined_at), ?) < ?", (since, now - timeout_s))

    def open_downtime(self, w: dict[str, Any], now: float | None = None, *,
                      since: float = 0.0) -> dict[str, Any] | None:
        """Open a downtime record for ``w`` unless one is open; returns the new record."""
        now = time.time() if now is None else now
        with self._lock:
            cur = self._db.execute("SELECT id FROM downtime WHERE worker_key=? AND ended_at IS NULL",
                                   (w["worker_key"],))
            if cur.fetchone() is not None:
                return None
            last = max(w["last_seen"] if w["last_seen"] is not None else w["joined_at"], since)
            cur = self._db.execute("INSERT INTO downtime (worker_key, provider, node_id, last_seen, detected_at) "
                                   "VALUES (?, ?, ?, ?, ?)", (w["worker_key"], w["provider"], w["node_id"], last, now))
            row = self._db.execute("SELECT * FROM downtime WHERE id=?", (cur.lastrowid,)).fetchone()
            return dict(row)

    def is_down(self, worker_key: str) -> bool:
        return bool(self._all("SELECT 1 FROM downtime WHERE worker_key=? AND ended_at IS NULL", (worker_key,)))

    def downtime(self, *, worker_key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM downtime WHERE (? IS NULL OR worker_key=?) ORDER BY id DESC LIMIT ?",
                         (worker_key, worker_key, limit))
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else None
        return rows

    def to_slash(self, threshold_s: float, limit: int, now: float | None = None) -> list[dict[str, Any]]:
        """Downtime longer than ``threshold_s`` (open or ended) not filed yet."""
        now = time.time() if now is None else now
        return self._all("SELECT * FROM downtime WHERE slash IS NULL AND COALESCE(ended_at, ?) - last_seen > ? "
                         "ORDER BY id LIMIT ?", (now, threshold_s, limit))

    def slashed(self, items: list[tuple[int, str, str | None, dict[str, Any] | None]]) -> None:
        """Record (id, outcome, tx hash, evidence) of filed downtime slashes."""
        with self._lock:
            self._db.executemany("UPDATE downtime SET slash=?, slash_tx=?, evidence=? WHERE id=?",
                                 [(o, tx, json.dumps(ev, sort_keys=True) if ev else None, i) for i, o, tx, ev in items])
