"""A pool of Ray worker actors: placement, capability reports, replacement after a death."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from ciro import Config, ConfigError

from .fit import Fit
from .names import PROVIDER_RESOURCE, provider_key_name
from .worker import OnnxWorker

__all__ = ["NAMESPACE", "PROVIDER_RESOURCE", "WorkerHandle", "WorkerPool", "provider_key_name"]

log = logging.getLogger("ciro.pool")
NAMESPACE = "ciro"


@dataclass
class WorkerHandle:
    id: str
    name: str
    slot: int
    actor: Any
    inflight: int = 0
    alive: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    #: False when its key is not on the gateway's allowed_workers list: it never gets a job.
    admitted: bool = True
    #: The provider node it is pinned to (None: placed by Ray anywhere, the embedded default's workers).
    node_id: str | None = None
    #: Its provider asked to leave: it finishes what it runs and gets nothing new.
    draining: bool = False
    #: Its heartbeats stopped: it gets nothing new until they resume.
    down: bool = False

    @property
    def gpu(self) -> bool:
        """Holds a share of a GPU (whether onnxruntime uses it: ``execution_providers`` in its info)."""
        return float(self.info.get("num_gpus") or 0.0) > 0

    @property
    def key(self) -> int | None:
        k = self.info.get("worker_key")
        return int(str(k), 16) if k else None

    @property
    def schedulable(self) -> bool:
        return self.alive and self.admitted and not self.draining and not self.down and bool(self.info)


def _load_class(path: str) -> type:
    module_name, _, cls_name = path.strip().partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"Cannot load worker class {path!r} ({exc}). Give worker_class as 'module:Class'.") from exc
    if not (isinstance(cls, type) and issubclass(cls, OnnxWorker)):
        raise ConfigError(f"Worker class {path!r} must be a subclass of ciro_ray.worker.OnnxWorker.")
    return cls


class WorkerPool:
    """Keeps ``num_workers`` live actors. Actors are owned by the gateway process."""

    def __init__(self, cfg: Config, *, allowed_keys: set[int] | None = None) -> None:
        self.cfg = cfg
        #: Worker keys allowed to serve; None admits every worker this pool starts.
        self.allowed_keys = allowed_keys
        self.workers: dict[str, WorkerHandle] = {}
        self._seq = 0
        paths = [p for p in cfg.worker_class.split(",") if p.strip()]
        self._classes: list[Any] = [ray.remote(_load_class(path)) for path in paths]
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called when a worker becomes eligible (the scheduler wakes up on it).
        self.on_ready: Callable[[], None] = lambda: None
        #: Called when a started worker has reported its capabilities (the gateway checks its stake).
        self.on_admit: Callable[[WorkerHandle], None] = lambda w: None
        #: Called when a provider node's worker dies (the node watcher waits before starting it again).
        self.on_lost: Callable[[WorkerHandle], None] = lambda w: None

    def _spawn(self, slot: int) -> WorkerHandle:
        """Start a worker in ``slot``; a replacement takes its predecessor's slot and so its key."""
        self._seq += 1
        wid = f"w{self._seq}"
        name = f"ciro-worker-{wid}-{int(time.time() * 1000)}"
        remote = self._classes[slot % len(self._classes)]
        actor = remote.options(
            name=name,
            namespace=NAMESPACE,
            num_cpus=self.cfg.worker_num_cpus,
            num_gpus=self.cfg.worker_num_gpus or None,
            max_restarts=0,
            max_concurrency=1,
            scheduling_strategy="SPREAD",
        ).remote(wid, num_cpus=self.cfg.worker_num_cpus, num_gpus=self.cfg.worker_num_gpus,
                 home=str(self.cfg.home), key_name=f"worker-{slot}")
        handle = WorkerHandle(id=wid, name=name, slot=slot, actor=actor)
        self.workers[wid] = handle
        return handle

    def spawn_on(self, node_id: str, slot: int, *, num_cpus: float, num_gpus: float) -> WorkerHandle:
        """Start the worker of a provider node's ``slot``, pinned to that node. Its key is the node's own
        (``provider_key_name(slot)`` in the key store of the node's CIRO_HOME), registered and staked by
        ``ciro provider join``. It is not replaced elsewhere when it dies: its node is its provider's."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._seq += 1
        wid = f"w{self._seq}"
        name = f"ciro-worker-{wid}-{int(time.time() * 1000)}"
        actor = self._classes[0].options(
            name=name, namespace=NAMESPACE, num_cpus=num_cpus, num_gpus=num_gpus or None,
            resources={PROVIDER_RESOURCE: 1}, max_restarts=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(wid, num_cpus=num_cpus, num_gpus=num_gpus, home=None, key_name=provider_key_name(slot))
        handle = WorkerHandle(id=wid, name=name, slot=slot, actor=actor, node_id=node_id)
        self.workers[wid] = handle
        task = asyncio.get_running_loop().create_task(self._describe(handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    def remove(self, w: WorkerHandle) -> None:
        """Stop a worker for good (its provider left, or its node is gone): no replacement."""
        w.alive = False
        self.workers.pop(w.id, None)
        try:
            ray.kill(w.actor, no_restart=True)
        except Exception as exc:  # already gone with its node
            log.debug("kill %s: %s", w.id, exc)

    async def start(self, *, timeout_s: float = 120.0) -> None:
        for slot in range(self.cfg.num_workers):
            self._spawn(slot)
        try:
            await asyncio.wait_for(self.refresh(), timeout=timeout_s)
        except TimeoutError:
            free = ray.available_resources()
            raise ConfigError(
                f"{self.cfg.num_workers} workers of {self.cfg.worker_num_cpus} CPU / {self.cfg.worker_num_gpus} GPU "
                f"did not start within {timeout_s:.0f}s; the cluster has {free.get('CPU', 0)} CPU and "
                f"{free.get('GPU', 0)} GPU free. Lower num_workers or worker_num_cpus, or add Ray nodes.") from None

    async def refresh(self) -> None:
        """Ask every live worker for its capabilities (also waits until each one is up)."""
        live = [w for w in self.workers.values() if w.alive]
        infos = await asyncio.gather(*(w.actor.info.remote() for w in live), return_exceptions=True)
        for w, info in zip(live, infos, strict=True):
            if isinstance(info, BaseException):
                self.mark_dead(w, info)
            else:
                self._set_info(w, info)

    def _set_info(self, w: WorkerHandle, info: dict[str, Any]) -> None:
        w.info = info
        key = int(str(info.get("worker_key", "0")), 16)
        w.admitted = self.allowed_keys is None or key in self.allowed_keys
        if not w.admitted:
            log.warning("worker %s has key %s, which is not on the allowed_workers list: it gets no jobs. Add the "
                        "key to the list to admit it.", w.id, info.get("worker_key"))

    def mark_dead(self, w: WorkerHandle, reason: BaseException | str) -> None:
        if not w.alive:
            return
        w.alive = False
        self.workers.pop(w.id, None)
        if w.node_id is not None:  # a provider node's worker: the node watcher restarts it if its node lives
            log.warning("worker %s on provider node %s died (%s)", w.id, w.node_id[:12], reason)
            self.on_lost(w)
            self.on_ready()
            return
        log.warning("worker %s died (%s); starting a replacement", w.id, reason)
        replacement = self._spawn(w.slot)
        task = asyncio.get_running_loop().create_task(self._describe(replacement))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _describe(self, w: WorkerHandle) -> None:
        try:
            self._set_info(w, await w.actor.info.remote())
        except Exception as exc:  # a replacement that fails to start is replaced again
            self.mark_dead(w, exc)
        else:
            self.on_admit(w)
        self.on_ready()

    def _free(self, limit: int, fits: Callable[[WorkerHandle], bool] | None) -> list[WorkerHandle]:
        # A worker is eligible once it has reported its capabilities (and so its key).
        return [w for w in self.workers.values() if w.schedulable and w.inflight < limit
                and (fits is None or fits(w))]

    def pick(self, limit: int, fits: Callable[[WorkerHandle], bool] | None = None,
             prefer: Callable[[WorkerHandle], bool] | None = None) -> WorkerHandle | None:
        """The live worker (among those ``fits`` accepts) with the fewest in-flight batches, if below ``limit``;
        among them one that ``prefer`` likes first (a preference never waits: a free other worker still gets it)."""
        live = self._free(limit, fits)
        if not live:
            return None
        return min(live, key=lambda w: (prefer is not None and not prefer(w), w.inflight, w.id))

    def pick_distinct(self, k: int, limit: int,
                      fits: Callable[[WorkerHandle], bool] | None = None) -> list[WorkerHandle] | None:
        """``k`` distinct eligible workers, spread over as many providers, then nodes, as possible; None if
        fewer are free."""
        live = sorted(self._free(limit, fits), key=lambda w: (w.inflight, w.id))
        if len(live) < k:
            return None
        chosen: list[WorkerHandle] = []
        for field_name in ("provider", "node_id"):  # one per provider first, then one per node, then fill up
            seen = {w.info.get(field_name) for w in chosen}
            for w in live:
                if w not in chosen and w.info.get(field_name) not in seen:
                    chosen.append(w)
                    seen.add(w.info.get(field_name))
        chosen += [w for w in live if w not in chosen]
        return chosen[:k]

    def eligible_count(self, fit: Fit | None = None) -> int:
        """Workers that may get jobs (and whose hardware ``fit`` accepts)."""
        return sum(1 for w in self.workers.values() if w.alive and w.admitted and not w.draining
                   and (fit is None or fit.accepts(w.info)))

    def readmit(self) -> None:
        """Apply a changed ``allowed_keys`` to the running workers."""
        for w in self.workers.values():
            if w.info:
                self._set_info(w, w.info)

    def keys(self) -> set[int]:
        """Keys of the admitted workers."""
        return {int(str(w.info["worker_key"]), 16) for w in self.workers.values()
                if w.admitted and w.info.get("worker_key")}

    def all_keys(self) -> set[int]:
        """Keys of every worker that reported, admitted or not."""
        return {k for w in self.workers.values() if (k := w.key) is not None}

    def describe(self) -> list[dict[str, Any]]:
        return [
            {**w.info, "id": w.id, "actor_name": w.name, "namespace": NAMESPACE, "alive": w.alive,
             "admitted": w.admitted, "inflight_batches": w.inflight, "draining": w.draining, "down": w.down,
             "pinned_node": w.node_id}
            for w in self.workers.values()
        ]

    def shutdown(self) -> None:
        for w in self.workers.values():
            try:
                ray.kill(w.actor, no_restart=True)
            except Exception as exc:  # already gone
                log.debug("kill %s: %s", w.id, exc)
        self.workers.clear()
