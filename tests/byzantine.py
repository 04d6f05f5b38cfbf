"""Byzantine worker fixtures: real worker actors that sign wrong outputs (loaded with worker_class)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ciro_ray.worker import OnnxWorker


def _perturb(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    bad = {k: v.copy() for k, v in outputs.items()}
    name = next(iter(bad))
    flat = bad[name].reshape(-1)
    flat[0] = flat[0] + (0.5 if flat.dtype.kind == "f" else 1)
    return bad


class AlwaysWrong(OnnxWorker):
    """Perturbs every output it computes, then signs it as if honest."""

    perturbed = 0

    def _infer(self, model_hash: str, model_box: list[Any], batch: list[dict[str, np.ndarray]]):  # type: ignore[no-untyped-def]
        outs = super()._infer(model_hash, model_box, batch)
        self.perturbed += len(outs)
        return [_perturb(o) for o in outs]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "perturbed": self.perturbed}


class OneInThree(AlwaysWrong):
    """Perturbs every third job it sees."""

    seen = 0

    def _infer(self, model_hash: str, model_box: list[Any], batch: list[dict[str, np.ndarray]]):  # type: ignore[no-untyped-def]
        outs = OnnxWorker._infer(self, model_hash, model_box, batch)
        result = []
        for o in outs:
            self.seen += 1
            if self.seen % 3 == 0:
                self.perturbed += 1
                o = _perturb(o)
            result.append(o)
        return result
