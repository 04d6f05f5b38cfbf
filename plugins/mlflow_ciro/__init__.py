"""MLflow deployment target ``ciro`` (``mlflow deployments create -t ciro``).

MLflow loads :mod:`mlflow_ciro.target` through the ``mlflow.deployments`` entry point; this package imports
nothing at import time.
"""

__all__: list[str] = []
