"""The parts of a gateway that exist only once it has started: Ray is up, the workers are started, the chain is
connected. Routes and admission read them here; until the start finishes they are None."""

from __future__ import annotations

from dataclasses import dataclass

from ciro import CiroError

from .nodes import ProviderNodes
from .pool import WorkerPool
from .scheduler import DEFAULT_SERVING, Scheduler, Serving
from .settlement import Settlement

__all__ = ["Runtime"]


@dataclass
class Runtime:
    pool: WorkerPool | None = None
    nodes: ProviderNodes | None = None
    scheduler: Scheduler | None = None
    #: None also on a started gateway that settles nothing on chain.
    settlement: Settlement | None = None

    @property
    def sched(self) -> Scheduler:
        if self.scheduler is None:
            raise CiroError("The gateway is still starting. Retry in a moment.")
        return self.scheduler

    @property
    def provider_nodes(self) -> ProviderNodes:
        if self.nodes is None:
            raise CiroError("The gateway is still starting. Retry in a moment.")
        return self.nodes

    def serving(self, model_hash: str) -> Serving:
        """How a model is served (its deployment's settings), or the defaults."""
        return self.scheduler.serving.get(model_hash, DEFAULT_SERVING) if self.scheduler else DEFAULT_SERVING
