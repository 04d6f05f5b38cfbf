"""Quorum policy: when do two workers' outputs agree, and when does a set of them decide.

Outputs agree when they have the same names, dtypes and shapes and, per tensor, equal values for
integer and boolean outputs (labels, indices) or ``numpy.allclose(a, b, rtol, atol)`` for floating
point outputs. With f tolerated faults a job runs on k = 3f + 1 distinct workers and is accepted
when at least 2f + 1 of them agree with one another; otherwise it fails (no answer is guessed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["QuorumPolicy", "agree", "group_votes"]

Tensors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class QuorumPolicy:
    f: int = 1
    rtol: float = 1e-5
    atol: float = 1e-6

    @property
    def k(self) -> int:
        return 3 * self.f + 1

    @property
    def threshold(self) -> int:
        return 2 * self.f + 1

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> QuorumPolicy:
        try:
            f = int(options.get("f", 1))
            rtol = float(options.get("rtol", 1e-5))
            atol = float(options.get("atol", 1e-6))
        except (TypeError, ValueError) as exc:
            raise InputError(f"Bad quorum options ({exc}): f is an integer >= 1, rtol and atol are numbers.") from exc
        if f < 1 or rtol < 0 or atol < 0:
            raise InputError("Quorum options need f >= 1, rtol >= 0 and atol >= 0.")
        return cls(f=f, rtol=rtol, atol=atol)

    def to_dict(self) -> dict[str, Any]:
        return {"f": self.f, "k": self.k, "threshold": self.threshold, "rtol": self.rtol, "atol": self.atol,
                "compare": "exact for integer and bool outputs, numpy.allclose(rtol, atol) for floats"}


def agree(a: Tensors, b: Tensors, policy: QuorumPolicy) -> bool:
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=policy.rtol, atol=policy.atol, equal_nan=False):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def group_votes(outputs: Sequence[Tensors], policy: QuorumPolicy) -> list[list[int]]:
    """Indices of ``outputs`` grouped by agreement with each group's first member, largest group first."""
    groups: list[list[int]] = []
    for i, out in enumerate(outputs):
        for g in groups:
            if agree(outputs[g[0]], out, policy):
                g.append(i)
                break
        else:
            groups.append([i])
    return sorted(groups, key=len, reverse=True)
