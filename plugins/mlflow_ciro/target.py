"""The ``ciro`` MLflow deployment target: ``mlflow deployments create -t ciro`` and the deployments API.

Deployments live in the Ciro gateway (``/v1/deployments``, persisted under its ``CIRO_HOME``), so every
``mlflow deployments`` process, and a restarted gateway, sees the same ones. MLflow finds this module through
the ``mlflow.deployments`` entry point; it holds the one client class, ``run_local`` and ``target_help``.

Inside the plugin every error is Ciro's (``ciro.errors``); the client's public methods are its outer boundary,
where they become ``MlflowException`` with a matching error code (what MLflow's CLI and callers expect).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
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
    DeploymentError,
    DeploymentExistsError,
    DeploymentNotFoundError,
    GatewayUnavailableError,
    InputError,
    JobFailedError,
    ModelError,
    ModelNotFoundError,
    QuorumPolicy,
    VerificationLevel,
)

from . import predict as _predict
from .convert import ATOL, RTOL, SUPPORTED_FLAVORS, Converted, convert

__all__ = ["CiroDeploymentClient", "run_local", "target_help"]

T = TypeVar("T")
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
    q = QuorumPolicy()  # what a deployment's quorum jobs run with (the target sets no f)
    return f"""Ciro: verifiable inference on a Ray cluster of GPU providers, settled on Starknet.

Target URIs:
    ciro                         the embedded default: the gateway under CIRO_HOME (started if needed),
                                 or CIRO_GATEWAY_URL when set
    ciro:/http://HOST:PORT       a remote Ciro gateway

Options (-C key=value) for create and update:
{options}

What each verify level proves:
{levels}
    verify=quorum runs each job on k={q.k} distinct workers (f={q.f}; each signs with its own key) and accepts
    the output {q.threshold} of them agree on; they are spread over providers and nodes as far as the pool
    allows, but nothing requires them to belong to different providers.

Flavors: {", ".join(SUPPORTED_FLAVORS)}. scikit-learn (skl2onnx), XGBoost and LightGBM (onnxmltools), PyTorch
and transformers text-classification (torch.onnx.export) models are converted to ONNX (Ciro's converter
registry, ciro.convert) and must reproduce the original model's predictions on the model's input example
(labels equal, floats within rtol/atol) before the deployment is created. With -C verify=zk, scikit-learn,
XGBoost and LightGBM models are converted instead to plain tensor operators EZKL can prove (that circuit is
served and proven; its label column holds the class values as floats), and a model EZKL could not prove is
refused with the reason before anything is deployed.

predict accepts a DataFrame (what --input-path holds), a dict, a numpy array or a list, checks it against the
model signature, and returns an mlflow.deployments.PredictionsResponse of columns (one value per input row):
`predictions`, the model's other outputs, and the job id, verification level, worker, output commitment,
receipt signer, proof hash, settlement and its transaction, and the URL of the full evidence (verify it
offline with `ciro verify`). predict_stream (Python API) submits every job at once and yields each job's
rows, as a PredictionsResponse with a `row` column, as soon as that job completes.

Examples:
    mlflow deployments create -t ciro --name iris -m models:/m-<id> -C verify=quorum
    mlflow deployments predict -t ciro --name iris --input-path rows.json --output-path out.json
    mlflow deployments get -t ciro --name iris
"""


_CODES: list[tuple[type[CiroError], int]] = [
    (DeploymentNotFoundError, RESOURCE_DOES_NOT_EXIST), (ModelNotFoundError, RESOURCE_DOES_NOT_EXIST),
    (DeploymentExistsError, RESOURCE_ALREADY_EXISTS), (InputError, INVALID_PARAMETER_VALUE),
    (ConfigError, INVALID_PARAMETER_VALUE), (ModelError, INVALID_PARAMETER_VALUE),
    (DeploymentError, INVALID_PARAMETER_VALUE), (AuthError, PERMISSION_DENIED),
    (GatewayUnavailableError, TEMPORARILY_UNAVAILABLE), (JobFailedError, INTERNAL_ERROR)]


def _mlflow_error(exc: CiroError) -> MlflowException:
    """A Ciro error as the MlflowException MLflow's CLI shows: Ciro's message (which says what next), a matching
    error code."""
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), INTERNAL_ERROR)
    return MlflowException(f"Ciro: {exc.message}", error_code=code)


def _wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """The outer boundary: Ciro's errors leave a public method as MlflowExceptions."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CiroError as exc:
            raise _mlflow_error(exc) from exc

    return inner


