"""Durable job store: SQLite in WAL mode.

A job is committed here before the gateway acknowledges it, so an accepted job survives a
gateway restart. Completion is a conditional update on (status='running', attempt): only the
attempt that is current can deliver a result, and only once, which is what makes delivery
at-most-once even when a worker that was presumed dead answers late.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ciro import JobStatus

__all__ = ["JobRow", "JobStore", "NewJob"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    model_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    verification TEXT NOT NULL,
    options TEXT NOT NULL,
    input_commitment TEXT NOT NULL,
    inputs BLOB NOT NULL,
    output_commitment TEXT,
    outputs BLOB,
    error TEXT,
    evidence TEXT,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, submitted_at);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs(submitted_at);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    worker_key TEXT NOT NULL,
    worker TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faults_worker ON faults(worker_key);
"""


@dataclass(frozen=True)
class NewJob:
    id: str
    model_hash: str
    verification: str
    options: dict[str, Any]
    input_commitment: str
    inputs: bytes  # canonical encoding (docs/encoding.md)
    batch_id: str | None = None
    #: The account (public key) that signed the submission; None for an unsigned local one.
    client: str | None = None


@dataclass
class JobRow:
    id: str
    model_hash: str
    status: JobStatus
    verification: str
    options: dict[str, Any]
    input_commitment: str
    inputs: bytes | None
    output_commitment: str | None
    outputs: bytes | None
    error: dict[str, Any] | None
    evidence: dict[str, Any] | None
    worker: str | None
    attempts: int
    batch_id: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    client: str | None = None


