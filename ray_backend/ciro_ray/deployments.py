"""Deployments on the gateway: a durable registry (SQLite under ``CIRO_HOME``) and how a deployment is served.

A deployment names a model and how it is served (verification level, replicas, batch size, hardware, payment).
Creating or updating one points the model store's name at the model hash and gives the scheduler the serving
settings (``apply``), so jobs submitted by name run on the deployed model. The registry survives a gateway
restart. The ``/v1/deployments`` routes are in ``routes/deployments.py``; what may be deployed, in ``admission``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from ciro import Deployment, DeploymentNotFoundError, ModelStore

from .fit import Fit
from .scheduler import Scheduler, Serving

__all__ = ["DeploymentStore", "apply", "apply_all", "deployment_fit", "withdraw"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
"""


class DeploymentStore:
    """Deployment records by name (JSON per row; one writer, the gateway's event loop)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def get(self, name: str) -> Deployment | None:
        """The deployment, or None."""
        with self._lock:
            row = self._db.execute("SELECT record FROM deployments WHERE name=?", (name,)).fetchone()
        return Deployment.from_wire(json.loads(row[0])) if row else None

    def list(self) -> list[Deployment]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM deployments ORDER BY name").fetchall()
        return [Deployment.from_wire(json.loads(r[0])) for r in rows]

    def put(self, d: Deployment) -> None:
        record = {k: v for k, v in d.to_dict().items() if k not in ("model", "settlement")}  # derived on read
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO deployments (name, record) VALUES (?, ?)",
                             (d.name, json.dumps(record)))

    def require(self, name: str) -> Deployment:
        """The deployment, or DeploymentNotFoundError (404) with how to find the others."""
        d = self.get(name)
        if d is None:
            raise DeploymentNotFoundError(f"No deployment {name!r} on this gateway. List them with GET "
                                          "/v1/deployments (mlflow deployments list -t ciro), or create it.")
        return d

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM deployments WHERE name=?", (name,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def deployment_fit(d: Deployment) -> Fit:
    """The hardware a deployment's workers need (InputError for settings that contradict each other)."""
    return Fit.of({"gpu": d.gpu, "gpu_memory_gb": d.gpu_memory_gb, "gpu_model": d.gpu_model, "cpu_only": d.cpu_only})




def apply(d: Deployment, models: ModelStore, scheduler: Scheduler | None) -> None:
    """Point the name at the model and hand the scheduler its serving settings."""
    models.set_name(d.name, d.model_hash)
    if scheduler is not None:
        scheduler.serving[d.model_hash] = Serving(d.max_batch_size, d.replicas, deployment_fit(d))


def withdraw(d: Deployment, store: DeploymentStore, models: ModelStore, scheduler: Scheduler | None) -> None:
    """Delete a deployment: its name goes; the model's serving settings too unless another deployment serves it."""
    store.delete(d.name)
    models.unset_name(d.name, d.model_hash)
    if scheduler is not None and not any(o.model_hash == d.model_hash for o in store.list()):
        scheduler.serving.pop(d.model_hash, None)


def apply_all(store: DeploymentStore, models: ModelStore, scheduler: Scheduler) -> None:
    """At start-up: every stored deployment's name and serving settings."""
    for d in store.list():
        apply(d, models, scheduler)
