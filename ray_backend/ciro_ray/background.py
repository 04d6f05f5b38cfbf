"""A gateway component that runs one asyncio task from ``start()`` until ``stop()``."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

__all__ = ["Background"]


class Background(ABC):
    _task: asyncio.Task[None] | None = None

    @abstractmethod
    async def _run(self) -> None:
        """The loop; it runs until cancelled."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
