"""scikit-learn models in the circuit form (``_circuit``): linear models, decision trees, random forests, extra
trees and gradient boosting, optionally behind per-feature scalers in a Pipeline.

What a model computes is read from its fitted attributes (``coef_``/``intercept_``, ``tree_``,
``estimators_``); the conversion check then compares the circuit with the model's own ``predict`` and
``predict_proba``. scikit-learn compares ``x <= threshold`` with float32 ``x`` and float64 thresholds; the
circuit's float32 ``x < u`` with ``u = strict_below(threshold, inclusive=True)`` decides the same for every
float32 ``x``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidModelError
from ._circuit import Circuit, Link, Tree, build, strict_below

__all__ = ["SUPPORTED", "sklearn_circuit"]

#: What the circuit form covers, for messages.
SUPPORTED = ("linear models (LogisticRegression, LinearRegression, Ridge, Lasso, ElasticNet, LinearSVC, LinearSVR, "
             "SGDClassifier/SGDRegressor, ...), DecisionTree, RandomForest, ExtraTrees and GradientBoosting "
             "classifiers and regressors, after StandardScaler/MinMaxScaler/MaxAbsScaler steps in a Pipeline")
_INSTEAD = ("Deploy it with verification 'receipt' or 'quorum' instead (no conversion to a circuit needed), or train "
            "one of those.")
_FORESTS = ("DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor",
            "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
_BOOSTED = ("GradientBoostingClassifier", "GradientBoostingRegressor")
#: Linear models whose prediction is not x @ coef + intercept (a log link), or not a fixed set of weights.
_NOT_LINEAR = ("PoissonRegressor", "GammaRegressor", "TweedieRegressor", "RANSACRegressor", "SGDOneClassSVM")


def sklearn_circuit(model: Any, example: dict[str, np.ndarray]) -> bytes:
    """The scikit-learn model (or Pipeline) as a circuit-form ONNX model with one input named as the example's."""
    if len(example) != 1:
        raise InvalidModelError(f"A scikit-learn model takes one 2-D array of rows; the example has {list(example)}.")
    name, x = next(iter(example.items()))
    return build(read(model, int(x.shape[1])), input_name=name)


def read(model: Any, n_features: int) -> Circuit:
    steps = list(model.steps) if hasattr(model, "steps") else [("model", model)]
    scale, offset = np.ones(n_features), np.zeros(n_features)
    for _, step in steps[:-1]:
        if step is None or step == "passthrough":
            continue
        s, o = _affine(step, n_features)
        scale, offset = scale * s, offset * s + o  # x -> (x * scale + offset) * s + o
    final = steps[-1][1]
    c = _estimator(final, n_features)
    if np.array_equal(scale, np.ones(n_features)) and not offset.any():
        return c
    if c.weights is not None:  # fold the scaling into the weights, exactly in float64
        w = np.asarray(c.weights, np.float64)
        bias = np.zeros(w.shape[1]) if c.bias is None else np.asarray(c.bias, np.float64)
        return Circuit(c.n_features, c.link, weights=scale[:, None] * w, bias=offset @ w + bias, classes=c.classes,
                       what=f"{c.what} after scaling")
    return Circuit(c.n_features, c.link, trees=c.trees, base=c.base, classes=c.classes, scale=scale, offset=offset,
                   what=f"{c.what} after scaling")


