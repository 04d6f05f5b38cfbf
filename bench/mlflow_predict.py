"""`predict` through the Ciro MLflow target against MLflow's own local pyfunc predict, same model, same batch.

For a scikit-learn pipeline (iris, StandardScaler + LogisticRegression) and a PyTorch MLP (64-256-10) it
logs the model to a temporary tracking store, loads it with ``mlflow.pyfunc.load_model`` (the baseline, in
this process) and deploys it with ``get_deploy_client("ciro:/URL").create_deployment`` (verify=receipt and
verify=none), then times ``predict`` on batches of 1, 100 and 1,000 rows (median of several calls, after a
warm-up). Ciro's predict runs one job per row: each row is stored, dispatched to a Ray worker, committed,
signed (receipt) and returned with its evidence.

    python bench/mlflow_predict.py [--json bench/results/mlflow_predict.json]

It starts its own embedded default (Ray head + gateway, no chain) under a temporary CIRO_HOME and stops it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import free_port, median_s, write_report

from ciro import Config
from ciro.local import ensure_running, stop

BATCHES = (1, 100, 1000)


def log_models(work: Path) -> dict[str, tuple[str, Any]]:
    import mlflow
    import torch
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=str(work / "artifacts")))
    X, y = load_iris(return_X_y=True, as_frame=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    xt = rng.standard_normal((1000, 64)).astype(np.float32)
    rows = pd.DataFrame(rng.choice(X.to_numpy(), 1000) + rng.normal(0, 0.05, (1000, 4)), columns=X.columns)
    with mlflow.start_run():
        sk = mlflow.sklearn.log_model(clf, name="iris", input_example=X.iloc[:5], pip_requirements=[]).model_uri
        pt = mlflow.pytorch.log_model(net, name="mlp", input_example=xt[:4], pip_requirements=[]).model_uri
    return {"sklearn iris pipeline": (sk, rows), "pytorch MLP 64-256-10": (pt, xt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "mlflow_predict.json")
    args = ap.parse_args()

    import mlflow.pyfunc
    from mlflow.deployments import get_deploy_client

    work = Path(tempfile.mkdtemp(prefix="ciro-bench-mlflow-"))
    models = log_models(work)
    port = free_port()
    cfg = Config.load(home=work / "home", port=port, settlement="off")
    url = ensure_running(cfg, progress=True)
    client = get_deploy_client(f"ciro:/{url}")
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} "
                              f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                              "repeat": args.repeat, "models": {}}
    try:
        for label, (uri, data) in models.items():
            pyfunc = mlflow.pyfunc.load_model(uri)
            k = len(report["models"])
            for level in ("receipt", "none"):
                client.create_deployment(f"bench-{level}-{k}", uri, config={"verify": level})
            client.create_deployment(f"bench-rows-{k}", uri, config={"verify": "receipt", "rows_per_job": "100"})
            res: dict[str, Any] = {}
            for n in BATCHES:
                batch = data.iloc[:n] if isinstance(data, pd.DataFrame) else data[:n]
                repeat = args.repeat if n < 1000 else max(3, args.repeat // 2)
                base = median_s(lambda b=batch, f=pyfunc: f.predict(b), repeat, warm_up=True)
                row: dict[str, float] = {"mlflow pyfunc s": base}
                for key, name in (("receipt", f"bench-receipt-{k}"), ("none", f"bench-none-{k}"),
                                  ("receipt 100 rows/job", f"bench-rows-{k}")):
                    row[f"ciro {key} s"] = median_s(lambda b=batch, nm=name: client.predict(nm, b), repeat,
                                                    warm_up=True)
                    row[f"ciro {key} / pyfunc"] = row[f"ciro {key} s"] / base
                res[str(n)] = row
                print(f"{label:<24} {n:>5} rows: pyfunc {base * 1000:8.2f} ms | " + " | ".join(
                    f"ciro {key} {row[f'ciro {key} s'] * 1000:8.2f} ms ({row[f'ciro {key} / pyfunc']:.0f}x)"
                    for key in ("receipt", "none", "receipt 100 rows/job")))
            report["models"][label] = res
    finally:
        stop(cfg)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
