"""The MLflow deployment target, driven the way users drive it: the real `mlflow deployments` CLI (found through
the installed entry point, a new process per command) and `mlflow.deployments.get_deploy_client`, with a real
tracking store in a temp dir and the session's Ray cluster and gateway. `predict` returns MLflow's
`PredictionsResponse` (columns; `pd.DataFrame(response)` is the table), which the CLI writes as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import VENV_BIN, Cluster, free_port
from mlflow.deployments import PredictionsResponse, get_deploy_client
from mlflow.exceptions import MlflowException

from ciro import InputError

pytestmark = pytest.mark.timeout(900)
MLFLOW = str(VENV_BIN / "mlflow")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Logged:
    env: dict[str, str]
    X: pd.DataFrame
    sk_v1: tuple[str, np.ndarray]  # model URI, the original model's predictions on X
    sk_v2: tuple[str, np.ndarray]
    torch: tuple[str, np.ndarray, np.ndarray]  # URI, inputs, outputs
    onnx: tuple[str, np.ndarray, np.ndarray]
    custom: str  # a pyfunc-only model Ciro cannot convert
    xgboost: tuple[str, Any]  # model URI, the original (XGBClassifier)
    lightgbm: tuple[str, Any]  # model URI, the original (LightGBM Booster of a multiclass objective)


class _Custom(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


@pytest.fixture(scope="module")
def logged(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    import lightgbm
    import onnx
    import torch
    import xgboost
    from onnx import TensorProto, helper
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("ciro", artifact_location=str(root / "artifacts")))
    X, y = load_iris(return_X_y=True, as_frame=True)
    ex = X.iloc[:5]
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    v2 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.05)).fit(X, y)
    xgb = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    lgb = lightgbm.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lightgbm.Dataset(X, label=y), 10)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    xt = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    with torch.no_grad():
        yt = net(torch.from_numpy(xt)).numpy()
    w = np.random.default_rng(2).standard_normal((4, 2)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "lin",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], w.ravel().tolist())])
    lin = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    lin.ir_version = 8
    onnx.checker.check_model(lin)
    with mlflow.start_run():  # pip_requirements=[]: skip MLflow's slow requirement inference
        sk1 = mlflow.sklearn.log_model(v1, name="iris", input_example=ex, pip_requirements=[]).model_uri
        sk2 = mlflow.sklearn.log_model(v2, name="iris2", input_example=ex, pip_requirements=[]).model_uri
        tu = mlflow.pytorch.log_model(net, name="net", input_example=xt[:2], pip_requirements=[]).model_uri
        ou = mlflow.onnx.log_model(lin, name="lin", input_example=xt[:2], pip_requirements=[]).model_uri
        cu = mlflow.pyfunc.log_model(name="custom", python_model=_Custom(), pip_requirements=[]).model_uri
        xu = mlflow.xgboost.log_model(xgb, name="xgb", input_example=ex, pip_requirements=[]).model_uri
        lu = mlflow.lightgbm.log_model(lgb, name="lgb", input_example=ex, pip_requirements=[]).model_uri
    env = {**cluster.env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    yield Logged(env, X, (sk1, v1.predict(X)), (sk2, v2.predict(X)), (tu, xt, yt), (ou, xt, xt @ w), cu, (xu, xgb),
                 (lu, lgb))


def _mlflow(logged: Logged, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([MLFLOW, "deployments", *args], env=logged.env, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlflow deployments {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _predict_cli(logged: Logged, name: str, frame: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    frame.to_json(tmp / "in.json")
    _mlflow(logged, "predict", "-t", "ciro", "--name", name, "--input-path", str(tmp / "in.json"),
            "--output-path", str(tmp / "out.json"))
    return pd.DataFrame(json.loads((tmp / "out.json").read_text()))


def test_sklearn_create_list_get_predict_update_delete_through_the_cli(logged: Logged, cluster: Cluster,
                                                                       tmp_path: Path) -> None:
    (uri1, want1), (uri2, want2) = logged.sk_v1, logged.sk_v2
    _mlflow(logged, "delete", "-t", "ciro", "--name", "iris")  # idempotent: nothing to delete
    out = _mlflow(logged, "create", "-t", "ciro", "--name", "iris", "-m", uri1, "-C", "verify=receipt",
                  "-C", "replicas=2", "-C", "max_batch_size=16").stdout
    assert "sklearn deployment iris is created" in out
    assert "'name': 'iris'" in _mlflow(logged, "list", "-t", "ciro").stdout
    got = _mlflow(logged, "get", "-t", "ciro", "--name", "iris").stdout
    assert "verification: receipt" in got and "flavor: sklearn" in got and "replicas: 2" in got
    assert "max_abs_error" in got  # the conversion check's result

    cluster.ciro("down")  # deployments live in the gateway's CIRO_HOME: a restart keeps them
    cluster.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
    df = _predict_cli(logged, "iris", logged.X, tmp_path)
    assert len(df) == len(logged.X) and (df["predictions"].to_numpy() == want1).all()  # labels, exactly
    assert df["job_id"].is_unique and (df["verification"] == "receipt").all() and df["receipt_signer"].notna().all()
    assert np.allclose(np.stack(df["probabilities"].to_numpy()).sum(axis=1), 1.0, atol=1e-5)
    assert df["evidence"].str.contains("/v1/jobs/").all()

    _mlflow(logged, "update", "-t", "ciro", "--name", "iris", "-m", uri2)
    client = get_deploy_client(f"ciro:/{cluster.url}")
    d = client.get_deployment("iris")
    assert d["version"] == 2 and d["previous_model_hash"] and d["previous_model_hash"] != d["model_hash"]
    assert d["replicas"] == 2  # settings not given to update stay
    pred = pd.DataFrame(client.predict("iris", logged.X))
    assert (pred["predictions"].to_numpy() == want2).all() and (want1 != want2).any()
    _mlflow(logged, "delete", "-t", "ciro", "--name", "iris")
    assert "'name': 'iris'" not in _mlflow(logged, "list", "-t", "ciro").stdout
    _mlflow(logged, "delete", "-t", "ciro", "--name", "iris")  # deleting twice is fine


def test_pytorch_and_onnx_models_through_the_cli_and_get_deploy_client(logged: Logged, cluster: Cluster,
                                                                       tmp_path: Path) -> None:
    client = get_deploy_client(f"ciro:/{cluster.url}")
    for name, (uri, x, want), flavor in (("net", logged.torch, "pytorch"), ("lin", logged.onnx, "onnx")):
        client.delete_deployment(name)
        assert f"{flavor} deployment {name} is created" in _mlflow(
            logged, "create", "-t", "ciro", "--name", name, "-m", uri).stdout
        df = _predict_cli(logged, name, pd.DataFrame(x), tmp_path)
        assert np.allclose(np.stack(df["predictions"].to_numpy()), want, atol=1e-5), flavor
        for inputs in (x, x.tolist(), {"x" if flavor == "onnx" else "input": x}):  # what Python callers send
            pred = pd.DataFrame(client.predict(name, inputs))
            assert np.allclose(np.stack(pred["predictions"].to_numpy()), want, atol=1e-5)
        assert name in {d["name"] for d in client.list_deployments()}
        d = client.update_deployment(name, config={"max_batch_size": "4", "rows_per_job": "4"})
        assert d["max_batch_size"] == 4 and d["version"] == 2 and d["flavor"] == flavor and d["rows_per_job"] == 4
        pred = pd.DataFrame(client.predict(name, x))  # 6 rows: one job of 4, one of 2, each with its job's evidence
        assert np.allclose(np.stack(pred["predictions"].to_numpy()), want, atol=1e-5)
        assert pred["job_id"].nunique() == 2 and pred["job_id"].value_counts().sort_values().tolist() == [2, 4]
        client.delete_deployment(name)
        with pytest.raises(MlflowException, match=f"No deployment '{name}'"):
            client.get_deployment(name)


def test_bad_input_gives_a_clear_mlflow_exception_and_changes_nothing(logged: Logged, cluster: Cluster) -> None:
    client = get_deploy_client(f"ciro:/{cluster.url}")
    uri, _ = logged.sk_v1
    with pytest.raises(MlflowException, match="No deployment 'nope'") as err:
        client.predict("nope", logged.X)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException, match="No deployment 'nope'"):  # raised while the stream is read
        next(iter(client.predict_stream("nope", logged.X)))
    with pytest.raises(MlflowException, match="Cannot load the MLflow model"):
        client.create_deployment("bad", "runs:/0123456789abcdef/none")
    with pytest.raises(MlflowException, match=r"Supported flavors: onnx, sklearn, pytorch, xgboost, lightgbm, "
                                              r"transformers") as err:
        client.create_deployment("bad", logged.custom)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and isinstance(err.value.__cause__, InputError)
    with pytest.raises(MlflowException, match="Unknown option -C colour"):
        client.create_deployment("bad", uri, config={"colour": "blue"})
    with pytest.raises(MlflowException, match="Bad value -C replicas=zero"):
        client.create_deployment("bad", uri, config={"replicas": "zero"})
    assert "bad" not in {d["name"] for d in client.list_deployments()}  # nothing was created

    client.create_deployment("iris-bad-input", uri)
    try:
        with pytest.raises(MlflowException, match=r"missing column\(s\) \['petal width \(cm\)'\]"):
            client.predict("iris-bad-input", logged.X.drop(columns=["petal width (cm)"]))
        with pytest.raises(MlflowException, match="rows of 4 values"):
            client.predict("iris-bad-input", np.ones((2, 3)))
        with pytest.raises(MlflowException, match="must hold float64"):
            client.predict("iris-bad-input", logged.X.head(2).assign(**{"sepal length (cm)": ["a", "b"]}))
        proc = _mlflow(logged, "create", "-t", "ciro", "--name", "iris-bad-input", "-m", uri, check=False)
        assert proc.returncode != 0 and "exists" in proc.stderr  # the CLI shows the message, no traceback needed
    finally:
        client.delete_deployment("iris-bad-input")

    down = get_deploy_client(f"ciro:/http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowException, match=r"No Ciro gateway answers at http://127\.0\.0\.1") as err:
        down.list_deployments()
    assert err.value.error_code == "TEMPORARILY_UNAVAILABLE"
    with pytest.raises(MlflowException, match="Unknown Ciro target URI"):
        get_deploy_client("ciro:/ftp://x")


def test_hardware_options_are_typed_and_bad_values_refused() -> None:
    from mlflow_ciro.target import _options, target_help

    config = {"gpu": "true", "gpu_memory_gb": "40", "gpu_model": "H100", "cpu_only": "no"}
    assert _options(config) == {"gpu": True, "gpu_memory_gb": 40.0, "gpu_model": "H100", "cpu_only": False}
    for key, bad in (("gpu_memory_gb", "lots"), ("gpu_memory_gb", "0"), ("cpu_only", "maybe"), ("gpu_model", " ")):
        with pytest.raises(InputError, match=f"Bad value -C {key}="):  # Ciro's error inside; MLflow's at the edge
            _options({key: bad})
    assert all(f"-C {k}=" in target_help() for k in config)
    # the help promises only what the quorum code enforces: distinct workers, not independent providers
    assert "k=4 distinct workers" in target_help() and "independent" not in target_help()


def test_help_run_local_and_the_quickstart_example(logged: Logged, cluster: Cluster, tmp_path: Path) -> None:
    helptext = _mlflow(logged, "help", "-t", "ciro").stdout
    for option in ("verify", "replicas", "max_batch_size", "gpu", "gpu_memory_gb", "gpu_model", "cpu_only",
                   "max_payment", "rtol", "atol"):
        assert f"-C {option}=" in helptext
    assert "ciro:/http://HOST:PORT" in helptext and "agreement, not correctness" in helptext

    uri, want = logged.sk_v1
    out = _mlflow(logged, "run-local", "-t", "ciro", "--name", "iris-local", "-m", uri).stdout
    assert "is served by the local Ciro gateway" in out
    df = _predict_cli(logged, "iris-local", logged.X.head(10), tmp_path)
    assert (df["predictions"].to_numpy() == want[:10]).all()
    _mlflow(logged, "delete", "-t", "ciro", "--name", "iris-local")

    env = {k: v for k, v in logged.env.items() if not k.startswith("MLFLOW_")}  # the example's own store
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "mlflow_quickstart.py")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "predictions match scikit-learn on 8/8 rows" in proc.stdout and "model_hash:" in proc.stdout


def test_a_transformers_text_classifier_predicts_labels_from_text(logged: Logged, cluster: Cluster,
                                                                   tmp_path: Path) -> None:
    """The transformers flavor: ONNX logits plus the tokenizer as the model's processor bundle; predict sends text
    and gets the pipeline's label and score for each text, with the evidence of its job."""
    from hf_models import TEXTS, build_models
    from transformers import pipeline

    folders = build_models(tmp_path / "hf")
    pipe: Any = pipeline
    clf = pipe("text-classification", model=str(folders["text-classification"]), device="cpu")
    tok = pipe("token-classification", model=str(folders["token-classification"]), device="cpu")
    with mlflow.start_run():
        uri = mlflow.transformers.log_model(clf, name="clf", input_example=TEXTS[:2], pip_requirements=[]).model_uri
        tok_uri = mlflow.transformers.log_model(tok, name="tok", pip_requirements=[]).model_uri
    want = clf(TEXTS)
    assert "transformers deployment clf-text is created" in _mlflow(
        logged, "create", "-t", "ciro", "--name", "clf-text", "-m", uri, "-C", "rows_per_job=2").stdout
    try:
        df = _predict_cli(logged, "clf-text", pd.DataFrame({"text": TEXTS}), tmp_path)
        assert list(df["predictions"]) == [w["label"] for w in want]
        assert np.allclose(df["score"], [w["score"] for w in want], atol=1e-4)
        assert df["job_id"].nunique() == 2 and df["receipt_signer"].notna().all()  # 3 texts: jobs of 2 and 1
        client = get_deploy_client(f"ciro:/{cluster.url}")
        pred = client.predict("clf-text", TEXTS[:1])  # a list of strings
        assert pred["predictions"][0] == want[0]["label"]
        chunks = list(client.predict_stream("clf-text", TEXTS))  # one response per job of 2 texts, as each completes
        assert sorted(len(c["row"]) for c in chunks) == [1, 2]
        streamed = pd.concat([pd.DataFrame(c) for c in chunks]).sort_values("row")
        assert list(streamed["predictions"]) == [w["label"] for w in want]
    finally:
        _mlflow(logged, "delete", "-t", "ciro", "--name", "clf-text")
    bad = _mlflow(logged, "create", "-t", "ciro", "--name", "tok-text", "-m", tok_uri, check=False)
    assert bad.returncode != 0 and "text-classification" in bad.stderr


