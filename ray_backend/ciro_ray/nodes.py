"""The gateway's view of provider nodes: workers started on nodes that join, heartbeats turned into downtime.

A provider node advertises ``PROVIDER_RESOURCE`` slots (``ciro provider join``). For each alive node the
watcher keeps one worker per slot, pinned to the node, its share of the node's CPUs and GPUs (two slots on
one GPU: half a GPU each). Workers of a node that died are dropped (the scheduler already retries their
batches elsewhere); the node's workers come back if it does. A provider worker gets jobs only while its
stake is eligible on chain (when the gateway settles on chain), it is not draining, and it is not down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from ciro import Config

from .background import Background
from .pool import PROVIDER_RESOURCE, WorkerHandle, WorkerPool
from .providers import ProviderStore

__all__ = ["ProviderNodes"]

log = logging.getLogger("ciro.nodes")
#: Seconds between re-reads of provider workers' eligibility on chain.
ELIGIBILITY_EVERY_S = 10.0
#: After a node's worker dies, the node gets no new worker for this long: a node that is going down would
#: only take a new actor down with it (Ray declares a node dead some seconds after it stops answering).
RESPAWN_AFTER_S = 15.0


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("eligibility check failed (retried within %.0fs): %s", ELIGIBILITY_EVERY_S, task.exception())


def _hex(key: int) -> str:
    return f"{key:#066x}"  # as keys are written everywhere else (identity.public_hex, signed requests)


class ProviderNodes(Background):
    def __init__(self, cfg: Config, pool: WorkerPool, store: ProviderStore, *,
                 eligible: Callable[[set[int]], Awaitable[set[int]]] | None = None,
                 allowed: set[int] | None = None) -> None:
        self.cfg = cfg
        self.pool = pool
        self.store = store
        #: Reads which of these worker keys are eligible on chain (None: no chain, stake is not checked).
        self.eligible = eligible
        #: A static allow-list (allowed_workers) that also applies.
        self.allowed = allowed
        #: Nodes whose provider left: their workers are not started again.
        self.left_nodes: set[str] = set()
        self._checked_at = 0.0
        self._lost: dict[str, float] = {}
        #: When this gateway started watching: silence before it is not the providers' downtime.
        self.since = time.time()
        pool.on_admit = self._on_admit
        pool.on_lost = self._on_lost

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # a failed round is retried; it must not stop the gateway
                log.exception("provider node round failed")
            await asyncio.sleep(self.cfg.node_poll_s)

    async def poll(self) -> None:
        nodes = await asyncio.to_thread(ray.nodes)
        alive = {n["NodeID"]: n for n in nodes
                 if n.get("Alive") and float(n.get("Resources", {}).get(PROVIDER_RESOURCE, 0)) >= 1}
        for w in list(self.pool.workers.values()):
            if w.node_id is not None and w.node_id not in alive:
                log.warning("provider node %s is gone; dropping its worker %s", w.node_id[:12], w.id)
                self.pool.remove(w)
        for node_id, node in alive.items():
            if node_id not in self.left_nodes:
                self._fill(node_id, node["Resources"])
        self._watch_heartbeats()
        if time.monotonic() - self._checked_at > ELIGIBILITY_EVERY_S:
            await self.check_eligibility()

    def _on_lost(self, w: WorkerHandle) -> None:
        if w.node_id is not None:
            self._lost[w.node_id] = time.monotonic()

    def _fill(self, node_id: str, resources: dict[str, float]) -> None:
        if time.monotonic() - self._lost.get(node_id, -RESPAWN_AFTER_S) < RESPAWN_AFTER_S:
            return
        slots = int(float(resources[PROVIDER_RESOURCE]))
        taken = {w.slot for w in self.pool.workers.values() if w.node_id == node_id}
        cpus = float(resources.get("CPU", 0)) / slots
        gpus = float(resources.get("GPU", 0)) / slots
        for slot in range(slots):
            if slot not in taken:
                log.info("provider node %s: starting the worker of slot %d (%.2f CPU, %.2f GPU)", node_id[:12],
                         slot, cpus, gpus)
                self.pool.spawn_on(node_id, slot, num_cpus=round(cpus, 4), num_gpus=round(gpus, 4))

    def _on_admit(self, w: WorkerHandle) -> None:
        """A provider worker reported its key: watch its heartbeats, and check its stake before it gets jobs."""
        if w.node_id is None or w.key is None:
            return
        self.store.track(_hex(w.key), w.info.get("provider"), w.node_id)
        w.down = False
        if w.gpu and "CUDAExecutionProvider" not in (w.info.get("execution_providers") or []):
            log.warning("worker %s holds %.2f of a GPU but its onnxruntime has no CUDA provider, so it runs its models "
                        "on the CPU. Install onnxruntime-gpu on node %s.", w.id, w.info.get("num_gpus"),
                        w.info.get("hostname"))
        task = asyncio.get_running_loop().create_task(self.check_eligibility({w.key}))
        task.add_done_callback(_log_failure)

    async def check_eligibility(self, keys: set[int] | None = None) -> None:
        """Admit the provider workers whose stake is eligible (and on the allow-list); stop the others."""
        if keys is None:
            self._checked_at = time.monotonic()
        provider = {k for w in self.pool.workers.values() if w.node_id is not None and (k := w.key) is not None}
        keys = provider if keys is None else keys & provider
        if not keys:
            return
        ok = await self.eligible(keys) if self.eligible is not None else set(keys)
        if self.allowed is not None:
            ok &= self.allowed
        if self.pool.allowed_keys is None:
            if ok == keys:
                return  # no allow-list in force and everyone fits: nothing to change
            self.pool.allowed_keys = self.pool.keys()
        before = set(self.pool.allowed_keys)
        self.pool.allowed_keys = (self.pool.allowed_keys - keys) | ok
        if self.pool.allowed_keys != before:
            for k in ok - before:
                log.info("provider worker %s is staked: it gets jobs", _hex(k))
            for k in (keys - ok) & before:
                log.warning("provider worker %s is no longer eligible (stake below the minimum, or banned)", _hex(k))
            self.pool.readmit()
            self.pool.on_ready()

    def _watch_heartbeats(self) -> None:
        now = time.time()
        silent = {w["worker_key"]: w for w in self.store.silent(self.cfg.heartbeat_timeout_s, now, since=self.since)}
        for rec in silent.values():
            opened = self.store.open_downtime(rec, now, since=self.since)
            if opened is not None:
                log.warning("provider worker %s (%s) is down: no heartbeat for %.0f s", rec["worker_key"],
                            rec["provider"], now - opened["last_seen"])
        for w in self.pool.workers.values():
            if w.node_id is not None and w.key is not None:
                was, w.down = w.down, _hex(w.key) in silent
                if was and not w.down:
                    self.pool.on_ready()

    # -- provider requests ------------------------------------------------------------------------
    def heartbeat(self, key: str) -> dict[str, Any]:
        key = _hex(int(key, 16))
        closed = self.store.heartbeat(key)
        if closed is not None:
            log.info("provider worker %s is back after %.0f s of downtime", key,
                     closed["ended_at"] - closed["last_seen"])
        for w in self._of(key):
            if w.down:
                w.down = False
                self.pool.on_ready()
        return {"tracked": self.store.worker(key) is not None, "downtime_closed": closed is not None}

    def _of(self, key: str) -> list[WorkerHandle]:
        k = int(key, 16)
        return [w for w in self.pool.workers.values() if w.key == k]

    def drain(self, key: str) -> dict[str, Any]:
        key = _hex(int(key, 16))
        workers = self._of(key)
        for w in workers:
            w.draining = True
        self.store.set_state(key, "draining")
        return {"worker_key": key, "state": "draining", "inflight_batches": sum(w.inflight for w in workers)}

    def leave(self, key: str) -> dict[str, Any]:
        """Remove a drained worker for good. Its node's other slots leave with their own keys."""
        key = _hex(int(key, 16))
        workers = self._of(key)
        busy = sum(w.inflight for w in workers)
        if busy:
            return {"worker_key": key, "state": "draining", "inflight_batches": busy}
        for w in workers:
            if w.node_id is not None:
                self.left_nodes.add(w.node_id)
            self.pool.remove(w)
        self.store.set_state(key, "left")
        return {"worker_key": key, "state": "left", "inflight_batches": 0}
