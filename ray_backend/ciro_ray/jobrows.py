"""The job store's rows: the SQLite schema, a new job as stored, a job as read back (``jobstore.JobStore``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ciro import JobStatus

__all__ = ["COLS", "SCHEMA", "JobRow", "NewJob", "chunks"]

T = TypeVar("T")

SCHEMA = """
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
    client TEXT,
    escrow TEXT,
    settlement TEXT,
    settlement_tx TEXT,
    payment TEXT,
    cached_from TEXT,
    cache_key TEXT
);
-- A job's inputs live apart from its row: SQLite rewrites a whole row on every UPDATE, and a job's row changes
-- state several times (queued, running, done). jobs.inputs is empty for jobs stored here (older stores kept them
-- inline; both are read).
CREATE TABLE IF NOT EXISTS job_inputs (
    id TEXT PRIMARY KEY,
    inputs BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_settlement ON jobs(settlement, status);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, submitted_at);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs(submitted_at);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    worker_key TEXT NOT NULL,
    worker TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    slash TEXT,
    slash_tx TEXT
);
CREATE INDEX IF NOT EXISTS faults_worker ON faults(worker_key);
CREATE TABLE IF NOT EXISTS spend_caps (
    client TEXT PRIMARY KEY,
    cumulative TEXT NOT NULL,
    r TEXT NOT NULL,
    s TEXT NOT NULL
);
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
    #: QUEUED, or AWAITING_ESCROW for a job that runs only once its payment is escrowed on chain.
    status: JobStatus = JobStatus.QUEUED
    #: The result cache's key for this job (``resultcache.cache_key``); None: its result is never reused.
    cache_key: str | None = None
    #: A done job (read with its outputs) whose result answers this one: stored done at once, ``cached_from`` it.
    reuses: JobRow | None = None
    #: A prepaid job's payment record (``prepaid.Prepaid.authorize``: price, client, cap), stored as its escrow
    #: with settlement "prepaid"; None for the others.
    prepaid: dict[str, Any] | None = None


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
    escrow: dict[str, Any] | None = None
    settlement: str | None = None
    settlement_tx: str | None = None
    payment: int | None = None
    #: The job whose result this one reuses (answered from the result cache); None: computed for this job.
    cached_from: str | None = None


COLS = ("id, model_hash, status, verification, options, input_commitment, {inputs}, output_commitment, "
         "outputs, error, evidence, worker, attempts, batch_id, submitted_at, started_at, finished_at, client, "
         "escrow, settlement, settlement_tx, payment, cached_from")


def chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
