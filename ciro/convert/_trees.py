"""XGBoost and LightGBM models to ONNX with onnxmltools, checked against the original's predictions.

XGBoost: ``XGBClassifier``/``XGBRegressor`` (the scikit-learn API) or a ``Booster``, saved with ``save_model`` as
.json/.ubj (loaded as a Booster) or pickled (.pkl/.joblib). LightGBM: ``LGBMClassifier``/``LGBMRegressor`` or a
``Booster``, saved as .txt (``save_model``) or pickled. A classifier's ONNX outputs are its label and its class
probabilities; a regressor's, its prediction. A Booster's kind is read from its objective.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidModelError
from ._builtin import features_frame, load_pickle, one_input
from ._registry import Converter, Example, Tolerance

__all__ = ["TREES"]

#: The highest main opset onnxmltools 1.16 converts tree ensembles to (it refuses a higher one).
TREE_OPSET = 15
_INSTALL = "pip install 'ciro-network[convert]' and the model's own package (xgboost or lightgbm)"


def _float_type(x: np.ndarray) -> Any:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return FloatTensorType([None, x.shape[1]])


def _classifier_reference(model: Any, x: np.ndarray) -> dict[str | int, np.ndarray]:
    """A scikit-learn API model: its predict, and predict_proba for a classifier."""
    rows = features_frame(model, x)
    want: dict[str | int, np.ndarray] = {0: np.asarray(model.predict(rows))}
    if hasattr(model, "predict_proba"):
        want[1] = np.asarray(model.predict_proba(rows))
    return want


def _from_probabilities(p: np.ndarray, objective: str) -> dict[str | int, np.ndarray]:
    """A Booster's raw predictions as the ONNX classifier's (label, probabilities), or a regressor's value."""
    if objective.startswith("binary"):
        probs = np.stack([1.0 - p, p], axis=1)
        return {0: probs.argmax(axis=1), 1: probs}
    if objective.startswith("multi") and p.ndim == 2:
        return {0: p.argmax(axis=1), 1: p}
    if objective.startswith("multi"):  # softmax: the class index itself
        return {0: p.astype(np.int64)}
    return {0: p}


# -- XGBoost -------------------------------------------------------------------------------------------------------
def _xgb_load(path: Path) -> Any:
    import xgboost as xgb

    if path.suffix.lower() in (".json", ".ubj"):
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            raise InvalidModelError(f"XGBoost cannot load {path.name} ({str(exc).splitlines()[0][:200]}). Save the "
                                    "model with model.save_model('model.json').") from exc
        return booster
    model = load_pickle(path)
    if not isinstance(model, xgb.XGBModel | xgb.Booster):
        raise InvalidModelError(f"{path.name} holds a {type(model).__name__}, not an XGBoost model (an XGBClassifier, "
                                "XGBRegressor or Booster). Pass the framework that made it.")
    return model


def _xgb_booster(model: Any) -> Any:
    return model.get_booster() if hasattr(model, "get_booster") else model


def _xgb_features(model: Any) -> int | None:
    return int(_xgb_booster(model).num_features())


def _xgb_to_onnx(model: Any, example: Example) -> bytes:
    from onnxmltools import convert_xgboost

    name, x = one_input(example, "XGBoost")
    # onnxmltools reads split features as f0, f1, ...: a copy without the column names it was trained with
    if hasattr(model, "get_booster"):
        model = copy.deepcopy(model)
        model.get_booster().feature_names = None
    else:
        model = model.copy()
        model.feature_names = None
    proto = convert_xgboost(model, initial_types=[(name, _float_type(x))], target_opset=TREE_OPSET)
    return bytes(proto.SerializeToString())


def _xgb_reference(model: Any, example: Example) -> dict[str | int, np.ndarray]:
    import xgboost as xgb

    _, x = one_input(example, "XGBoost")
    if isinstance(model, xgb.XGBModel):
        return _classifier_reference(model, x)
    objective = json.loads(model.save_config())["learner"]["objective"]["name"]
    p = np.asarray(model.predict(xgb.DMatrix(x, feature_names=model.feature_names)))
    return _from_probabilities(p, objective)


# -- LightGBM ------------------------------------------------------------------------------------------------------
def _lgb_load(path: Path) -> Any:
    import lightgbm as lgb

    if path.suffix.lower() == ".txt":
        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise InvalidModelError(f"LightGBM cannot load {path.name} ({str(exc).splitlines()[0][:200]}). Save the "
                                    "model with booster.save_model('model.txt').") from exc
    model = load_pickle(path)
    if not isinstance(model, lgb.LGBMModel | lgb.Booster):
        raise InvalidModelError(f"{path.name} holds a {type(model).__name__}, not a LightGBM model (an "
                                "LGBMClassifier, LGBMRegressor or Booster). Pass the framework that made it.")
    return model


def _lgb_features(model: Any) -> int | None:
    booster = model.booster_ if hasattr(model, "booster_") else model
    return int(booster.num_feature())


def _lgb_to_onnx(model: Any, example: Example) -> bytes:
    from onnxmltools import convert_lightgbm

    name, x = one_input(example, "LightGBM")
    proto = convert_lightgbm(model, initial_types=[(name, _float_type(x))], target_opset=TREE_OPSET, zipmap=False)
    # onnxmltools declares a classifier's label output as shape [1]; it has one label per row
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 1 and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].CopyFrom(batch)
    return bytes(proto.SerializeToString())


def _lgb_objective(booster: Any) -> str:
    for line in booster.model_to_string(num_iteration=0).splitlines():
        if line.startswith("objective="):
            return line.split("=", 1)[1].strip()
        if line.startswith("Tree="):
            break
    return "regression"


def _lgb_reference(model: Any, example: Example) -> dict[str | int, np.ndarray]:
    import lightgbm as lgb

    _, x = one_input(example, "LightGBM")
    if isinstance(model, lgb.LGBMModel):
        return _classifier_reference(model, x)
    return _from_probabilities(np.asarray(model.predict(x)), _lgb_objective(model))


TREES = (
    # XGBoost computes in float32 like onnxruntime; LightGBM in float64 (differences ~1e-7 on probabilities)
    Converter("xgboost", (".json", ".ubj", ".pkl", ".pickle", ".joblib"), load=_xgb_load, to_onnx=_xgb_to_onnx,
              reference=_xgb_reference, tolerance=Tolerance(rtol=1e-4, atol=1e-5), n_features=_xgb_features,
              tool="onnxmltools", install=_INSTALL),
    Converter("lightgbm", (".txt", ".pkl", ".pickle", ".joblib"), load=_lgb_load, to_onnx=_lgb_to_onnx,
              reference=_lgb_reference, tolerance=Tolerance(rtol=1e-4, atol=1e-5), n_features=_lgb_features,
              tool="onnxmltools", install=_INSTALL, aliases=("lgbm",)),
)
