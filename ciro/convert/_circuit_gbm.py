"""XGBoost and LightGBM boosters in the circuit form (``_circuit``), read from their own model dumps.

XGBoost: the JSON model (``save_raw("json")``): per tree the node arrays, a row goes left when
``x < split_condition`` (float32, exactly the circuit's comparison), a leaf's value in ``split_conditions``;
per tree its class (``tree_info``); the intercept ``base_score``. LightGBM: ``dump_model()``: nested nodes, left
when ``x <= threshold`` (float64: the circuit compares with ``strict_below(threshold, inclusive=True)``),
leaf values with the shrinkage and the initial score already in them.

Missing values: a circuit has no NaN. Each library sends a missing value down its ``default_left``/``missing``
branch; the circuit compares it like a number. Rows without NaN are decided exactly as the library does; models
that treat zero as missing (LightGBM ``missing_type: Zero``) are refused, since there a plain 0.0 would be
decided differently. Categorical splits are refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import InvalidModelError
from ._circuit import Circuit, Link, Tree, build, strict_below

__all__ = ["lightgbm_circuit", "xgboost_circuit"]

_INSTEAD = "Deploy it with verification 'receipt' or 'quorum' instead (no conversion to a circuit needed)."
#: XGBoost objectives by (link, is a classifier); others (count:poisson, reg:gamma, ranking, ...) are refused.
_XGB: dict[str, tuple[Link, bool]] = {"binary:logistic": ("logistic", True), "multi:softprob": ("softmax", True),
        "multi:softmax": ("decision", True), "reg:squarederror": ("identity", False),
        "reg:absoluteerror": ("identity", False),
        "reg:pseudohubererror": ("identity", False), "reg:quantileerror": ("identity", False)}


def _one_input(example: dict[str, np.ndarray], what: str) -> tuple[str, int]:
    if len(example) != 1:
        raise InvalidModelError(f"A {what} model takes one 2-D array of rows; the example has {list(example)}.")
    name, x = next(iter(example.items()))
    return name, int(x.shape[1])


# -- XGBoost -------------------------------------------------------------------------------------------------------
def xgboost_circuit(model: Any, example: dict[str, np.ndarray]) -> bytes:
    name, n = _one_input(example, "XGBoost")
    return build(read_xgboost(model, n), input_name=name)


def _floats(text: str) -> np.ndarray:
    """XGBoost writes its intercept as "5E-1" or "[5E-1,...]"."""
    return np.asarray([float(v) for v in str(text).strip("[]").split(",") if v.strip()], np.float64)


def read_xgboost(model: Any, n_features: int) -> Circuit:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    learner = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]
    objective = learner["objective"]["name"]
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise InvalidModelError(f"This XGBoost model uses the {gb['name']!r} booster; Ciro writes gbtree boosters "
                                f"as circuits. {_INSTEAD}")
    kind = _XGB.get(objective)
    if kind is None:
        raise InvalidModelError(f"XGBoost objective {objective!r} cannot be written as a circuit: Ciro's circuit "
                                f"form takes {', '.join(_XGB)}. {_INSTEAD}")
    link, classifier = kind
    param = learner["learner_model_param"]
    if int(param.get("num_target", 1)) > 1:
        raise InvalidModelError(f"This XGBoost model predicts {param['num_target']} targets; Ciro writes "
                                f"single-target boosters as circuits. {_INSTEAD}")
    k = max(1, int(param.get("num_class", 0)))
    trees_json, info = gb["model"]["trees"], gb["model"]["tree_info"]
    indptr = gb["model"].get("iteration_indptr") or list(range(len(trees_json) + 1))
    best = getattr(booster, "best_iteration", None)  # predict() stops there after early stopping
    if best is not None and hasattr(model, "get_booster") and int(best) + 1 < len(indptr):
        trees_json, info = trees_json[:indptr[int(best) + 1]], info[:indptr[int(best) + 1]]
    trees = [_xgb_tree(t, int(c), k) for t, c in zip(trees_json, info, strict=True)]
    base = np.broadcast_to(_floats(param["base_score"]), (k,)).astype(np.float64)
    if objective == "binary:logistic":  # the intercept is a probability; the trees add to its logit
        p = float(np.clip(base[0], 1e-16, 1 - 1e-16))
        base = np.array([math.log(p / (1.0 - p))])
    what = f"XGBoost {objective} ({len(trees)} trees, depth <= {max((t.depth for t in trees), default=0)})"
    classes = None
    if classifier:
        classes = np.asarray(getattr(model, "classes_", np.arange(max(k, 2))))
    return Circuit(n_features, link, trees=trees, base=base, classes=classes, what=what)


def _xgb_tree(t: dict[str, Any], column: int, k: int) -> Tree:
    left = np.asarray(t["left_children"], np.int64)
    if any(int(s) != 0 for s in t.get("split_type", [])):
        raise InvalidModelError(f"This XGBoost model has categorical splits, which Ciro's circuit form does not "
                                f"write. {_INSTEAD}")
    if int(t.get("tree_param", {}).get("size_leaf_vector", 1)) > 1:
        raise InvalidModelError(f"This XGBoost model has vector leaves (multi_strategy='multi_output_tree'); Ciro "
                                f"writes one-output trees as circuits. {_INSTEAD}")
    cond = np.asarray(t["split_conditions"], np.float32)
    value = np.zeros((len(left), k))
    value[:, column] = np.where(left < 0, cond, 0.0)
    # x < split_condition goes to the "yes" child, which XGBoost stores as the left one
    return Tree(left, np.asarray(t["right_children"], np.int64), np.asarray(t["split_indices"], np.int64),
                strict_below(cond, inclusive=False), value)


# -- LightGBM ------------------------------------------------------------------------------------------------------
def lightgbm_circuit(model: Any, example: dict[str, np.ndarray]) -> bytes:
    name, n = _one_input(example, "LightGBM")
    return build(read_lightgbm(model, n), input_name=name)


def _lgb_link(objective: str) -> tuple[Link, bool, float]:
    """(link, is a classifier, factor on the raw score) for a LightGBM objective string."""
    name, *params = objective.split()
    if name == "binary":
        sigmoid = next((float(p.split(":", 1)[1]) for p in params if p.startswith("sigmoid:")), 1.0)
        return "logistic", True, sigmoid
    if name == "multiclass":
        return "softmax", True, 1.0
    if name in ("regression", "regression_l1", "huber", "fair", "quantile", "mape", "lambdarank", "rank_xendcg"):
        return "identity", False, 1.0
    raise InvalidModelError(f"LightGBM objective {name!r} cannot be written as a circuit: Ciro's circuit form takes "
                            f"binary, multiclass and the regression objectives with an identity link. {_INSTEAD}")


def read_lightgbm(model: Any, n_features: int) -> Circuit:
    booster = model.booster_ if hasattr(model, "booster_") else model
    # the scikit-learn API predicts with the best iteration after early stopping, as dump_model() dumps by default
    dump = booster.dump_model()
    link, classifier, factor = _lgb_link(str(dump.get("objective", "regression")))
    k = int(dump.get("num_tree_per_iteration", 1))
    infos = dump["tree_info"]
    # boosting='rf' averages its iterations instead of adding them
    scale = factor / max(1, len(infos) // k) if dump.get("average_output") else factor
    trees = [_lgb_tree(info["tree_structure"], i % k, k, scale) for i, info in enumerate(infos)]
    what = f"LightGBM {dump.get('objective', '')} ({len(trees)} trees, depth <= {max(t.depth for t in trees)})"
    classes = None
    if classifier:
        classes = np.asarray(getattr(model, "classes_", None) if hasattr(model, "classes_") else np.arange(max(k, 2)))
        if classes.dtype.kind not in "iufb":
            raise InvalidModelError(f"This LightGBM classifier predicts labels {list(classes)[:5]}: a circuit outputs "
                                    "numbers. Encode the labels as integers, train on those and convert again.")
    return Circuit(n_features, link, trees=trees, classes=classes, what=what)


def _lgb_tree(root: dict[str, Any], column: int, k: int, scale: float) -> Tree:
    left: list[int] = []
    right: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    value: list[float] = []

    def add(node: dict[str, Any]) -> int:
        i = len(left)
        for column, blank in ((left, -1), (right, -1), (feature, 0)):
            column.append(blank)
        threshold.append(0.0)
        value.append(0.0)
        if "leaf_value" in node:
            value[i] = float(node["leaf_value"]) * scale
            return i
        if node.get("decision_type", "<=") != "<=":
            raise InvalidModelError(f"This LightGBM model has categorical splits ({node['decision_type']!r}), which "
                                    f"Ciro's circuit form does not write. {_INSTEAD}")
        if node.get("missing_type") == "Zero":
            raise InvalidModelError("This LightGBM model treats 0.0 as a missing value (zero_as_missing), which a "
                                    "circuit cannot tell from the number 0. Train with zero_as_missing=False, or "
                                    f"{_INSTEAD[0].lower()}{_INSTEAD[1:]}")
        feature[i], threshold[i] = int(node["split_feature"]), float(node["threshold"])
        left[i] = add(node["left_child"])
        right[i] = add(node["right_child"])
        return i

    add(root)
    values = np.zeros((len(left), k))
    values[:, column] = value
    return Tree(np.asarray(left, np.int64), np.asarray(right, np.int64), np.asarray(feature, np.int64),
                strict_below(np.asarray(threshold), inclusive=True), values)