def test_xgboost_and_lightgbm_flavors_deploy_through_the_cli(logged: Logged, cluster: Cluster, tmp_path: Path
                                                             ) -> None:
    """Converted with onnxmltools through the core registry and checked against the original model; then the
    predictions response (MLflow's type, what the CLI prints) and predict_stream (one response per finished job)."""
    client = get_deploy_client(f"ciro:/{cluster.url}")
    rows = logged.X.sample(12, random_state=3)
    rows.to_json(tmp_path / "rows.json")
    (xu, xgb), (lu, lgb) = logged.xgboost, logged.lightgbm
    proba = {"xgboost": xgb.predict_proba(rows), "lightgbm": lgb.predict(rows)}  # a Booster predicts probabilities
    for name, uri, flavor in (("xgb-iris", xu, "xgboost"), ("lgb-iris", lu, "lightgbm")):
        client.delete_deployment(name)
        assert f"{flavor} deployment {name} is created" in _mlflow(
            logged, "create", "-t", "ciro", "--name", name, "-m", uri, "-C", "rows_per_job=4").stdout
        info = client.get_deployment(name)
        assert info["flavor"] == flavor and info["conversion_check"]["max_abs_error"] < 1e-5
        assert "onnxmltools" in info["conversion_check"]["compared"]
        printed = _mlflow(logged, "predict", "-t", "ciro", "--name", name, "--input-path",
                          str(tmp_path / "rows.json")).stdout  # no --output-path: the response's JSON on stdout
        df = pd.DataFrame(json.loads(printed.strip().splitlines()[-1]))
        assert (df["predictions"].to_numpy() == proba[flavor].argmax(axis=1)).all(), flavor
        np.testing.assert_allclose(np.stack(df["probabilities"].to_numpy()), proba[flavor], atol=1e-5)
        assert df["job_id"].nunique() == 3 and df["receipt_signer"].notna().all()  # 12 rows, jobs of 4
    want = xgb.predict(rows)

    resp = client.predict("xgb-iris", rows)
    assert isinstance(resp, PredictionsResponse)
    assert (resp.get_predictions(predictions_format="ndarray") == want).all()
    assert PredictionsResponse.from_json(resp.to_json()) == resp  # plain JSON, as the CLI writes it
    table = pd.DataFrame(resp)
    assert len(table) == 12 and list(table.columns[:2]) == ["predictions", "probabilities"]
    assert {"job_id", "verification", "worker", "output_commitment", "receipt_signer", "evidence"} <= set(table)

    chunks = list(client.predict_stream("xgb-iris", rows))
    assert all(isinstance(c, PredictionsResponse) for c in chunks) and sorted(len(c["row"]) for c in chunks) == [4] * 3
    assert all(len(set(c["job_id"])) == 1 for c in chunks)  # each response is one job's rows
    streamed = pd.concat([pd.DataFrame(c) for c in chunks]).sort_values("row")
    assert streamed["row"].tolist() == list(range(12)) and (streamed["predictions"].to_numpy() == want).all()
    for name in ("xgb-iris", "lgb-iris"):
        client.delete_deployment(name)
