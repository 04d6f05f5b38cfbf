"""The sync facade of the SDK: :class:`CiroClient`, the async core's calls run on a private event-loop thread.

Every call of :class:`ciro.AsyncCiroClient` is here too, derived from it (``_blocking``: same signature, same
docstring), so the two never drift; only what is sync-specific is written here: the SDK document's names
(``infer(model_id=..., batch_size=...)``, ``deploy_model``), ``network=``, and ``local()``. Works the same in a
script and inside a running Jupyter event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

import numpy as np

from ._async_client import AsyncCiroClient
from ._wire import _normalize
from .config import Config
from .errors import ConfigError, InputError
from .identity import Identity
from .jobs import BatchResult, JobResult, ModelInfo, VerificationLevel
from .networks import check_gateway, gateway_for, profile
from .processing import is_raw

__all__ = ["CiroClient"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(call: Callable[Concatenate[AsyncCiroClient, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate[CiroClient, P], T]:
    """``AsyncCiroClient.call`` as a blocking method of :class:`CiroClient`."""
    @functools.wraps(call)
    def method(self: CiroClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(call(self._async, *args, **kwargs))
    return method


class _LoopThread:
    """One daemon thread running an event loop; the sync facade submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ciro-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def _shutdown(loop: _LoopThread, client: AsyncCiroClient) -> None:
    if not loop.thread.is_alive():
        return
    try:
        loop.run(client.aclose())
    finally:
        loop.close()


