"""Prometheus metrics of one gateway, in their own registry (several gateways may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("ciro_jobs_submitted", "Jobs accepted", ["model"], registry=r)
        self.jobs_finished = Counter("ciro_jobs_finished", "Jobs that reached a final state", ["status"], registry=r)
        self.job_latency = Histogram(
            "ciro_job_latency_seconds", "Submit to result, per job", registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "ciro_batch_size", "Jobs per worker call", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.queue_depth = Gauge("ciro_queue_depth", "Jobs waiting for a worker", registry=r)
        self.workers_alive = Gauge("ciro_workers_alive", "Live worker actors", registry=r)
        self.worker_deaths = Counter("ciro_worker_deaths", "Worker actors lost and replaced", registry=r)
        self.invalid_compute = Counter("ciro_invalid_compute", "Dissenting quorum votes recorded as faults",
                                       registry=r)
        self.retries = Counter("ciro_job_retries", "Job attempts repeated after a worker death", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
