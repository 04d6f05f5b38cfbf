"""The async core of the SDK: :class:`AsyncCiroClient`, every gateway call as a coroutine."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ._payments import deposit, escrow, payer_chain, spend_header
from ._transport import _BaseClient
from ._wire import _checked, _dep, _job_id, _normalize
from .config import Config
from .deployments import Deployment
from .errors import (
    InputError,
    JobTimeoutError,
)
from .identity import Identity, KeyStore
from .jobs import JobResult, JobSpec, JobStatus, ModelInfo, VerificationLevel
from .modelstore import read_model_file
from .options import check_options
from .processing import Processor, extract_bundle, is_raw, load_processor, make_bundle
from .tensors import BINARY_CONTENT_TYPE, encode_binary, encode_json

__all__ = ["AsyncCiroClient"]

#: The gateway holds a request open at most this long; the client keeps waiting with `wait()`.
MAX_SERVER_WAIT_S = 300.0
#: What update_deployment may change (besides the model).
_DEPLOYMENT_SETTINGS = ("verification", "replicas", "max_batch_size", "gpu", "gpu_memory_gb", "gpu_model", "cpu_only",
                        "max_payment", "metadata")
#: Keyword arguments the SDK takes next to the job options (named in the unknown-option message).
_SDK_ARGS = {"max_payment": "CIRO base units escrowed per job", "verification": "none, receipt, quorum or zk",
             "timeout": "seconds to wait", "prepaid": "pay from your CiroLedger deposit (True)"}


def _prepaid_flag(value: Any, max_payment: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"prepaid must be True or False, got {value!r}.")
    if value and max_payment is not None:
        raise InputError("A job is paid one way: prepaid=True (from your CiroLedger deposit) or max_payment= (an "
                         "escrow per job), not both.")
    return value


class AsyncCiroClient(_BaseClient):
    """Talks to one gateway over HTTP. All methods are coroutines."""

    def __init__(self, url: str | None = None, *, config: Config | None = None, timeout: float | None = None,
                 retries: int = 2, verification: VerificationLevel | str | bool | None = None,
                 options: Mapping[str, Any] | None = None, identity: Identity | None = None) -> None:
        super().__init__(url, config=config, timeout=timeout, retries=retries, identity=identity)
        self.verification = VerificationLevel.parse(
            verification if verification is not None else self.config.verification)
        self.default_options = dict(options or {})
        check_options({k: v for k, v in self.default_options.items() if k not in ("max_payment", "prepaid")},
                      extra=_SDK_ARGS)
        self._models: dict[str, ModelInfo] = {}
        self._processors: dict[str, Processor] = {}
        self._chain: Any = None  # (chain info, ChainClient) once escrow is used
        self._spending = asyncio.Lock()  # one prepaid request at a time: each signs the caps after the last one

    # -- service ---------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/healthz")
        return result

    async def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._request("GET", "/v1/workers")
        return result

    async def faults(self, *, worker_key: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Evidence the gateway recorded against workers (quorum dissent, outputs a zk proof contradicts), newest
        first, with whether and how each was filed on chain (``slash``, ``slash_tx``)."""
        params: dict[str, Any] = {"limit": limit, **({"worker_key": worker_key} if worker_key else {})}
        result: list[dict[str, Any]] = await self._request("GET", "/v1/faults", params=params)
        return result

    # -- models ----------------------------------------------------------------------------
    async def deploy(self, model: str | os.PathLike[str] | bytes, *, name: str | None = None,
                     zk: bool = False, zk_inputs: str = "public", zk_outputs: str = "public") -> ModelInfo:
        """Upload an ONNX model (path or bytes). Returns its :class:`ModelInfo`; ``.hash`` is the model ref.

        ``zk=True`` also runs the EZKL set-up once (seconds to minutes) so the model can serve zk jobs;
        ``zk_inputs``/``zk_outputs`` = "hashed" make the proof show a Poseidon hash instead of the values."""
        if isinstance(model, bytes | bytearray):
            data = bytes(model)
        else:
            path = Path(model)
            data = read_model_file(path, max_bytes=self.config.max_model_bytes)
            name = name or path.stem
        params: dict[str, Any] = {"name": name} if name else {}
        if zk:
            params.update(zk="true", zk_inputs=zk_inputs, zk_outputs=zk_outputs)
        info = ModelInfo.from_dict(await self._request(
            "POST", "/v1/models", data=data, params=params,
            headers={"content-type": "application/octet-stream"}, read_timeout=1800.0 if zk else 120.0))
        self._models[info.hash] = info
        return info

    async def model(self, ref: str) -> ModelInfo:
        """A model by hash (cached: a hash names one model forever), or by prefix or name (asked each time: a
        name moves when its deployment is updated)."""
        if ref in self._models:
            return self._models[ref]
        info = ModelInfo.from_dict(await self._request("GET", f"/v1/models/{ref}"))
        self._models[info.hash] = info
        return info

    # -- deployments -----------------------------------------------------------------------
    async def _model_ref(self, model: str | os.PathLike[str] | bytes, zk: bool) -> str:
        """A model ref for a deployment: a file or bytes is uploaded first (with the zk set-up when ``zk``)."""
        if isinstance(model, bytes | bytearray | os.PathLike) or Path(str(model)).is_file():
            return (await self.deploy(model, zk=zk)).hash
        return str(model)

    async def create_deployment(self, name: str, model: str | os.PathLike[str] | bytes, *,
                                verification: VerificationLevel | str = "receipt", replicas: int | None = None,
                                max_batch_size: int | None = None, gpu: bool = False,
                                gpu_memory_gb: float | None = None, gpu_model: str | None = None,
                                cpu_only: bool = False, max_payment: int | None = None,
                                metadata: dict[str, Any] | None = None) -> Deployment:
        """Serve ``model`` (a path, bytes, or the ref of an uploaded model) under ``name`` (``docs/deployments.md``).
        Hardware: ``gpu`` (workers holding a GPU share), ``gpu_memory_gb`` (at least this much GPU memory in the
        worker's share), ``gpu_model`` (the GPU's model name contains this, e.g. "H100"), ``cpu_only`` (workers
        without a GPU share). Raises :class:`DeploymentExistsError` if the name is taken, :class:`InputError` for
        settings the gateway's workers cannot serve."""
        level = self._level(verification)
        zk = level == VerificationLevel.ZKML
        body = {"name": name, "model": await self._model_ref(model, zk), "verification": level,
                "replicas": replicas, "max_batch_size": max_batch_size, "gpu": gpu, "gpu_memory_gb": gpu_memory_gb,
                "gpu_model": gpu_model, "cpu_only": cpu_only,
                "max_payment": str(max_payment) if max_payment is not None else None, "metadata": metadata or {}}
        return Deployment.from_wire(await self._request("POST", "/v1/deployments", json=body))

    async def update_deployment(self, name: str, *, model: str | os.PathLike[str] | bytes | None = None,
                                **changes: Any) -> Deployment:
        """Change a deployment: a new ``model`` (path, bytes or ref) takes over once stored and set up; other
        keywords as in :meth:`create_deployment` (only those given change)."""
        unknown = set(changes) - set(_DEPLOYMENT_SETTINGS)
        if unknown:
            raise InputError(f"Unknown deployment setting(s): {', '.join(sorted(unknown))}. Use "
                             f"{', '.join(_DEPLOYMENT_SETTINGS[:-1])} or {_DEPLOYMENT_SETTINGS[-1]}.")
        if "verification" in changes:
            changes["verification"] = self._level(changes["verification"])
        if changes.get("max_payment") is not None:
            changes["max_payment"] = str(changes["max_payment"])
        if model is not None:
            zk = changes.get("verification", (await self.deployment(name)).verification) == VerificationLevel.ZKML
            changes["model"] = await self._model_ref(model, zk)
        return Deployment.from_wire(await self._request("PUT", f"/v1/deployments/{_dep(name)}", json=changes))

    async def delete_deployment(self, name: str) -> bool:
        """Remove a deployment; False if there was none (deleting twice is fine)."""
        return bool((await self._request("DELETE", f"/v1/deployments/{_dep(name)}"))["deleted"])

    async def deployment(self, name: str) -> Deployment:
        return Deployment.from_wire(await self._request("GET", f"/v1/deployments/{_dep(name)}"))

    async def deployments(self) -> list[Deployment]:
        return [Deployment.from_wire(d) for d in await self._request("GET", "/v1/deployments")]

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_dict(m) for m in await self._request("GET", "/v1/models")]

    # -- jobs ------------------------------------------------------------------------------
    def _level(self, verification: VerificationLevel | str | bool | None) -> str:
        return (VerificationLevel.parse(verification) if verification is not None else self.verification).value

    async def submit(self, model: str, inputs: Any, *, verification: VerificationLevel | str | bool | None = None,
                     **options: Any) -> str:
        """Queue one job; returns its id at once. ``options`` are stored with the job; the hardware ones place it:
        ``gpu=True`` (a worker holding a GPU share; ``gpu="H100"`` is a preference, recorded only),
        ``gpu_memory_gb=40``, ``gpu_model="H100"``, ``cpu_only=True``."""
        out = await self._submit(model, inputs, verification, options, wait=0.0)
        return str(out["id"])

    async def infer(self, model: str, inputs: Any, *, verification: VerificationLevel | str | bool | None = None,
                    timeout: float | None = None, **options: Any) -> JobResult:
        """Run one job and return its result; raises if the job fails. ``options`` as in :meth:`submit`."""
        wait = timeout if timeout is not None else self.timeout
        proc = await self.processor(model) if is_raw(inputs) else None
        out = await self._submit(model, proc.preprocess(inputs) if proc else inputs, verification, options, wait=wait)
        result = JobResult.from_wire(out)
        if not result.status.terminal:
            result = await self.wait(result.job_id, timeout=wait)
        result = _checked(result)
        if proc is not None and result.outputs is not None:
            result = dataclasses.replace(result, prediction=proc.postprocess(result.outputs, inputs))
        return result

    async def processor(self, model: str) -> Processor | None:
        """The model's processor (from its bundle, fetched once and kept under ``CIRO_HOME/processors``), or None
        when it has none. :meth:`infer` uses it for raw input (text, images): ``result.prediction``."""
        info = await self.model(model)
        if not info.processor:
            return None
        if info.hash not in self._processors:
            sha = str(info.processor["sha256"])
            folder = self.config.paths.processors / f"{info.hash[:16]}-{sha[:16]}"
            if not (folder / "processor.json").is_file():
                data = await self._request("GET", f"/v1/models/{info.hash}/processor", raw=True)
                extract_bundle(data, folder, sha)
            self._processors[info.hash] = load_processor(str(info.processor["kind"]), folder)
        return self._processors[info.hash]

    async def attach_processor(self, model: str, files: Mapping[str, bytes] | bytes) -> ModelInfo:
        """Attach a processor bundle (its files, ``processor.json`` among them, or the zip) to an uploaded model."""
        data = files if isinstance(files, bytes) else make_bundle(files)
        info = ModelInfo.from_dict(await self._request("PUT", f"/v1/models/{model}/processor", data=data,
                                                       headers={"content-type": "application/zip"}))
        self._models[info.hash] = info
        self._processors.pop(info.hash, None)
        return info

    async def _submit(self, model: str, inputs: Any, verification: Any, options: dict[str, Any],
                      *, wait: float) -> dict[str, Any]:
        info = await self.model(model)
        options = {**self.default_options, **options}
        max_payment = options.pop("max_payment", None)
        prepaid = _prepaid_flag(options.pop("prepaid", False), max_payment)
        options = check_options(options, extra=_SDK_ARGS)
        spec = JobSpec(model=info.hash, inputs=_normalize(info, inputs),
                       verification=VerificationLevel(self._level(verification)), options=options)
        wait = min(wait, MAX_SERVER_WAIT_S)  # longer waits continue in `wait()`
        if prepaid:
            async with self._spending:
                out: dict[str, Any] = await self._request("POST", "/v1/jobs", json=spec.to_wire(),
                                                          params={"wait": wait}, read_timeout=wait,
                                                          headers=await spend_header(self, 1))
            return out
        if max_payment is not None:
            job = await self._request("POST", "/v1/jobs", json=spec.to_wire(), params={"escrow": "true"})
            await self._escrow([job], int(max_payment))
            if wait <= 0:
                done: dict[str, Any] = await self._request("GET", f"/v1/jobs/{job['id']}")
            else:
                done = await self._request("GET", f"/v1/jobs/{job['id']}/result", params={"wait": wait},
                                           read_timeout=wait)
            return done
        result: dict[str, Any] = await self._request("POST", "/v1/jobs", json=spec.to_wire(), params={"wait": wait},
                                                     read_timeout=wait)
        return result

    # -- on-chain payment ------------------------------------------------------------------
    async def chain_info(self) -> dict[str, Any]:
        """Where the gateway settles payments (``{"enabled": False}`` when it does not)."""
        result: dict[str, Any] = await self._request("GET", "/v1/chain")
        return result

    def payer(self) -> Identity:
        """The key whose Starknet account pays for escrowed jobs: the signing key, else ``client_key``."""
        return self.identity or KeyStore(self.config.paths.keys).get_or_create(self.config.client_key)

    async def _payer_chain(self, purpose: str) -> tuple[dict[str, Any], Any]:
        """The gateway's chain info and a ChainClient on :meth:`payer`'s account (made once)."""
        if self._chain is None:
            self._chain = await payer_chain(self, purpose)
        return self._chain

    async def deposit(self, amount: int) -> str:
        """Deposit ``amount`` CIRO base units into CiroLedger from :meth:`payer`'s account (registering its key
        the first time), for prepaid jobs (``prepaid=True``); returns the transaction hash. Withdrawing takes a
        request and the ledger's withdrawal delay (docs/settlement.md)."""
        return await deposit(self, int(amount))

    async def ledger_account(self) -> dict[str, Any]:
        """:meth:`payer`'s standing with this gateway's ledger: price per job, last accepted cap (``authorized``),
        ``charged``, ``balance`` (deposit left) and the key it registered."""
        from .chain import account_address

        result: dict[str, Any] = await self._request(
            "GET", f"/v1/ledger/{account_address(self.payer().public_key):#x}")
        return result

    async def _escrow(self, jobs: list[dict[str, Any]], max_payment: int) -> str:
        """Escrow ``max_payment`` for each job in ONE transaction from the payer's account, then tell the gateway."""
        return await escrow(self, jobs, max_payment)

    async def submit_batch(self, model: str, items: Sequence[Any] | np.ndarray | Mapping[str, Any], *,
                           rows_per_job: int = 1, verification: VerificationLevel | str | bool | None = None,
                           wait: float = 0.0, max_payment: int | None = None, **options: Any) -> list[str]:
        """Queue many jobs in one request; returns their ids. See :meth:`infer_batch` for ``items`` and
        ``options``."""
        body = await self._batch(model, items, rows_per_job, verification, wait, max_payment, options)
        return [str(i) for i in body["job_ids"]]

    async def infer_batch(self, model: str, items: Sequence[Any] | np.ndarray | Mapping[str, Any], *,
                          rows_per_job: int = 1, verification: VerificationLevel | str | bool | None = None,
                          timeout: float | None = None, max_payment: int | None = None,
                          **options: Any) -> list[JobResult]:
        """Run many jobs in one request. ``items`` is a list of inputs (one job each), or stacked
        inputs (an array or a dict of arrays) split along axis 0 into jobs of ``rows_per_job`` rows.
        ``options`` are every job's options, as for :meth:`infer` (e.g. ``gpu_memory_gb=16``, ``cpu_only=True``).
        With ``max_payment`` (CIRO base units per job) every job's payment is escrowed on chain first, in one
        transaction from :meth:`payer`'s account, and the worker is paid once the result is verified."""
        wait = timeout if timeout is not None else self.timeout
        body = await self._batch(model, items, rows_per_job, verification, wait, max_payment, options)
        if body.get("results") is None:
            return [_checked(await self.wait(j, timeout=wait)) for j in body["job_ids"]]
        return [_checked(JobResult.from_wire(r)) for r in body["results"]]

    async def _batch(self, model: str, items: Any, rows_per_job: int, verification: Any,
                     wait: float, max_payment: int | None = None,
                     options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        info = await self.model(model)
        level = self._level(verification)
        job_options = {**self.default_options, **(options or {})}
        default_payment = job_options.pop("max_payment", None)
        max_payment = max_payment if max_payment is not None else default_payment
        prepaid = _prepaid_flag(job_options.pop("prepaid", False), max_payment)
        job_options = check_options(job_options, extra=_SDK_ARGS)
        params: dict[str, Any] = {"wait": min(wait, MAX_SERVER_WAIT_S)}
        if max_payment is not None:
            params = {"wait": 0, "escrow": "true"}
        if isinstance(items, np.ndarray | Mapping):  # stacked: send binary
            stacked = _normalize(info, items)
            params.update(model=info.hash, rows_per_job=rows_per_job, verification=level)
            if job_options:
                params["options"] = orjson.dumps(job_options, option=orjson.OPT_SORT_KEYS).decode()
            rows = {a.shape[0] if a.ndim else 0 for a in stacked.values()}
            request: dict[str, Any] = {"data": encode_binary(stacked), "headers": {"content-type": BINARY_CONTENT_TYPE}}
            path, jobs = "/v1/jobs/batch/binary", max(rows) // rows_per_job if rows else 0
        else:
            body = {"model": info.hash, "items": [encode_json(_normalize(info, x)) for x in items],
                    "verification": level, "options": job_options}
            request, path, jobs = {"json": body, "headers": {}}, "/v1/jobs/batch", len(body["items"])
        if prepaid:
            async with self._spending:
                request["headers"].update(await spend_header(self, jobs))
                result: dict[str, Any] = await self._request("POST", path, params=params, read_timeout=wait, **request)
        else:
            result = await self._request("POST", path, params=params, read_timeout=wait, **request)
        if max_payment is not None:
            await self._escrow(result["jobs"], int(max_payment))
            result["results"] = None
        return result

    async def status(self, job_id: str) -> JobResult:
        return JobResult.from_wire(await self._request("GET", f"/v1/jobs/{_job_id(job_id)}"))

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """Wait until the job is final and return it with its outputs (it does not raise on failure)."""
        limit = timeout if timeout is not None else self.timeout
        job_id = _job_id(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            left = max(0.0, deadline - loop.time())
            out = await self._request("GET", f"/v1/jobs/{job_id}/result", params={"wait": min(left, 30.0)},
                                      read_timeout=min(left, 30.0))
            result = JobResult.from_wire(out)
            if result.status.terminal:
                return result
            if loop.time() >= deadline:
                raise JobTimeoutError(
                    f"Job {job_id} is still {result.status.value} after {limit:.0f}s. Wait longer "
                    f"(ciro.wait(job_id, timeout=...)) or cancel it.", detail={"job_id": job_id})

    async def wait_settled(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """Wait until a paid job's settlement is final on chain: ``paid`` (``on_chain_verified``), ``refunded``,
        ``uncharged`` (prepaid, ended without a result) or ``error``. A job that was not paid on chain (neither
        ``max_payment`` nor ``prepaid``) has nothing to wait for: InputError."""
        loop = asyncio.get_running_loop()
        limit = timeout if timeout is not None else self.timeout
        deadline = loop.time() + limit
        result = await self.wait(job_id, timeout=limit)
        while True:
            if result.settlement is None:
                chain = await self.chain_info()
                raise InputError(f"Job {job_id} was not paid on chain, so nothing settles: "
                                 + ("this gateway does not settle on chain." if not chain.get("enabled") else
                                    "submit it with max_payment= (escrow) or prepaid=True to settle it."),
                                 detail={"job_id": job_id})
            if result.settlement in ("paid", "refunded", "uncharged", "error"):
                return result
            if loop.time() >= deadline:
                raise JobTimeoutError(f"Job {job_id} is still {result.settlement} on chain after {limit:.0f}s. "
                                      "Wait longer (timeout=...).", detail={"job_id": job_id})
            await asyncio.sleep(0.5)
            result = await self.status(job_id)

    async def cancel(self, job_id: str) -> JobResult:
        return JobResult.from_wire(await self._request("POST", f"/v1/jobs/{_job_id(job_id)}/cancel"))

    async def jobs(self, *, status: JobStatus | str | None = None, model: str | None = None,
                   limit: int = 100) -> list[JobResult]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = JobStatus(status).value
        if model:
            params["model"] = model
        return [JobResult.from_wire(j) for j in await self._request("GET", "/v1/jobs", params=params)]