class CiroClient:
    """Synchronous client for scripts, notebooks and plugins.

    ``CiroClient()`` talks to the configured gateway (``CIRO_GATEWAY_URL``, else the local one);
    ``CiroClient("http://host:port")`` to a given one; ``CiroClient(network="local")`` (or :meth:`local`) starts
    the embedded default (local Ray + gateway + devnet under ``CIRO_HOME``) if it is not running, and attaches to
    it; ``network="sepolia"`` / ``"mainnet"`` / a profile name selects a configured network (``ciro.networks``).
    """

    def __init__(self, url: str | None = None, *, network: str | None = None, timeout: float | None = None,
                 retries: int = 2, verification: VerificationLevel | str | bool | None = None,
                 gpu_preference: str | None = None, config: Config | None = None,
                 identity: Identity | None = None, **options: Any) -> None:
        cfg = config or Config.load()
        if network is None and url is None and cfg.network != "local":
            network = cfg.network  # CIRO_NETWORK / the config file's `network`
        if network is not None and url is not None:
            raise ConfigError("Pass either a gateway URL or network=, not both.")
        selected = None if network is None or network.startswith(("http://", "https://")) else profile(network, cfg)
        if network is not None:
            url = network if selected is None else (gateway_for(selected, cfg) or _embedded(cfg))
        if gpu_preference:
            options["gpu"] = gpu_preference
        self._loop = _LoopThread()
        self._async = AsyncCiroClient(url, config=cfg, timeout=timeout, retries=retries,
                                      verification=verification, options=options, identity=identity)
        # Close the HTTP session and the loop thread when the client is dropped or at exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._async)
        #: The network profile selected with ``network=`` (None for a bare gateway URL).
        self.network = selected
        if selected is not None and selected.contracts():
            check_gateway(selected, self.chain_info(), self.url)

    @classmethod
    def local(cls, *, progress: bool = False, **settings: Any) -> CiroClient:
        """Start (or attach to) the embedded default and return a client for it."""
        from .local import ensure_running

        cfg = Config.load(**settings)
        url = ensure_running(cfg, progress=progress)
        return cls(url, config=cfg)

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def config(self) -> Config:
        return self._async.config

    def payer(self) -> Identity:
        """The key whose Starknet account pays for escrowed and prepaid jobs (see ``AsyncCiroClient.payer``)."""
        return self._async.payer()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        out = self._loop.run(coro)
        for r in out if isinstance(out, list) else [out]:
            if isinstance(r, JobResult):  # so that result.wait_settled() works as the SDK document shows
                r._settle = self._settle
        return out

    def _settle(self, job_id: str, timeout: float | None) -> JobResult:
        return self.wait_settled(job_id, timeout=timeout)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> CiroClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the async client's calls, blocking (same signatures and docs) ------------------------------
    health = _blocking(AsyncCiroClient.health)
    workers = _blocking(AsyncCiroClient.workers)
    faults = _blocking(AsyncCiroClient.faults)
    deploy = _blocking(AsyncCiroClient.deploy)
    model = _blocking(AsyncCiroClient.model)
    models = _blocking(AsyncCiroClient.models)
    processor = _blocking(AsyncCiroClient.processor)
    attach_processor = _blocking(AsyncCiroClient.attach_processor)
    create_deployment = _blocking(AsyncCiroClient.create_deployment)
    update_deployment = _blocking(AsyncCiroClient.update_deployment)
    delete_deployment = _blocking(AsyncCiroClient.delete_deployment)
    deployment = _blocking(AsyncCiroClient.deployment)
    deployments = _blocking(AsyncCiroClient.deployments)
    submit = _blocking(AsyncCiroClient.submit)
    submit_batch = _blocking(AsyncCiroClient.submit_batch)
    infer_batch = _blocking(AsyncCiroClient.infer_batch)
    chain_info = _blocking(AsyncCiroClient.chain_info)
    deposit = _blocking(AsyncCiroClient.deposit)
    ledger_account = _blocking(AsyncCiroClient.ledger_account)
    wait = _blocking(AsyncCiroClient.wait)
    wait_settled = _blocking(AsyncCiroClient.wait_settled)
    status = _blocking(AsyncCiroClient.status)
    cancel = _blocking(AsyncCiroClient.cancel)
    jobs = _blocking(AsyncCiroClient.jobs)

    @overload
    def infer(self, model: str | None = None, inputs: Any = None, *,
              verification: VerificationLevel | str | bool | None = None, timeout: float | None = None,
              model_id: str | None = None, input_data: Any = None, generate_proof: bool = False,
              batch_size: None = None, **options: Any) -> JobResult: ...

    @overload
    def infer(self, model: str | None = None, inputs: Any = None, *,
              verification: VerificationLevel | str | bool | None = None, timeout: float | None = None,
              model_id: str | None = None, input_data: Any = None, generate_proof: bool = False,
              batch_size: int, **options: Any) -> JobResult | BatchResult: ...

    def infer(self, model: str | None = None, inputs: Any = None, *,
              verification: VerificationLevel | str | bool | None = None, timeout: float | None = None,
              model_id: str | None = None, input_data: Any = None, generate_proof: bool = False,
              batch_size: int | None = None, **options: Any) -> JobResult | BatchResult:
        """Run one job. ``model_id``/``input_data``/``generate_proof`` are the SDK document's names.

        ``batch_size``: an input of more rows than that is split into jobs of ``batch_size`` rows (one request,
        each job with its own evidence), and a :class:`BatchResult` joins their outputs again; an input that
        fits runs as one job and returns its :class:`JobResult`.
        """
        model = model or model_id
        inputs = inputs if inputs is not None else input_data
        if model is None or inputs is None:
            raise InputError("infer needs a model ref and inputs: client.infer(model, inputs).")
        if generate_proof:
            verification = VerificationLevel.ZKML
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise InputError(f"batch_size must be a whole number of rows >= 1, not {batch_size!r}.")
            rows = None if is_raw(inputs) else _rows(inputs)
            if rows is not None and rows > batch_size:
                info = self.model(model)
                stacked = _normalize(info, inputs)
                whole = rows // batch_size * batch_size
                results = []
                for a, b, n in ((0, whole, batch_size), (whole, rows, rows - whole)):  # whole jobs, then the rest
                    if b > a:
                        part = {k: np.ascontiguousarray(v[a:b]) for k, v in stacked.items()}
                        results += self.infer_batch(info.hash, part, rows_per_job=n, verification=verification,
                                                    timeout=timeout, **options)
                return BatchResult(results)
        return self._run(self._async.infer(model, inputs, verification=verification, timeout=timeout, **options))

    # The SDK document's names ------------------------------------------------------------------
    def deploy_model(self, *, model_path: str | os.PathLike[str], framework: str = "onnx",
                     name: str | None = None, optimization: str | None = None,
                     verification: bool | str | None = None, input_shape: Sequence[int] | None = None,
                     example_input: Any = None) -> ModelInfo:
        """Convert (``framework``: onnx, pytorch, sklearn, xgboost, lightgbm, or one a plugin registers; see
        ``ciro.convert``), optimise (``optimization``: none,
        basic, all, int8, fp16; tensorrt where the TensorRT provider exists), check against the original, and
        deploy. ``verification`` True or "zk" also runs the zk set-up; the other levels need none. For zk,
        scikit-learn, XGBoost and LightGBM models are converted to their circuit form (plain tensor operators EZKL
        can prove), which is then the model served and proven, and a converted model EZKL could not prove is
        refused before anything is deployed. PyTorch needs ``input_shape`` (or ``example_input``). The returned
        model's ``conversion`` says what was done and how much the outputs moved."""
        from .convert import convert, optimize

        level = VerificationLevel.ZKML if verification is True else VerificationLevel.parse(verification)
        zk = level is VerificationLevel.ZKML
        example = np.asarray(example_input, np.float32) if example_input is not None else None
        conv = convert(framework, model_path, example_input=example, input_shape=input_shape, zk=zk)
        opt = optimize(conv.onnx, optimization or "none", example=example)
        if zk and opt.onnx != conv.onnx:  # the optimised graph is what is served and proven: EZKL must read it
            from .zk import zk_precheck

            zk_precheck(opt.onnx, count_rows=False)
        info = self.deploy(opt.onnx, name=name or Path(model_path).stem, zk=zk)
        return dataclasses.replace(info, conversion=f"{conv.check}; {opt.check}")


def _embedded(cfg: Config) -> str:
    """The embedded default's gateway, started if it is not running."""
    from .local import ensure_running

    return ensure_running(cfg)


def _rows(inputs: Any) -> int | None:
    first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs
    shape = getattr(first, "shape", None)
    if shape:
        return int(shape[0])
    return len(first) if isinstance(first, list) else None