def _wrap_stream(fn: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    """:func:`_wrap` for a generator: errors raised while it is iterated are converted too."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Iterator[T]:
        try:
            yield from fn(*args, **kwargs)
        except CiroError as exc:
            raise _mlflow_error(exc) from exc

    return inner


def _gateway_url(target_uri: str) -> str | None:
    """None for the embedded default (``ciro``), else the remote gateway's URL (``ciro:/http://host:port``)."""
    if target_uri.strip() in ("ciro", "ciro:", "ciro:/"):
        return None
    rest = target_uri.strip().removeprefix("ciro:/")
    if rest == target_uri.strip() or not rest.startswith(("http://", "https://")):
        raise InputError(f"Unknown Ciro target URI {target_uri!r}. Use 'ciro' (the embedded default) or "
                         "'ciro:/http://HOST:PORT' (a remote gateway).")
    return rest.rstrip("/")


def _options(config: dict[str, Any] | None) -> dict[str, Any]:
    """-C options, typed and checked; unknown keys are refused with the list of known ones."""
    out: dict[str, Any] = {}
    for key, raw in (config or {}).items():
        if key not in _OPTIONS:
            raise InputError(f"Unknown option -C {key}. Ciro takes: {', '.join(_OPTIONS)} "
                             "(mlflow deployments help -t ciro).")
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
        except ValueError as exc:  # InputError is a ValueError too
            raise InputError(f"Bad value -C {key}={raw}: {exc}. Expected: {_OPTIONS[key]}.") from exc
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

    @_wrap
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

    def _convert(self, model_uri: str, flavor: str | None, opts: dict[str, Any],
                 verification: str | None) -> tuple[Converted, dict[str, Any]]:
        conv = convert(model_uri, flavor, rtol=opts.pop("rtol", RTOL), atol=opts.pop("atol", ATOL),
                       zk=verification == "zk")
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
        conv, meta = self._convert(model_uri, flavor, opts, opts.get("verification"))
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
            level = opts.get("verification", current.verification)
            conv, meta = self._convert(model_uri, flavor, opts, level)
            # the new model is stored (and set up, for zk) before the name moves to it
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
                endpoint: str | None = None) -> PredictionsResponse:
        """Run every input row on the deployment and return a ``PredictionsResponse`` of columns: ``predictions``,
        the model's other outputs, and each row's job evidence (``mlflow_ciro.predict``); ``pandas.DataFrame(r)``
        is the table, ``r.get_predictions()`` the predictions alone. The CLI writes it as JSON."""
        return _predict.predict(self.client, self._deployment(deployment_name), inputs)

    @_wrap_stream
    def predict_stream(self, deployment_name: str | None = None, inputs: Any = None,
                       endpoint: str | None = None) -> Iterator[PredictionsResponse]:
        """Split the rows into jobs (``rows_per_job`` each), submit them all at once, and yield each job's rows as
        soon as that job completes, in completion order: a ``PredictionsResponse`` with the columns of
        :meth:`predict` plus ``row``, the input row each prediction belongs to. A consumer that stops early
        leaves the remaining jobs running on the gateway."""
        yield from _predict.predict_stream(self.client, self._deployment(deployment_name), inputs)

    def _deployment(self, name: str | None) -> Deployment:
        if not name:
            raise InputError("Name the deployment to predict with (--name).")
        return self.client.deployment(name)


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