_COLS = ("id, model_hash, status, verification, options, input_commitment, {inputs}, output_commitment, "
         "outputs, error, evidence, worker, attempts, batch_id, submitted_at, started_at, finished_at, client")


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class JobStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection guarded by a lock: the gateway's event loop is the only heavy user.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for col in ("evidence", "client"):  # a job store written before receipts / signed requests existed
            if col not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    # -- writes -------------------------------------------------------------------------
    def insert(self, jobs: Sequence[NewJob]) -> float:
        now = time.time()
        with self._transaction() as db:
            db.executemany(
            "INSERT INTO jobs (id, model_hash, status, verification, options, input_commitment, inputs, "
            "batch_id, submitted_at, client) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(j.id, j.model_hash, JobStatus.QUEUED.value, j.verification, json.dumps(j.options),
              j.input_commitment, j.inputs, j.batch_id, now, j.client) for j in jobs],
            )
        return now

    def mark_running(self, ids: Sequence[str], worker: str) -> dict[str, int]:
        """queued -> running, attempts + 1. Returns {id: attempt} for the jobs that moved."""
        now = time.time()
        moved: dict[str, int] = {}
        with self._transaction() as db:
            for chunk in _chunks(ids, 500):
                rows = db.execute(
                    "UPDATE jobs SET status='running', attempts=attempts+1, worker=?, "
                    "started_at=COALESCE(started_at, ?) "
                    f"WHERE id IN ({','.join('?' * len(chunk))}) AND status='queued' RETURNING id, attempts",
                    (worker, now, *chunk),
                ).fetchall()
                moved.update((r[0], int(r[1])) for r in rows)
        return moved

    def complete(self, results: Sequence[tuple[str, int, str, bytes, str, str | None]]) -> set[str]:
        """Record (id, attempt, output_commitment, outputs, worker, evidence JSON) for running jobs of that
        attempt. Returns the ids whose result was recorded; any other (a stale or cancelled attempt) is dropped.
        """
        now = time.time()
        done: set[str] = set()
        with self._transaction() as db:
            for chunk in _chunks(results, 150):
                values = ",".join(["(?,?,?,?,?,?)"] * len(chunk))
                rows = db.execute(
                    f"WITH v(id, attempt, oc, out, worker, ev) AS (VALUES {values}) "
                    "UPDATE jobs SET status='done', output_commitment=v.oc, outputs=v.out, worker=v.worker, "
                    "evidence=v.ev, finished_at=? FROM v "
                    "WHERE jobs.id=v.id AND jobs.status IN ('running','proving') "
                    "AND jobs.attempts=v.attempt RETURNING jobs.id",
                    (*(x for row in chunk for x in row), now),
                ).fetchall()
                done.update(r[0] for r in rows)
        return done

    def mark_proving(self, job_id: str, attempt: int, output_commitment: str, outputs: bytes, worker: str,
                     evidence: str | None) -> bool:
        """running -> proving: the outputs are known and kept; the proof is still being made."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status='proving', output_commitment=?, outputs=?, worker=?, evidence=? "
                "WHERE id=? AND status='running' AND attempts=?",
                (output_commitment, outputs, worker, evidence, job_id, attempt))
            return cur.rowcount == 1

    def fail(self, items: Sequence[tuple[str, int, dict[str, Any]]]) -> set[str]:
        now = time.time()
        failed: set[str] = set()
        with self._transaction() as db:
            for job_id, attempt, error in items:
                cur = db.execute(
                    "UPDATE jobs SET status='failed', error=?, finished_at=? "
                    "WHERE id=? AND status IN ('running','proving') AND attempts=?",
                    (json.dumps(error), now, job_id, attempt),
                )
                if cur.rowcount == 1:
                    failed.add(job_id)
        return failed

    def requeue(self, items: Sequence[tuple[str, int]]) -> set[str]:
        """running (this attempt) -> queued, after the worker running it died."""
        requeued: set[str] = set()
        with self._transaction() as db:
            for job_id, attempt in items:
                cur = db.execute(
                    "UPDATE jobs SET status='queued', worker=NULL WHERE id=? AND status='running' "
                    "AND attempts=?", (job_id, attempt))
                if cur.rowcount == 1:
                    requeued.add(job_id)
        return requeued

    def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a queued or running job. Returns the status after the call, None if unknown."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status='cancelled', finished_at=? WHERE id=? "
                "AND status IN ('queued','running','proving')",
                (time.time(), job_id),
            )
            row = self._db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else JobStatus(row[0])

    def recover(self) -> int:
        """At start-up: jobs left running by a dead gateway go back to the queue."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status='queued', worker=NULL WHERE status IN ('running','proving')")
            return cur.rowcount

    def record_faults(self, faults: Sequence[tuple[str, str, str, str, dict[str, Any]]]) -> None:
        """Store (job_id, worker_key, worker, kind, detail) evidence against workers (e.g. invalid compute)."""
        now = time.time()
        with self._transaction() as db:
            db.executemany("INSERT INTO faults (job_id, worker_key, worker, kind, detail, recorded_at) "
                           "VALUES (?,?,?,?,?,?)", [(*f[:4], json.dumps(f[4]), now) for f in faults])

    def faults(self, *, worker_key: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        clause, args = ("WHERE worker_key=?", (worker_key,)) if worker_key else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, job_id, worker_key, worker, kind, detail, recorded_at FROM faults {clause} "
                "ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [{"id": r[0], "job_id": r[1], "worker_key": r[2], "worker": r[3], "kind": r[4],
                 "detail": json.loads(r[5]), "recorded_at": r[6]} for r in rows]

    # -- reads --------------------------------------------------------------------------
    def get(self, job_id: str, *, with_inputs: bool = False) -> JobRow | None:
        rows = self._select("WHERE id=?", (job_id,), with_inputs=with_inputs)
        return rows[0] if rows else None

    def queued(self) -> list[JobRow]:
        return self._select("WHERE status='queued' ORDER BY submitted_at", (), with_inputs=True)

    def recent(self, *, status: str | None = None, model_hash: str | None = None, limit: int = 100) -> list[JobRow]:
        where, args = [], []
        if status:
            where.append("status=?")
            args.append(status)
        if model_hash:
            where.append("model_hash=?")
            args.append(model_hash)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._select(f"{clause} ORDER BY submitted_at DESC LIMIT ?", (*args, limit), with_inputs=False)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: int(n) for s, n in rows}

    def _select(self, clause: str, args: Sequence[Any], *, with_inputs: bool) -> list[JobRow]:
        cols = _COLS.format(inputs="inputs" if with_inputs else "NULL")
        with self._lock:
            rows = self._db.execute(f"SELECT {cols} FROM jobs {clause}", tuple(args)).fetchall()
        return [
            JobRow(
                id=r[0], model_hash=r[1], status=JobStatus(r[2]), verification=r[3], options=json.loads(r[4]),
                input_commitment=r[5], inputs=r[6], output_commitment=r[7], outputs=r[8],
                error=json.loads(r[9]) if r[9] else None, evidence=json.loads(r[10]) if r[10] else None,
                worker=r[11], attempts=r[12], batch_id=r[13], submitted_at=r[14], started_at=r[15],
                finished_at=r[16], client=r[17],
            )
            for r in rows
        ]
