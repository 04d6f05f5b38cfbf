"""zk for scikit-learn, XGBoost and LightGBM models: converted to circuits of plain tensor operators, checked
against the original, deployed with zk through the gateway, proven, and verified offline with `ciro verify`."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from conftest import Cluster

from ciro import CiroClient, InputError, InvalidModelError, JobStatus
from ciro.convert import Tolerance, check, convert, convert_model
from ciro.convert._circuit import Circuit, Tree, build
from ciro.zk import zk_precheck

#: What a circuit may contain: EZKL 23.0.5 proves these (measured; ai.onnx.ml operators it cannot).
PLAIN_OPS = {"MatMul", "Add", "Mul", "Sub", "Neg", "Gather", "Less", "Cast", "Concat", "Reshape", "ReduceSum", "Relu",
             "ReduceMax", "Clip", "Exp", "Div", "Slice", "ArgMax", "Identity"}


def _data(classes: int = 3, seed: int = 0, rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, 6, n_informative=4, n_redundant=0, n_classes=classes, random_state=seed)
    return x.astype(np.float32), y


def _ops(data: bytes) -> set[str]:
    proto = onnx.load_from_string(data)
    assert {n.domain for n in proto.graph.node} <= {""}, "a circuit has only standard ONNX operators"
    return {n.op_type for n in proto.graph.node}


def _run(data: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x}),
                    strict=True))


@functools.cache
def _sklearn_models() -> list[tuple[str, Any, np.ndarray]]:
    from sklearn import ensemble, linear_model, svm, tree
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x3, y3 = _data(3)
    x2, y2 = _data(2, seed=1)
    labels = np.array([3, 7, 11])[y3]  # classes that are not 0..K-1
    target = x3 @ np.arange(1, 7, dtype=np.float32) + 0.5
    return [
        ("LogisticRegression 3 classes", linear_model.LogisticRegression().fit(x3, labels), x3),
        ("LogisticRegression behind a scaler", make_pipeline(StandardScaler(), linear_model.LogisticRegression())
         .fit(x2 * 40 + 5, y2), x2 * 40 + 5),
        ("LinearRegression", linear_model.LinearRegression().fit(x3, target), x3),
        ("LinearSVC", svm.LinearSVC().fit(x3, y3), x3),
        ("DecisionTreeRegressor", tree.DecisionTreeRegressor(max_depth=4).fit(x3, target), x3),
        ("RandomForestClassifier", ensemble.RandomForestClassifier(5, max_depth=3, random_state=0).fit(x3, labels),
         x3),
        ("ExtraTreesClassifier", ensemble.ExtraTreesClassifier(4, max_depth=4, random_state=0).fit(x2, y2), x2),
        ("GradientBoostingClassifier", ensemble.GradientBoostingClassifier(n_estimators=4, max_depth=2)
         .fit(x3, y3), x3),
        ("GradientBoostingRegressor", ensemble.GradientBoostingRegressor(n_estimators=4, max_depth=3)
         .fit(x3, target), x3),
    ]


def _expect_same(model: Any, data: bytes, x: np.ndarray) -> None:
    """The circuit reproduces the original on rows beyond the conversion check's: labels exactly, probabilities
    and regression values within the converters' tolerance."""
    got = _run(data, x)
    want = np.asarray(model.predict(x))
    if "label" in got:
        np.testing.assert_array_equal(got["label"], want.astype(np.float32))
        if hasattr(model, "predict_proba"):
            np.testing.assert_allclose(got["probabilities"], model.predict_proba(x), rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(got["variable"].reshape(want.shape), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index", range(9))
def test_sklearn_models_become_checked_circuits(index: int) -> None:
    what, model, x = _sklearn_models()[index]
    conv = convert_model("sklearn", model, example=x[:8], zk=True)
    assert _ops(conv.onnx) <= PLAIN_OPS, what
    assert conv.details["zk"] and "circuit form" in conv.check and conv.details["tool"] in conv.check
    _expect_same(model, conv.onnx, x)


def test_xgboost_and_lightgbm_become_checked_circuits(tmp_path: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    x3, y3 = _data(3)
    x2, y2 = _data(2, seed=1)
    target = x3 @ np.arange(1, 7, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightGBM's feature-name chatter
        models: list[Any] = [
            xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x3, y3),
            xgb.XGBRegressor(n_estimators=5, max_depth=3).fit(x3, target),
            lgb.LGBMClassifier(n_estimators=5, num_leaves=6, verbose=-1).fit(x2, np.array([4, 9])[y2]),
            lgb.LGBMClassifier(n_estimators=4, num_leaves=6, verbose=-1).fit(x3, y3),
            lgb.LGBMRegressor(n_estimators=5, num_leaves=6, verbose=-1).fit(x3, target)]
        for model in models:
            framework = "xgboost" if isinstance(model, xgb.XGBModel) else "lightgbm"
            conv = convert_model(framework, model, example=x3[:8], zk=True)
            assert _ops(conv.onnx) <= PLAIN_OPS
            _expect_same(model, conv.onnx, x3)
        # saved boosters, as deploy_model reads them: LightGBM's text file, XGBoost's JSON
        booster = models[3].booster_
        booster.save_model(str(tmp_path / "model.txt"))
        conv = convert("lightgbm", tmp_path / "model.txt", zk=True)
    got = _run(conv.onnx, x3)
    np.testing.assert_allclose(got["probabilities"], booster.predict(x3), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["label"], booster.predict(x3).argmax(axis=1))
    models[0].save_model(str(tmp_path / "model.json"))
    conv = convert("xgboost", tmp_path / "model.json", zk=True)
    np.testing.assert_array_equal(_run(conv.onnx, x3)["label"], models[0].predict(x3))


def test_what_cannot_be_proven_is_refused_before_any_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from ciro import zk

    x, y = _data(3)
    raw = convert_model("sklearn", LogisticRegression().fit(x, y), example=x[:4]).onnx  # skl2onnx: ai.onnx.ml
    with pytest.raises(InvalidModelError, match=r"ai.onnx.ml operators? LinearClassifier.*, which EZKL cannot "
                       r"prove: deploy the original model with deploy_model\(framework='sklearn'"):
        zk_precheck(raw)
    with pytest.raises(InvalidModelError, match=r"KNeighborsClassifier cannot be written as a circuit.*receipt"):
        convert_model("sklearn", KNeighborsClassifier().fit(x, y), zk=True)
    big, _ = _data(2, rows=3000)
    noise = np.random.default_rng(0).integers(0, 2, len(big))  # unlimited depth on noise: ~1,000 leaves a tree
    deep = RandomForestClassifier(40, random_state=0).fit(big, noise)
    with pytest.raises(InvalidModelError, match=r"40 trees .* rows, more than the 524,288 \(2\^19\).*Train fewer or "
                       "shallower trees") as err:
        convert_model("sklearn", deep, zk=True)
    assert err.value.detail["estimated_rows"] > zk.MAX_ZK_ROWS
    small = convert_model("sklearn", RandomForestClassifier(3, max_depth=2, random_state=0).fit(x, y), zk=True).onnx
    rows = zk_precheck(small)
    assert rows is not None and 100 < rows < 5000  # EZKL's own count of a 3-tree circuit
    monkeypatch.setattr(zk, "MAX_ZK_ROWS", rows - 1)  # the same check at any size, without building a huge model
    with pytest.raises(InvalidModelError, match=f"would have {rows:,} rows") as err:
        zk_precheck(small)
    assert err.value.detail == {"num_rows": rows, "max_rows": rows - 1}
    monkeypatch.undo()
    nan = x[:8].copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        convert_model("sklearn", LogisticRegression().fit(x, y), example=nan, zk=True)
    with pytest.raises(InvalidModelError, match="objective 'count:poisson' cannot be written as a circuit"):
        convert_model("xgboost", xgb.XGBRegressor(n_estimators=2, objective="count:poisson").fit(x, y), zk=True)
    with pytest.raises(InvalidModelError, match=r"treats 0\.0 as a missing value"):
        convert_model("lightgbm", lgb.LGBMRegressor(n_estimators=2, zero_as_missing=True, verbose=-1).fit(
            np.where(x > 0, x, 0), y), zk=True)
    # a circuit whose label is a float class value compares exactly: a label off by one is refused
    wrong = build(Circuit(6, "decision", weights=np.eye(6, 3), bias=np.zeros(3), classes=np.array([1, 2, 3])))
    with pytest.raises(InvalidModelError, match="labels differ"):
        check(wrong, {"x": x[:8]}, {0: np.asarray(x[:8, :3].argmax(axis=1))}, Tolerance(), what="a wrong circuit")


def test_circuits_are_laid_out_the_same_every_time() -> None:
    """A verifier re-derives the proof's settings from the model with EZKL and rejects any difference, so EZKL must
    lay a circuit out identically every time (it did not for ``Sub(1, cond)``: its row count varied run to run)."""
    import xgboost as xgb

    x, y = _data(2, seed=1)
    forest = _sklearn_models()[5][1]
    boosted = convert_model("xgboost", xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y), zk=True).onnx
    for data in (convert_model("sklearn", forest, zk=True).onnx, boosted):
        assert len({zk_precheck(data) for _ in range(12)}) == 1


def test_tree_paths_follow_each_librarys_comparison() -> None:
    """A row exactly on a threshold goes where the library sends it: scikit-learn and LightGBM ``<=`` (float64
    thresholds), XGBoost ``<`` (float32)."""
    from ciro.convert._circuit import strict_below

    t = np.array([0.5, 1 / 3, -2.0, 1e-30])
    for inclusive in (True, False):
        u = strict_below(t, inclusive=inclusive)
        for x in np.concatenate([t.astype(np.float32), np.nextafter(t.astype(np.float32), np.float32(np.inf)),
                                 np.nextafter(t.astype(np.float32), np.float32(-np.inf))]):
            want = x.astype(np.float64) <= t if inclusive else x.astype(np.float64) < t
            np.testing.assert_array_equal(np.float32(x) < u, want)
    tree = Tree(left=np.array([1, -1, -1]), right=np.array([2, -1, -1]), feature=np.array([0, 0, 0]),
                threshold=strict_below(np.array([0.5, 0, 0]), inclusive=True),
                value=np.array([[0.0], [1.0], [2.0]]))
    data = build(Circuit(1, "identity", trees=[tree]))
    got = _run(data, np.array([[0.5], [np.nextafter(np.float32(0.5), np.float32(1))], [-3.0]], np.float32))
    np.testing.assert_array_equal(got["variable"].ravel(), [1.0, 2.0, 1.0])


def test_mlflow_zk_conversion_uses_the_circuit(tmp_path: Path) -> None:
    import mlflow.sklearn
    from sklearn.ensemble import RandomForestClassifier

    from mlflow_ciro.convert import convert as mlflow_convert

    x, y = _data(3)
    model = RandomForestClassifier(4, max_depth=3, random_state=0).fit(x, y)
    mlflow.sklearn.save_model(model, str(tmp_path / "rf"), input_example=x[:5], pip_requirements=[],
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    plain = mlflow_convert(str(tmp_path / "rf"))
    assert "ai.onnx.ml" in {n.domain for n in onnx.load_from_string(plain.onnx).graph.node}
    conv = mlflow_convert(str(tmp_path / "rf"), zk=True)
    assert _ops(conv.onnx) <= PLAIN_OPS and conv.primary_output == "label"
    assert "circuit form" in conv.check["compared"]
    _expect_same(model, conv.onnx, x)


# -- deployed, proven and verified offline (the session cluster) ----------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path, Any, np.ndarray]]:
    """framework, saved file, fitted model and one test row, per kind: a LogisticRegression, a RandomForest and an
    XGBoost model of 5 trees of depth 3, on 6 features."""
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("zk-trees")
    x3, y3 = _data(3)
    x2, y2 = _data(2, seed=1)
    lr = LogisticRegression().fit(x3, y3)
    rf = RandomForestClassifier(5, max_depth=3, random_state=0).fit(x3, y3)
    xg = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x2, y2)
    joblib.dump(lr, folder / "logreg.pkl")
    joblib.dump(rf, folder / "forest.pkl")
    xg.save_model(str(folder / "xgb.json"))
    # the logistic regression's row lies far outside the calibration sample (its logits spread over more than
    # the softmax's clip span): the proof must still finish and match
    far = x3[5:6] * 10
    assert np.ptp(lr.decision_function(far)) > 12
    return {"logreg": ("sklearn", folder / "logreg.pkl", lr, far),
            "forest": ("sklearn", folder / "forest.pkl", rf, x3[7:8]),
            "xgboost": ("xgboost", folder / "xgb.json", xg, x2[3:4])}


def test_raw_skl2onnx_model_says_how_to_get_a_circuit(client: CiroClient, digits_path: Path) -> None:
    with pytest.raises(InvalidModelError, match=r"but not zk: The model uses ai.onnx.ml operator.*LinearClassifier.*"
                       r"deploy_model\(framework='sklearn'"):
        client.deploy(digits_path, zk=True)


@pytest.mark.parametrize("kind", ["logreg", "forest", "xgboost"])
def test_deployed_with_zk_proven_and_verified_offline(kind: str, client: CiroClient, cluster: Cluster,
                                                      saved: dict[str, tuple[str, Path, Any, np.ndarray]],
                                                      tmp_path: Path) -> None:
    framework, path, model, x = saved[kind]
    t0 = time.monotonic()
    info = client.deploy_model(framework=framework, model_path=path, verification="zk")
    setup_s = time.monotonic() - t0
    assert info.zk is not None and info.zk["status"] == "ready", info.zk
    assert info.conversion is not None and "circuit form" in info.conversion
    circuit = convert(framework, path, zk=True).onnx
    assert hashlib.sha256(circuit).hexdigest() == info.hash  # the deployed model: what is served is what is proven
    (tmp_path / "model.onnx").write_bytes(circuit)
    t0 = time.monotonic()
    result = client.infer(info.hash, x, verification="zk", timeout=600)
    prove_s = time.monotonic() - t0
    assert result.status is JobStatus.DONE and result.zk is not None and result.outputs is not None
    # the served outputs are the original model's predictions
    assert float(result.outputs["label"][0]) == float(np.asarray(model.predict(x))[0])
    np.testing.assert_allclose(result.outputs["probabilities"], model.predict_proba(x), rtol=1e-4, atol=1e-5)
    (tmp_path / "result.json").write_text(json.dumps(result.to_dict()))
    np.savez(tmp_path / "x.npz", x=x)
    t0 = time.monotonic()
    out = cluster.ciro("verify", str(tmp_path / "result.json"), "--model", str(tmp_path / "model.onnx"), "-i",
                       str(tmp_path / "x.npz")).stdout
    verify_s = time.monotonic() - t0
    assert "[ok] zk proof" in out and "[ok] zk verifying key" in out and "[ok] zk outputs" in out
    assert "\nVALID" in out or out.startswith("VALID"), out
    print(f"\n{kind}: logrows {info.zk['logrows']}, deploy + set-up {setup_s:.1f} s, zk job {prove_s:.1f} s, "
          f"ciro verify {verify_s:.1f} s")
