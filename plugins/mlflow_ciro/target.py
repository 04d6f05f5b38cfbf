"""The ``ciro`` MLflow deployment target: ``mlflow deployments create -t ciro`` and the deployments API.

Deployments live in the Ciro gateway (``/v1/deployments``, persisted under its ``CIRO_HOME``), so every
``mlflow deployments`` process, and a restarted gateway, sees the same ones. MLflow finds this module through
the ``mlflow.deployments`` entry point; it holds the one client class, ``run_local`` and ``target_help``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from mlflow.deployments import BaseDeploymentClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from ciro import (
    AuthError,
    CiroClient,
    CiroError,
    Config,
    ConfigError,
    Deployment,
    DeploymentExistsError,
    DeploymentNotFoundError,
    GatewayUnavailableError,
    InputError,
    JobFailedError,
    ModelNotFoundError,
    VerificationLevel,
)

from .convert import ATOL, RTOL, SUPPORTED_FLAVORS, Converted, convert
from .inputs import Layout, evidence, feeds, frame
from .text import texts

__all__ = ["CiroDeploymentClient", "run_local", "target_help"]

T = TypeVar("T")
PREDICT_CHUNK = 512  # jobs per request
#: What each level proves: the core's one text (VerificationLevel.proves), never restated here.
PROVES = {level.value: level.proves for level in VerificationLevel}
_OPTIONS = {
    "verify": "receipt | quorum | zk | none: the evidence each prediction carries (default receipt)",
    "replicas": "at most this many workers run the deployment at once (default: all free workers)",
    "max_batch_size": "at most this many predictions per worker batch (default: the gateway's max_batch_size)",
    "gpu": "true: only workers holding a GPU share (default false)",
    "gpu_memory_gb": "only workers whose GPU share has at least this much memory, in GB (a 0.5 share of an 80 GB "
                     "GPU has 40)",
    "gpu_model": "only workers whose GPU model name contains this, case-insensitive (e.g. H100)",
    "cpu_only": "true: only workers without a GPU share, keeping GPUs for what needs them (default false)",
    "max_payment": "escrow per job on Starknet, in CIRO base units (the gateway must settle payments)",
    "rows_per_job": "input rows per job (default 1: every row is its own job with its own evidence; more rows "
                    "per job amortise the per-job cost, and one receipt or proof then covers them all)",
    "rtol": f"relative tolerance of the conversion check (default {RTOL})",
    "atol": f"absolute tolerance of the conversion check (default {ATOL})",
}


def target_help() -> str:
    options = "\n".join(f"    -C {k}=...  {v}" for k, v in _OPTIONS.items())
    levels = "\n".join(f"    {k:<8} {v}" for k, v in PROVES.items())
    return f"""Ciro: verifiable inference on a Ray cluster of GPU providers, settled on Starknet.

Target URIs:
    ciro                         the embedded default: the gateway under CIRO_HOME (started if needed),
                                 or CIRO_GATEWAY_URL when set
    ciro:/http://HOST:PORT       a remote Ciro gateway

Options (-C key=value) for create and update:
{options}

What each verify level proves:
{levels}

Flavors: {", ".join(SUPPORTED_FLAVORS)}. scikit-learn (skl2onnx), PyTorch and transformers text-classification
(torch.onnx.export) models are converted to ONNX and must reproduce the original pyfunc's predictions on the
model's input example before the deployment is created.

predict accepts a DataFrame (what --input-path holds), a dict, a numpy array or a list, checks it against the
model signature, and returns a DataFrame: `predictions`, the model's other outputs, and per row the job id,
verification level, worker, output commitment, receipt signer, proof hash, settlement and its transaction, and
the URL of the full evidence (verify it offline with `ciro verify`).

Examples:
    mlflow deployments create -t ciro --name iris -m models:/m-<id> -C verify=quorum
    mlflow deployments predict -t ciro --name iris --input-path rows.json --output-path out.json
    mlflow deployments get -t ciro --name iris
"""


def _wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """Ciro's errors as MlflowExceptions with the matching error code and Ciro's message (which says what next)."""
    codes: list[tuple[type[CiroError], int]] = [
        (DeploymentNotFoundError, RESOURCE_DOES_NOT_EXIST), (ModelNotFoundError, RESOURCE_DOES_NOT_EXIST),
        (DeploymentExistsError, RESOURCE_ALREADY_EXISTS), (InputError, INVALID_PARAMETER_VALUE),
        (ConfigError, INVALID_PARAMETER_VALUE), (AuthError, PERMISSION_DENIED),
        (GatewayUnavailableError, TEMPORARILY_UNAVAILABLE), (JobFailedError, INTERNAL_ERROR)]

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CiroError as exc:
            code = next((c for cls, c in codes if isinstance(exc, cls)), INTERNAL_ERROR)
            raise MlflowException(f"Ciro: {exc.message}", error_code=code) from exc

    return inner


def _gateway_url(target_uri: str) -> str | None:
    """None for the embedded default (``ciro``), else the remote gateway's URL (``ciro:/http://host:port``)."""
    if target_uri.strip() in ("ciro", "ciro:", "ciro:/"):
        return None
    rest = target_uri.strip().removeprefix("ciro:/")
    if rest == target_uri.strip() or not rest.startswith(("http://", "https://")):
        raise MlflowException(f"Unknown Ciro target URI {target_uri!r}. Use 'ciro' (the embedded default) or "
                              "'ciro:/http://HOST:PORT' (a remote gateway).", error_code=INVALID_PARAMETER_VALUE)
    return rest.rstrip("/")