def _affine(step: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A per-feature scaler as (s, o): it maps x to x * s + o."""
    kind = type(step).__name__
    if kind == "StandardScaler":
        sd = np.ones(n) if step.scale_ is None else np.asarray(step.scale_, np.float64)
        mean = np.zeros(n) if step.mean_ is None else np.asarray(step.mean_, np.float64)
        return 1.0 / sd, -mean / sd
    if kind == "MinMaxScaler" and not getattr(step, "clip", False):
        return np.asarray(step.scale_, np.float64), np.asarray(step.min_, np.float64)
    if kind == "MaxAbsScaler":
        return 1.0 / np.asarray(step.scale_, np.float64), np.zeros(n)
    raise InvalidModelError(f"The Pipeline step {kind} cannot be written as a circuit: Ciro's circuit form takes "
                            "StandardScaler, MinMaxScaler (clip=False) and MaxAbsScaler before the model. "
                            f"{_INSTEAD}")


def _classes(model: Any) -> np.ndarray:
    classes = np.asarray(model.classes_)
    if classes.dtype.kind not in "iub" and not (classes.dtype.kind == "f" and np.all(classes == np.round(classes))):
        raise InvalidModelError(f"{type(model).__name__} predicts labels {list(classes)[:5]}: a circuit outputs "
                                "numbers. Encode the labels as integers (e.g. LabelEncoder), train on those and "
                                "convert again.")
    if getattr(model, "n_outputs_", 1) != 1 or classes.ndim != 1:
        raise InvalidModelError(f"{type(model).__name__} predicts several outputs at once; Ciro writes single-"
                                f"output classifiers as circuits. {_INSTEAD}")
    return classes


def _estimator(model: Any, n: int) -> Circuit:
    from sklearn.base import is_classifier, is_regressor

    kind = type(model).__name__
    if kind in _FORESTS:
        return _forest(model, n, is_classifier(model))
    if kind in _BOOSTED:
        return _boosted(model, n, is_classifier(model))
    module = type(model).__module__
    linear = module.startswith(("sklearn.linear_model", "sklearn.svm")) and kind not in _NOT_LINEAR
    if linear and hasattr(model, "coef_") and hasattr(model, "intercept_") and (is_classifier(model) or
                                                                                is_regressor(model)):
        return _linear(model, n, is_classifier(model))
    raise InvalidModelError(f"{kind} cannot be written as a circuit EZKL can prove: Ciro's circuit form covers "
                            f"{SUPPORTED}. {_INSTEAD}")


def _linear(model: Any, n: int, classifier: bool) -> Circuit:
    kind = type(model).__name__
    coef = np.atleast_2d(np.asarray(model.coef_, np.float64))
    if coef.shape[1] != n:
        raise InvalidModelError(f"{kind} has {coef.shape[1]} coefficients per output but the rows have {n} "
                                "features. Pass example rows of the model's width.")
    bias = np.broadcast_to(np.asarray(model.intercept_, np.float64), (coef.shape[0],))
    what = f"{kind} ({n} features)"
    if not classifier:
        return Circuit(n, "identity", weights=coef.T, bias=bias, what=what)
    classes = _classes(model)
    link: Link = "decision"
    if hasattr(model, "predict_proba"):
        if kind.startswith("LogisticRegression") or (coef.shape[0] == 1 and getattr(model, "loss", "") == "log_loss"):
            link = "logistic" if coef.shape[0] == 1 else "softmax"
        else:
            raise InvalidModelError(f"{kind} computes its probabilities one-vs-rest (loss={getattr(model, 'loss', '?')}"
                                    "), which Ciro's circuit form does not write. Use LogisticRegression, or a "
                                    f"model without predict_proba. {_INSTEAD}")
    return Circuit(n, link, weights=coef.T, bias=bias, classes=classes, what=what)


def _tree(est: Any, values: np.ndarray) -> Tree:
    t = est.tree_
    return Tree(np.asarray(t.children_left), np.asarray(t.children_right), np.asarray(t.feature),
                strict_below(t.threshold, inclusive=True), values)


def _describe(kind: str, trees: list[Tree]) -> str:
    return f"{kind} ({len(trees)} tree{'s' if len(trees) != 1 else ''}, depth <= {max(t.depth for t in trees)})"


def _forest(model: Any, n: int, classifier: bool) -> Circuit:
    kind = type(model).__name__
    estimators = list(getattr(model, "estimators_", [model]))
    count = len(estimators)
    trees = []
    for est in estimators:
        value = np.asarray(est.tree_.value, np.float64)  # [nodes, outputs, classes]
        if classifier:
            if value.shape[1] != 1:
                raise InvalidModelError(f"{kind} predicts several outputs at once; Ciro writes single-output "
                                        f"classifiers as circuits. {_INSTEAD}")
            counts = value[:, 0, :]
            totals = counts.sum(axis=1, keepdims=True)
            if counts.shape[1] != len(model.classes_):
                raise InvalidModelError(f"A tree of {kind} knows {counts.shape[1]} classes, the model "
                                        f"{len(model.classes_)}; Ciro cannot line them up. {_INSTEAD}")
            leaf = counts / np.where(totals > 0, totals, 1.0)  # class frequencies, as predict_proba gives them
            trees.append(_tree(est, leaf / count))
        else:
            trees.append(_tree(est, value[:, :, 0] / count))
    if classifier:
        return Circuit(n, "probability", trees=trees, classes=_classes(model), what=_describe(kind, trees))
    return Circuit(n, "identity", trees=trees, what=_describe(kind, trees))


def _boosted(model: Any, n: int, classifier: bool) -> Circuit:
    kind = type(model).__name__
    stages = np.asarray(model.estimators_)  # [stages, K] of DecisionTreeRegressor
    k = stages.shape[1]
    # the exponential loss's probabilities are sigmoid(2 * raw): doubling every score keeps its labels too
    lr = float(model.learning_rate) * (2.0 if getattr(model, "loss", "") == "exponential" else 1.0)
    trees = []
    for row in stages:
        for col, est in enumerate(row):
            value = np.zeros((est.tree_.node_count, k))
            value[:, col] = lr * np.asarray(est.tree_.value, np.float64)[:, 0, 0]
            trees.append(_tree(est, value))
    try:  # the initial estimator's raw prediction (a constant for the default init; refused otherwise below)
        base = np.asarray(model._raw_predict_init(np.zeros((2, n), np.float32)), np.float64)
    except Exception as exc:  # a private helper: missing or different in another scikit-learn version
        raise InvalidModelError(f"Could not read {kind}'s initial prediction ({type(exc).__name__}: {exc}). "
                                f"{_INSTEAD}") from exc
    init = getattr(model, "init", None)
    if init not in (None, "zero"):
        raise InvalidModelError(f"{kind} starts from init={type(init).__name__}, a model of its own: Ciro's circuit "
                                f"form takes the default init (or 'zero'). {_INSTEAD}")
    if getattr(model, "loss", "") == "exponential":
        base = 2.0 * base
    what = _describe(kind, trees)
    if not classifier:
        return Circuit(n, "identity", trees=trees, base=base[0], what=what)
    link: Link = "logistic" if k == 1 else "softmax"
    return Circuit(n, link, trees=trees, base=base[0], classes=_classes(model), what=what)
