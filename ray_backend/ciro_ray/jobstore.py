"""Durable job store: SQLite in WAL mode.

A job is committed here before the gateway acknowledges it, so an accepted job survives a
gateway restart. Completion is a conditional update on (status='running', attempt): only the
attempt that is current can deliver a result, and only once, which is what makes delivery
at-most-once even when a worker that was presumed dead answers late.

With a :class:`ciro.sealing.Sealer` (``encrypt_at_rest``), input and output blobs are sealed here, bound to
their job and column; older plaintext rows still read. Callers see (and commit to) plaintext only.

The result cache (``resultcache``, ``JobStore.results``) is a table of the same database: a job stores the key its
result may be reused under (``cache_key``); a job answered from the cache names the job it reuses (``cached_from``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ciro import Config, JobStatus
from ciro.sealing import Sealer, job_context, open_blob, store_sealer

from .jobrows import COLS as _COLS
from .jobrows import SCHEMA as _SCHEMA
from .jobrows import JobRow, NewJob
from .jobrows import chunks as _chunks
from .resultcache import ResultCache

__all__ = ["JobRow", "JobStore", "NewJob"]

class JobStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL", sealer: Sealer | None = None,
                 result_cache_size: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sealer = sealer
        # One connection guarded by a lock: the gateway's event loop is the only heavy user.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for col in ("evidence", "client", "escrow", "settlement", "settlement_tx", "payment", "cached_from",
                    "cache_key"):  # older stores
            if col not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT")
        # a client's own job list (signed reads); after the migration above, which adds the column to older stores
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_client ON jobs(client, submitted_at)")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(faults)")}
        for col in ("slash", "slash_tx"):
            if col not in columns:
                self._db.execute(f"ALTER TABLE faults ADD COLUMN {col} TEXT")
        self.results = ResultCache(path, result_cache_size)

    @classmethod
    def for_config(cls, cfg: Config) -> JobStore:
        """The gateway's store: ``$CIRO_HOME/jobs.db``, sealed when ``encrypt_at_rest`` is on."""
        return cls(cfg.paths.db("jobs"), synchronous=cfg.jobstore_sync, sealer=store_sealer(cfg),
                   result_cache_size=cfg.result_cache_size)

    def close(self) -> None:
        self.results.close()
        with self._lock:
            self._db.close()

    def _seal(self, job_id: str, column: str, blob: bytes) -> bytes:
        return self.sealer.seal(blob, job_context(job_id, column)) if self.sealer else blob

    def _open(self, job_id: str, column: str, blob: bytes | None) -> bytes | None:
        return None if blob is None else open_blob(blob, job_context(job_id, column), self.sealer)

    def _seal_evidence(self, job_id: str, evidence: str | None) -> str | bytes | None:
        """Evidence is sealed too: a quorum's votes and a zk proof's instances carry outputs (and inputs)."""
        return self._seal(job_id, "evidence", evidence.encode()) if self.sealer and evidence else evidence

    def _evidence(self, job_id: str, value: str | bytes | None) -> Any:
        if not value:
            return None
        return json.loads(value if isinstance(value, str) else open_blob(value, job_context(job_id, "evidence"),
                                                                         self.sealer))

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
        """Store new jobs (a job that ``reuses`` a done one is stored done, with that job's result)."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO jobs (id, model_hash, status, verification, options, input_commitment, inputs, batch_id, "
                "submitted_at, client, cache_key, escrow, settlement, output_commitment, outputs, evidence, worker, "
                "started_at, finished_at, cached_from) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [self._new_row(j, now) for j in jobs])
            db.executemany("INSERT INTO job_inputs (id, inputs) VALUES (?,?)",
                           [(j.id, self._seal(j.id, "inputs", j.inputs)) for j in jobs])
        return now

    def _new_row(self, j: NewJob, now: float) -> tuple[Any, ...]:
        head = (j.id, j.model_hash, JobStatus.DONE.value if j.reuses else j.status.value, j.verification,
                json.dumps(j.options), j.input_commitment, b"", j.batch_id, now, j.client, j.cache_key,
                json.dumps(j.prepaid) if j.prepaid is not None else None, "prepaid" if j.prepaid is not None else None)
        if (o := j.reuses) is None:
            return (*head, None, None, None, None, None, None, None)
        evidence = self._seal_evidence(j.id, json.dumps(o.evidence) if o.evidence is not None else None)
        return (*head, o.output_commitment, self._seal(j.id, "outputs", o.outputs or b""), evidence, o.worker, now,
                now, o.cached_from or o.id)

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
        sealed = [(job_id, attempt, oc, self._seal(job_id, "outputs", out), worker, self._seal_evidence(job_id, ev))
                  for job_id, attempt, oc, out, worker, ev in results]
        with self._transaction() as db:
            for chunk in _chunks(sealed, 150):
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
        outputs, ev = self._seal(job_id, "outputs", outputs), self._seal_evidence(job_id, evidence)
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status='proving', output_commitment=?, outputs=?, worker=?, evidence=? "
                "WHERE id=? AND status='running' AND attempts=?",
                (output_commitment, outputs, worker, ev, job_id, attempt))
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
                "AND status IN ('awaiting_escrow','queued','running','proving')",
                (time.time(), job_id),
            )
            row = self._db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else JobStatus(row[0])

    # -- settlement ---------------------------------------------------------------------
    def escrowed(self, ids: Sequence[str], escrow: dict[str, dict[str, Any]]) -> set[str]:
        """awaiting_escrow -> queued for jobs whose escrow was verified (``escrow[id]`` is recorded)."""
        moved: set[str] = set()
        with self._transaction() as db:
            for job_id in ids:
                cur = db.execute("UPDATE jobs SET status='queued', escrow=?, settlement='escrowed' WHERE id=? AND "
                                 "status='awaiting_escrow'", (json.dumps(escrow[job_id]), job_id))
                if cur.rowcount == 1:
                    moved.add(job_id)
        return moved

    def expire_escrow(self, older_than: float) -> int:
        """Jobs that waited for their escrow past the window fail (nothing was paid, nothing ran)."""
        err = json.dumps({"code": "insufficient_escrow", "message": "No escrow arrived for this job in time; it "
                          "was not run. Submit it again and escrow its payment.", "detail": {}})
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status='failed', error=?, finished_at=? WHERE "
                                   "status='awaiting_escrow' AND submitted_at < ?", (err, time.time(), older_than))
            return cur.rowcount

    def to_settle(self, limit: int) -> list[JobRow]:
        """Finished jobs whose escrow still waits: done ones to pay, failed or cancelled ones to refund."""
        return self._select("WHERE settlement='escrowed' AND status IN ('done','failed','cancelled') "
                            "ORDER BY finished_at LIMIT ?", (limit,), with_inputs=False)

    def prepaid_final(self, limit: int) -> list[JobRow]:
        """Finished prepaid jobs not settled yet (``prepaid.Prepaid.settle_once``), oldest first."""
        return self._select("WHERE settlement='prepaid' AND status IN ('done','failed','cancelled') "
                            "ORDER BY finished_at LIMIT ?", (limit,), with_inputs=False)

    def spend_cap(self, client: str) -> tuple[int, str, str] | None:
        """The highest spend cap (cumulative, r, s) this gateway accepted from a client account, or None."""
        with self._lock:
            row = self._db.execute("SELECT cumulative, r, s FROM spend_caps WHERE client=?", (client,)).fetchone()
        return (int(row[0]), str(row[1]), str(row[2])) if row else None

    def set_spend_cap(self, client: str, cumulative: int, r: str, s: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO spend_caps VALUES (?,?,?,?) ON CONFLICT(client) DO UPDATE SET "
                       "cumulative=excluded.cumulative, r=excluded.r, s=excluded.s", (client, str(cumulative), r, s))

    def settled(self, items: Sequence[tuple[str, str, str | None, int | None]]) -> None:
        """Record (id, settlement state, transaction hash, payment) after a settlement transaction."""
        with self._transaction() as db:
            db.executemany("UPDATE jobs SET settlement=?, settlement_tx=?, payment=? WHERE id=?",
                           [(state, tx, str(pay) if pay is not None else None, job_id)
                            for job_id, state, tx, pay in items])

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

    def faults(self, *, worker_key: str | None = None, job_ids: Sequence[str] | None = None,
               limit: int = 1000) -> list[dict[str, Any]]:
        args: tuple[str, ...] = (worker_key,) if worker_key else ()
        clause = "WHERE worker_key=?" if worker_key else ""
        if job_ids is not None:
            clause, args = f"WHERE job_id IN ({','.join('?' * len(job_ids))})", tuple(job_ids)
        return self._faults(clause, args, limit)

    def faults_to_slash(self, limit: int) -> list[dict[str, Any]]:
        """Invalid-compute faults proven by a zk proof and not yet filed on chain (oldest first)."""
        return self._faults("WHERE kind='invalid_compute' AND slash IS NULL "
                            "AND json_extract(detail, '$.reason')='zk_output_mismatch'", (), limit, order="ASC")

    def slashed(self, items: Sequence[tuple[int, str, str | None]]) -> None:
        """Record (fault id, state, transaction hash) once a fault was filed on chain (or why it was not)."""
        with self._transaction() as db:
            db.executemany("UPDATE faults SET slash=?, slash_tx=? WHERE id=?",
                           [(state, tx, fault_id) for fault_id, state, tx in items])

    def _faults(self, clause: str, args: tuple[str, ...], limit: int, order: str = "DESC") -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, job_id, worker_key, worker, kind, detail, recorded_at, slash, slash_tx FROM faults "
                f"{clause} ORDER BY id {order} LIMIT ?", (*args, limit)).fetchall()
        return [{"id": r[0], "job_id": r[1], "worker_key": r[2], "worker": r[3], "kind": r[4],
                 "detail": json.loads(r[5]), "recorded_at": r[6], "slash": r[7], "slash_tx": r[8]} for r in rows]

    # -- reads --------------------------------------------------------------------------
    def get(self, job_id: str, *, with_inputs: bool = False) -> JobRow | None:
        rows = self._select("WHERE id=?", (job_id,), with_inputs=with_inputs)
        return rows[0] if rows else None

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRow]:
        """id -> row (with outputs, without inputs) of the jobs that exist."""
        ids = list(dict.fromkeys(job_ids))
        return {r.id: r for chunk in _chunks(ids, 500)
                for r in self._select(f"WHERE id IN ({','.join('?' * len(chunk))})", chunk, with_inputs=False)}

    def queued(self) -> list[JobRow]:
        return self._select("WHERE status='queued' ORDER BY submitted_at", (), with_inputs=True)

    def recent(self, *, status: str | None = None, model_hash: str | None = None, client: str | None = None,
               limit: int = 100) -> list[JobRow]:
        """Newest first; ``client`` keeps only the jobs that key submitted."""
        where, args = [], []
        if client:
            where.append("client=?")
            args.append(client)
        if status:
            where.append("status=?")
            args.append(status)
        if model_hash:
            where.append("model_hash=?")
            args.append(model_hash)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._select(f"{clause} ORDER BY submitted_at DESC LIMIT ?", (*args, limit), with_inputs=False)

    def clients(self, job_ids: Sequence[str]) -> dict[str, str | None]:
        """job id -> the key that submitted it (None: unsigned, from the gateway's machine)."""
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, str | None] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                out.update(self._db.execute(f"SELECT id, client FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                                            chunk).fetchall())
        return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: int(n) for s, n in rows}

    def activity(self, since: float) -> list[tuple[str, float, float]]:
        """(worker, started_at, finished_at) of every job finished since ``since`` (for utilisation and rates)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT worker, started_at, finished_at FROM jobs WHERE finished_at >= ? AND worker IS NOT NULL "
                "AND started_at IS NOT NULL AND cached_from IS NULL", (since,)).fetchall()
        return [(str(w), float(a), float(b)) for w, a, b in rows]

    def _select(self, clause: str, args: Sequence[Any], *, with_inputs: bool) -> list[JobRow]:
        cols = _COLS.format(inputs="COALESCE((SELECT i.inputs FROM job_inputs i WHERE i.id = jobs.id), jobs.inputs)"
                            if with_inputs else "NULL")
        with self._lock:
            rows = self._db.execute(f"SELECT {cols} FROM jobs {clause}", tuple(args)).fetchall()
        return [
            JobRow(
                id=r[0], model_hash=r[1], status=JobStatus(r[2]), verification=r[3], options=json.loads(r[4]),
                input_commitment=r[5], inputs=self._open(r[0], "inputs", r[6]), output_commitment=r[7],
                outputs=self._open(r[0], "outputs", r[8]),
                error=json.loads(r[9]) if r[9] else None, evidence=self._evidence(r[0], r[10]),
                worker=r[11], attempts=r[12], batch_id=r[13], submitted_at=r[14], started_at=r[15],
                finished_at=r[16], client=r[17], escrow=json.loads(r[18]) if r[18] else None, settlement=r[19],
                settlement_tx=r[20], payment=int(r[21]) if r[21] is not None else None, cached_from=r[22],
            )
            for r in rows
        ]