def _options(config: dict[str, Any] | None) -> dict[str, Any]:
    """-C options, typed and checked; unknown keys are refused with the list of known ones."""
    out: dict[str, Any] = {}
    for key, raw in (config or {}).items():
        if key not in _OPTIONS:
            raise MlflowException(f"Unknown option -C {key}. Ciro takes: {', '.join(_OPTIONS)} "
                                  "(mlflow deployments help -t ciro).", error_code=INVALID_PARAMETER_VALUE)
        value = str(raw).strip()
        try:
            if key == "verify":
                out["verification"] = VerificationLevel.parse(value).value
            elif key in ("replicas", "max_batch_size", "max_payment", "rows_per_job"):
                out[key] = int(value)
                if out[key] < (0 if key == "max_payment" else 1):
                    raise ValueError("too small")
            elif key in ("gpu", "cpu_only"):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("not a boolean")
                out[key] = value.lower() in ("true", "1", "yes")
            elif key == "gpu_model":
                if not value:
                    raise ValueError("empty")
                out[key] = value
            elif key == "gpu_memory_gb":
                out[key] = float(value)
                if not out[key] > 0:
                    raise ValueError("not above 0")
            else:
                out[key] = float(value)
        except (ValueError, InputError) as exc:
            raise MlflowException(f"Bad value -C {key}={raw}: {exc}. Expected: {_OPTIONS[key]}.",
                                  error_code=INVALID_PARAMETER_VALUE) from exc
    return out


def _summary(d: Deployment, url: str) -> dict[str, Any]:
    meta = d.metadata.get("mlflow") or {}
    out = {"name": d.name, "flavor": meta.get("flavor", "onnx"), "model_uri": meta.get("model_uri"),
           "model_hash": d.model_hash, "status": d.status, "verification": d.verification,
           "proves": PROVES.get(d.verification), "replicas": d.replicas, "max_batch_size": d.max_batch_size,
           "gpu": d.gpu, "gpu_memory_gb": d.gpu_memory_gb, "gpu_model": d.gpu_model, "cpu_only": d.cpu_only,
           "max_payment": d.max_payment, "version": d.version,
           "previous_model_hash": d.previous_model_hash, "rows_per_job": meta.get("rows_per_job", 1),
           "conversion_check": meta.get("check"),
           "gateway": url, "zk": (d.model.get("zk") or {}).get("status") if d.model else None}
    if d.settlement:
        out["settlement"] = {k: d.settlement.get(k) for k in ("rpc_url", "token", "job_manager", "price_per_job")}
    return out


