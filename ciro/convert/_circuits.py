"""The circuit forms of the built-in frameworks, by converter name (``Converter.circuit``; see ``_circuit``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._circuit_gbm import lightgbm_circuit, xgboost_circuit
from ._circuit_sk import sklearn_circuit

__all__ = ["CIRCUITS"]

CIRCUITS: dict[str, Callable[[Any, dict[str, np.ndarray]], bytes]] = {
    "sklearn": sklearn_circuit,
    "xgboost": xgboost_circuit,
    "lightgbm": lightgbm_circuit,
}
