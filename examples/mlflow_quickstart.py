"""MLflow quickstart: log a scikit-learn model, deploy it to Ciro with `-t ciro`, predict, look at the evidence.

Run it with `python examples/mlflow_quickstart.py`. It tracks to a temporary SQLite store (set
MLFLOW_TRACKING_URI to use yours) and deploys to the embedded default (local Ray + gateway under CIRO_HOME,
started if it is not running). The same steps from a shell:

    mlflow deployments create -t ciro --name iris -m models:/m-<id> -C verify=receipt
    mlflow deployments predict -t ciro --name iris --input-path rows.json --output-path out.json
    mlflow deployments get -t ciro --name iris
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.deployments import get_deploy_client
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ciro-mlflow-"))
    if "MLFLOW_TRACKING_URI" not in os.environ:  # a throwaway store, its artifacts beside it
        mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("ciro-quickstart",
                                                                     artifact_location=str(work / "artifacts")))
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    with mlflow.start_run():
        uri = mlflow.sklearn.log_model(model, name="iris", input_example=X.iloc[:5], pip_requirements=[]).model_uri
    print(f"logged {uri}")

    client = get_deploy_client("ciro")  # the embedded default; "ciro:/http://host:port" for a remote gateway
    client.delete_deployment("iris-quickstart")  # idempotent: lets the example run twice
    info = client.create_deployment("iris-quickstart", uri, config={"verify": "receipt"})
    print(f"deployed {info['name']}: {info['flavor']} -> ONNX model {info['model_hash'][:12]}, "
          f"conversion check: {info['conversion_check']['rows']} rows, max |diff| "
          f"{info['conversion_check']['max_abs_error']:.2g}")
    print(f"verify={info['verification']} proves: {info['proves']}")

    rows = X.sample(8, random_state=0)
    pred = pd.DataFrame(client.predict("iris-quickstart", rows))  # predict returns a PredictionsResponse
    matches = int((pred["predictions"].to_numpy() == model.predict(rows)).sum())
    print(f"predictions match scikit-learn on {matches}/{len(rows)} rows")
    print(pred[["predictions", "job_id", "receipt_signer", "evidence"]].head(3).to_string(index=False))

    # the CLI is the same target, in a new process: it sees the deployment created above
    out = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "deployments", "get", "-t", "ciro",
                          "--name", "iris-quickstart"], capture_output=True, text=True, check=True).stdout
    print(next(line for line in out.splitlines() if line.startswith("model_hash")))
    client.delete_deployment("iris-quickstart")


if __name__ == "__main__":
    main()
