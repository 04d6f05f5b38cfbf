"""The conversion registry (``ciro.convert``) without a cluster: each built-in framework converted from a saved file
and checked, a wrong conversion refused with its measured difference, the unknown-framework error, fp16 and int8
measured, and a converter plugin found through a real ``ciro.convert.converters`` entry point."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest

from ciro import ConfigError, InputError, InvalidModelError
from ciro.convert import (
    Converted,
    Converter,
    Tolerance,
    _registry,
    convert,
    convert_model,
    converters,
    get_converter,
    optimize,
    register,
)
from ciro.convert._registry import random_rows

pytestmark = pytest.mark.timeout(300)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((300, 5)).astype(np.float32)
Y3 = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)  # three classes
FRESH = np.random.default_rng(8).standard_normal((40, 5)).astype(np.float32)  # rows the check never saw


def _run(conv: Converted, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(conv.onnx, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: x})]


@pytest.fixture
def registry() -> Iterator[None]:
    """Registrations made by a test are undone after it."""
    converters()
    saved = dict(_registry._REGISTRY), dict(_registry._ALIASES), set(_registry._FROM_PLUGINS)
    yield
    _registry._REGISTRY.clear(), _registry._REGISTRY.update(saved[0])
    _registry._ALIASES.clear(), _registry._ALIASES.update(saved[1])
    _registry._FROM_PLUGINS.clear(), _registry._FROM_PLUGINS.update(saved[2])


def test_the_builtins_are_registered_with_their_suffixes() -> None:
    found = converters()
    assert {"onnx", "pytorch", "sklearn", "xgboost", "lightgbm"} <= set(found)
    assert found["xgboost"].suffixes == (".json", ".ubj", ".pkl", ".pickle", ".joblib")
    assert found["lightgbm"].suffixes == (".txt", ".pkl", ".pickle", ".joblib")
    assert get_converter("scikit-learn") is found["sklearn"] and get_converter("Torch") is found["pytorch"]


def test_sklearn_pickle(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X, Y3)
    joblib.dump(model, tmp_path / "lr.joblib")
    conv = convert("sklearn", tmp_path / "lr.joblib")
    assert conv.prediction == "label" and set(conv.details["outputs"]) == {"label", "probabilities"}
    assert conv.details["rows"] == 8 and conv.details["rtol"] == 1e-4 and 0 < conv.max_abs_diff < 1e-5
    label, proba = _run(conv, FRESH)
    assert (label == model.predict(FRESH)).all()
    np.testing.assert_allclose(proba, model.predict_proba(FRESH), atol=1e-5)


def test_pytorch_module_and_torchscript(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    torch.save(net, tmp_path / "net.pt")
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    with torch.no_grad():
        want = net(torch.from_numpy(FRESH)).numpy()
    for name in ("net.pt", "net.ts"):
        conv = convert("pytorch", tmp_path / name, input_shape=(1, 5))
        assert conv.prediction == "output" and "torch.onnx.export" in conv.check
        np.testing.assert_allclose(_run(conv, FRESH)[0], want, atol=1e-5)
    with pytest.raises(InputError, match="input_shape"):
        convert("pytorch", tmp_path / "net.pt")  # a module does not say what it takes
    torch.save(net.state_dict(), tmp_path / "state.pt")
    with pytest.raises(InvalidModelError, match="state_dict"):
        convert("pytorch", tmp_path / "state.pt", input_shape=(1, 5))


def test_xgboost_classifier_regressor_and_booster(tmp_path: Path) -> None:
    import xgboost as xgb

    clf = xgb.XGBClassifier(n_estimators=12, max_depth=3).fit(X, Y3)
    reg = xgb.XGBRegressor(n_estimators=12, max_depth=3).fit(X, X[:, 0] * 2 - X[:, 3])
    clf.save_model(tmp_path / "clf.json")
    reg.save_model(tmp_path / "reg.ubj")
    joblib.dump(clf, tmp_path / "clf.pkl")
    binary = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=Y3 > 0), 8)
    joblib.dump(binary, tmp_path / "booster.pkl")

    for path in ("clf.json", "clf.pkl"):  # .json loads as a Booster (multi:softprob), .pkl as the XGBClassifier
        conv = convert("xgboost", tmp_path / path)
        label, proba = _run(conv, FRESH)
        assert (label == clf.predict(FRESH)).all(), path
        np.testing.assert_allclose(proba, clf.predict_proba(FRESH), atol=1e-5)
        assert conv.prediction == "label" and "onnxmltools" in conv.check
    conv = convert("xgboost", tmp_path / "reg.ubj")
    np.testing.assert_allclose(_run(conv, FRESH)[0].ravel(), reg.predict(FRESH), atol=1e-4)
    conv = convert("xgboost", tmp_path / "booster.pkl")
    label, proba = _run(conv, FRESH)
    p = binary.predict(xgb.DMatrix(FRESH))
    np.testing.assert_allclose(proba[:, 1], p, atol=1e-5)
    assert (label == (p > 0.5)).all()


def test_lightgbm_classifier_and_booster_text(tmp_path: Path) -> None:
    import lightgbm as lgb

    clf = lgb.LGBMClassifier(n_estimators=12, verbose=-1).fit(X, Y3)
    joblib.dump(clf, tmp_path / "clf.pkl")
    clf.booster_.save_model(str(tmp_path / "booster.txt"))
    for path in ("clf.pkl", "booster.txt"):
        conv = convert("lightgbm", tmp_path / path)
        label, proba = _run(conv, FRESH)
        assert (label == clf.predict(FRESH)).all(), path
        np.testing.assert_allclose(proba, clf.predict_proba(FRESH), atol=1e-5)
        sess = ort.InferenceSession(conv.onnx, providers=["CPUExecutionProvider"])
        batch = sess.get_inputs()[0].shape[0]  # one label per row, not a fixed [1]
        assert [o.shape[0] for o in sess.get_outputs()] == [batch, batch] and batch != 1
    reg = lgb.LGBMRegressor(n_estimators=12, verbose=-1).fit(X, X[:, 2])
    conv = convert_model("lightgbm", reg)  # a loaded object: random rows as wide as n_features_in_
    assert conv.prediction == "variable" and conv.details["rows"] == 8
    np.testing.assert_allclose(_run(conv, FRESH)[0].ravel(), reg.predict(FRESH), atol=1e-5)


def test_onnx_is_deployed_as_it_is(tmp_path: Path) -> None:
    from ciro.demo import build_tiny_mlp

    path = build_tiny_mlp(tmp_path / "whatever.bin")  # an ONNX file by content, whatever its name
    conv = convert("onnx", path)
    assert conv.onnx == path.read_bytes() and conv.prediction is None and "as it is" in conv.check


def test_a_conversion_that_differs_is_refused_with_its_difference(tmp_path: Path, registry: None) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    sklearn = get_converter("sklearn")
    # a converter that converts another model than the one it is given: its outputs do not reproduce the original
    impostor = LinearRegression().fit(X, X[:, 0])

    def wrong(model: Any, example: dict[str, np.ndarray]) -> bytes:
        return sklearn.to_onnx(impostor, example)

    register(Converter("wrong", (".pkl",), load=sklearn.load, to_onnx=wrong, reference=sklearn.reference,
                       n_features=sklearn.n_features, tool="a broken converter"))
    honest = LinearRegression().fit(X, X[:, 1])
    joblib.dump(honest, tmp_path / "lin.pkl")
    with pytest.raises(InvalidModelError, match=r"differs from the original on 8 example rows: output 'variable' "
                                                r"has max abs diff \d") as err:
        convert("wrong", tmp_path / "lin.pkl")
    rows = random_rows(5)  # the rows the check ran: seeded, as wide as the model's input
    want = np.abs(honest.predict(rows) - impostor.predict(rows)).max()
    assert err.value.detail["max_abs_diff"] == pytest.approx(want, rel=1e-4)

    # labels that differ are refused too, counted by rows
    clf = LogisticRegression(max_iter=300).fit(X, Y3)
    flipped = LogisticRegression(max_iter=300).fit(X, (Y3 + 1) % 3)
    register(Converter("wrong-labels", (".pkl",), load=sklearn.load, n_features=sklearn.n_features,
                       to_onnx=lambda m, ex: sklearn.to_onnx(flipped, ex), reference=sklearn.reference))
    with pytest.raises(InvalidModelError, match=r"output 'label' has \d+ of 8 rows differ"):
        convert_model("wrong-labels", clf)

    # a tolerance tighter than float32 arithmetic refuses even an honest conversion, saying by how much
    with pytest.raises(InvalidModelError, match=r"max abs diff .* \(tolerance rtol=0, atol=1e-12"):
        convert_model("sklearn", clf, example=FRESH[:8], tolerance=Tolerance(rtol=0, atol=1e-12))


def test_unknown_framework_and_bad_files_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"Unknown framework 'keras3'.*registered: lightgbm, onnx, pytorch, "
                                         r"sklearn, xgboost"):
        convert("keras3", tmp_path / "m.pkl")
    with pytest.raises(InputError, match="ciro hf deploy"):
        convert("transformers", tmp_path / "m.pkl")
    with pytest.raises(InputError, match=r"m\.bin is not a lightgbm model file.*onnxmltools.*\.txt"):
        convert("lightgbm", tmp_path.joinpath("m.pkl").rename(tmp_path / "m.bin"))
    with pytest.raises(InputError, match="No model file"):
        convert("sklearn", tmp_path / "missing.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InvalidModelError, match=r"Cannot load junk\.pkl as a pickled model"):
        convert("xgboost", tmp_path / "junk.pkl")
    joblib.dump({"not": "a model"}, tmp_path / "dict.pkl")
    with pytest.raises(InvalidModelError, match="holds a dict, not an XGBoost model"):
        convert("xgboost", tmp_path / "dict.pkl")
    with pytest.raises(ConfigError, match="registered already"):
        register(get_converter("sklearn"))


def test_fp16_and_int8_report_how_far_the_outputs_moved(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    conv = convert_model("pytorch", net, example=FRESH[:8])
    for level, lo, hi in (("fp16", 1e-7, 1e-2), ("int8", 1e-6, 0.2)):
        opt = optimize(conv.onnx, level, example=FRESH)
        assert opt.onnx != conv.onnx and f"on {len(FRESH)} example rows the float outputs moved by at most" in opt.check
        assert lo < opt.max_abs_diff < hi and opt.details["optimization"] == level, (level, opt.max_abs_diff)
        got, base = _run(opt, FRESH)[0], _run(conv, FRESH)[0]
        assert np.abs(got - base).max() == pytest.approx(opt.max_abs_diff, rel=1e-6)  # the reported change is real
    sess = ort.InferenceSession(optimize(conv.onnx, "fp16").onnx, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"  # edges
    with pytest.raises(InputError, match="Unknown optimization"):
        optimize(conv.onnx, "turbo")


PLUGIN = '''
"""A converter plugin: "scaled" models are .npz files holding a weight matrix w; the model computes x @ w."""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from ciro.convert import Converter


def load(path: Path):
    return np.load(path)["w"].astype(np.float32)


def to_onnx(w, example):
    name = next(iter(example))
    graph = helper.make_graph(
        [helper.make_node("MatMul", [name, "w"], ["y"])], "scaled",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w.shape[1]])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def converter():
    return Converter("scaled", (".npz",), load=load, to_onnx=to_onnx,
                     reference=lambda w, ex: {"y": next(iter(ex.values())) @ w},
                     n_features=lambda w: w.shape[0], tool="onnx.helper")
'''


def test_a_plugin_registers_through_the_entry_point_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          registry: None) -> None:
    """A real installed distribution (a .dist-info with entry_points.txt on sys.path), found by importlib.metadata
    the way pip-installed plugins are; a broken plugin beside it warns and is skipped."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ciro_scaled_plugin.py").write_text(PLUGIN)
    info = site / "ciro_scaled_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ciro-scaled-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [ciro.converters]
        scaled = ciro_scaled_plugin:converter
        broken = ciro_no_such_module:converter
        """))
    monkeypatch.syspath_prepend(str(site))
    assert "scaled" not in converters()  # loaded once per process: a newly installed plugin needs reload=True
    with pytest.warns(RuntimeWarning, match="'broken' plugin"):
        found = converters(reload=True)
    assert "scaled" in found and "broken" not in found and "sklearn" in found

    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    np.savez(tmp_path / "m.npz", w=w)
    conv = convert("scaled", tmp_path / "m.npz")
    assert conv.prediction == "y" and conv.details["framework"] == "scaled"
    np.testing.assert_allclose(_run(conv, FRESH)[0], FRESH @ w, rtol=1e-5)
    with pytest.warns(RuntimeWarning) as again:  # the broken one again; the loaded one is not registered twice
        assert "scaled" in converters(reload=True)
    assert [str(w.message) for w in again if "scaled" in str(w.message)] == []