class CiroDeploymentClient(BaseDeploymentClient):
    """MLflow deployments on a Ciro gateway. Each deployment is a converted, checked ONNX model served under a
    name, with a verification level; predictions come back with their evidence."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self._url = _gateway_url(target_uri)
        self._client: CiroClient | None = None

    @property
    def client(self) -> CiroClient:
        if self._client is None:
            cfg = Config.load(gateway_url=self._url) if self._url else Config.load()
            self._client = CiroClient(cfg.gateway_url, config=cfg) if cfg.gateway_url else CiroClient.local()
        return self._client

    def _convert(self, model_uri: str, flavor: str | None, opts: dict[str, Any]) -> tuple[Converted, dict[str, Any]]:
        conv = convert(model_uri, flavor, rtol=opts.pop("rtol", RTOL), atol=opts.pop("atol", ATOL))
        meta = {"mlflow": {"model_uri": model_uri, "flavor": conv.flavor, "primary_output": conv.primary_output,
                           "layout": conv.layout.to_dict(), "check": conv.check,
                           "rows_per_job": opts.pop("rows_per_job", 1), "text": conv.bundle is not None}}
        return conv, meta

    def _upload(self, conv: Converted, verification: str | None) -> str:
        """The converted model on the gateway (with its processor bundle, for text models); its hash."""
        info = self.client.deploy(conv.onnx, zk=verification == "zk")
        if conv.bundle is not None:
            self.client.attach_processor(info.hash, conv.bundle)
        return info.hash

    @_wrap
    def _exists(self, name: str) -> bool:
        try:
            self.client.deployment(name)
        except DeploymentNotFoundError:
            return False
        return True

    @_wrap
    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        opts = _options(config)
        if self._exists(name):  # before the (slow) conversion
            raise DeploymentExistsError(f"Deployment {name!r} exists. Update it (mlflow deployments update -t ciro "
                                        f"--name {name} -m URI), or delete it first.")
        conv, meta = self._convert(model_uri, flavor, opts)
        d = self.client.create_deployment(name, self._upload(conv, opts.get("verification")), metadata=meta, **opts)
        return _summary(d, self.client.url)

    @_wrap
    def update_deployment(self, name: str, model_uri: str | None = None, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        opts = _options(config)
        current = self.client.deployment(name)  # a missing deployment fails before any conversion
        if model_uri is None:
            if flavor is not None:
                raise InputError("--flavor needs a model (-m URI) to convert. Give both, or neither.")
            opts.pop("rtol", None), opts.pop("atol", None)
            if "rows_per_job" in opts:
                mlflow_meta = {**(current.metadata.get("mlflow") or {}), "rows_per_job": opts.pop("rows_per_job")}
                opts["metadata"] = {**current.metadata, "mlflow": mlflow_meta}
            d = self.client.update_deployment(name, **opts)
        else:
            opts.setdefault("rows_per_job", (current.metadata.get("mlflow") or {}).get("rows_per_job", 1))
            conv, meta = self._convert(model_uri, flavor, opts)
            # the new model is stored (and set up, for zk) before the name moves to it
            level = opts.get("verification", current.verification)
            d = self.client.update_deployment(name, model=self._upload(conv, level),
                                              metadata={**current.metadata, **meta}, **opts)
        return _summary(d, self.client.url)

    @_wrap
    def delete_deployment(self, name: str, config: dict[str, Any] | None = None,
                          endpoint: str | None = None) -> None:
        self.client.delete_deployment(name)  # idempotent: a missing deployment is not an error

    @_wrap
    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return [_summary(d, self.client.url) for d in self.client.deployments()]

    @_wrap
    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        return _summary(self.client.deployment(name), self.client.url)

    @_wrap
    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> pd.DataFrame:
        if not deployment_name:
            raise InputError("Name the deployment to predict with (--name).")
        d = self.client.deployment(deployment_name)
        meta = d.metadata.get("mlflow") or {}
        if meta.get("text"):
            return self._predict_text(d, texts(inputs), int(meta.get("rows_per_job", 1)))
        layout = Layout.from_dict(meta["layout"]) if meta.get("layout") else Layout(d.model.get("inputs", []))
        fed = feeds(inputs, layout)
        primary = meta.get("primary_output") or d.model["outputs"][0]["name"]
        rows = len(next(iter(fed.values())))
        per_job = int(meta.get("rows_per_job", 1))
        step = PREDICT_CHUNK * per_job
        results = []
        for start in range(0, rows, step):
            end = min(start + step, rows)
            whole = start + (end - start) // per_job * per_job
            for a, b, n in ((start, whole, per_job), (whole, end, end - whole)):  # whole jobs, then the rest
                if b > a:
                    part = {k: np.ascontiguousarray(v[a:b]) for k, v in fed.items()}
                    results += self.client.infer_batch(d.model_hash, part, rows_per_job=n,
                                                       verification=d.verification, max_payment=d.max_payment)
        return frame(results, primary=primary, gateway_url=self.client.url)


    def _predict_text(self, d: Deployment, items: list[str], per_job: int) -> pd.DataFrame:
        """Text in: jobs of ``per_job`` texts (tokenized here by the model's processor); the label and score of
        each text with its job's evidence."""
        rows = []
        for start in range(0, len(items), per_job):
            chunk = items[start:start + per_job]
            options: dict[str, Any] = {"max_payment": d.max_payment} if d.max_payment is not None else {}
            r = self.client.infer(d.model_hash, chunk, verification=d.verification, **options)
            ev = evidence(r, self.client.url)
            rows += [{"predictions": p["label"], "score": p["score"], **ev} for p in r.prediction or []]
        return pd.DataFrame(rows)


def run_local(name: str, model_uri: str, flavor: str | None = None, config: dict[str, Any] | None = None) -> None:
    """Serve the model on the embedded default (local Ray, gateway and, with settlement, devnet under CIRO_HOME),
    creating the deployment or updating it to this model."""
    client = CiroDeploymentClient("ciro")
    if client._exists(name):
        info = client.update_deployment(name, model_uri, flavor, config)
    else:
        info = client.create_deployment(name, model_uri, flavor, config)
    print(f"Deployment {name!r} ({info['flavor']}, model {info['model_hash'][:12]}, verify={info['verification']}) "
          f"is served by the local Ciro gateway at {info['gateway']}.\n"
          f"Predict: mlflow deployments predict -t ciro --name {name} --input-path INPUT.json\n"
          "Stop the local gateway with `ciro down`.")
