"""Group commit: the inserts of every request that arrives in the same event-loop turn share one
SQLite transaction, so a burst of N single-job requests costs one commit instead of N. A request is
answered only after the transaction holding its jobs has committed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .jobstore import JobStore, NewJob

__all__ = ["GroupCommitter"]


class GroupCommitter:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pending: list[tuple[Sequence[NewJob], asyncio.Future[float]]] = []
        self._scheduled = False

    async def insert(self, jobs: Sequence[NewJob]) -> float:
        """Insert ``jobs`` durably; returns their submission time once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._pending.append((jobs, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        try:
            submitted = self.store.insert([job for jobs, _ in batch for job in jobs])
        except Exception:
            # One bad row must not fail its neighbours: retry each request's jobs on their own.
            for jobs, fut in batch:
                try:
                    fut.set_result(self.store.insert(jobs))
                except Exception as exc:
                    fut.set_exception(exc)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(submitted)
